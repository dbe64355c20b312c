"""Switchable Normalization (Luo, Ren, Peng, Zhang & Li, 2018, arXiv:1806.10779).

The layer learns how much to use of InstanceNorm, LayerNorm and BatchNorm statistics: the
mean and the variance are each a softmax-weighted mix of the three, with separate weights::

    k in (IN, LN, BN):   IN over the spatial axes (per example and channel),
                         LN over the spatial and channel axes (per example),
                         BN over the batch and spatial axes (per channel)
    w  = softmax(mean_logits),  w' = softmax(var_logits)            (3 logits each)
    mu = sum_k w_k mu_k,        sigma^2 = sum_k w'_k sigma_k^2
    y  = (x - mu) / sqrt(sigma^2 + epsilon) * scale + bias

The BatchNorm statistics keep running averages (a :class:`~normjax.BatchNormState`, updated as
in :func:`normjax.batch_norm`); eval mode uses them for the BN term, while the IN and LN terms
are always computed from the input. With one-hot weights the layer is exactly IN, LN or BN.
The logits are ordered ``(IN, LN, BN)`` (:data:`SWITCHABLE_ORDER`) and initialized to zeros
(equal weights) in the paper.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from normjax._checks import channel_axes, check_train, renamed_arguments
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.running import BatchNormState, check_decay, check_state, update_running_stats
from normjax.stats import moments, standardize

__all__ = ["SWITCHABLE_ORDER", "switchable_norm"]

SWITCHABLE_ORDER = ("instance", "layer", "batch")


def _axes(ndim: int, feature_axes: int, batch_axes: Axes) -> tuple[int, tuple, tuple]:
    c, batch, spatial = channel_axes(ndim, feature_axes, batch_axes)
    if not spatial:
        raise ValueError(
            "switchable_norm needs at least one spatial axis (InstanceNorm statistics run over "
            f"them), got an input of rank {ndim} with feature_axes={c} and batch_axes={batch}; "
            "for (N, C) input add a spatial axis of size > 1 or use layer/batch norm."
        )
    return c, batch, spatial


def _weights(logits: ArrayLike, name: str) -> Array:
    logits = jnp.asarray(logits)
    if logits.shape != (3,):
        raise ValueError(
            f"{name} has shape {logits.shape}, expected (3,): one logit per normalizer in the "
            f"order {SWITCHABLE_ORDER}."
        )
    return jax.nn.softmax(logits.astype(jnp.float32))


@renamed_arguments(channel_axis="feature_axes")
def switchable_norm(
    x: ArrayLike,
    state: BatchNormState,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    mean_logits: ArrayLike,
    var_logits: ArrayLike,
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
    """Switchable normalization: ``y, new_state = switchable_norm(x, state, ...)``.

    Args:
      x: input with at least one spatial axis, e.g. NHWC or NCHW (``feature_axes=1``).
      state: running statistics of the BN term, shape ``(C,)``.
      scale, bias: optional per-channel parameters of shape ``(C,)``.
      mean_logits, var_logits: ``(3,)`` logits of the mean and variance mixtures, ordered
        ``(IN, LN, BN)``.
      train: keyword-only: batch statistics for the BN term and a state update (``True``), or
        the running statistics and the state unchanged (``False``).
      feature_axes: the channel axis.
      batch_axes: example axes (``()`` under a per-example ``vmap`` with ``axis_name``).
      decay: EMA weight on the old value of the BN running statistics.
      epsilon: added to the mixed variance.
      axis_name, axis_index_groups: synchronize the BN statistics across a named axis.
      running_var: ``"biased"`` or ``"unbiased"`` stored BN variance.
      dtype: output dtype (default ``x.dtype``).

    Returns:
      ``(y, new_state)``; in eval mode ``new_state is state``.
    """
    train = check_train(train)
    check_decay(decay)
    x = jnp.asarray(x)
    c, batch, spatial = _axes(x.ndim, feature_axes, batch_axes)
    state = check_state(state, (x.shape[c],))
    wm, wv = _weights(mean_logits, "mean_logits"), _weights(var_logits, "var_logits")
    inst = moments(x, spatial, keepdims=True)
    layer = moments(x, (*spatial, c), keepdims=True)
    bshape = [1] * x.ndim
    bshape[c] = x.shape[c]
    if train:
        if not batch and axis_name is None:
            raise ValueError(
                "switchable_norm(train=True) with batch_axes=() has no batch to take the BN "
                "statistics over; pass axis_name= the vmap/shard_map axis of the batch."
            )
        stats = moments(x, tuple(sorted(batch + spatial)), axis_name=axis_name,
                        axis_index_groups=axis_index_groups)
        new_state = update_running_stats(state, stats, decay=decay, running_var=running_var)
        bn_mean, bn_var = stats.mean, stats.var
    else:
        new_state, bn_mean, bn_var = state, state.mean, state.var
    dt = inst.mean.dtype
    wm, wv = wm.astype(dt), wv.astype(dt)
    bn_mean, bn_var = (a.astype(dt).reshape(bshape) for a in (bn_mean, bn_var))
    mean = wm[0] * inst.mean + wm[1] * layer.mean + wm[2] * bn_mean
    var = wv[0] * inst.var + wv[1] * layer.var + wv[2] * bn_var
    y = standardize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias, feature_axes=c,
                    dtype=dtype)
    return y, new_state
