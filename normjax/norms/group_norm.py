"""Group Normalization (Wu & He, 2018, arXiv:1803.08494).

The channels are split into ``G`` groups of ``C / G`` consecutive channels; each example is
normalized over (its spatial positions) x (the channels of one group)::

    x_g = reshape(x, [..., G, C/G, ...])
    y   = (x_g - mean(x_g)) / sqrt(var(x_g) + epsilon), reshaped back, * scale + bias

``scale`` and ``bias`` are per channel. ``num_groups=1`` is LayerNorm over all non-batch axes;
``group_size=1`` is InstanceNorm. Defaults follow flax (channels last, ``epsilon=1e-6``); pass
``feature_axes=1`` for channels-first (NCHW) input.

The derivatives are closed forms (:mod:`normjax._backend`; faster than autodiff) for a
scalar ``epsilon``, in both modes: reverse (``jax.grad``) and forward (``jax.jvp``,
``jax.jacfwd``, ``jax.linearize``), under every transform.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normjax._backend import normalize
from normjax._checks import broadcast_mask, canonicalize_axes, renamed_arguments, single_axis
from normjax._typing import Axes, AxisName

__all__ = ["group_norm", "resolve_num_groups"]


def resolve_num_groups(channels: int, num_groups: int | None, group_size: int | None, *,
                       noun: str = "channels") -> int:
    """The number of groups from exactly one of ``num_groups`` / ``group_size``, validated.

    The errors open with flax's wording (its GroupNorm raises the same ``ValueError`` for the
    same misuse; ``noun`` is ``"features"`` for flax.nnx's group-size message) and add a hint.
    """
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            "Either `num_groups` or `group_size` should be specified. If `group_size` is to "
            "be specified, pass `num_groups=None` as argument to override the default "
            f"`num_groups` value of 32. (Got num_groups={num_groups!r}, "
            f"group_size={group_size!r}.)"
        )
    for name, value in (("num_groups", num_groups), ("group_size", group_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, type(None))):
            raise TypeError(f"{name} must be an int, got {value!r}.")
    if group_size is not None:
        if group_size <= 0 or channels % group_size:
            raise ValueError(
                f"Number of {noun} ({channels}) is not multiple of the group size "
                f"({group_size}). Pick a positive divisor of {channels}."
            )
        return int(channels // group_size)
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(
            f"Number of groups ({num_groups}) does not divide the number of channels "
            f"({channels}). Pick a positive divisor of {channels}."
        )
    return int(num_groups)


def _grouped_axes(ndim: int, feature_axes: int, batch_axes: tuple[int, ...]) -> tuple[int, ...]:
    """Reduction axes of the grouped array (rank ndim + 1, group axis at feature_axes)."""
    shift = [a if a < feature_axes else a + 1 for a in batch_axes]
    return tuple(a for a in range(ndim + 1) if a not in shift and a != feature_axes)


@renamed_arguments(channel_axis="feature_axes")
def group_norm(
    x: jax.typing.ArrayLike,
    scale: jax.typing.ArrayLike | None = None,
    bias: jax.typing.ArrayLike | None = None,
    *,
    num_groups: int | None = None,
    group_size: int | None = None,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
    epsilon: float = 1e-6,
    mask: jax.typing.ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    fast_variance: bool = False,
    dtype: Any = None,
) -> jax.Array:
    """Group normalization with per-channel ``scale``/``bias``.

    Args:
      x: input, e.g. NHWC (``feature_axes=-1``) or NCHW (``feature_axes=1``).
      scale, bias: optional arrays of shape ``(C,)``.
      num_groups: number of channel groups (exactly one of this and ``group_size``).
      group_size: channels per group.
      feature_axes: the channel axis.
      batch_axes: axes that index independent examples (not reduced over); ``()`` when
        the function runs per example under ``vmap``.
      epsilon: added to the variance.
      mask: boolean, broadcastable to ``x``; only masked-in elements enter the statistics.
      axis_name, axis_index_groups: pool the statistics across a named axis too (e.g.
        spatially sharded input), weighted by the true element counts.
      fast_variance: one-pass variance (less stable).
      dtype: output dtype (default ``x.dtype``).

    """
    x = jnp.asarray(x)
    c = single_axis(feature_axes, x.ndim)
    batch = canonicalize_axes(batch_axes, x.ndim, name="batch_axes")
    if c in batch:
        raise ValueError(
            f"feature_axes={feature_axes} is also a batch axis (batch_axes={batch_axes!r})."
        )
    groups = resolve_num_groups(x.shape[c], num_groups, group_size)
    gshape = (*x.shape[:c], groups, x.shape[c] // groups, *x.shape[c + 1:])
    xg = x.reshape(gshape)
    if mask is not None:
        mask = broadcast_mask(mask, x.shape).reshape(gshape)
    gscale = None if scale is None else _grouped_param(scale, x.shape[c], groups, "scale")
    gbias = None if bias is None else _grouped_param(bias, x.shape[c], groups, "bias")
    y, _ = normalize(xg, gscale, gbias, reduction_axes=_grouped_axes(x.ndim, c, batch),
                     feature_axes=(c, c + 1), epsilon=epsilon, mask=mask, axis_name=axis_name,
                     axis_index_groups=axis_index_groups, fast_variance=fast_variance,
                     dtype=dtype)
    return y.reshape(x.shape)


def _grouped_param(p: jax.typing.ArrayLike, channels: int, groups: int, name: str) -> jax.Array:
    p = jnp.asarray(p)
    if p.shape != (channels,):
        raise ValueError(f"{name} has shape {p.shape}, expected ({channels},) (one per channel).")
    return p.reshape(groups, channels // groups)
