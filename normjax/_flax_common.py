"""Helpers shared by the Flax wrappers (:mod:`normjax.linen` and :mod:`normjax.nnx`).

Nothing here computes statistics: these functions resolve dtypes, shapes and options the way
flax does, so that the wrappers can hand everything to normjax's pure functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax.linen import dtypes as linen_dtypes
from flax.nnx.nn import dtypes as nnx_dtypes

from normjax._checks import canonicalize_axes, complement_axes
from normjax._typing import Axes
from normjax.norms.group_norm import resolve_num_groups

__all__ = [
    "DEFAULT_PROMOTE_DTYPE",
    "check_float32_reductions",
    "check_gain",
    "check_n_steps",
    "check_one_of_groups",
    "dtype_like_flax",
    "first_from",
    "group_norm_batch_axes",
    "instance_feature_axes",
    "non_matrix_error",
    "promote_like_flax",
    "resolve_num_groups",
    "ws_epsilon",
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


def check_n_steps(n_steps: Any) -> None:
    """SpectralNorm's power-iteration steps per call: an int (below 1, flax's rule: the weights
    pass through unnormalized)."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise TypeError(
            f"SpectralNorm(n_steps={n_steps!r}): n_steps must be an int (power-iteration "
            "steps per call; below 1 the weights pass through unnormalized, as in flax)."
        )


def non_matrix_error(flax_message: str, name: Any, shape: tuple[int, ...]) -> ValueError:
    """flax's error for a >2-D parameter under ``error_on_non_matrix=True``, then the fix."""
    return ValueError(
        f"{flax_message} (parameter {name} of shape {shape}; set error_on_non_matrix=False "
        "to normalize it as a (-1, out) matrix, as flax does by default)."
    )


def check_gain(scaled: bool, use_gain: bool | None) -> bool:
    """Resolves ``use_gain`` (default: ``scaled``); a gain is part of scaled WS only."""
    if use_gain and not scaled:
        raise ValueError(
            "WeightStandardization(use_gain=True) needs scaled=True: the learnable gain belongs "
            "to scaled weight standardization (Brock et al. 2021); plain WS (Qiao et al. 2019) "
            "relies on the normalization layer that follows for its scale."
        )
    return scaled if use_gain is None else use_gain


def ws_epsilon(epsilon: float | None) -> dict[str, float]:
    """``epsilon`` as a keyword argument, or none so that the pure function's default holds."""
    return {} if epsilon is None else {"epsilon": epsilon}


def check_one_of_groups(num_groups: int | None, group_size: int | None) -> None:
    """EvoNorm-S0 takes exactly one of ``num_groups`` and ``group_size`` (flax's rule)."""
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            "EvoNormS0 needs exactly one of num_groups and group_size, got "
            f"num_groups={num_groups!r}, group_size={group_size!r}. To give group_size, pass "
            "num_groups=None as well (num_groups defaults to 32, as in the paper)."
        )
