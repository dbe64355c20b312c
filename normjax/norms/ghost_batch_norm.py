"""Ghost (virtual) Batch Normalization (Hoffer, Hubara & Soudry, 2017, arXiv:1705.08741).

In training the batch of ``N`` examples is split into ``G = N / V`` consecutive *virtual
batches* of ``V = virtual_batch_size`` examples, and each is normalized with its own
statistics (over its ``V`` examples and the other reduction axes)::

    x_g = x[g * V : (g + 1) * V]                                     g = 0 .. G - 1
    y_g = (x_g - mean(x_g)) / sqrt(var(x_g) + epsilon) * scale + bias

It is vectorized: the batch axis is reshaped to ``(G, V)`` and the statistics reduce over the
``V`` axis, so all virtual batches are normalized in one pass (no loop). Large-batch training
keeps the regularizing noise of small-batch statistics this way. Eval mode is plain BatchNorm
with the running statistics.

**Running statistics.** They are updated *once per step* (``decay`` as in
:func:`normjax.batch_norm`) from either

* ``running_stats="full_batch"`` (default): the statistics of the whole batch, pooled exactly
  from the virtual-batch statistics (law of total variance), i.e. the same update
  :func:`normjax.batch_norm` makes on the full batch, the best estimate of the population
  statistics that eval mode normalizes with; or
* ``running_stats="virtual_average"``: the mean over virtual batches of their means and
  variances (Keras' ``virtual_batch_size`` convention). The average within-virtual-batch
  variance omits the spread of the virtual-batch means, so it is smaller than the population
  variance by a factor of about ``(n - 1) / n`` for ``n`` elements per virtual batch and
  feature, matching the scale that training normalizes with.

**With axis_name** (data parallelism) virtual batch ``g`` pools the ``g``-th chunk of ``V``
examples of *every* member of the named axis: the effective virtual batch is
``V * axis_size`` examples, and the running statistics are global.

With ``virtual_batch_size == N`` (one virtual batch) it is exactly :func:`normjax.batch_norm`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from normjax._backend import normalize
from normjax._checks import canonicalize_axes, check_train, complement_axes, feature_shape
from normjax._numerics import Moments, safe_div
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.norms.batch_norm import batch_norm
from normjax.norms.batch_norm_accumulation import pool_moments
from normjax.running import BatchNormState, check_state, unbiased_var, update_running_stats

__all__ = ["ghost_batch_norm"]

RUNNING_STATS_OPTIONS = ("full_batch", "virtual_average")


def _check_virtual(
    shape: tuple[int, ...], axes: tuple[int, ...], batch_axis: int, size: Any, axis_name: AxisName
) -> int:
    """Validates the virtual batch size; returns the number of virtual batches."""
    if batch_axis not in axes:
        raise ValueError(
            f"batch_axis={batch_axis} is not one of reduction_axes={axes}; ghost batch norm "
            "splits a reduced (batch) axis into virtual batches."
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"virtual_batch_size must be a positive int, got {size!r}.")
    n = shape[batch_axis]
    if n % size:
        raise ValueError(
            f"virtual_batch_size={size} does not divide the batch of {n} examples (axis "
            f"{batch_axis} of an input of shape {shape}); use a batch size that is a multiple "
            f"of the virtual batch size, e.g. {max(size, n - n % size)}."
        )
    per_group = size * math.prod(shape[a] for a in axes if a != batch_axis)
    if per_group == 1 and axis_name is None:
        raise ValueError(
            "virtual_batch_size=1 with no other reduction axis normalizes each example by "
            "itself, so every output would be zero; use a larger virtual batch."
        )
    return n // size


def _grouped_mask(mask: ArrayLike, shape: tuple[int, ...], gshape: tuple[int, ...]) -> Array:
    mask = jnp.asarray(mask)
    try:
        ok = np.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to the input shape "
                         f"{shape}; give a boolean mask broadcastable to the input.")
    return jnp.broadcast_to(mask, shape).reshape(gshape)


def _running_moments(stats: Moments, group_axis: int, mode: str, unbiased: bool) -> Moments:
    """The statistics the running update uses (see the module docstring)."""
    pooled = pool_moments(stats, group_axis)
    if mode == "full_batch":
        return pooled
    n = stats.count
    var = unbiased_var(stats.var, n) if unbiased else (
        stats.var)
    total = jnp.expand_dims(pooled.count, group_axis)
    w = safe_div(n, total)
    return Moments(pooled.mean, jnp.sum(w * var, group_axis), pooled.count)


def _replicated(x: Array) -> Array:
    """``x`` gathered onto every device where it is sharded over an Explicit mesh axis: the
    split of its batch axis into virtual batches has no sharding JAX could infer."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or all(s is None for s in spec):
        return x
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))


