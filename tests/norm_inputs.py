"""Inputs shared by the per-example norm tests (LayerNorm, RMSNorm, GroupNorm, InstanceNorm)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TOL = {"rtol": 2e-5, "atol": 2e-5}


def data(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    """float32 normal data, mean 1, std 2."""
    return jnp.asarray(np.random.default_rng(seed).normal(1.0, 2.0, size=shape), jnp.float32)


def keep_mask(shape: tuple[int, ...], period: int) -> np.ndarray:
    """Every ``period``-th element masked out: each reduction group keeps most elements."""
    return np.arange(np.prod(shape)).reshape(shape) % period != period - 1


def scale_bias(features: int | tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Per-feature ``scale`` (normal, mean 1) and ``bias`` (normal), seed 5."""
    rng = np.random.default_rng(5)
    return (jnp.asarray(rng.normal(size=features) + 1, jnp.float32),
            jnp.asarray(rng.normal(size=features), jnp.float32))


def feature_shape(shape: tuple[int, ...], feature_axes: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[a] for a in np.atleast_1d(feature_axes))
