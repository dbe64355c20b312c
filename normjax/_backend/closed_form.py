"""The forward of standardize-over-moments and its closed-form backward (reverse-mode) pass.

Every normalization in normjax computes ``y = (x - mu) * r * gamma + beta`` with
``r = 1 / sqrt(var + epsilon)`` and ``(mu, var)`` the moments over the reduction axes.
Differentiating that through :func:`normjax.moments` with autodiff stores and re-reads several
full-size temporaries. The gradient has a closed form instead (Ioffe & Szegedy 2015,
arXiv:1502.03167, Sec. 3), which this module implements once for BN/LN/IN/GN/RMSNorm. With
``h = g * gamma`` (``g`` the output cotangent), ``xhat = (x - mu) * r``, weights ``m`` (the mask,
or 1) and ``n = sum(m)`` over a group (psum'd across ``axis_name``)::

    dx     = r * (h - m * [sum(h) + xhat * sum(h * xhat)] / n)   (sums over the whole group)
           + m * (g_mu + 2 * g_var * (x - mu)) / n              (cotangents of the moments)
    dgamma = sum(g * xhat)      over the non-feature axes
    dbeta  = sum(g)             over the non-feature axes
    deps   = -sum(r^3 * sum_group(h * (x - mu))) / 2

Masked-out elements do not enter the statistics, so only masked-in elements carry the terms
through ``mu`` and ``var``; every element still gets the direct term ``r * h`` through its own
output. RMSNorm (``center=False``) drops the ``sum(h)`` and ``g_mu`` terms.

Speed (XLA:CPU). Forward: for statistics over non-feature axes (BN/IN/GN, unmasked), the
moments come from two plain reductions, ``sum x`` and ``sum x^2``, per channel, and the stable
two-pass variance is computed instead only when some group has ``mean^2 > 16 var`` (a
``lax.cond`` on a scalar, kept a branch under ``vmap``; :data:`normjax._numerics.GUARD_RATIO`):
the stability of :func:`normjax.moments`' default at the cost of flax's one-pass forward.
LayerNorm/RMSNorm rows and masked inputs use the two-pass moments directly (XLA fuses the row
statistics and the output into one kernel). GroupNorm merges per-channel sums (or per-channel
:class:`Moments`, :func:`normjax.stats.pool_moments`) into group moments. Backward: ``sum g`` and
``sum g x`` per channel (``sum g (x - c)`` after a two-pass forward) plus one elementwise pass
for ``dx``; LayerNorm/RMSNorm need four reductions (two per row, two per feature). The
residuals are the input itself and per-group statistics; nothing full-size is stored. The
comments mark the places where the formulation steers XLA:CPU's fusion (each measured).

Compiled for another platform than the CPU (:mod:`normjax._platform`), the barriers that
steer XLA:CPU are left out and the forward statistics are the one-pass shifted-data moments
(no ``lax.cond``, which a GPU pays with a device-to-host sync on every call).

On the CPU, float32 channels-last BN/IN/GN (forward moments and backward) and LayerNorm/RMSNorm
(forward and backward) run in the kernels of :mod:`normjax._backend.kernels` instead, routed by
:mod:`normjax._backend.routing` (the same values up to float32 rounding).

:func:`backward` is the transpose of the linear tangent map of :mod:`normjax._backend.tangent`:
that module makes the pair one differentiable function in both modes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax import _platform
from normjax._backend.config import Config, param_view, sum_to_shape
from normjax._backend.routing import (
    native_backward,
    native_forward,
    native_layout,
    native_rows_forward,
)
from normjax._numerics import Moments, guarded_variance, pool_moments, shifted_moments, stats_dtype
from normjax._typing import Array
from normjax.stats import moments, standardize_core

__all__ = ["backward", "forward"]


def _sum(a: Array, axes: Sequence[int]) -> Array:
    return jnp.sum(a, tuple(axes), keepdims=True) if axes else a


def _private_sum(cpu: bool, fn: Callable[..., Array], leaves: tuple[Any, ...],
                 axes: Sequence[int]) -> Array:
    """``sum(fn(*leaves), axes)`` on a private copy of ``leaves`` (no runtime cost).

    XLA:CPU materializes a full-size value (``x - mu``, a broadcast) that several reductions
    share; the barrier gives each reduction its own expression, which it then fuses.
    """
    return _sum(fn(*_platform.cpu_barrier(leaves, cpu)), axes)


def _guarded(cfg: Config) -> bool:
    """Whether the forward takes the guarded one-pass variance (unmasked inputs only):
    centered, stable variance requested, and statistics that run over non-feature axes
    (BN/IN/GN; LayerNorm's row statistics fuse into one kernel with the output, where the
    second pass is free)."""
    return cfg.center and not cfg.fast_variance and bool(cfg.first_axes)


def _staged_moments(cfg: Config, x: Array, mask: Array | None) -> tuple[Moments, Array]:
    """Keepdims moments of :func:`normjax.moments` without the guard (two-pass unless
    ``fast_variance``), staged per channel when that is cheaper, and the centering mean for
    the backward: the mean over ``first_axes`` only (the per-channel mean when staged), a
    broadcast XLA:CPU reduces faster."""
    kwargs = dict(mask=mask, axis_name=cfg.axis_name, axis_index_groups=cfg.axis_index_groups,
                  center=cfg.center, fast_variance=cfg.fast_variance, guard=False,
                  keepdims=True)
    first, group = cfg.first_axes, cfg.group_axes
    if not (first and group):
        stats = moments(x, cfg.reduction_axes, **kwargs)
        return stats, stats.mean
    per = moments(x, first, **kwargs)
    return pool_moments(per, group, keepdims=True), per.mean


def _guarded_moments(cfg: Config, x: Array) -> tuple[Moments, Array]:
    """Moments from the sums of ``x`` and ``x^2`` (two plain reductions, which XLA:CPU runs
    as fast single-input kernels), with the stable two-pass variance computed instead (a
    ``lax.cond``) when any group has ``mean^2 > GUARD_RATIO * var``, as :func:`normjax.moments`
    does. Returns the moments and that condition (a scalar bool, the same on every member of
    ``axis_name``)."""
    xf = x.astype(stats_dtype(x.dtype))
    first, group = cfg.first_axes, cfg.group_axes
    s1, s2 = jnp.sum(xf, first, keepdims=True), jnp.sum(xf * xf, first, keepdims=True)
    if group:  # keep the per-channel reductions (XLA would merge them into one over the group)
        s1, s2 = _platform.cpu_barrier((s1, s2), cfg.cpu)
        s1, s2 = jnp.sum(s1, group, keepdims=True), jnp.sum(s2, group, keepdims=True)
    n = jnp.full(s1.shape, float(np.prod([x.shape[a] for a in cfg.reduction_axes])), xf.dtype)
    if cfg.axis_name is not None:
        s1, s2, n = lax.psum((s1, s2, n), cfg.axis_name, axis_index_groups=cfg.axis_index_groups)
    mean = s1 / n
    var, bad = guarded_variance(mean, s2 / n - mean * mean,
                                lambda: _staged_moments(cfg, x, None)[0].var)
    return Moments(mean, var, n), bad


def _group_moments(cfg: Config, x: Array, mask: Array | None
                   ) -> tuple[Moments, Array, Array | None]:
    """Keepdims moments over ``cfg.reduction_axes``, the centering mean for the backward (see
    :func:`_staged_moments`), and whether the two-pass variance was taken (``None`` where the
    forward is not guarded)."""
    if (mask is None and cfg.center and not cfg.fast_variance and cfg.axis_name is None
            and not cfg.cpu):
        stats = shifted_moments(x, cfg.reduction_axes)
        return stats, stats.mean, None
    if mask is None and _guarded(cfg):
        stats, bad = _guarded_moments(cfg, x)
        return stats, stats.mean, bad
    return (*_staged_moments(cfg, x, mask), None)


def _centered(cfg: Config, x: Array, mean: Array) -> Array:
    xf = x.astype(mean.dtype)
    return xf - mean if cfg.center else xf


def forward(cfg: Config, x: Array, scale: Any, bias: Any, mask: Any, eps: Array) -> tuple:
    """``((y, mean, var, count), residuals)``: keepdims moments, and what :func:`backward`
    (and the tangent of :mod:`normjax._backend.tangent`) needs: ``(x, scale, bias, mask, eps,
    mean, var, count, center, bad)``, ``center`` the centering mean of the backward's sums and
    ``bad`` whether a guarded forward took the two-pass variance (else ``None``)."""
    lay = native_layout(cfg, x, (scale, bias), mask) if cfg.cpu else None
    if lay is not None and lay.rows and cfg.dtype == np.float32:
        y, stats = native_rows_forward(cfg, x, scale, bias, eps, lay)
        return (y, *stats), (x, scale, bias, mask, eps, *stats, stats.mean, None)
    if lay is not None and lay.forward:
        stats = native_forward(cfg, x, lay)
        center, bad = stats.mean, None
    else:
        stats, center, bad = _group_moments(cfg, x, mask)
    xb, mean, var = x, stats.mean, stats.var
    if cfg.first_axes or not cfg.center:
        # Keeps XLA:CPU from materializing the shared ``x - mean`` of the variance pass and
        # this one (BN/IN/GN: measured 1.3-1.5x faster). LayerNorm's row sums are left
        # alone: there XLA fuses all three passes (bfloat16: 2x faster without the barrier).
        xb, mean, var = _platform.cpu_barrier((xb, mean, var), cfg.cpu)
    y = standardize_core(xb, mean, var, epsilon=eps, scale=scale, bias=bias,
                    feature_axes=cfg.feature_axes, dtype=cfg.dtype)
    return (y, *stats), (x, scale, bias, mask, eps, *stats, center, bad)


def _centered_gsum(cfg: Config, res: tuple, gy: Array, p1: Array) -> Array:
    """``sum g (x - mean)`` over ``first_axes`` (``p1 = sum g`` there).

    After a guarded one-pass forward, as ``sum g x - mean sum g``: a product of two inputs,
    which XLA:CPU reduces much faster than one with a broadcast operand, and accurate where that
    forward was taken (``|mean| <= 4 std``). Otherwise centered on the (per-channel) mean,
    ``sum g (x - c) + (c - mean) sum g``, exactly.
    """
    x, _, _, _, _, mean, _, _, center, bad = res
    sdt = mean.dtype

    def shifted(gy: Array, x: Array, c: Array) -> Array:
        p2 = _private_sum(cfg.cpu, lambda g, x, c: g.astype(sdt) * _centered(cfg, x, c), (gy, x, c),
                          cfg.first_axes)
        return p2 + (c - mean) * p1 if cfg.group_axes and cfg.center else p2

    if bad is None:
        return shifted(gy, x, center)
    gx = _private_sum(cfg.cpu, lambda g, x: g.astype(sdt) * x.astype(sdt), (gy, x), cfg.first_axes)
    return lax.cond(bad, lambda gy, x, c, plain: shifted(gy, x, c),
                    lambda gy, x, c, plain: plain, gy, x, center, gx - mean * p1)


def _shared_axes(cfg: Config, p: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The batch axes (neither reduced nor feature) that parameter ``p`` is shared along: its
    gradient sums over them (all of them for a feature-shaped ``p``; a rank-``x.ndim`` one may
    differ along some, e.g. one row per ``vmap``-ped member)."""
    if p is None:
        return ()
    view = param_view(p, shape, cfg.feature_axes, "parameter")
    return tuple(a for a in cfg.batch_axes(len(shape)) if view.shape[a] == 1)


