"""Axes, shapes and argument checks shared by the statistics core and the norms.

Re-exported from :mod:`normjax.stats`; every check raises an error that says what was wrong and
how to fix it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
Axes = int | Sequence[int]
AxisName = Hashable | None

__all__ = ["broadcast_mask", "canonicalize_axes", "check_epsilon", "check_reduction",
           "complement_axes", "feature_shape"]


def canonicalize_axes(axes: Axes, ndim: int, *, name: str = "axes") -> tuple[int, ...]:
    """Returns ``axes`` as a sorted tuple of non-negative ints, validated against ``ndim``.

    Raises:
      TypeError: an axis is not an int.
      ValueError: an axis is out of range for rank ``ndim`` or two entries name the same axis.
    """
    given = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    out = []
    for axis in given:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{name} must be ints, got {axis!r} in {name}={axes!r}.")
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"{name}={axes!r} contains axis {axis}, which is out of range for an input "
                f"of rank {ndim} (valid axes: {-ndim}..{ndim - 1})."
            )
        out.append(int(axis) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(
            f"{name}={axes!r} names the same axis more than once for an input of rank {ndim} "
            f"(as non-negative axes: {tuple(out)}); list each axis once."
        )
    return tuple(sorted(out))


def complement_axes(axes: Sequence[int], ndim: int) -> tuple[int, ...]:
    """The axes of a rank-``ndim`` array that are not in (canonical) ``axes``."""
    return tuple(i for i in range(ndim) if i not in axes)


def feature_shape(shape: Sequence[int], feature_axes: Sequence[int]) -> tuple[int, ...]:
    """Shape of a per-feature parameter: ``shape`` restricted to (canonical) ``feature_axes``."""
    return tuple(shape[a] for a in feature_axes)


def broadcast_mask(mask: ArrayLike, shape: tuple[int, ...]) -> Array:
    """``mask`` as a boolean array of exactly ``shape``; raises a clear error if it can't be."""
    mask = jnp.asarray(mask)
    try:
        np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to the input shape {shape}; "
            "give a boolean mask broadcastable to the input (e.g. shape (batch, 1) for rows)."
        ) from None
    if np.broadcast_shapes(mask.shape, shape) != shape:
        raise ValueError(
            f"mask of shape {mask.shape} would enlarge the input shape {shape}; "
            "the mask must broadcast to the input's shape."
        )
    return jnp.broadcast_to(mask.astype(bool), shape)


def check_reduction(
    shape: tuple[int, ...], axes: tuple[int, ...], axis_name: AxisName, what: str
) -> None:
    if not axes and axis_name is None:
        raise ValueError(
            f"{what}: the statistics reduce over no axes (reduction_axes=()) of an input of "
            f"shape {shape}, so every element would normalize to zero. If this runs per "
            "example under jax.vmap (e.g. a per-example BatchNorm), pass axis_name= the vmap "
            "axis name so the statistics are taken across the mapped batch."
        )
    if any(shape[a] == 0 for a in axes):
        raise ValueError(
            f"{what}: the reduction axes {axes} of an input of shape {shape} hold no "
            "elements; statistics of an empty batch are undefined."
        )


def check_epsilon(epsilon: float | ArrayLike) -> None:
    """Raises if a concrete ``epsilon`` (Python, NumPy or JAX) is negative or not finite."""
    if isinstance(epsilon, jax.core.Tracer):
        return
    value = np.asarray(epsilon)
    if not np.all(np.isfinite(value) & (value >= 0)):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
