"""Batch Normalization (Ioffe & Szegedy, 2015, arXiv:1502.03167) with explicit state.

Train mode normalizes with the statistics of the current batch and returns updated running
statistics; eval mode normalizes with the running statistics and returns the state unchanged::

    y = (x - mu_B) / sqrt(var_B + epsilon) * scale + bias          (train)
    y = (x - mean) / sqrt(var + epsilon) * scale + bias            (eval)

Running statistics follow the exponential moving average of :mod:`normjax.running`
(``decay`` the weight on the old value, flax's ``momentum``; ``decay=None`` the cumulative
average; ``debias=True`` the zero-debiased EMA).

In train mode the derivatives are closed forms (:mod:`normjax._backend`; faster than
autodiff) for a scalar ``epsilon``, in both modes: reverse (``jax.grad``) and forward
(``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``), under every transform.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax.numpy as jnp

from normjax._backend import normalize
from normjax._checks import (
    canonicalize_axes,
    check_reduction,
    check_train,
    complement_axes,
    feature_shape,
)
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.running import (
    BatchNormState,
    check_decay,
    check_state,
    update_running_stats,
)
from normjax.stats import standardize

__all__ = ["batch_norm", "check_batch"]


def batch_norm(
    x: ArrayLike,
    state: BatchNormState,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
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
