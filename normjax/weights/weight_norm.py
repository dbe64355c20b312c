"""Weight Normalization (Salimans & Kingma, 2016, arXiv:1602.07868).

A weight is reparameterized by a direction ``v`` and a per-output-feature length ``g``::

    w = g * v / ||v||,     ||v|| = sqrt(sum over the non-feature axes of v^2 + epsilon)

``feature_axes`` are the axes that carry ``g`` (default the last: the output features of a
Dense ``(in, out)`` or Conv ``(..., in, out)`` kernel); the norm runs over all other axes.
``epsilon`` (default 1e-12, as in flax) keeps ``w`` and its gradient finite at ``v = 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from normjax._checks import canonicalize_axes, check_epsilon, complement_axes, feature_shape
from normjax._numerics import stats_dtype
from normjax._typing import Axes

__all__ = ["weight_norm", "weight_norm_init"]


def _norm_axes(ndim: int, feature_axes: Axes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    feat = canonicalize_axes(feature_axes, ndim, name="feature_axes")
    return feat, complement_axes(feat, ndim)


def _inv_norm(v: jax.Array, axes: tuple[int, ...], epsilon: float) -> jax.Array:
    vf = v.astype(stats_dtype(v.dtype))
    return lax.rsqrt(jnp.sum(vf * vf, axes, keepdims=True) + epsilon)


def weight_norm(
    v: jax.typing.ArrayLike,
    g: jax.typing.ArrayLike | None = None,
    *,
    feature_axes: Axes = -1,
    epsilon: float = 1e-12,
) -> jax.Array:
    """``w = g * v / ||v||`` (``g=None``: unit-norm directions).

    Args:
      v: direction parameter (any shape).
      g: length, shaped like ``v`` at ``feature_axes``.
      feature_axes: axes that carry ``g``; the norm runs over the others.
      epsilon: added to the squared norm.
    """
    v = jnp.asarray(v)
    check_epsilon(epsilon)
    feat, axes = _norm_axes(v.ndim, feature_axes)
    w = v.astype(stats_dtype(v.dtype)) * _inv_norm(v, axes, epsilon)
    if g is not None:
        g = jnp.asarray(g)
        expected = feature_shape(v.shape, feat)
        if g.shape != expected:
            raise ValueError(
                f"g has shape {g.shape}, expected {expected} (v.shape {v.shape} at "
                f"feature_axes {feat})."
            )
        w = w * jnp.expand_dims(g, axes).astype(w.dtype)
    return w.astype(v.dtype)


def weight_norm_init(
    w: jax.typing.ArrayLike, *, feature_axes: Axes = -1
) -> tuple[jax.Array, jax.Array]:
    """Splits an existing weight into ``(v, g)`` with ``weight_norm(v, g) == w``.

    ``v = w`` and ``g = ||w||`` over the non-feature axes.
    """
    w = jnp.asarray(w)
    _, axes = _norm_axes(w.ndim, feature_axes)
    wf = w.astype(stats_dtype(w.dtype))
    g = jnp.sqrt(jnp.sum(wf * wf, axes))
    return w, g.astype(w.dtype)