def _group_sums(cfg: Config, res: tuple, gy: Array, gamma: Any) -> tuple[Array, ...]:
    """``(sum h, sum h (x - mu))`` per group and the parameter gradients (before reshaping).

    Full-size reductions go over ``first_axes`` (per channel) when there are any; the group
    and batch sums then run on those small results. Otherwise (LayerNorm, RMSNorm) the four
    sums each read the inputs once.
    """
    x, scale, bias, _, eps, mean, var, _, _, _ = res
    sdt = mean.dtype
    r = lax.rsqrt(var + eps.astype(sdt))
    first, group = cfg.first_axes, cfg.group_axes
    g_of = lambda g: g.astype(sdt)  # noqa: E731
    dscale = dbias = None
    if first:
        p1 = _private_sum(cfg.cpu, g_of, (gy,), first)
        p2 = _centered_gsum(cfg, res, gy, p1)
        s1, t2 = _sum(gamma * p1, group), _sum(gamma * p2, group)
        if bias is not None:
            dbias = _sum(p1, _shared_axes(cfg, bias, x.shape))
        if scale is not None:
            dscale = _sum(r * p2, _shared_axes(cfg, scale, x.shape))
        return r, s1, t2, dscale, dbias
    # (x - m) * (g * c), not (g * (x - m)) * c: XLA:CPU's reduction kernel multiplies an
    # intermediate by a broadcast about 1.6x slower (measured).
    gxc_times = lambda g, x, m, c: _centered(cfg, x, m) * (g_of(g) * c)  # noqa: E731
    s1 = _private_sum(cfg.cpu, lambda g, c: g_of(g) * c, (gy, gamma), group)
    t2 = _private_sum(cfg.cpu, gxc_times, (gy, x, mean, gamma), group)
    if bias is not None:
        dbias = _private_sum(cfg.cpu, g_of, (gy,), _shared_axes(cfg, bias, x.shape))
    if scale is not None:
        dscale = _private_sum(cfg.cpu, gxc_times, (gy, x, mean, r),
                              _shared_axes(cfg, scale, x.shape))
    return r, s1, t2, dscale, dbias


