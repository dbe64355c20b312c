"""Tests for normjax/weight_standardization.py: WS and scaled WS."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from normjax.weights.weight_standardization import (
    activation_gamma,
    scaled_weight_standardization,
    weight_standardization,
)
from tests.reference_research import (
    scaled_weight_standardization_np,
    weight_standardization_np,
)

SHAPES = [(5, 3), (3, 3, 2, 4)]  # Dense (in, out), Conv (h, w, in, out)


def _w(shape, seed: int = 0) -> jax.Array:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape) * 0.2 + 0.1, jnp.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_weight_standardization_against_oracle(shape):
    w = _w(shape)
    got = weight_standardization(w, epsilon=1e-5)
    np.testing.assert_allclose(got, weight_standardization_np(w, 1e-5), rtol=1e-4, atol=1e-5)
    flat = np.asarray(got).reshape(-1, shape[-1])
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(flat.var(0), 1, rtol=1e-3)


def test_channels_first_kernel_layout():
    w = _w((4, 2, 3, 3), seed=1)  # PyTorch OIHW: output features first
    got = weight_standardization(w, feature_axes=0)
    np.testing.assert_allclose(got, weight_standardization_np(w, 1e-5, feature_axis=0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_scaled_weight_standardization_against_oracle(shape):
    w = _w(shape, seed=2)
    gain = jnp.linspace(0.5, 1.5, shape[-1])
    gamma = activation_gamma(jax.nn.relu)
    got = scaled_weight_standardization(w, gain, gamma=gamma)
    ref = scaled_weight_standardization_np(w, gain, gamma, 1e-4)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    # Each output column has squared norm (gain * gamma)^2: the fan-in scaling.
    sq = np.sum(np.asarray(got, np.float64).reshape(-1, shape[-1]) ** 2, 0)
    np.testing.assert_allclose(sq, (np.asarray(gain) * gamma) ** 2, rtol=1e-4)


def test_scaled_ws_preserves_unit_variance_through_a_dense_layer():
    fan_in, hidden, out = 256, 64, 8
    x = jax.random.normal(jax.random.key(0), (4096, fan_in))
    y = x @ scaled_weight_standardization(_w((fan_in, hidden), seed=3))
    np.testing.assert_allclose(np.var(np.asarray(y), 0), 1.0, atol=0.12)
    # With ReLU and its gamma, the next layer again sees unit-variance pre-activations
    # (the kernel's zero mean over the fan-in removes ReLU's positive mean).
    gamma = activation_gamma(jax.nn.relu)
    z = jax.nn.relu(y) @ scaled_weight_standardization(_w((hidden, out), seed=4), gamma=gamma)
    np.testing.assert_allclose(np.var(np.asarray(z), 0), 1.0, atol=0.2)
    np.testing.assert_allclose(np.mean(np.var(np.asarray(z), 0)), 1.0, atol=0.1)


def test_activation_gamma_matches_closed_forms():
    np.testing.assert_allclose(activation_gamma(jax.nn.relu), np.sqrt(2 / (1 - 1 / np.pi)),
                               rtol=1e-6)
    np.testing.assert_allclose(activation_gamma(lambda z: z), 1.0, rtol=1e-6)
    np.testing.assert_allclose(activation_gamma(lambda z: 3 * z + 1), 1 / 3, rtol=1e-6)


def test_eps_floor_keeps_constant_kernels_finite():
    w = jnp.ones((4, 2))
    assert np.all(np.isfinite(scaled_weight_standardization(w)))
    np.testing.assert_array_equal(weight_standardization(w), 0)


def test_dtype_jit_vmap_grad():
    w = _w((3, 3, 2, 4), seed=5)
    assert weight_standardization(w.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert scaled_weight_standardization(w.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    ws = jnp.stack([w, 3 * w - 1])
    out = jax.jit(jax.vmap(lambda w: weight_standardization(w, epsilon=0.0)))(ws)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-4)  # affine invariance
    np.testing.assert_allclose(out[1], weight_standardization(ws[1], epsilon=0.0), rtol=1e-6)
    gain = jnp.linspace(0.5, 1.5, 4)
    check_grads(jax.jit(lambda w, g: scaled_weight_standardization(w, g, gamma=1.7)), (w, gain),
                order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    check_grads(jax.jit(weight_standardization), (w,), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_errors():
    with pytest.raises(ValueError, match="rank >= 2"):
        weight_standardization(jnp.ones(3))
    with pytest.raises(ValueError, match="leaves no fan-in axis"):
        weight_standardization(jnp.ones((2, 3)), feature_axes=(0, 1))
    with pytest.raises(ValueError, match="gain has shape"):
        scaled_weight_standardization(jnp.ones((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="epsilon must be"):
        weight_standardization(jnp.ones((2, 3)), epsilon=-1.0)
    with pytest.raises(ValueError, match="gamma is undefined"):
        activation_gamma(lambda z: jnp.zeros_like(z))
    with pytest.raises(ValueError, match="must be elementwise"):
        activation_gamma(jnp.sum)
    with pytest.raises(ValueError, match="num_points must be"):
        activation_gamma(jax.nn.relu, num_points=1)
