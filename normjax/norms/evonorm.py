"""EvoNorm-B0 and EvoNorm-S0 (Liu, Brock, Simonyan & Le, 2020, "Evolving Normalization-
Activation Layers", arXiv:2004.02967, Table 1).

Normalization and activation fused into one layer, found by architecture search. With
``s^2_{axes}(x)`` the (biased) variance over ``axes`` and per-channel ``scale`` (gamma),
``bias`` (beta) and ``v`` (v_1)::

    EvoNorm-B0:  y = x / max(sqrt(s^2_{b,w,h}(x) + eps), v * x + sqrt(s^2_{w,h}(x) + eps))
                     * scale + bias
    EvoNorm-S0:  y = x * sigmoid(v * x) / sqrt(s^2_{w,h,c/g}(x) + eps) * scale + bias

B0 mixes the *batch* variance ``s^2_{b,w,h}`` (over the batch and spatial axes, per channel;
replaced by its running average in eval mode, so B0 carries a
:class:`~normjax.BatchNormState` like BatchNorm) with the *instance* variance ``s^2_{w,h}``
(per example and channel). S0 is batch-independent: ``s^2_{w,h,c/g}`` is the GroupNorm
variance over the spatial axes and the channels of each of ``g`` groups. Neither subtracts a
mean from ``x``. ``epsilon`` is added inside each square root, as in the reference
implementation (default ``1e-5``); the paper initializes ``scale = v = 1``, ``bias = 0``.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from normjax._checks import channel_axes, check_epsilon, check_train, renamed_arguments
from normjax._numerics import stats_dtype
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.norms.group_norm import resolve_num_groups
from normjax.running import BatchNormState, check_decay, check_state, update_running_stats
from normjax.stats import moments

__all__ = ["evonorm_b0", "evonorm_s0"]


def _per_channel(p: ArrayLike | None, x: Array, c: int, name: str, dt: Any) -> Array | None:
    """A ``(C,)`` parameter reshaped to broadcast along channel axis ``c`` of ``x``."""
    if p is None:
        return None
    p = jnp.asarray(p)
    if p.shape != (x.shape[c],):
        raise ValueError(f"{name} has shape {p.shape}, expected ({x.shape[c]},) (one per "
                         f"channel of axis {c} of the input of shape {x.shape}).")
    shape = [1] * x.ndim
    shape[c] = x.shape[c]
    return p.reshape(shape).astype(dt)


def _affine(y: Array, x: Array, c: int, scale: Any, bias: Any, dtype: Any) -> Array:
    scale = _per_channel(scale, x, c, "scale", y.dtype)
    bias = _per_channel(bias, x, c, "bias", y.dtype)
    y = y if scale is None else y * scale
    y = y if bias is None else y + bias
    return y.astype(x.dtype if dtype is None else dtype)


@renamed_arguments(channel_axis="feature_axes")
def evonorm_b0(
    x: ArrayLike,
    state: BatchNormState,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    v: ArrayLike,
    train: bool,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
    decay: float | ArrayLike | None = 0.99,
    epsilon: float = 1e-5,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    running_var: Literal["biased", "unbiased"] = "biased",
    dtype: Any = None,
) -> tuple[Array, BatchNormState]:
    """EvoNorm-B0: ``y, new_state = evonorm_b0(x, state, v=v, train=...)`` (module docstring).

    Args:
      x: input with at least one spatial axis, e.g. NHWC or NCHW (``feature_axes=1``).
      state: running statistics of the batch variance, shape ``(C,)``.
      scale, bias: optional per-channel ``gamma``, ``beta``; ``v``: per-channel ``v_1``.
      train: keyword-only: batch variance and a state update, or the running variance.
      feature_axes, batch_axes: the channel axis and the example axes.
      decay, running_var: running-statistics update, as in :func:`normjax.batch_norm`.
      epsilon: added inside both square roots.
      axis_name, axis_index_groups: synchronize the batch variance across a named axis.
      dtype: output dtype (default ``x.dtype``).
    """
    train = check_train(train)
    check_decay(decay)
    check_epsilon(epsilon)
    x = jnp.asarray(x)
    c, batch, spatial = channel_axes(x.ndim, feature_axes, batch_axes)
    if not spatial:
        raise ValueError(f"evonorm_b0 needs a spatial axis for the instance variance; got an "
                         f"input of shape {x.shape} with feature_axes={c}, batch_axes={batch}.")
    state = check_state(state, (x.shape[c],))
    dt = stats_dtype(x.dtype)
    eps = jnp.asarray(epsilon, dt)
    if train:
        stats = moments(x, tuple(sorted(batch + spatial)), axis_name=axis_name,
                        axis_index_groups=axis_index_groups)
        new_state = update_running_stats(state, stats, decay=decay, running_var=running_var)
        batch_var = stats.var
    else:
        new_state, batch_var = state, state.var
    left = jnp.sqrt(_per_channel(batch_var, x, c, "state.var", dt) + eps)
    xf = x.astype(dt)
    right = _per_channel(v, x, c, "v", dt) * xf + jnp.sqrt(
        moments(x, spatial, keepdims=True).var + eps)
    return _affine(xf / jnp.maximum(left, right), x, c, scale, bias, dtype), new_state


@renamed_arguments(channel_axis="feature_axes")
def evonorm_s0(
    x: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    v: ArrayLike,
    num_groups: int | None = None,
    group_size: int | None = None,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
    epsilon: float = 1e-5,
    dtype: Any = None,
) -> Array:
    """EvoNorm-S0: ``x * sigmoid(v * x) / group_std(x) * scale + bias`` (module docstring).

    Args:
      x: input, e.g. NHWC, NCHW (``feature_axes=1``) or ``(N, C)``.
      scale, bias: optional per-channel ``gamma``, ``beta``; ``v``: per-channel ``v_1``.
      num_groups, group_size: exactly one; the channel groups of the variance.
      feature_axes, batch_axes: the channel axis and the example axes.
      epsilon: added to the group variance.
      dtype: output dtype (default ``x.dtype``).
    """
    check_epsilon(epsilon)
    x = jnp.asarray(x)
    c, _, spatial = channel_axes(x.ndim, feature_axes, batch_axes)
    groups = resolve_num_groups(x.shape[c], num_groups, group_size)
    gshape = (*x.shape[:c], groups, x.shape[c] // groups, *x.shape[c + 1:])
    gaxes = (*(a if a < c else a + 1 for a in spatial), c + 1)
    var = moments(x.reshape(gshape), gaxes, keepdims=True).var
    dt = var.dtype
    inv_std = jnp.broadcast_to(jax.lax.rsqrt(var + jnp.asarray(epsilon, dt)), gshape)
    xf = x.astype(dt)
    y = xf * jax.nn.sigmoid(_per_channel(v, x, c, "v", dt) * xf) * inv_std.reshape(x.shape)
    return _affine(y, x, c, scale, bias, dtype)