def _param_grad(grad: Array | None, p: Any, shape: tuple[int, ...], cfg: Config) -> Any:
    """Sums a keepdims per-feature gradient down to the shape and dtype of parameter ``p``."""
    if p is None:
        return None
    view = param_view(p, shape, cfg.feature_axes, "parameter")
    return sum_to_shape(grad, view.shape, jnp.result_type(p)).reshape(jnp.shape(p))


def backward(cfg: Config, res: tuple, cts: tuple) -> tuple:
    """``(dx, dscale, dbias, None, deps)`` for output cotangents ``(gy, gmean, gvar, gcount)``
    and the residuals of :func:`forward`."""
    x, scale, bias, mask, eps, mean, var, count, _, _ = res
    lay = native_layout(cfg, x, (scale, bias), mask)
    if lay is not None and (lay.rows or cfg.cpu):
        # Off the CPU the kernel's pure-JAX twin, which recomputes the row moments: faster
        # there than the four reductions below for LayerNorm/RMSNorm rows (measured on a GPU).
        return native_backward(cfg, res, cts, lay)
    gy, gmean, gvar, _ = cts
    sdt = mean.dtype
    gamma = (jnp.ones((1,) * x.ndim, sdt) if scale is None
             else param_view(scale, x.shape, cfg.feature_axes, "scale").astype(sdt))
    r, s1, t2, dscale, dbias = _group_sums(cfg, res, gy, gamma)
    deps = sum_to_shape(-0.5 * r**3 * t2, jnp.shape(eps), jnp.result_type(eps))
    if cfg.axis_name is not None:
        s1, t2 = lax.psum((s1, t2), cfg.axis_name, axis_index_groups=cfg.axis_index_groups)
    # c0 = (g_mu - r s1) / n and c1 = (2 g_var - r^3 t2) / n, written to end in a division
    # by a data-dependent value: XLA then materializes them (a division is "expensive")
    # instead of recomputing their expressions for every element of dx.
    sigma = jnp.sqrt(var + eps.astype(sdt))
    n = jnp.where(count > 0, count, jnp.inf)
    c1 = (2 * gvar.astype(sdt) * sigma**3 - t2) / (n * sigma**3)
    c0 = (gmean.astype(sdt) * sigma - s1) / (n * sigma) if cfg.center else jnp.zeros((), sdt)
    xb, gb, mb = _platform.cpu_barrier((x, gy, mean), cfg.cpu)
    corr = c0 + c1 * _centered(cfg, xb, mb)
    if mask is not None:
        corr = jnp.where(jnp.broadcast_to(jnp.asarray(mask).astype(bool), x.shape), corr, 0)
    dx = (r * gamma) * gb.astype(sdt) + corr
    # Inside shard_map the operands were cast to vary over the same manual axes before the
    # tangent primitive (normjax._backend.tangent), so these already have their types; the
    # sums over members for replicated parameters are the transposes of those casts.
    dscale = _param_grad(dscale, scale, x.shape, cfg)
    dbias = _param_grad(dbias, bias, x.shape, cfg)
    return dx.astype(x.dtype), dscale, dbias, None, deps

