"""Float64 NumPy oracles for the normjax core.

Each function here is written directly from the formula (loops or ``np.moveaxis`` where that is
clearer), never from normjax code, so the tests compare two independent implementations.
Arguments are converted to float64; results are float64 NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Axes = int | Sequence[int]


def _axes(axes: Axes, ndim: int) -> tuple[int, ...]:
    given = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(sorted(a % ndim for a in given))


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def moments(
    x: Any, axes: Axes, mask: Any = None, *, center: bool = True, keepdims: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, var, count)`` over ``axes``; only ``mask == True`` elements count.

    ``var`` is the biased variance ``sum m (x - mean)^2 / n``; with ``center=False`` the mean
    is 0 and ``var = sum m x^2 / n``. Where ``n == 0`` mean and var are 0.
    """
    x = _f64(x)
    axes = _axes(axes, x.ndim)
    m = np.ones(x.shape) if mask is None else np.broadcast_to(np.asarray(mask), x.shape) * 1.0
    xs = np.where(m > 0, x, 0.0)
    n = m.sum(axes, keepdims=True)
    safe_n = np.where(n > 0, n, 1.0)
    mean = (xs.sum(axes, keepdims=True) / safe_n) if center else np.zeros_like(n)
    dev = np.where(m > 0, xs - mean, 0.0)
    var = (dev * dev).sum(axes, keepdims=True) / safe_n
    mean, var = np.where(n > 0, mean, 0.0), np.where(n > 0, var, 0.0)
    if not keepdims:
        mean, var, n = (np.squeeze(a, axes) for a in (mean, var, n))
    return mean, var, n


def _param(p: Any, shape: tuple[int, ...], feature_axes: tuple[int, ...]) -> np.ndarray:
    """Reshapes a feature-shaped parameter to broadcast against an array of ``shape``."""
    bshape = [shape[a] if a in feature_axes else 1 for a in range(len(shape))]
    return _f64(p).reshape(bshape)


def standardize(
    x: Any,
    mean: Any,
    var: Any,
    *,
    epsilon: float,
    scale: Any = None,
    bias: Any = None,
    feature_axes: Axes = -1,
) -> np.ndarray:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias``; stats of rank ``x.ndim``."""
    x = _f64(x)
    feat = _axes(feature_axes, x.ndim)
    y = (x - _f64(mean)) / np.sqrt(_f64(var) + epsilon)
    if scale is not None:
        y = y * _param(scale, x.shape, feat)
    if bias is not None:
        y = y + _param(bias, x.shape, feat)
    return y


def batch_norm_train(
    x: Any,
    reduction_axes: Axes,
    *,
    epsilon: float = 1e-5,
    scale: Any = None,
    bias: Any = None,
    mask: Any = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train-mode BatchNorm: ``(y, (batch_mean, batch_var, count))`` (biased variance)."""
    x = _f64(x)
    axes = _axes(reduction_axes, x.ndim)
    feat = tuple(a for a in range(x.ndim) if a not in axes)
    mean, var, n = moments(x, axes, mask, keepdims=True)
    y = standardize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias, feature_axes=feat)
    return y, tuple(np.squeeze(a, axes) for a in (mean, var, n))


def batch_norm_eval(
    x: Any,
    running_mean: Any,
    running_var: Any,
    reduction_axes: Axes,
    *,
    epsilon: float = 1e-5,
    scale: Any = None,
    bias: Any = None,
) -> np.ndarray:
    """Eval-mode BatchNorm with the running statistics (shaped like the features)."""
    x = _f64(x)
    axes = _axes(reduction_axes, x.ndim)
    feat = tuple(a for a in range(x.ndim) if a not in axes)
    mean = _param(running_mean, x.shape, feat)
    var = _param(running_var, x.shape, feat)
    return standardize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias, feature_axes=feat)


