"""Batch Renormalization (Ioffe, 2017, arXiv:1702.03275).

Train mode normalizes with the batch statistics and then corrects the result towards what
the running statistics would give, with the correction clipped and treated as a constant::

    sigma_B = sqrt(var_B + epsilon),      sigma = sqrt(var + epsilon)    (running var)
    r = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))
    d = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))          (running mean mu)
    y = ((x - mu_B) / sigma_B * r + d) * scale + bias                    (train)
    y = (x - mu) / sigma * scale + bias                                  (eval)

When ``r`` and ``d`` are not clipped, the train-mode output equals the eval-mode output, so
the network trains on what it will compute at inference, while gradients still flow through
the batch statistics. ``r_max = 1, d_max = 0`` gives ``r = 1, d = 0``: plain BatchNorm, bit for
bit. The train-mode output is BatchNorm's normalization with ``scale' = r * scale`` and
``bias' = d * scale + bias``, computed by the same fused kernel with the closed-form backward.

The paper (Algorithm 1) starts with ``r_max = 1, d_max = 0`` and relaxes them gradually;
:func:`renorm_clipping_schedule` gives that warm-up. ``r_max`` and ``d_max`` may be traced
scalars, so the schedule can run inside a jitted train step.

Running statistics are updated as in :func:`normjax.batch_norm` (``decay`` the weight on the old
value), *after* ``r`` and ``d`` were computed from the old ones. The paper's EMA runs on the
standard deviation ``sigma``; normjax keeps the variance, as BatchNorm does, so the same state
serves both layers.
"""

from __future__ import annotations

from typing import Any, Literal

import jax.numpy as jnp
from jax import lax

from normjax._backend import normalize
from normjax._checks import (
    canonicalize_axes,
    check_epsilon,
    check_train,
    complement_axes,
    feature_shape,
)
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.norms.batch_norm import check_batch
from normjax.running import BatchNormState, check_decay, check_state, update_running_stats
from normjax.stats import moments, standardize

__all__ = ["batch_renorm", "renorm_clipping_schedule"]


def _check_clipping(r_max: Any, d_max: Any) -> None:
    if isinstance(r_max, (int, float)) and not r_max >= 1:
        raise ValueError(
            f"r_max must be >= 1 (r is clipped to [1/r_max, r_max]), got {r_max!r}; "
            "r_max=1 disables the scale correction."
        )
    if isinstance(d_max, (int, float)) and not d_max >= 0:
        raise ValueError(
            f"d_max must be >= 0 (d is clipped to [-d_max, d_max]), got {d_max!r}; "
            "d_max=0 disables the shift correction."
        )


def _check_param(p: ArrayLike | None, expected: tuple[int, ...], name: str) -> None:
    if p is not None and jnp.shape(p) != expected:
        raise ValueError(
            f"{name} has shape {jnp.shape(p)}, expected {expected} (the input shape at the "
            "feature axes, i.e. the axes not in reduction_axes)."
        )


def renorm_clipping_schedule(
    step: ArrayLike,
    *,
    r_max: float = 3.0,
    d_max: float = 5.0,
    warmup_steps: int = 5000,
    r_max_steps: int = 40000,
    d_max_steps: int = 25000,
) -> tuple[Array, Array]:
    """The paper's warm-up of the clipping bounds: ``(r_max(step), d_max(step))``.

    ``r_max = 1, d_max = 0`` (plain BatchNorm) for the first ``warmup_steps`` steps, then both
    grow linearly to reach ``r_max`` at ``r_max_steps`` and ``d_max`` at ``d_max_steps``, and stay
    there (the paper: 5k, 40k and 25k steps for its Inception models; scale them with the
    length of your run)::

        r_max(t) = 1 + (r_max - 1) * clip((t - warmup) / (r_max_steps - warmup), 0, 1)
        d_max(t) =          d_max  * clip((t - warmup) / (d_max_steps - warmup), 0, 1)

    ``step`` may be traced. Returns float32 scalars.
    """
    _check_clipping(r_max, d_max)
    if warmup_steps < 0 or r_max_steps <= warmup_steps or d_max_steps <= warmup_steps:
        raise ValueError(
            "need 0 <= warmup_steps < r_max_steps and warmup_steps < d_max_steps, got "
            f"warmup_steps={warmup_steps}, r_max_steps={r_max_steps}, "
            f"d_max_steps={d_max_steps}."
        )
    t = jnp.asarray(step, jnp.float32) - warmup_steps
    r_frac = jnp.clip(t / (r_max_steps - warmup_steps), 0.0, 1.0)
    d_frac = jnp.clip(t / (d_max_steps - warmup_steps), 0.0, 1.0)
    return 1.0 + (r_max - 1.0) * r_frac, d_max * d_frac


