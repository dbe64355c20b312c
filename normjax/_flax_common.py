"""Helpers shared by the Flax wrappers (:mod:`normjax.linen` and :mod:`normjax.nnx`).

Nothing here computes statistics: these functions resolve dtypes, shapes and options the way
flax does, so that the wrappers can hand everything to normjax's pure functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax.linen import dtypes as linen_dtypes
from flax.nnx.nn import dtypes as nnx_dtypes

from normjax.norms.group_norm import resolve_num_groups
from normjax.stats import Axes, canonicalize_axes, complement_axes

__all__ = [
    "DEFAULT_PROMOTE_DTYPE",
    "check_float32_reductions",
    "dtype_like_flax",
    "first_from",
    "group_norm_batch_axes",
    "instance_feature_axes",
        "promote_like_flax",
    "resolve_groups",
]


def dtype_like_flax(dtype: Any, *arrays: Any) -> Any:
    """flax's output-dtype rule: ``dtype`` if given, else the promoted dtype of ``arrays``.

    ``None`` entries are skipped and an integer result is promoted to float32 (flax's
    ``canonicalize_dtype``). The promotion lattice is the standard one even when the
    process runs with ``jax_numpy_dtype_promotion="strict"``: only the dtype is computed
    here, no arithmetic mixes dtypes.
    """
    with jax.numpy_dtype_promotion("standard"):
        return linen_dtypes.canonicalize_dtype(*arrays, dtype=dtype)


def promote_like_flax(
    promote_dtype: Callable[..., tuple[Any, ...]], arrays: tuple[Any, ...], dtype: Any
) -> tuple[Any, ...]:
    """Applies an NNX ``promote_dtype`` function (flax's signature) to ``arrays``.

    It runs under the standard promotion lattice (it only casts; see :func:`dtype_like_flax`).
    """
    with jax.numpy_dtype_promotion("standard"):
        return promote_dtype(arrays, dtype=dtype)


DEFAULT_PROMOTE_DTYPE = nnx_dtypes.promote_dtype


def first_from(*values: Any, name: str, owner: str) -> Any:
    """The first of ``values`` that is not ``None`` (NNX's call-time-over-constructor rule)."""
    for value in values:
        if value is not None:
            return value
    raise ValueError(
        f"No `{name}` was given to {owner}: pass it to the constructor, to the call "
        f"(`layer(x, {name}=True/False)`), or set it with `model.train()` / `model.eval()`."
    )


def check_float32_reductions(force_float32_reductions: bool, layer: str) -> None:
    """normjax always accumulates statistics in (at least) float32."""
    if not force_float32_reductions:
        raise ValueError(
            f"{layer}(force_float32_reductions=False) is not supported: normjax always "
            "accumulates statistics in float32 (float64 for float64 input). Drop the argument; "
            "the output still has the dtype you ask for with `dtype=`."
        )


def resolve_groups(channels: int, num_groups: int | None, group_size: int | None,
                   noun: str = "channels") -> int:
    """The number of groups, with flax's rule that exactly one of the two is given (and
    flax's error messages: :func:`normjax.norms.group_norm.resolve_num_groups`)."""
    return resolve_num_groups(channels, num_groups, group_size, noun=noun)


def group_norm_batch_axes(ndim: int, reduction_axes: Axes | None) -> tuple[int, ...]:
    """The batch axes of GroupNorm, from flax's ``reduction_axes`` convention.

    flax reduces over ``reduction_axes`` (default: every axis but the leading batch axis),
    which must include the last (channel) axis; the axes left over index independent
    examples and become normjax's ``batch_axes``.
    """
    given = [*range(1, ndim - 1), -1] if reduction_axes is None else reduction_axes
    axes = canonicalize_axes(given, ndim, name="GroupNorm reduction_axes")
    if ndim - 1 not in axes:
        raise ValueError(
            "The reduction axes must include the final dimension as this is assumed to be "
            f"the feature axis. (GroupNorm reduction_axes={reduction_axes!r} on a "
            f"rank-{ndim} input: add -1.)"
        )
    return complement_axes(axes, ndim)




def instance_feature_axes(feature_axes: Axes, ndim: int) -> tuple[int, ...]:
    """Canonical ``feature_axes`` of InstanceNorm, which must leave the batch axis 0 alone."""
    features = canonicalize_axes(feature_axes, ndim, name="feature_axes")
    if 0 in features:
        raise ValueError(
            "The channel axes cannot include the leading dimension as this is assumed to be "
            f"the batch axis. (InstanceNorm feature_axes={feature_axes!r}: use the channel "
            "axis, e.g. -1 for NHWC or 1 for NCHW.)"
        )
    return features
