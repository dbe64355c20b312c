"""The static description of one normalization, and the shape helpers every path shares.

A normalization computes ``y = (x - mu) * rsqrt(var + epsilon) * gamma + beta`` with
``(mu, var)`` the moments of ``x`` over ``reduction_axes`` (and across ``axis_name``);
:class:`Config` holds everything about it that is fixed at trace time.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from normjax._checks import feature_shape
from normjax._typing import Array, ArrayLike

__all__ = ["Config", "param_view", "sum_to_shape"]


class Config(NamedTuple):
    """Static description of one normalization (hashable: a primitive parameter)."""

    reduction_axes: tuple[int, ...]
    feature_axes: tuple[int, ...]
    center: bool
    fast_variance: bool
    axis_name: Hashable | None
    axis_index_groups: tuple[tuple[int, ...], ...] | None
    dtype: np.dtype
    # Whether the CPU kernels may serve (the switch when the norm was called, and no context
    # they cannot serve: see normjax._backend.routing), so that the backward, traced later,
    # takes the same decision.
    native: bool = True
    # Whether the norm is compiled for the CPU (normjax._platform.cpu_target() when it was
    # called): picks the formulation, and keeps traces for different platforms apart.
    cpu: bool = True

    @property
    def first_axes(self) -> tuple[int, ...]:
        """Reduction axes that are not feature axes: reduced first, on the full-size array."""
        return tuple(a for a in self.reduction_axes if a not in self.feature_axes)

    @property
    def group_axes(self) -> tuple[int, ...]:
        """Reduction axes that are also feature axes (GroupNorm's channels-in-group, LN)."""
        return tuple(a for a in self.reduction_axes if a in self.feature_axes)

    def batch_axes(self, ndim: int) -> tuple[int, ...]:
        """Axes neither reduced nor feature: parameter gradients sum over them too."""
        used = set(self.reduction_axes) | set(self.feature_axes)
        return tuple(a for a in range(ndim) if a not in used)

    def with_leading_axis(self) -> Config:
        """The same normalization on inputs with one more leading (sample) axis: what a
        ``vmap`` of it computes."""
        shift = lambda axes: tuple(a + 1 for a in axes)  # noqa: E731
        return self._replace(reduction_axes=shift(self.reduction_axes),
                             feature_axes=shift(self.feature_axes))


def param_view(p: ArrayLike, shape: tuple[int, ...], feat: tuple[int, ...], name: str) -> Array:
    """``p`` reshaped to broadcast against ``shape`` (feature shape or a broadcastable rank)."""
    p = jnp.asarray(p)
    expected = feature_shape(shape, feat)
    if p.shape == expected:
        return p.reshape(tuple(shape[a] if a in feat else 1 for a in range(len(shape))))
    if p.ndim == len(shape) and all(d in (1, s) for d, s in zip(p.shape, shape, strict=True)):
        return p
    raise ValueError(
        f"{name} has shape {p.shape}, expected {expected} (the input shape {shape} at "
        f"feature_axes {feat}) or a rank-{len(shape)} shape that broadcasts to the input."
    )


def sum_to_shape(a: Array, shape: Sequence[int], dtype: Any) -> Array:
    """Sums ``a`` (of rank ``len(shape)`` or more, or broadcast-compatible) down to ``shape``:
    the cotangent of a value broadcast from ``shape``."""
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and a.shape[lead + i] != 1)
    out = jnp.sum(a, axes) if axes else a
    return out.reshape(tuple(shape)).astype(dtype)
