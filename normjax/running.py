"""BatchNorm's running statistics: the state, the exponential-moving-average rules, checks.

Written once here for every normalization with running statistics (BatchNorm and its
variants, Decorrelated BatchNorm)::

    mean_new = d * mean_old + (1 - d) * mu_B        (d = effective_decay(decay, count, debias))
    var_new  = d * var_old  + (1 - d) * var_B

``decay`` is the weight on the *old* value (flax's ``momentum``; PyTorch's ``momentum`` is
``1 - decay``, :func:`decay_from_momentum`). ``decay=None`` gives the cumulative average over
the updates seen (``d = t / (t + 1)`` after ``t`` updates); ``debias=True`` keeps the
zero-debiased EMA (Kingma & Ba 2015, Sec. 3): ``d = decay (1 - decay^t) / (1 - decay^(t+1))``.
The arithmetic runs in float32 (float64 for a float64 state) and is rounded to the state's
dtype once per update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._checks import is_traced, poison
from normjax._numerics import Moments, stats_dtype
from normjax._typing import Array, ArrayLike

__all__ = [
    "BatchNormState",
    "batch_norm_init",
    "check_decay",
    "check_state",
    "decay_from_momentum",
    "effective_decay",
    "unbiased_var",
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


def unbiased_var(var: Array, n: Array) -> Array:
    """Bessel's correction ``var * n / (n - 1)`` (PyTorch's running variance) where ``n > 1``;
    ``var`` unchanged elsewhere."""
    return jnp.where(n > 1, var * n / jnp.maximum(n - 1, 1), var)


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
    ``checkify`` check: see :func:`normjax._checks.poison`).
    """
    check_decay(decay)
    if running_var not in RUNNING_VAR_OPTIONS:
        raise ValueError(f"running_var must be one of {RUNNING_VAR_OPTIONS}, got {running_var!r}.")
    sdt = state.mean.dtype
    wdt = stats_dtype(sdt)
    mean_b, var_b, n = (lax.stop_gradient(jnp.asarray(a).astype(wdt)) for a in batch)
    if running_var == "unbiased":
        var_b = unbiased_var(var_b, n)
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
