"""Tests for normjax/whitening.py: Decorrelated BatchNorm (ZCA whitening)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.norms.decorrelated_batch_norm import (
    WhiteningState,
    decorrelated_batch_norm,
    whitening_init,
    whitening_matrix,
)
from tests.reference_research import ema_np, zca_whiten_np

M, C = 256, 6


def _correlated(shape=(M, C), seed: int = 0) -> jax.Array:
    """Correlated features: a random rotation of independent features with standard deviations
    1..C (distinct eigenvalues, condition number C^2)."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    rotation, _ = np.linalg.qr(rng.normal(size=(c, c)))
    mix = np.diag(np.arange(1.0, c + 1)) @ rotation.T
    return jnp.asarray(rng.normal(size=shape) @ mix + np.arange(c), jnp.float32)


def _cov(y) -> np.ndarray:
    y = np.asarray(y, np.float64).reshape(-1, np.shape(y)[-1])
    return np.cov(y, rowvar=False, bias=True)


@pytest.mark.parametrize("group_size", [None, 3])
def test_whitened_output_has_identity_covariance(group_size):
    x = _correlated()
    assert np.max(np.abs(_cov(x) - np.diag(np.diag(_cov(x))))) > 1  # strongly correlated
    y, _ = decorrelated_batch_norm(x, whitening_init(C, group_size=group_size), train=True,
                                   epsilon=1e-6)
    cov = _cov(y)
    if group_size is None:
        np.testing.assert_allclose(cov, np.eye(C), atol=1e-3)
    else:
        for g in range(C // group_size):
            block = slice(g * group_size, (g + 1) * group_size)
            np.testing.assert_allclose(cov[block, block], np.eye(group_size), atol=1e-3)
    np.testing.assert_allclose(np.mean(np.asarray(y), 0), 0, atol=1e-4)


def test_against_float64_oracle_and_running_state():
    x = _correlated(seed=1)
    scale, bias = jnp.linspace(0.5, 2, C), jnp.linspace(-1, 1, C)
    state = whitening_init(C, group_size=2)
    y, s = decorrelated_batch_norm(x, state, scale=scale, bias=bias, train=True, decay=0.9,
                                   epsilon=1e-3)
    y_ref, mean, cov = zca_whiten_np(x, 2, 1e-3)
    np.testing.assert_allclose(y, y_ref * np.asarray(scale) + np.asarray(bias), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(s.mean, ema_np(0.0, mean.reshape(-1), 0.9), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(s.cov, ema_np(state.cov, cov, 0.9), rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(s.count) == 1)
    # Eval whitens with the running statistics.
    y_eval, s_eval = decorrelated_batch_norm(x, s, train=False, epsilon=1e-3)
    ref_eval, *_ = zca_whiten_np(x, 2, 1e-3, mean=s.mean, cov=s.cov)
    np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-4, atol=1e-4)
    assert s_eval is s


def test_zca_matrix_is_symmetric_and_inverts_the_covariance():
    cov = np.asarray(_cov(_correlated(seed=2)), np.float32)
    w = np.asarray(whitening_matrix(cov, epsilon=0.0), np.float64)
    np.testing.assert_allclose(w, w.T, atol=1e-5)
    np.testing.assert_allclose(w @ cov @ w, np.eye(C), atol=1e-4)
    # Rounding can make a PSD covariance slightly indefinite; the clamp keeps it finite.
    singular = np.ones((3, 3), np.float32)
    assert np.all(np.isfinite(whitening_matrix(singular, epsilon=1e-5)))


def test_channels_first_and_axis_name():
    x = _correlated((4, C, 8), seed=3)  # (N, C, L): features on axis 1
    state = whitening_init(C, group_size=3)
    y, s = decorrelated_batch_norm(x, state, train=True, feature_axes=1)
    flat = jnp.moveaxis(x, 1, -1).reshape(-1, C)
    y_ref, s_ref = decorrelated_batch_norm(flat, state, train=True)
    np.testing.assert_allclose(jnp.moveaxis(y, 1, -1).reshape(-1, C), y_ref, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(s.cov, s_ref.cov, rtol=1e-4, atol=1e-5)
    fn = partial(decorrelated_batch_norm, train=True, feature_axes=1, axis_name="d")
    y_d, s_d = jax.jit(jax.vmap(fn, in_axes=(0, None), out_axes=(0, None), axis_name="d"))(
        x.reshape(2, 2, C, 8), state)
    np.testing.assert_allclose(y_d.reshape(x.shape), y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_d.cov, s.cov, rtol=1e-4, atol=1e-5)


def test_gradient_with_well_separated_eigenvalues():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(16, 3)) * [1.0, 2.0, 4.0], jnp.float32)
    f = jax.jit(lambda x, g: decorrelated_batch_norm(x, whitening_init(3), scale=g,
                                                     train=True, epsilon=1e-2)[0])
    check_grads(jax.jit(f), (x, jnp.ones(3)), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)


def test_errors():
    x = _correlated()
    with pytest.raises(ValueError, match="must be a positive divisor"):
        whitening_init(C, group_size=4)
    with pytest.raises(ValueError, match="features must be a positive int"):
        whitening_init(0)
    with pytest.raises(ValueError, match="create the state with whitening_init"):
        decorrelated_batch_norm(x, whitening_init(C + 2), train=True)
    with pytest.raises(TypeError, match="state must be a WhiteningState"):
        decorrelated_batch_norm(x, (jnp.zeros(C), jnp.eye(C)), train=True)
    with pytest.raises(ValueError, match="needs at least 2 elements"):
        decorrelated_batch_norm(x[:1], whitening_init(C), train=True)
    with pytest.raises(ValueError, match=r"scale has shape \(5,\), expected \(6,\)"):
        decorrelated_batch_norm(x, whitening_init(C), scale=jnp.ones(5), train=True)
    with pytest.raises(ValueError, match="epsilon must be"):
        whitening_matrix(jnp.eye(2), epsilon=-1.0)
    assert isinstance(whitening_init(C), WhiteningState)