def ghost_batch_norm(
    x: ArrayLike,
    state: BatchNormState,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    virtual_batch_size: int,
    reduction_axes: Axes,
    batch_axis: int = 0,
    train: bool,
    decay: float | ArrayLike | None = 0.99,
    epsilon: float = 1e-5,
    mask: ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    running_stats: Literal["full_batch", "virtual_average"] = "full_batch",
    debias: bool = False,
    running_var: Literal["biased", "unbiased"] = "biased",
    dtype: Any = None,
) -> tuple[Array, BatchNormState]:
    """Ghost batch normalization: ``y, new_state = ghost_batch_norm(x, state, ...)``.

    Args:
      x: input, e.g. ``(N, C)`` or NHWC.
      state: running statistics (:func:`normjax.batch_norm_init`), shaped like the features.
      scale, bias: optional per-feature parameters.
      virtual_batch_size: examples per virtual batch; must divide ``x.shape[batch_axis]``.
      reduction_axes: axes the statistics run over (as in :func:`normjax.batch_norm`); must
        include ``batch_axis``.
      batch_axis: the axis split into virtual batches.
      train: keyword-only: virtual-batch statistics and one state update (``True``), or
        plain BatchNorm with the running statistics and the state unchanged (``False``).
      decay: EMA weight on the old value (``None``: cumulative average).
      epsilon: added to the variance.
      mask: boolean, broadcastable to ``x``; only masked-in elements enter the statistics.
      axis_name, axis_index_groups: pool each virtual batch across a named axis.
      running_stats: ``"full_batch"`` or ``"virtual_average"`` (module docstring).
      debias, running_var: as in :func:`normjax.batch_norm`.
      dtype: output dtype (default ``x.dtype``).

    Returns:
      ``(y, new_state)``; in eval mode ``new_state is state``.
    """
    train = check_train(train)
    if running_stats not in RUNNING_STATS_OPTIONS:
        raise ValueError(
            f"running_stats must be one of {RUNNING_STATS_OPTIONS}, got {running_stats!r}."
        )
    x = jnp.asarray(x)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    (b,) = canonicalize_axes(batch_axis, x.ndim, name="batch_axis")
    if not train:
        return batch_norm(x, state, scale=scale, bias=bias, reduction_axes=axes, train=False,
                          epsilon=epsilon, dtype=dtype)
    feat = complement_axes(axes, x.ndim)
    state = check_state(state, feature_shape(x.shape, feat))
    groups = _check_virtual(x.shape, axes, b, virtual_batch_size, axis_name)
    size = int(virtual_batch_size)
    gshape = (*x.shape[:b], groups, size, *x.shape[b + 1:])
    xg = _replicated(x).reshape(gshape)
    if mask is not None:
        mask = _grouped_mask(mask, x.shape, gshape)
    gaxes = tuple(a if a < b else a + 1 for a in axes)  # the V axis replaces the batch axis
    gfeat = tuple(a if a < b else a + 1 for a in feat)
    y, stats = normalize(xg, scale, bias, reduction_axes=gaxes, feature_axes=gfeat,
                         epsilon=epsilon, mask=mask, axis_name=axis_name,
                         axis_index_groups=axis_index_groups, dtype=dtype, keepdims=True)
    y = y.reshape(x.shape)
    per_group = Moments(*(jnp.squeeze(s, gaxes) for s in stats))  # features, G at group_axis
    group_axis = sum(a < b for a in feat)
    running = _running_moments(per_group, group_axis, running_stats, running_var == "unbiased")
    new_state = update_running_stats(
        state, running, decay=decay, debias=debias,
        running_var=running_var if running_stats == "full_batch" else "biased")
    return y, new_state