def _corrections(
    batch_mean: Array, batch_var: Array, state: BatchNormState, epsilon: float,
    r_max: Any, d_max: Any,
) -> tuple[Array, Array]:
    """``r`` and ``d`` of the module docstring, under ``stop_gradient``."""
    dt = batch_mean.dtype
    r_max = jnp.asarray(r_max, dt)
    d_max = jnp.asarray(d_max, dt)
    inv_sigma = lax.rsqrt(state.var.astype(dt) + jnp.asarray(epsilon, dt))
    sigma_b = jnp.sqrt(batch_var + jnp.asarray(epsilon, dt))
    r = jnp.clip(sigma_b * inv_sigma, 1 / r_max, r_max)
    d = jnp.clip((batch_mean - state.mean.astype(dt)) * inv_sigma, -d_max, d_max)
    return lax.stop_gradient(r), lax.stop_gradient(d)


def batch_renorm(
    x: ArrayLike,
    state: BatchNormState,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    reduction_axes: Axes,
    train: bool,
    r_max: float | ArrayLike = 3.0,
    d_max: float | ArrayLike = 5.0,
    decay: float | ArrayLike | None = 0.99,
    epsilon: float = 1e-5,
    mask: ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    debias: bool = False,
    running_var: Literal["biased", "unbiased"] = "biased",
    dtype: Any = None,
) -> tuple[Array, BatchNormState]:
    """Batch renormalization: ``y, new_state = batch_renorm(x, state, ..., train=...)``.

    Args:
      x: input, e.g. ``(N, C)`` or NHWC.
      state: running statistics (:func:`normjax.batch_norm_init`), shaped like the features.
      scale, bias: optional per-feature parameters.
      reduction_axes: axes the statistics run over, as in :func:`normjax.batch_norm`.
      train: keyword-only: batch statistics with the ``r``/``d`` correction and a state update
        (``True``), or the running statistics and the state unchanged (``False``).
      r_max: bound of ``r`` (``>= 1``); may be traced (see :func:`renorm_clipping_schedule`).
      d_max: bound of ``|d|`` (``>= 0``); may be traced.
      decay: EMA weight on the old value (``None``: cumulative average).
      epsilon: added to the batch and the running variance.
      mask, axis_name, axis_index_groups, debias, running_var, dtype: as in
        :func:`normjax.batch_norm`.

    Returns:
      ``(y, new_state)``; in eval mode ``new_state is state``.
    """
    train = check_train(train)
    check_epsilon(epsilon)
    _check_clipping(r_max, d_max)
    check_decay(decay)
    x = jnp.asarray(x)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    feat = complement_axes(axes, x.ndim)
    features = feature_shape(x.shape, feat)
    state = check_state(state, features)
    _check_param(scale, features, "scale")
    _check_param(bias, features, "bias")
    if not train:
        y = standardize(x, state.mean, state.var, epsilon=epsilon, scale=scale, bias=bias,
                        feature_axes=feat, dtype=dtype)
        return y, state
    check_batch(x.shape, axes, axis_name)
    stats = moments(x, axes, mask=mask, axis_name=axis_name, axis_index_groups=axis_index_groups)
    r, d = _corrections(stats.mean, stats.var, state, epsilon, r_max, d_max)
    # ((x - mu_B) / sigma_B * r + d) * scale + bias  ==  standardize with scale' = r * scale
    # and bias' = d * scale + bias; with r = 1, d = 0 this is BatchNorm's arithmetic exactly.
    fscale = r if scale is None else r * jnp.asarray(scale, r.dtype)
    fbias = d if scale is None else d * jnp.asarray(scale, d.dtype)
    if bias is not None:
        fbias = fbias + jnp.asarray(bias, fbias.dtype)
    # The closed-form backward of the norms (r and d are constants to it); the moments it
    # returns are batch_norm's, bit for bit.
    y, stats = normalize(x, fscale, fbias, reduction_axes=axes, feature_axes=feat,
                         epsilon=epsilon, mask=mask, axis_name=axis_name,
                         axis_index_groups=axis_index_groups, dtype=dtype, keepdims=False)
    new_state = update_running_stats(state, stats, decay=decay, debias=debias,
                                     running_var=running_var)
    return y, new_state
