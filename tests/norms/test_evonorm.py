"""Tests for normjax/evonorm.py: EvoNorm-B0 and EvoNorm-S0."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.norms.evonorm import evonorm_b0, evonorm_s0
from normjax.running import batch_norm_init
from tests.reference_research import ema_np, evonorm_b0_np, evonorm_s0_np

N, H, C = 3, 4, 6


def _x(shape=(N, H, H, C), seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape) * rng.uniform(0.5, 2, shape[-1]) + 0.3,
                       jnp.float32)


def _params():
    return jnp.linspace(0.5, 2.0, C), jnp.linspace(-1.0, 1.0, C), jnp.linspace(-0.5, 1.5, C)


def _state():
    return batch_norm_init(C)._replace(var=jnp.linspace(0.5, 3.0, C))


@pytest.mark.parametrize("train", [True, False])
def test_b0_against_float64_oracle(train):
    x, state = _x(), _state()
    scale, bias, v = _params()
    y, s = evonorm_b0(x, state, scale=scale, bias=bias, v=v, train=train, decay=0.9,
                      epsilon=1e-3)
    ref = evonorm_b0_np(x, v, 1e-3, None if train else state.var, scale, bias)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # Both branches of the max are exercised: the denominator is not the batch std alone.
    batch_std = np.sqrt((np.asarray(x, np.float64).var((0, 1, 2)) if train else state.var)
                        + 1e-3)
    ratio = (np.asarray(x) / (np.asarray(ref) - np.asarray(bias)) * np.asarray(scale))
    assert 0.05 < np.mean(np.abs(ratio - batch_std) > 1e-3) < 0.95
    if train:
        var = np.asarray(x, np.float64).var((0, 1, 2))
        np.testing.assert_allclose(s.var, ema_np(state.var, var, 0.9), rtol=1e-5)
    else:
        assert s is state


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NC"])
def test_s0_against_float64_oracle(layout):
    scale, bias, v = _params()
    x = _x((N, H, H, C) if layout != "NC" else (5, C), seed=2)
    axis = -1
    if layout == "NCHW":
        x, axis = x.transpose(0, 3, 1, 2), 1
    y = evonorm_s0(x, scale, bias, v=v, num_groups=3, feature_axes=axis, epsilon=1e-3)
    if layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
        x = x.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, evonorm_s0_np(x, v, 3, 1e-3, scale, bias), rtol=1e-5,
                               atol=1e-5)


def test_s0_group_size_and_batch_independence():
    x = _x(seed=3)
    v = jnp.ones(C)
    a = evonorm_s0(x, v=v, group_size=2)
    np.testing.assert_array_equal(a, evonorm_s0(x, v=v, num_groups=3))
    np.testing.assert_allclose(evonorm_s0(x[:1], v=v, group_size=2), a[:1], rtol=1e-6)


def test_jit_vmap_grad():
    x, state = _x(seed=4), _state()
    scale, bias, v = _params()

    @partial(jax.jit, static_argnames="train")
    def b0(x, scale, bias, v, *, train):
        return evonorm_b0(x, state, scale=scale, bias=bias, v=v, train=train)[0]

    per_example = jax.jit(jax.vmap(
        lambda x: evonorm_b0(x, state, v=v, train=True, batch_axes=(), axis_name="b")[0],
        axis_name="b"))(x)
    np.testing.assert_allclose(per_example, evonorm_b0(x, state, v=v, train=True)[0],
                               rtol=1e-5, atol=1e-6)
    check_grads(jax.jit(partial(b0, train=True)), (x, scale, bias, v), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2)
    s0 = jax.jit(lambda x, g, b, v: evonorm_s0(x, g, b, v=v, num_groups=2))
    check_grads(jax.jit(s0), (x, scale, bias, v), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_errors():
    x, state = _x(), _state()
    _, _, v = _params()
    with pytest.raises(ValueError, match=r"v has shape \(5,\), expected \(6,\)"):
        evonorm_b0(x, state, v=jnp.ones(5), train=True)
    with pytest.raises(ValueError, match="scale has shape"):
        evonorm_s0(x, jnp.ones(2), v=v, num_groups=2)
    with pytest.raises(ValueError, match="needs a spatial axis"):
        evonorm_b0(jnp.ones((N, C)), state, v=v, train=True)
    with pytest.raises(ValueError, match="does not divide the number of channels"):
        evonorm_s0(x, v=v, num_groups=4)
    with pytest.raises(ValueError, match="Either `num_groups` or `group_size` should be"):
        evonorm_s0(x, v=v)
    with pytest.raises(ValueError, match="state.mean has shape"):
        evonorm_b0(x, batch_norm_init(C + 1), v=v, train=True)
    with pytest.raises(TypeError, match="train must be a Python bool"):
        evonorm_b0(x, state, v=v, train=1)