def running_stats_update(
    old_mean: Any,
    old_var: Any,
    steps: int,
    batch_mean: Any,
    batch_var: Any,
    count: Any,
    *,
    decay: float | None,
    debias: bool = False,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One running-statistics update after ``steps`` previous updates.

    * ``decay`` (weight on the old value): ``new = decay * old + (1 - decay) * batch``.
    * ``decay=None``: cumulative average, ``new = (steps * old + batch) / (steps + 1)``.
    * ``debias``: the state holds ``ema_t / (1 - decay^t)`` of a zero-started EMA ``ema``;
      the update recovers ``ema_t``, advances it and divides by ``1 - decay^(t+1)``.
    * ``unbiased``: the batch variance enters as ``var * n / (n - 1)`` (PyTorch).
    Features with ``count == 0`` keep their old values.
    """
    old_mean, old_var = _f64(old_mean), _f64(old_var)
    batch_mean, batch_var, count = _f64(batch_mean), _f64(batch_var), _f64(count)
    if unbiased:
        batch_var = np.where(count > 1, batch_var * count / np.maximum(count - 1, 1), batch_var)
    if decay is None:
        new = [(steps * o + b) / (steps + 1) for o, b in ((old_mean, batch_mean),
                                                         (old_var, batch_var))]
    elif debias:
        done, after = 1 - decay**steps, 1 - decay ** (steps + 1)
        new = [(decay * o * done + (1 - decay) * b) / after
               for o, b in ((old_mean, batch_mean), (old_var, batch_var))]
    else:
        new = [decay * o + (1 - decay) * b for o, b in ((old_mean, batch_mean),
                                                        (old_var, batch_var))]
    seen = count > 0
    return np.where(seen, new[0], old_mean), np.where(seen, new[1], old_var)


def layer_norm(
    x: Any,
    *,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    epsilon: float = 1e-6,
    scale: Any = None,
    bias: Any = None,
    mask: Any = None,
) -> np.ndarray:
    """LayerNorm: statistics over ``reduction_axes``, parameters on ``feature_axes``."""
    x = _f64(x)
    mean, var, _ = moments(x, reduction_axes, mask, keepdims=True)
    return standardize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias,
                       feature_axes=feature_axes)


def rms_norm(
    x: Any,
    *,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    epsilon: float = 1e-6,
    scale: Any = None,
    mask: Any = None,
) -> np.ndarray:
    """RMSNorm: ``x / sqrt(mean(x^2) + epsilon) * scale``."""
    x = _f64(x)
    _, ms, _ = moments(x, reduction_axes, mask, center=False, keepdims=True)
    return standardize(x, np.zeros_like(ms), ms, epsilon=epsilon, scale=scale,
                       feature_axes=feature_axes)


def group_norm(
    x: Any,
    num_groups: int,
    *,
    channel_axis: int = -1,
    epsilon: float = 1e-6,
    scale: Any = None,
    bias: Any = None,
    mask: Any = None,
) -> np.ndarray:
    """GroupNorm with axis 0 the batch axis, by an explicit loop over examples and groups."""
    x = _f64(x)
    m = None if mask is None else np.moveaxis(np.broadcast_to(mask, x.shape), channel_axis, -1)
    x = np.moveaxis(x, channel_axis, -1)
    channels = x.shape[-1]
    size = channels // num_groups
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        for g in range(num_groups):
            sl = (n, ..., slice(g * size, (g + 1) * size))
            mean, var, _ = moments(x[sl], tuple(range(x[sl].ndim)),
                                   None if m is None else m[sl])
            y[sl] = (x[sl] - mean) / np.sqrt(var + epsilon)
    if scale is not None:
        y = y * _f64(scale)
    if bias is not None:
        y = y + _f64(bias)
    return np.moveaxis(y, -1, channel_axis)


def instance_norm(
    x: Any,
    *,
    channel_axis: int = -1,
    epsilon: float = 1e-6,
    scale: Any = None,
    bias: Any = None,
    mask: Any = None,
) -> np.ndarray:
    """InstanceNorm: per example and channel, statistics over the remaining (spatial) axes."""
    x = _f64(x)
    c = channel_axis % x.ndim
    spatial = tuple(a for a in range(1, x.ndim) if a != c)
    mean, var, _ = moments(x, spatial, mask, keepdims=True)
    return standardize(x, mean, var, epsilon=epsilon, scale=scale, bias=bias, feature_axes=c)


def weight_norm(v: Any, g: Any = None, *, feature_axes: Axes = -1,
                epsilon: float = 1e-12) -> np.ndarray:
    """``w = g * v / sqrt(sum v^2 + epsilon)``, the sum over the non-feature axes."""
    v = _f64(v)
    feat = _axes(feature_axes, v.ndim)
    axes = tuple(a for a in range(v.ndim) if a not in feat)
    w = v / np.sqrt((v * v).sum(axes, keepdims=True) + epsilon)
    return w if g is None else w * _param(g, v.shape, feat)


def l1_penalty(leaves: Sequence[Any]) -> float:
    """``sum |w|`` over the given leaves."""
    return float(sum(np.abs(_f64(p)).sum() for p in leaves))


def l2_penalty(leaves: Sequence[Any]) -> float:
    """``1/2 sum w^2`` over the given leaves."""
    return float(sum(0.5 * (_f64(p) ** 2).sum() for p in leaves))


def elastic_net_penalty(leaves: Sequence[Any], *, l1: float, l2: float) -> float:
    """``l1 * sum |w| + l2 * 1/2 sum w^2``."""
    return l1 * l1_penalty(leaves) + l2 * l2_penalty(leaves)
