"""Precise BatchNorm statistics (Wu & Johnson, 2021, "Rethinking 'Batch' in BatchNorm",
arXiv:2105.07576, Sec. 3).

The EMA of batch statistics that BatchNorm keeps during training lags behind the weights and
over-weights the last batches; Precise BN replaces it, with the weights frozen, by the true
average over ``K`` batches: the model runs in training mode over the batches and the statistics
every BatchNorm layer sees are pooled. normjax pools them *exactly*, weighting batches by their
element counts (law of total variance)::

    n    = sum_k n_k
    mean = sum_k n_k mean_k / n
    var  = sum_k n_k (var_k + (mean_k - mean)^2) / n

so ``var`` is the variance of all elements seen, the population statistic that eval mode
should use. (The paper's reference implementation averages the per-batch variances, which
omits the spread of the batch means, ``sum_k n_k (mean_k - mean)^2 / n``.) When every
layer's input does not depend on other layers' batch statistics (e.g. the first layer),
Precise BN over the whole training set in any batching equals the statistics of the whole set.

One ``jit``-compiled ``lax.scan`` pass runs over the batches, accumulating per layer with
:func:`normjax.accumulate_moments` (numerically stable in float32). Two entry points:

* :func:`precise_batch_norm` for models written with :func:`normjax.batch_norm`: give a
  ``stats_fn(batch)`` that returns the train-mode batch :class:`~normjax.Moments` of every
  layer (a pytree), and the matching pytree of :class:`~normjax.BatchNormState`.
* :func:`precise_flax_batch_stats` for ``flax.linen`` models with ``nn.BatchNorm``: the inputs
  of every ``nn.BatchNorm`` call in training mode are intercepted with
  ``flax.linen.intercept_methods`` and their statistics computed directly (over the same axes,
  mask and ``axis_name`` as the layer). This does not depend on the layer's ``momentum`` and
  avoids recovering batch statistics from an EMA update, which would amplify float32 rounding
  by ``1 / (1 - momentum)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from normjax._checks import canonicalize_axes, complement_axes
from normjax._numerics import Moments
from normjax._typing import PyTree
from normjax.norms.batch_norm_accumulation import (
    MomentsAccumulator,
    accumulate_moments,
    accumulated_moments,
    moments_accumulator_init,
    pool_moments,
)
from normjax.running import RUNNING_VAR_OPTIONS, BatchNormState, unbiased_var
from normjax.stats import moments

__all__ = ["precise_batch_norm", "precise_flax_batch_stats", "precise_moments"]


def _is_moments(x: Any) -> bool:
    return isinstance(x, Moments)


def _is_accumulator(x: Any) -> bool:
    return isinstance(x, MomentsAccumulator)


def _num_batches(batches: PyTree) -> int:
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in jax.tree.leaves(batches)}
    if not sizes or None in sizes or len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "batches must be a pytree of arrays that all share a leading axis of length K >= 1 "
            f"(one entry per batch, e.g. shape (K, batch_size, ...)); got leading sizes {sizes}."
        )
    return sizes.pop()


def precise_moments(stats_fn: Callable[[PyTree], PyTree], batches: PyTree) -> PyTree:
    """Pools ``stats_fn(batch)`` exactly over all batches (see the module docstring).

    Args:
      stats_fn: maps one batch to a pytree whose leaves are :class:`~normjax.Moments` (one per
        BatchNorm layer, computed in training mode with frozen weights). Traced once.
      batches: a pytree of arrays with a leading axis of length ``K`` indexing the batches.

    Returns:
      The pytree of pooled :class:`~normjax.Moments` (``count`` is the total element count).
    """
    _num_batches(batches)
    first = jax.tree.map(lambda a: a[0], batches)
    shapes = jax.eval_shape(stats_fn, first)
    leaves = jax.tree.leaves(shapes, is_leaf=_is_moments)
    if not leaves or not all(_is_moments(m) for m in leaves):
        raise TypeError(
            "stats_fn must return a pytree whose leaves are normjax.Moments (e.g. "
            "{'bn1': moments(h1, reduction_axes)}), got "
            f"{jax.tree.structure(shapes, is_leaf=_is_moments)}."
        )

    def init(m: Moments) -> MomentsAccumulator:
        return moments_accumulator_init(m.mean.shape)

    def body(accs: PyTree, batch: PyTree) -> tuple[PyTree, None]:
        stats = stats_fn(batch)
        return jax.tree.map(accumulate_moments, accs, stats, is_leaf=_is_accumulator), None

    @jax.jit
    def run(batches: PyTree) -> PyTree:
        accs = jax.tree.map(init, shapes, is_leaf=_is_moments)
        accs, _ = lax.scan(body, accs, batches)
        return jax.tree.map(accumulated_moments, accs, is_leaf=_is_accumulator)

    return run(batches)


def _replace_stats(state: BatchNormState, pooled: Moments, unbiased: bool) -> BatchNormState:
    if not isinstance(state, BatchNormState):
        raise TypeError(f"states must hold BatchNormState leaves, got {type(state).__name__}.")
    if jnp.shape(state.mean) != jnp.shape(pooled.mean):
        raise ValueError(
            f"a state of feature shape {jnp.shape(state.mean)} was paired with statistics of "
            f"shape {jnp.shape(pooled.mean)}; stats_fn must return one Moments per state, in "
            "the same pytree structure."
        )
    n, var = pooled.count, pooled.var
    if unbiased:
        var = unbiased_var(var, n)
    seen = n > 0
    dt = state.mean.dtype
    return state._replace(mean=jnp.where(seen, pooled.mean.astype(dt), state.mean),
                          var=jnp.where(seen, var.astype(dt), state.var))


def precise_batch_norm(
    stats_fn: Callable[[PyTree], PyTree],
    states: PyTree,
    batches: PyTree,
    *,
    running_var: Literal["biased", "unbiased"] = "biased",
) -> PyTree:
    """Replaces the running statistics in ``states`` by the precise population statistics.

    Args:
      stats_fn: ``batch -> pytree of Moments`` with the structure of ``states`` (e.g. the
        model's forward pass in training mode returning every layer's batch statistics).
      states: a pytree of :class:`~normjax.BatchNormState`.
      batches: a pytree of arrays with a leading axis indexing ``K`` batches.
      running_var: store the ``"biased"`` population variance or the ``"unbiased"`` one
        (``n / (n - 1)``, PyTorch's convention).

    Returns:
      ``states`` with ``mean`` and ``var`` replaced (``count`` unchanged); features that no
      element reached keep their old values.
    """
    if running_var not in RUNNING_VAR_OPTIONS:
        raise ValueError(f"running_var must be one of {RUNNING_VAR_OPTIONS}, got {running_var!r}.")
    pooled = precise_moments(stats_fn, batches)
    is_state = lambda s: isinstance(s, BatchNormState)  # noqa: E731
    if jax.tree.structure(states, is_leaf=is_state) != jax.tree.structure(
            pooled, is_leaf=_is_moments):
        raise ValueError(
            "stats_fn must return Moments in the same pytree structure as states, got "
            f"{jax.tree.structure(pooled, is_leaf=_is_moments)} for states "
            f"{jax.tree.structure(states, is_leaf=is_state)}."
        )
    return jax.tree.map(lambda s, m: _replace_stats(s, m, running_var == "unbiased"),
                        states, pooled, is_leaf=is_state)


def _flax_recorder(records: dict[tuple[str, ...], list[Moments]]) -> Callable[..., Any]:
    """A ``flax.linen`` method interceptor that records the batch statistics of every
    ``nn.BatchNorm.__call__`` in training mode, keyed by the layer's path."""
    from flax import linen as nn

    def interceptor(next_fun: Callable[..., Any], args: tuple, kwargs: dict,
                    context: Any) -> Any:
        module = context.module
        if (isinstance(module, nn.BatchNorm) and context.method_name == "__call__"
                and not module.is_initializing()):
            flag = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
            use_running = module.use_running_average if flag is None else flag
            if use_running is False:
                x = jnp.asarray(args[0])
                feat = canonicalize_axes(module.axis, x.ndim, name="BatchNorm.axis")
                stats = moments(x, complement_axes(feat, x.ndim), mask=kwargs.get("mask"),
                                axis_name=module.axis_name,
                                axis_index_groups=module.axis_index_groups)
                records.setdefault(tuple(module.scope.path), []).append(stats)
        return next_fun(*args, **kwargs)

    return interceptor


def precise_flax_batch_stats(
    apply_fn: Callable[[PyTree, PyTree], Any], variables: PyTree, batches: PyTree
) -> dict[str, Any]:
    """Precise BN for a ``flax.linen`` model: the precise ``batch_stats`` collection.

    Every ``nn.BatchNorm`` that ``apply_fn`` runs in training mode has its input statistics
    recorded (a layer called several times per batch pools all its calls) and pooled exactly
    over the batches; the weights are not changed and the model's own state updates are
    discarded.

    Args:
      apply_fn: ``(variables, batch) -> anything``; runs the model in training mode, e.g.
        ``lambda v, b: model.apply(v, b["x"], train=True, mutable=["batch_stats"])`` (pass
        dropout keys through ``batch``).
      variables: the model variables, with a ``"batch_stats"`` collection.
      batches: a pytree of arrays with a leading axis indexing ``K`` batches.

    Returns:
      A copy of ``variables["batch_stats"]`` with ``mean`` and ``var`` of every recorded
      layer replaced by the precise (biased, as ``nn.BatchNorm`` keeps) population statistics.

    Raises:
      ValueError: ``apply_fn`` runs no ``nn.BatchNorm`` in training mode, or a recorded layer
        has no entry in ``variables["batch_stats"]``.

    BatchNorm layers inside lifted transforms that trace their own body (``nn.scan``,
    ``nn.vmap``, ``nn.jit``) are not supported.
    """
    from flax import linen as nn
    from flax.core import unfreeze
    from flax.traverse_util import flatten_dict, unflatten_dict

    if "batch_stats" not in variables:
        raise ValueError("variables has no 'batch_stats' collection; is the model using "
                         "nn.BatchNorm, and were the variables created with model.init?")

    def stats_fn(batch: PyTree) -> dict[tuple[str, ...], Moments]:
        records: dict[tuple[str, ...], list[Moments]] = {}
        with nn.intercept_methods(_flax_recorder(records)):
            apply_fn(variables, batch)
        if not records:
            raise ValueError(
                "apply_fn ran no flax.linen.BatchNorm in training mode; apply the model with "
                "use_running_average=False (e.g. train=True) and mutable=['batch_stats']."
            )
        return {path: pool_moments(jax.tree.map(lambda *a: jnp.stack(a), *calls), 0)
                for path, calls in records.items()}

    pooled = precise_moments(stats_fn, batches)
    flat = flatten_dict(unfreeze(variables["batch_stats"]))
    for path, stats in pooled.items():
        if (*path, "mean") not in flat:
            raise ValueError(
                f"the BatchNorm at {'/'.join(path)} has no statistics in variables"
                "['batch_stats']; pass the variables the model was initialized with."
            )
        for name, value in (("mean", stats.mean), ("var", stats.var)):
            old = flat[(*path, name)]
            flat[(*path, name)] = jnp.where(stats.count > 0, value.astype(old.dtype), old)
    return unflatten_dict(flat)
