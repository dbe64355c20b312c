"""Decorrelated Batch Normalization: ZCA whitening of feature groups (Huang, Yang, Lang & Deng,
2018, arXiv:1804.08450).

BatchNorm standardizes each feature; DBN also *decorrelates* them. The ``C`` features (on
``feature_axes``; statistics over every other axis) are split into ``G`` groups of
``g = group_size`` consecutive features, and each group is ZCA-whitened::

    mu    = E[x]                                   (per feature; over m elements)
    Sigma = E[(x - mu)(x - mu)^T]                  (g x g per group, biased)
    Sigma = D diag(lambda) D^T                     (eigh)
    W     = D diag((max(lambda, 0) + epsilon)^(-1/2)) D^T      (ZCA: W = (Sigma + eps I)^(-1/2))
    y     = W (x - mu) * scale + bias

``y`` has (nearly, up to ``epsilon``) identity covariance within each group. ZCA is the
whitening closest to the input (Sec. 3 of the paper): unlike PCA whitening it does not
rotate the features, which keeps the stochastic axis swapping of PCA out of training.

**State.** :class:`WhiteningState` keeps the running mean and the running *covariance*
(``decay`` the weight on the old value, as in :func:`normjax.batch_norm`); eval mode whitens
with :func:`whitening_matrix` of the running covariance. (The paper averages the whitening
matrices; averaging the covariance estimates the population covariance.) For inference,
precompute ``whitening_matrix(state.cov, epsilon=...)`` once.

**Numerics.** The eigendecomposition runs in float32 (float64 for float64 input) on the
symmetrized covariance; eigenvalues are clamped at 0 before ``epsilon`` is added, so rounding
never yields a negative square root. In float32 the result is accurate to roughly
``kappa * 1e-7`` relative for a covariance of condition number ``kappa`` (measured: 7e-3 in
``W Sigma W = I`` at ``kappa = 1.2e5``); ``epsilon`` bounds ``kappa``.

**Gradient caveat:** the derivative of ``eigh`` contains ``1 / (lambda_i - lambda_j)``; with
(nearly) equal eigenvalues, e.g. redundant or constant features, gradients can become huge or
NaN. Keep groups small (the paper: 16), ``epsilon`` not too small, and batches large relative
to ``group_size`` (``m >> g``) so the covariance is well conditioned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax._checks import check_epsilon, check_train, renamed_arguments, single_axis
from normjax._numerics import stats_dtype
from normjax._typing import Array, ArrayLike, Axes, AxisName
from normjax.running import check_decay, effective_decay
from normjax.stats import moments

__all__ = ["WhiteningState", "decorrelated_batch_norm", "whitening_init", "whitening_matrix"]


class WhiteningState(NamedTuple):
    """Running statistics of :func:`decorrelated_batch_norm`.

    Attributes:
      mean: running mean, shape ``(C,)``.
      cov: running covariance of each feature group, shape ``(G, g, g)``.
      count: number of training updates (int32 scalar).
    """

    mean: Array
    cov: Array
    count: Array


def _groups(features: int, group_size: int | None) -> tuple[int, int]:
    size = features if group_size is None else group_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0 or (
            features % size):
        raise ValueError(
            f"group_size={group_size!r} must be a positive divisor of the number of features "
            f"({features}), or None for one group of all features."
        )
    return features // int(size), int(size)


def whitening_init(
    features: int, *, group_size: int | None = None, dtype: Any = jnp.float32
) -> WhiteningState:
    """A fresh state: mean 0, identity covariance per group, count 0."""
    if isinstance(features, bool) or not isinstance(features, (int, np.integer)) or (
            features <= 0):
        raise ValueError(f"features must be a positive int, got {features!r}.")
    groups, size = _groups(int(features), group_size)
    cov = jnp.broadcast_to(jnp.eye(size, dtype=dtype), (groups, size, size))
    return WhiteningState(mean=jnp.zeros((int(features),), dtype), cov=cov,
                          count=jnp.zeros((), jnp.int32))


def whitening_matrix(cov: ArrayLike, *, epsilon: float = 1e-5) -> Array:
    """ZCA whitening matrices ``D diag((max(lambda, 0) + epsilon)^(-1/2)) D^T`` of ``cov``.

    ``cov`` is ``(..., g, g)``; it is symmetrized before ``jnp.linalg.eigh``.
    """
    check_epsilon(epsilon)
    cov = jnp.asarray(cov)
    cov = cov.astype(stats_dtype(cov.dtype))
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    lam, vecs = jnp.linalg.eigh(cov)
    inv_sqrt = lax.rsqrt(jnp.maximum(lam, 0) + jnp.asarray(epsilon, cov.dtype))
    return jnp.einsum("...ik,...k,...jk->...ij", vecs, inv_sqrt, vecs)


def _per_feature(p: ArrayLike | None, shape: Sequence[int], name: str, dt: Any) -> Array | None:
    if p is None:
        return None
    p = jnp.asarray(p)
    if p.shape != (shape[1] * shape[2],):
        raise ValueError(f"{name} has shape {p.shape}, expected ({shape[1] * shape[2]},).")
    return p.reshape(1, shape[1], shape[2]).astype(dt)


def _batch_stats(xg: Array, axis_name: AxisName, axis_index_groups: Any) -> tuple[Array, ...]:
    """Mean ``(G, g)`` and covariance ``(G, g, g)`` of ``xg`` of shape ``(m, G, g)``."""
    stats = moments(xg, 0, axis_name=axis_name, axis_index_groups=axis_index_groups)
    dev = xg - stats.mean[None]
    cross = jnp.einsum("mgi,mgj->gij", dev, dev)
    if axis_name is not None:
        cross = lax.psum(cross, axis_name, axis_index_groups=axis_index_groups)
    return stats.mean, cross / stats.count[:, :1, None]


@renamed_arguments(channel_axis="feature_axes")
def decorrelated_batch_norm(
    x: ArrayLike,
    state: WhiteningState,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    train: bool,
    feature_axes: Axes = -1,
    decay: float | ArrayLike | None = 0.99,
    epsilon: float = 1e-5,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> tuple[Array, WhiteningState]:
    """Group-wise ZCA whitening: ``y, new_state = decorrelated_batch_norm(x, state, ...)``.

    Args:
      x: input; features on ``feature_axes``, statistics over all other axes.
      state: :class:`WhiteningState` (:func:`whitening_init`; fixes the group size).
      scale, bias: optional per-feature parameters of shape ``(C,)``.
      train: keyword-only: batch statistics and a state update, or the running statistics.
      feature_axes: the feature axis.
      decay: EMA weight on the old mean/covariance (``None``: cumulative average).
      epsilon: added to the covariance eigenvalues.
      axis_name, axis_index_groups: pool the statistics across a named axis.
      dtype: output dtype (default ``x.dtype``).

    Returns:
      ``(y, new_state)``; in eval mode ``new_state is state``.
    """
    check_train(train)
    check_decay(decay)
    check_epsilon(epsilon)
    x = jnp.asarray(x)
    c = single_axis(feature_axes, x.ndim)
    groups, size = check_state(state, x.shape[c])
    dt = stats_dtype(x.dtype)
    xt = jnp.moveaxis(x, c, -1)
    xg = xt.reshape(-1, groups, size).astype(dt)
    if train:
        if xg.shape[0] < 2 and axis_name is None:
            raise ValueError(f"decorrelated_batch_norm(train=True) needs at least 2 elements "
                             f"per feature to estimate a covariance, got shape {x.shape}.")
        mean, cov = _batch_stats(xg, axis_name, axis_index_groups)
        new_state = _update(state, mean, cov, decay)
    else:
        mean, cov, new_state = state.mean.reshape(groups, size).astype(dt), state.cov, state
    w = whitening_matrix(cov, epsilon=epsilon).astype(dt)
    y = jnp.einsum("gij,mgj->mgi", w, xg - mean[None])
    scale_g = _per_feature(scale, (1, groups, size), "scale", dt)
    bias_g = _per_feature(bias, (1, groups, size), "bias", dt)
    y = y if scale_g is None else y * scale_g
    y = y if bias_g is None else y + bias_g
    y = jnp.moveaxis(y.reshape(xt.shape), -1, c)
    return y.astype(x.dtype if dtype is None else dtype), new_state


def check_state(state: WhiteningState, features: int) -> tuple[int, int]:
    if not isinstance(state, WhiteningState):
        raise TypeError(f"state must be a WhiteningState (see whitening_init), got "
                        f"{type(state).__name__}.")
    groups, size = jnp.shape(state.cov)[0], jnp.shape(state.cov)[-1]
    if jnp.shape(state.mean) != (features,) or groups * size != features:
        raise ValueError(
            f"state holds {jnp.shape(state.mean)} features in groups of cov shape "
            f"{jnp.shape(state.cov)}, but the input has {features} features on feature_axes; "
            "create the state with whitening_init(features, group_size=...)."
        )
    return groups, size


def _update(state: WhiteningState, mean: Array, cov: Array, decay: Any) -> WhiteningState:
    d = effective_decay(decay, state.count, False)
    dt = state.mean.dtype
    mean, cov = lax.stop_gradient(mean).astype(dt), lax.stop_gradient(cov).astype(dt)
    d = d.astype(dt)
    return WhiteningState(mean=d * state.mean + (1 - d) * mean.reshape(-1),
                          cov=d * state.cov + (1 - d) * cov, count=state.count + 1)
