"""BatchNorm statistics pooled exactly across micro-batches (gradient accumulation).

With gradient accumulation an optimizer step sees ``k`` micro-batches of size ``b``. Updating
the running statistics once per micro-batch applies ``k`` EMA steps per optimizer step and
weights the micro-batches unequally; instead, the micro-batch statistics are *pooled* and one
running-statistics update is committed per optimizer step, so that ``k`` micro-batches of size
``b`` give the running statistics of one batch of size ``k * b``.

The accumulator keeps, per feature, the count-weighted mean, the sum of squared deviations
from it (``m2``) and the count; a micro-batch with statistics ``(mean_b, var_b, n_b)`` is merged
with the parallel-variance update of Chan, Golub & LeVeque (1979)::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    m2    = m2_a + var_b * n_b + delta^2 * n_a * n_b / n

which stays accurate in float32 when ``|mean| >> std``: there is no ``E[x^2] - E[x]^2``
cancellation (which leaves no correct digit at ``|mean| = 1e4 * std``); the only loss is the
float32 rounding of the stored means, about ``ulp(|mean|) * |delta| / var`` relative (1e-4 at
``|mean| = 1e4 * std``).
The pooled variance is ``m2 / n``: the biased variance of all elements seen, the same value a
single batch of all of them would give.

The same pooling of stacked statistics, :func:`pool_moments`, serves Ghost BatchNorm (virtual
batches) and Precise BN (many batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._checks import canonicalize_axes, complement_axes, feature_shape
from normjax._numerics import Moments, pool_moments, safe_div
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.running import BatchNormState, update_running_stats
from normjax.stats import moments, standardize

__all__ = [
    "MomentsAccumulator",
    "accumulate",
    "accumulate_moments",
    "accumulated_moments",
    "batch_norm_accumulate",
    "commit",
    "moments_accumulator_init",
    "pool_moments",
]


class MomentsAccumulator(NamedTuple):
    """Pooled statistics of the micro-batches seen since the last commit.

    Attributes:
      mean: count-weighted mean, shaped like the features, float32.
      m2: sum of squared deviations from ``mean``, shaped like the features, float32.
      count: number of elements pooled, shaped like the features, float32.
    """

    mean: Array
    m2: Array
    count: Array


def moments_accumulator_init(
    features: int | Sequence[int], *, dtype: Any = jnp.float32
) -> MomentsAccumulator:
    """An empty accumulator: mean 0, m2 0, count 0."""
    shape = (features,) if isinstance(features, (int, np.integer)) else tuple(features)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in shape):
        raise ValueError(f"features must be positive ints, got {features!r}.")
    shape = tuple(int(d) for d in shape)
    zeros = jnp.zeros(shape, dtype)
    return MomentsAccumulator(mean=zeros, m2=zeros, count=zeros)


def _check_acc(acc: MomentsAccumulator, features: tuple[int, ...], what: str) -> None:
    if not isinstance(acc, MomentsAccumulator):
        raise TypeError(
            "acc must be a MomentsAccumulator (see moments_accumulator_init), got "
            f"{type(acc).__name__}."
        )
    if jnp.shape(acc.mean) != features:
        raise ValueError(
            f"{what} has feature shape {features}, but the accumulator holds features of shape "
            f"{jnp.shape(acc.mean)}; create the accumulator with the feature shape (the input "
            "shape at the axes not in reduction_axes)."
        )


def accumulate_moments(acc: MomentsAccumulator, batch: Moments) -> MomentsAccumulator:
    """Merges one micro-batch's :class:`Moments` into ``acc`` (Chan et al.; module docstring).

    The statistics enter under ``stop_gradient``: running statistics are not differentiated.
    """
    _check_acc(acc, jnp.shape(batch.mean), "the batch statistics")
    dt = acc.mean.dtype
    mean_b, var_b, n_b = (lax.stop_gradient(jnp.broadcast_to(a, acc.mean.shape).astype(dt))
                          for a in batch)
    n = acc.count + n_b
    delta = mean_b - acc.mean
    mean = acc.mean + delta * safe_div(n_b, n)
    m2 = acc.m2 + var_b * n_b + delta * delta * safe_div(acc.count * n_b, n)
    return MomentsAccumulator(mean=mean, m2=m2, count=n)


def accumulate(
    acc: MomentsAccumulator,
    x: ArrayLike,
    *,
    reduction_axes: Axes,
    mask: ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
) -> MomentsAccumulator:
    """Computes the statistics of ``x`` over ``reduction_axes`` and merges them into ``acc``."""
    x = jnp.asarray(x)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    _check_acc(acc, feature_shape(x.shape, complement_axes(axes, x.ndim)),
               f"the input of shape {x.shape}")
    stats = moments(x, axes, mask=mask, axis_name=axis_name,
                    axis_index_groups=axis_index_groups)
    return accumulate_moments(acc, stats)


def accumulated_moments(acc: MomentsAccumulator) -> Moments:
    """The pooled statistics: ``Moments(mean, m2 / count, count)`` (zeros where count is 0)."""
    return Moments(acc.mean, safe_div(acc.m2, acc.count), acc.count)


def commit(
    state: BatchNormState,
    acc: MomentsAccumulator,
    *,
    decay: float | ArrayLike | None,
    debias: bool = False,
    running_var: Literal["biased", "unbiased"] = "biased",
) -> tuple[BatchNormState, MomentsAccumulator]:
    """One running-statistics update from the pooled statistics; returns a reset accumulator.

    Exactly :func:`normjax.update_running_stats` applied to :func:`accumulated_moments`, so the
    result is the update one batch of all the accumulated elements would make (``count`` of the
    state grows by one per commit). Features with nothing accumulated keep their values.
    """
    _check_acc(acc, jnp.shape(state.mean), "state")
    new_state = update_running_stats(state, accumulated_moments(acc), decay=decay,
                                     debias=debias, running_var=running_var)
    zeros = jnp.zeros_like(acc.mean)
    return new_state, MomentsAccumulator(mean=zeros, m2=zeros, count=zeros)


def batch_norm_accumulate(
    x: ArrayLike,
    acc: MomentsAccumulator,
    *,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    reduction_axes: Axes,
    epsilon: float = 1e-5,
    mask: ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> tuple[Array, MomentsAccumulator]:
    """Train-mode BatchNorm of one micro-batch that accumulates instead of updating state.

    ``y`` is normalized with the micro-batch statistics (exactly as
    ``batch_norm(..., train=True)``); the statistics are merged into ``acc``. Call
    :func:`commit` once per optimizer step; use ``batch_norm(..., train=False)`` for eval.

    Returns:
      ``(y, new_acc)``.
    """
    x = jnp.asarray(x)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    feat = complement_axes(axes, x.ndim)
    _check_acc(acc, feature_shape(x.shape, feat), f"the input of shape {x.shape}")
    stats = moments(x, axes, mask=mask, axis_name=axis_name,
                    axis_index_groups=axis_index_groups)
    y = standardize(x, stats.mean, stats.var, epsilon=epsilon, scale=scale, bias=bias,
                    feature_axes=feat, dtype=dtype)
    return y, accumulate_moments(acc, stats)
