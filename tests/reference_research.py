"""Float64 NumPy oracles for the research variants (Ghost BN, Batch Renorm, FRN, ...).

Each function is a direct transcription of the formula in the paper, written for clarity,
not speed, and independent of normjax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def moments_np(x, axes: Sequence[int], mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, biased variance and count over ``axes`` (count-weighted with a mask)."""
    x = f64(x)
    axes = tuple(axes)
    w = np.ones_like(x) if mask is None else np.broadcast_to(f64(mask), x.shape)
    n = w.sum(axes)
    mean = (w * x).sum(axes) / n
    dev = x - np.expand_dims(mean, axes)
    var = (w * dev * dev).sum(axes) / n
    return mean, var, n


def expand(p, ndim: int, feature_axes: Sequence[int]) -> np.ndarray:
    """Reshapes a per-feature array to broadcast against a rank-``ndim`` input."""
    p = f64(p)
    shape = [1] * ndim
    for a, d in zip(sorted(feature_axes), p.shape, strict=True):
        shape[a] = d
    return p.reshape(shape)


def normalize_np(x, mean, var, eps, scale=None, bias=None, feature_axes=(-1,)) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` with per-feature statistics."""
    x = f64(x)
    feat = [a % x.ndim for a in feature_axes]
    y = (x - expand(mean, x.ndim, feat)) / np.sqrt(expand(var, x.ndim, feat) + eps)
    if scale is not None:
        y = y * expand(scale, x.ndim, feat)
    if bias is not None:
        y = y + expand(bias, x.ndim, feat)
    return y


def ema_np(old, new, decay: float) -> np.ndarray:
    """``decay * old + (1 - decay) * new``."""
    return decay * f64(old) + (1 - decay) * f64(new)


def ghost_batch_norm_np(x, virtual_batch_size: int, eps: float, scale=None, bias=None,
                        reduction_axes=(0,), batch_axis: int = 0, mask=None):
    """Each virtual batch of ``virtual_batch_size`` examples normalized by its own statistics.

    Returns ``(y, group_means, group_vars)`` with the per-group statistics stacked first.
    """
    x = f64(x)
    axes = tuple(a % x.ndim for a in reduction_axes)
    feat = tuple(a for a in range(x.ndim) if a not in axes)
    mask = None if mask is None else np.broadcast_to(mask, x.shape)
    y = np.empty_like(x)
    means, variances, counts = [], [], []
    for start in range(0, x.shape[batch_axis], virtual_batch_size):
        idx = [slice(None)] * x.ndim
        idx[batch_axis] = slice(start, start + virtual_batch_size)
        idx = tuple(idx)
        m, v, n = moments_np(x[idx], axes, None if mask is None else mask[idx])
        y[idx] = normalize_np(x[idx], m, v, eps, scale, bias, feat)
        means.append(m)
        variances.append(v)
        counts.append(n)
    return y, np.stack(means), np.stack(variances), np.stack(counts)


def batch_renorm_np(x, mean, var, eps, r_max, d_max, scale=None, bias=None,
                    reduction_axes=(0,)):
    """Batch Renormalization, train mode (Ioffe 2017, Algorithm 1). Returns ``(y, r, d)``."""
    x = f64(x)
    axes = tuple(a % x.ndim for a in reduction_axes)
    feat = tuple(a for a in range(x.ndim) if a not in axes)
    mu_b, var_b, _ = moments_np(x, axes)
    sigma_b, sigma = np.sqrt(var_b + eps), np.sqrt(f64(var) + eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu_b - f64(mean)) / sigma, -d_max, d_max)
    xhat = normalize_np(x, mu_b, var_b, eps, feature_axes=feat)
    y = xhat * expand(r, x.ndim, feat) + expand(d, x.ndim, feat)
    if scale is not None:
        y = y * expand(scale, x.ndim, feat)
    if bias is not None:
        y = y + expand(bias, x.ndim, feat)
    return y, r, d


def weight_standardization_np(w, eps: float, feature_axis: int = -1) -> np.ndarray:
    """Qiao et al. 2019: per output feature, standardize over the fan-in."""
    w = np.moveaxis(f64(w), feature_axis, -1)
    flat = w.reshape(-1, w.shape[-1])
    out = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + eps)
    return np.moveaxis(out.reshape(w.shape), -1, feature_axis)


def scaled_weight_standardization_np(w, gain, gamma: float, eps: float) -> np.ndarray:
    """Brock et al. 2021 (NFNets code): ``gain * gamma * (W - mean) / sqrt(max(N var, eps))``."""
    w = f64(w)
    flat = w.reshape(-1, w.shape[-1])
    n = flat.shape[0]
    out = (flat - flat.mean(0)) / np.sqrt(np.maximum(n * flat.var(0), eps)) * gamma * f64(gain)
    return out.reshape(w.shape)


def alpha_dropout_np(x, keep, rate: float, alpha_prime: float = -1.7580993408473766):
    """Klambauer et al. 2017, Sec. 3: ``a (m x + (1 - m) alpha') + b`` for a given keep mask."""
    q = 1 - rate
    a = (q + alpha_prime**2 * q * (1 - q)) ** -0.5
    b = -a * (1 - q) * alpha_prime
    return a * np.where(keep, f64(x), alpha_prime) + b


def frn_np(x, scale, bias, eps: float, channel_axis: int = -1, tau=None):
    """Singh & Krishnan 2019, Algorithm 1 (channels moved last, batch first)."""
    x = np.moveaxis(f64(x), channel_axis, -1)
    spatial = tuple(range(1, x.ndim - 1))
    nu2 = np.mean(x * x, spatial, keepdims=True) if spatial else x * x
    y = f64(scale) * x / np.sqrt(nu2 + eps) + f64(bias)
    if tau is not None:
        y = np.maximum(y, f64(tau))
    return np.moveaxis(y, -1, channel_axis)


def switchable_norm_np(x, wm, wv, eps: float, bn_mean=None, bn_var=None, scale=1.0, bias=0.0):
    """Luo et al. 2018, Eq. (3)-(5) for NHWC input; ``bn_mean``/``bn_var`` default to the batch
    statistics (train mode)."""
    x = f64(x)
    mu_in, var_in = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    mu_ln, var_ln = x.mean((1, 2, 3), keepdims=True), x.var((1, 2, 3), keepdims=True)
    if bn_mean is None:
        bn_mean, bn_var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    mu_bn, var_bn = f64(bn_mean).reshape(1, 1, 1, -1), f64(bn_var).reshape(1, 1, 1, -1)
    mu = wm[0] * mu_in + wm[1] * mu_ln + wm[2] * mu_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    return (x - mu) / np.sqrt(var + eps) * f64(scale) + f64(bias)


def evonorm_b0_np(x, v, eps: float, batch_var=None, scale=1.0, bias=0.0):
    """Liu et al. 2020, EvoNorm-B0 for NHWC input (``batch_var`` defaults to the batch's)."""
    x = f64(x)
    if batch_var is None:
        batch_var = x.var((0, 1, 2))
    left = np.sqrt(f64(batch_var) + eps)
    right = f64(v) * x + np.sqrt(x.var((1, 2), keepdims=True) + eps)
    return x / np.maximum(left, right) * f64(scale) + f64(bias)


def evonorm_s0_np(x, v, groups: int, eps: float, scale=1.0, bias=0.0):
    """Liu et al. 2020, EvoNorm-S0 for channels-last input (any number of spatial axes)."""
    x = f64(x)
    g = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = (*range(1, x.ndim - 1), x.ndim)
    std = np.sqrt(g.var(axes, keepdims=True) + eps)
    std = np.broadcast_to(std, g.shape).reshape(x.shape)
    return x / (1 + np.exp(-f64(v) * x)) / std * f64(scale) + f64(bias)


def zca_whiten_np(x, group_size: int, eps: float, mean=None, cov=None):
    """Huang et al. 2018: ZCA whitening of ``(m, C)`` data per group of ``group_size``.

    Returns ``(y, means, covs)``; ``mean``/``cov`` default to the batch statistics.
    """
    x = f64(x)
    m, c = x.shape
    xg = x.reshape(m, c // group_size, group_size)
    if mean is None:
        mean = xg.mean(0)
        dev = xg - mean
        cov = np.einsum("mgi,mgj->gij", dev, dev) / m
    mean = f64(mean).reshape(c // group_size, group_size)
    cov = f64(cov)
    out = np.empty_like(xg)
    for g in range(cov.shape[0]):
        lam, vec = np.linalg.eigh(cov[g])
        w = vec @ np.diag(1 / np.sqrt(lam + eps)) @ vec.T
        out[:, g] = (xg[:, g] - mean[g]) @ w.T
    return out.reshape(m, c), mean, cov
