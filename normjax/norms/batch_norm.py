"""Batch Normalization (Ioffe & Szegedy, 2015, arXiv:1502.03167) with explicit state.

Train mode normalizes with the statistics of the current batch and returns updated running
statistics; eval mode normalizes with the running statistics and returns the state unchanged::

    y = (x - mu_B) / sqrt(var_B + epsilon) * scale + bias          (train)
    y = (x - mean) / sqrt(var + epsilon) * scale + bias            (eval)

Running statistics follow an exponential moving average with ``decay`` the weight on the
*old* value (flax's ``momentum``; PyTorch's ``momentum`` is ``1 - decay``, see
:func:`decay_from_momentum`)::

    mean_new = decay * mean_old + (1 - decay) * mu_B
    var_new  = decay * var_old  + (1 - decay) * var_B

``decay=None`` gives the cumulative average over all batches seen (PyTorch's
``momentum=None``): ``mean_new = (t * mean_old + mu_B) / (t + 1)`` after ``t`` updates.
``debias=True`` stores the zero-debiased EMA (Kingma & Ba 2015, Sec. 3): the EMA started at 0,
divided by ``1 - decay^t``. It is kept already debiased, so eval uses the state as it is and
the initial values never leak in: the effective weight on the old value is
``decay * (1 - decay^t) / (1 - decay^(t+1))`` (0 on the first update).

In train mode the derivatives are closed forms (:mod:`normjax._backend`; faster than
autodiff) for a scalar ``epsilon``, in both modes: reverse (``jax.grad``) and forward
(``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``), under every transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._backend import normalize
from normjax._typing import Array, ArrayLike
from normjax.stats import (
    Axes,
    AxisName,
    Moments,
    canonicalize_axes,
    check_reduction,
    check_train,
    complement_axes,
    feature_shape,
    is_traced,
    poison,
    standardize,
    stats_dtype,
)

__all__ = [
    "BatchNormState",
    "batch_norm",
    "batch_norm_init",
    "decay_from_momentum",
    "update_running_stats",
]

RUNNING_VAR_OPTIONS = ("biased", "unbiased")


class BatchNormState(NamedTuple):
    """Running statistics of a BatchNorm layer.

    Attributes:
      mean: running mean, shaped like the features (float32 by default; any float dtype).
      var: running variance, shaped like the features.
      count: per feature, the number of training updates that saw data for it (int32,
        shaped like the features: a mask can leave some features without data in a batch);
        drives ``decay=None`` and ``debias=True``.
    """

    mean: Array
    var: Array
    count: Array


def _feature_shape_arg(features: Any) -> tuple[int, ...]:
    """``features`` (an int or a sequence of ints) as a shape, or a ``TypeError``/``ValueError``
    that names the argument."""
    dims = (features,) if isinstance(features, (int, np.integer)) else features
    if isinstance(features, bool) or not isinstance(dims, (tuple, list)) or any(
            isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(
            f"features must be a positive int or a sequence of positive ints (the feature "
            f"shape, e.g. 64 or (32, 32)), got {features!r}."
        )
    if any(d <= 0 for d in dims):
        raise ValueError(f"features must be positive ints, got {features!r}.")
    return tuple(int(d) for d in dims)


def check_state_dtype(dtype: Any) -> np.dtype:
    """The running statistics' dtype: any float dtype (integers would truncate every
    update)."""
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"dtype of the running statistics must be a float dtype (float32, float64, "
            f"bfloat16, float16), got {dtype}: an integer state would truncate every update."
        )
    return dtype


def batch_norm_init(features: int | Sequence[int], *, dtype: Any = jnp.float32) -> BatchNormState:
    """A fresh state: mean 0, variance 1, count 0 (the convention of flax and PyTorch).

    ``dtype`` is the running statistics' dtype; the update is computed in float32 (float64
    for a float64 state) and rounded to it (see :func:`update_running_stats`).
    """
    shape = _feature_shape_arg(features)
    dtype = check_state_dtype(dtype)
    return BatchNormState(
        mean=jnp.zeros(shape, dtype), var=jnp.ones(shape, dtype),
        count=jnp.zeros(shape, jnp.int32),
    )


def decay_from_momentum(momentum: float | None) -> float | None:
    """Converts PyTorch's ``momentum`` (weight on the *new* value) to ``decay = 1 - momentum``.

    ``None`` (PyTorch's cumulative average) maps to ``None``. flax's ``momentum`` is already
    the weight on the old value and equals ``decay``.
    """
    if momentum is None:
        return None
    if not 0 < momentum <= 1:
        raise ValueError(f"PyTorch momentum must be in (0, 1], got {momentum!r}.")
    return 1.0 - momentum


DECAY_MESSAGE = ("decay must be in [0, 1) (the weight on the old running value), got {decay}; "
                 "decay=1 would never update the statistics. Use decay=None for a cumulative "
                 "average, or decay_from_momentum() to convert a PyTorch momentum.")


def check_decay(decay: float | ArrayLike | None) -> None:
    """Validates a concrete ``decay`` (Python, NumPy or JAX). A traced one is checked when the
    program runs (:func:`update_running_stats`)."""
    if decay is None or is_traced(decay):
        return
    value = np.asarray(decay)
    if not np.all((value >= 0) & (value < 1)):
        raise ValueError(DECAY_MESSAGE.format(decay=repr(decay)))


def effective_decay(decay: float | ArrayLike | None, count: Array, debias: bool,
                    dtype: Any = jnp.float32) -> Array:
    """The weight on the old value for this update, in ``dtype`` (see the module docstring)."""
    t = count.astype(dtype)
    if decay is None:
        return t / (t + 1)
    decay = jnp.asarray(decay, dtype)
    if not debias:
        return decay
    return decay * (1 - decay**t) / (1 - decay ** (t + 1))


def update_running_stats(
    state: BatchNormState,
    batch: Moments,
    *,
    decay: float | ArrayLike | None,
    debias: bool = False,
    running_var: Literal["biased", "unbiased"] = "biased",
) -> BatchNormState:
    """One running-statistics update from batch :class:`Moments` (see the module docstring).

    The average is computed in float32 (float64 for a float64 state) and rounded to the
    state's dtype once per update, so a bfloat16/float16 state does update; with ``decay``
    near 1 it still stalls where ``(1 - decay) * |mu_B - mean|`` falls below half a unit in
    the last place of the stored value (keep a float32 state for long averages).

    Features whose batch count is 0 (all masked out) keep their old values and their
    ``count``. With ``running_var="unbiased"`` the stored variance is
    ``var_B * n / (n - 1)`` (PyTorch's convention; the batch itself is still normalized with
    the biased variance). The update is under ``stop_gradient``: no gradient flows into
    the running statistics (flax's are differentiable, but a gradient through an EMA of
    past batches has no use in training and costs memory under ``jax.grad``).

    A traced ``decay`` outside ``[0, 1)`` makes the new statistics NaN (and is a
    ``checkify`` check: see :func:`normjax.stats.poison`).
    """
    check_decay(decay)
    if running_var not in RUNNING_VAR_OPTIONS:
        raise ValueError(f"running_var must be one of {RUNNING_VAR_OPTIONS}, got {running_var!r}.")
    sdt = state.mean.dtype
    wdt = stats_dtype(sdt)
    mean_b, var_b, n = (lax.stop_gradient(jnp.asarray(a).astype(wdt)) for a in batch)
    if running_var == "unbiased":
        var_b = jnp.where(n > 1, var_b * n / jnp.maximum(n - 1, 1), var_b)
    d = effective_decay(decay, state.count, debias, wdt)
    seen = n > 0
    old_mean, old_var = state.mean.astype(wdt), state.var.astype(wdt)
    mean = jnp.where(seen, d * old_mean + (1 - d) * mean_b, old_mean)
    var = jnp.where(seen, d * old_var + (1 - d) * var_b, old_var)
    if decay is not None and is_traced(decay):
        decay = jnp.asarray(decay, wdt)
        mean, var = poison((decay >= 0) & (decay < 1), (mean, var), DECAY_MESSAGE.format(
            decay="{decay}"), decay=decay)
    count = state.count + jnp.broadcast_to(seen, jnp.shape(state.count)).astype(
        state.count.dtype)
    return BatchNormState(mean=mean.astype(sdt), var=var.astype(state.var.dtype), count=count)


def check_state(state: BatchNormState, expected: tuple[int, ...]) -> BatchNormState:
    """``state``, checked against the feature shape ``expected``; a scalar ``count`` (states
    written before counts were per feature) is broadcast to it."""
    if not isinstance(state, BatchNormState):
        raise TypeError(
            f"state must be a BatchNormState (see batch_norm_init), got {type(state).__name__}."
        )
    for name in ("mean", "var"):
        got = jnp.shape(getattr(state, name))
        if got != expected:
            raise ValueError(
                f"state.{name} has shape {got}, expected {expected} (the input shape at the "
                "feature axes, i.e. the axes not in reduction_axes)."
            )
        check_state_dtype(jnp.result_type(getattr(state, name)))
    if jnp.shape(state.count) == ():
        state = state._replace(count=jnp.broadcast_to(state.count, expected))
    return state


def batch_norm(
    x: ArrayLike,
    state: BatchNormState,
    *,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    reduction_axes: Axes,
    train: bool,
    decay: float | ArrayLike | None = 0.99,
    epsilon: float = 1e-5,
    mask: ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    debias: bool = False,
    running_var: Literal["biased", "unbiased"] = "biased",
    fast_variance: bool = False,
    dtype: Any = None,
) -> tuple[Array, BatchNormState]:
    """Batch normalization: ``y, new_state = batch_norm(x, state, ..., train=...)``.

    Args:
      x: input, e.g. ``(N, C)`` or NHWC ``(N, H, W, C)`` or NCHW.
      state: running statistics, shaped like the features (the axes *not* reduced over).
      scale, bias: optional per-feature parameters (``gamma``, ``beta``).
      reduction_axes: axes the statistics run over, e.g. ``(0,)`` for an MLP, ``(0, 1, 2)``
        for NHWC, ``(0, 2, 3)`` for NCHW. Everything else is a feature axis.
      train: keyword-only and required: batch statistics and a state update (``True``) or
        the running statistics and the state returned unchanged (``False``).
      decay: EMA weight on the old value (``None``: cumulative average).
      epsilon: added to the variance.
      mask: boolean, broadcastable to ``x``; only masked-in elements enter the statistics
        (all outputs are still normalized).
      axis_name, axis_index_groups: synchronize statistics across a named axis (``vmap``,
        ``shard_map``), weighted by the true element counts.
      debias: keep a zero-debiased EMA (see the module docstring).
      running_var: store the ``"biased"`` (flax) or ``"unbiased"`` (PyTorch) batch variance.
      fast_variance: one-pass variance (less stable; see :func:`normjax.moments`).
      dtype: output dtype (default ``x.dtype``).

    Returns:
      ``(y, new_state)``; in eval mode ``new_state is state``.

    """
    train = check_train(train)
    x = jnp.asarray(x)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    feat = complement_axes(axes, x.ndim)
    given, state = state, check_state(state, feature_shape(x.shape, feat))
    check_decay(decay)
    if not train:
        y = standardize(x, state.mean, state.var, epsilon=epsilon, scale=scale, bias=bias,
                        feature_axes=feat, dtype=dtype)
        return y, given
    check_batch(x.shape, axes, axis_name)
    y, stats = normalize(x, scale, bias, reduction_axes=axes, feature_axes=feat, epsilon=epsilon,
                         mask=mask, axis_name=axis_name, axis_index_groups=axis_index_groups,
                         fast_variance=fast_variance, dtype=dtype, keepdims=False)
    new_state = update_running_stats(state, stats, decay=decay, debias=debias,
                                     running_var=running_var)
    return y, new_state


def check_batch(shape: tuple[int, ...], axes: tuple[int, ...], axis_name: AxisName) -> None:
    check_reduction(shape, axes, axis_name, "batch_norm(train=True)")
    if not axes and axis_name is None:
        raise ValueError(
            f"batch_norm(train=True): the statistics reduce over no axes (reduction_axes=()) "
            f"of an input of shape {shape}, so every element would normalize to zero (flax "
            "does that silently). If this runs per example under jax.vmap (a per-example "
            "BatchNorm), pass axis_name= the vmap axis name so the statistics are taken "
            "across the mapped batch."
        )
    if axis_name is None and math.prod(shape[a] for a in axes) == 1:
        raise ValueError(
            f"batch_norm(train=True) on an input of shape {shape} takes statistics over a "
            f"single element per feature (reduction_axes={axes}), so every output would be "
            "zero. Use a batch larger than 1, pass axis_name= to pool statistics across a "
            "vmapped/sharded batch, or use train=False."
        )
