"""Tests for inverted dropout: scaling, flax.linen.Dropout, broadcasting, rates and errors."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import normjax as nj


def _data(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(1.0, 2.0, size=shape), jnp.float32)


def test_inverted_scaling():
    x, rate = _data((64, 32)), 0.25
    y = np.asarray(nj.dropout(jax.random.key(0), x, rate=rate, train=True))
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-6)
    assert abs(kept.mean() - (1 - rate)) < 0.03  # 2048 Bernoulli draws: std 0.01


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("broadcast_axes", [(), (1, 2)])
def test_matches_flax_with_the_same_key(broadcast_axes, use_jit):
    x, key, rate = _data((4, 3, 3, 5)), jax.random.key(42), 0.3
    f = functools.partial(nj.dropout, rate=rate, train=True, broadcast_axes=broadcast_axes)
    y = (jax.jit(f) if use_jit else f)(key, x)
    module = nn.Dropout(rate=rate, broadcast_dims=broadcast_axes, deterministic=False)
    flax_y = module.apply({}, x, rng=key)
    np.testing.assert_array_equal(y == 0, flax_y == 0)
    np.testing.assert_allclose(y, flax_y, rtol=1e-6)


def test_mean_is_kept_in_expectation():
    x, rate, draws = _data((16,)), 0.4, 4000
    keys = jax.random.split(jax.random.key(1), draws)
    ys = jax.vmap(lambda k: nj.dropout(k, x, rate=rate, train=True))(keys)
    # Per unit: mean of `draws` samples of x * Bernoulli(0.6) / 0.6, std |x| sqrt(rate/(1-rate)).
    stderr = np.abs(np.asarray(x)) * np.sqrt(rate / (1 - rate) / draws)
    assert np.all(np.abs(np.mean(np.asarray(ys), 0) - np.asarray(x)) < 5 * stderr + 1e-6)


def test_broadcast_axes_share_the_mask():
    x = jnp.ones((4, 5, 6, 3))
    y = np.asarray(nj.dropout(jax.random.key(3), x, rate=0.5, train=True, broadcast_axes=(1, 2)))
    dropped = y == 0
    assert np.all(dropped == dropped[:, :1, :1, :])
    assert 0 < dropped.mean() < 1


@pytest.mark.parametrize("rate", [-0.1, 1.5, np.float32(1.2), jnp.asarray(-1.0), float("nan")])
def test_rate_outside_unit_interval_raises(rate):
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\]"):
        nj.dropout(jax.random.key(0), jnp.ones(3), rate=rate, train=True)
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\]"):
        nj.dropout(jax.random.key(0), jnp.ones(3), rate=rate, train=False)


def test_rate_one_gives_zeros_and_zero_gradients():
    x, key = _data((3, 4)), jax.random.key(0)
    concrete = lambda x: nj.dropout(key, x, rate=1.0, train=True)  # noqa: E731
    traced = jax.jit(lambda x, r: nj.dropout(key, x, rate=r, train=True))
    for f in (concrete, lambda x: traced(x, jnp.float32(1.0))):
        np.testing.assert_array_equal(f(x), 0.0)
        grad = jax.grad(lambda x, f=f: jnp.sum(f(x) * x))(x)
        np.testing.assert_array_equal(grad, 0.0)


def test_traced_rate_under_vmap():
    x = jnp.ones((2000,))
    rates = jnp.asarray([0.0, 0.25, 0.5, 0.9])
    ys = np.asarray(jax.vmap(lambda r: nj.dropout(jax.random.key(5), x, rate=r, train=True))(rates))
    for y, rate in zip(ys, np.asarray(rates), strict=True):
        kept = y != 0
        np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
        assert abs(kept.mean() - (1 - rate)) < 0.05


def test_eval_and_rate_zero_return_x():
    x = _data((3, 4))
    assert nj.dropout(None, x, rate=0.5, train=False) is x
    assert nj.dropout(None, x, rate=0.0, train=True) is x


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_keeps_dtype(dtype):
    x = _data((8, 8)).astype(dtype)
    y = nj.dropout(jax.random.key(0), x, rate=0.5, train=True)
    assert y.dtype == dtype
    kept = np.asarray(y != 0)
    np.testing.assert_array_equal(np.asarray(y)[kept], 2 * np.asarray(x)[kept])


def test_check_grads():
    key = jax.random.key(9)
    check_grads(jax.jit(lambda x: nj.dropout(key, x, rate=0.3, train=True)), (_data((4, 5)),),
                order=2, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_missing_key_raises():
    with pytest.raises(ValueError, match=r"needs a PRNG key; got key=None"):
        nj.dropout(None, jnp.ones(3), rate=0.5, train=True)


def test_bad_train_raises():
    with pytest.raises(TypeError, match=r"train must be a Python bool .*got int"):
        nj.dropout(jax.random.key(0), jnp.ones(3), rate=0.5, train=1)


def test_bad_broadcast_axes_raise():
    with pytest.raises(ValueError, match=r"broadcast_axes=\(2,\) contains axis 2"):
        nj.dropout(jax.random.key(0), jnp.ones((3, 4)), rate=0.5, train=True,
                   broadcast_axes=(2,))
