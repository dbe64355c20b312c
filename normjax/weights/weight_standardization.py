"""Weight Standardization (Qiao et al., 2019, arXiv:1903.10520) and Scaled Weight
Standardization (Brock, De & Smith, 2021, arXiv:2101.08692; NF-ResNets / NFNets).

A kernel is standardized per output feature over its fan-in axes (every axis but
``feature_axes``: the input axis of a Dense ``(in, out)`` kernel, the spatial and input axes
of a Conv ``(..., in, out)`` kernel)::

    WS:         W_hat = (W - mean(W)) / sqrt(var(W) + epsilon)
    Scaled WS:  W_hat = gain * gamma * (W - mean(W)) / sqrt(max(N * var(W), epsilon))

with ``N`` the fan-in (number of elements reduced over), ``mean``/``var`` (biased) over the
fan-in axes, ``gain`` a learnable per-output-feature scale (initialized to 1) and ``gamma`` a
fixed constant of the activation that follows, chosen so that ``gamma * g(z)`` has unit
variance for ``z ~ N(0, 1)`` (:func:`activation_gamma`; ``sqrt(2 / (1 - 1/pi))`` for ReLU).
With ``N * var`` the sum of squared deviations, scaled WS makes each output unit of a layer
with unit-variance inputs have unit variance at initialization (signal propagation without
normalization layers). ``max(., epsilon)`` follows the NFNets code (``epsilon = 1e-4``); the
original WS code adds ``epsilon`` to the standard deviation, normjax adds it to the variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._checks import canonicalize_axes, check_epsilon, complement_axes, feature_shape
from normjax._typing import Array, ArrayLike, Axes
from normjax.stats import moments, standardize

__all__ = ["activation_gamma", "scaled_weight_standardization", "weight_standardization"]


def _fan_in_axes(w: Array, feature_axes: Axes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if w.ndim < 2:
        raise ValueError(
            f"weight standardization needs a kernel of rank >= 2 (Dense (in, out) or Conv "
            f"(..., in, out)), got shape {w.shape}."
        )
    feat = canonicalize_axes(feature_axes, w.ndim, name="feature_axes")
    fan_in = complement_axes(feat, w.ndim)
    if not fan_in:
        raise ValueError(f"feature_axes={feature_axes!r} leaves no fan-in axis of {w.shape}.")
    return feat, fan_in


def weight_standardization(
    w: ArrayLike, *, feature_axes: Axes = -1, epsilon: float = 1e-5
) -> Array:
    """``(W - mean(W)) / sqrt(var(W) + epsilon)`` over the fan-in axes (Qiao et al. 2019).

    Args:
      w: kernel, e.g. Dense ``(in, out)`` or Conv ``(h, w, in, out)``.
      feature_axes: the output-feature axes (default the last); statistics run over the rest.
      epsilon: added to the variance.

    Returns:
      The standardized kernel, in the dtype of ``w``.
    """
    w = jnp.asarray(w)
    check_epsilon(epsilon)
    feat, fan_in = _fan_in_axes(w, feature_axes)
    stats = moments(w, fan_in, keepdims=True)
    return standardize(w, stats.mean, stats.var, epsilon=epsilon, feature_axes=feat)


def scaled_weight_standardization(
    w: ArrayLike,
    gain: ArrayLike | None = None,
    *,
    feature_axes: Axes = -1,
    gamma: float = 1.0,
    epsilon: float = 1e-4,
) -> Array:
    """``gain * gamma * (W - mean(W)) / sqrt(max(N * var(W), epsilon))`` (Brock et al. 2021).

    Args:
      w: kernel, e.g. Dense ``(in, out)`` or Conv ``(h, w, in, out)``.
      gain: optional learnable scale shaped like ``w`` at ``feature_axes`` (init: ones).
      feature_axes: the output-feature axes (default the last).
      gamma: activation constant (:func:`activation_gamma`), 1 for none.
      epsilon: lower bound of ``N * var(W)``.

    Returns:
      The scaled standardized kernel, in the dtype of ``w``.
    """
    w = jnp.asarray(w)
    check_epsilon(epsilon)
    feat, fan_in = _fan_in_axes(w, feature_axes)
    if gain is not None and jnp.shape(gain) != feature_shape(w.shape, feat):
        raise ValueError(
            f"gain has shape {jnp.shape(gain)}, expected {feature_shape(w.shape, feat)} "
            f"(w.shape {w.shape} at feature_axes {feat})."
        )
    n = math.prod(w.shape[a] for a in fan_in)
    stats = moments(w, fan_in, keepdims=True)
    sdt = stats.var.dtype
    mul = lax.rsqrt(jnp.maximum(stats.var * n, jnp.asarray(epsilon, sdt))) * jnp.asarray(
        gamma, sdt)
    if gain is not None:
        mul = mul * jnp.expand_dims(jnp.asarray(gain).astype(sdt), fan_in)
    return ((w.astype(sdt) - stats.mean) * mul).astype(w.dtype)


def activation_gamma(fn: Callable[[Array], Array], *, num_points: int = 20001) -> float:
    """``gamma = 1 / sqrt(Var[fn(z)])`` for ``z ~ N(0, 1)``, the constant of scaled WS.

    ``Var[fn(z)] = E[fn(z)^2] - E[fn(z)]^2`` is integrated against the normal density with the
    trapezoidal rule on ``num_points`` points of ``[-10, 10]`` (deterministic, and accurate to
    about 1e-7 even for kinked activations; NFNets estimates it by sampling).
    ``activation_gamma(jax.nn.relu) = sqrt(2 / (1 - 1/pi)) ~ 1.7129``.
    """
    if num_points < 3:
        raise ValueError(f"num_points must be >= 3, got {num_points}.")
    z = np.linspace(-10.0, 10.0, num_points)
    weights = np.exp(-0.5 * z * z)
    weights[[0, -1]] *= 0.5
    weights /= weights.sum()
    values = np.asarray(fn(jnp.asarray(z, jnp.float32)), np.float64)
    if values.shape != z.shape:
        raise ValueError(f"fn must be elementwise; it mapped shape {z.shape} to {values.shape}.")
    mean = np.sum(weights * values)
    var = np.sum(weights * (values - mean) ** 2)
    if not var > 0:
        raise ValueError(f"fn(z) has variance {var} for z ~ N(0, 1); gamma is undefined.")
    return float(1 / np.sqrt(var))
