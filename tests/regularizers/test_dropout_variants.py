"""Tests for normjax/dropout_variants.py: spatial, alpha and Gaussian dropout."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.regularizers.dropout_variants import (
    SELU_ALPHA_PRIME,
    alpha_dropout,
    gaussian_dropout,
    spatial_dropout,
)
from tests.reference_research import alpha_dropout_np

KEY = jax.random.key(0)


def _normal(shape, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("channel_axis", [-1, 1])
def test_spatial_dropout_drops_whole_channels(channel_axis):
    x = _normal((64, 5, 5, 8)) + 3.0  # nonzero everywhere
    if channel_axis == 1:
        x = x.transpose(0, 3, 1, 2)
    y = np.asarray(spatial_dropout(KEY, x, rate=0.25, train=True, feature_axes=channel_axis))
    spatial = (1, 2) if channel_axis == -1 else (2, 3)
    dropped = np.all(y == 0, spatial)
    kept = np.all(y != 0, spatial)
    assert np.all(dropped | kept)  # all or nothing per (example, channel)
    np.testing.assert_allclose(y[np.broadcast_to(np.expand_dims(kept, spatial), y.shape)],
                               np.asarray(x)[np.broadcast_to(np.expand_dims(kept, spatial),
                                                             y.shape)] / 0.75, rtol=1e-6)
    assert abs(dropped.mean() - 0.25) < 0.05  # 512 draws, 4.4 standard deviations
    assert len({tuple(r) for r in dropped}) > 1  # different examples, different channels


def test_spatial_dropout_keeps_the_mean():
    x = jnp.ones((20000, 2, 4))
    y = spatial_dropout(KEY, x, rate=0.4, train=True)
    np.testing.assert_allclose(np.mean(np.asarray(y)), 1.0, atol=0.02)


def test_alpha_dropout_against_oracle_and_moments():
    x = _normal((400, 500), seed=1)  # zero mean, unit variance
    rate = 0.2
    y = np.asarray(alpha_dropout(KEY, x, rate=rate, train=True), np.float64)
    keep = ~np.isclose(y, alpha_dropout_np(0.0, False, rate))
    np.testing.assert_allclose(y, alpha_dropout_np(x, keep, rate), rtol=1e-5, atol=1e-5)
    assert abs(1 - keep.mean() - rate) < 0.005
    # Mean and variance are preserved (2e5 samples: standard errors ~2e-3 and ~3e-3).
    assert abs(y.mean()) < 0.01
    assert abs(y.var() - 1) < 0.015


def test_alpha_dropout_keeps_selu_fixed_point():
    z = jax.nn.selu(_normal((200000,), seed=2))  # SELU of N(0, 1): mean 0, variance 1
    y = np.asarray(alpha_dropout(KEY, z, rate=0.1, train=True), np.float64)
    z = np.asarray(z, np.float64)
    assert abs(y.mean() - z.mean()) < 0.01
    assert abs(y.var() - z.var()) < 0.02


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_gaussian_dropout_moments(rate):
    x = jnp.full((200000,), 2.0)
    y = np.asarray(gaussian_dropout(KEY, x, rate=rate, train=True), np.float64)
    var = 4 * rate / (1 - rate)
    assert abs(y.mean() - 2) < 5 * np.sqrt(var / y.size)
    assert abs(y.var() / var - 1) < 0.02


def test_eval_and_rate_zero_are_identity():
    x = _normal((4, 3, 3, 2))
    for fn in (spatial_dropout, alpha_dropout, gaussian_dropout):
        assert fn(None, x, rate=0.5, train=False) is x
        assert fn(None, x, rate=0.0, train=True) is x


def test_jit_with_traced_rate_vmap_over_keys_and_grad():
    x = _normal((8, 4, 3), seed=3)

    @partial(jax.jit, static_argnames="train")
    def f(key, x, rate, *, train):
        return (spatial_dropout(key, x, rate=rate, train=train)
                + alpha_dropout(key, x, rate=rate, train=train)
                + gaussian_dropout(key, x, rate=rate, train=train))

    rate = jnp.float32(0.3)
    y = f(KEY, x, rate, train=True)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    np.testing.assert_allclose(f(KEY, x, jnp.float32(0.0), train=True), 3 * x, rtol=1e-6)
    keys = jax.random.split(KEY, 3)
    ys = jax.vmap(lambda k: f(k, x, rate, train=True))(keys)
    assert not np.allclose(ys[0], ys[1])
    # For a fixed key every variant is affine in x.
    check_grads(jax.jit(lambda x: f(KEY, x, rate, train=True)), (x,), order=1, modes=["rev"],
                atol=1e-2, rtol=1e-2)


def test_dtypes():
    x = _normal((4, 3)).astype(jnp.bfloat16)
    for fn in (spatial_dropout, alpha_dropout, gaussian_dropout):
        assert fn(KEY, x, rate=0.5, train=True).dtype == jnp.bfloat16
    assert SELU_ALPHA_PRIME == pytest.approx(-1.7580993408473766)


def test_errors():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        alpha_dropout(KEY, x, rate=1.0, train=True)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        gaussian_dropout(KEY, x, rate=1.0, train=True)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        gaussian_dropout(KEY, x, rate=-0.1, train=True)
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\]"):
        spatial_dropout(KEY, x, rate=1.5, train=True)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        alpha_dropout(None, x, rate=0.5, train=True)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        gaussian_dropout(None, x, rate=0.5, train=True)
    with pytest.raises(TypeError, match="train must be a Python bool"):
        gaussian_dropout(KEY, x, rate=0.5, train="yes")
    with pytest.raises(ValueError, match="is also a batch axis"):
        spatial_dropout(KEY, x, rate=0.5, train=True, feature_axes=0)
