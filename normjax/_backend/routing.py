"""Routing of the norms (:mod:`normjax._backend.closed_form`) to the CPU kernels.

:func:`native_layout` decides, at trace time, whether a normalization fits the kernels' view
``x[B, R, C]`` (:mod:`normjax._native_ops`); :func:`native_forward` and :func:`native_backward`
are the kernel versions of the forward moments and of the closed-form backward, with the same
residuals and cotangents as the XLA path, so either direction may take either path. The kernel
backward recomputes the statistics from ``x`` (it reads ``x`` anyway; per sample from cache)
instead of reading the forward's: a gradient-only program (``jax.grad`` of a loss that does not
use ``y`` itself elsewhere) then drops the forward's pass over ``x``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from normjax._backend import build
from normjax._backend import kernels as _native_ops
from normjax._backend.config import Config
from normjax._checks import feature_shape
from normjax._numerics import Moments
from normjax._typing import Array

__all__ = ["NATIVE_MAX_CHANNELS", "NativeLayout", "native_backward", "native_forward",
           "native_layout", "native_rows_forward"]


# Channels-last layouts with more channels than this (and R > 1, e.g. the MLP BatchNorm) keep
# their forward statistics on the XLA path (the moments kernel gained nothing there, and a
# program that also used y measured slower with it). Their backward runs in the kernel where a
# sample is too large for L2 (TWO_SWEEP_BYTES of x and g; the kernel then takes two sweeps,
# statistics and sums, then dx); smaller ones stay on the XLA path (the kernel would run them
# on one thread). BatchNorm NHWC (128 channels) and GroupNorm/InstanceNorm use both kernels.
NATIVE_MAX_CHANNELS = 256
TWO_SWEEP_BYTES = 1 << 20  # the kernels' NORMJAX_SAMPLE_BYTES


class NativeLayout(NamedTuple):
    """The kernels' view ``x[B, R, C]`` with ``G`` groups. ``forward``: the moments run in the
    moments kernel (the output ``y`` in XLA); ``rows`` (``R == 1``: LayerNorm, RMSNorm): the
    rows kernel computes the moments and ``y`` together, in one read of each row (measured
    0.75-0.78x the time of XLA's fused row forward on 8192 x 768)."""

    b: int
    r: int
    c: int
    g: int

    @property
    def forward(self) -> bool:
        return self.r > 1 and self.c <= NATIVE_MAX_CHANNELS

    @property
    def rows(self) -> bool:
        return self.r == 1


def native_layout(cfg: Config, x: Array, params: tuple[Any, ...], mask: Any
                  ) -> NativeLayout | None:
    """Where the CPU kernels of :mod:`normjax._native_ops` apply, else ``None``.

    They take float32, unmasked, single-device inputs whose axes run: sample axes (neither
    reduced nor feature), then the reduced non-feature axes (R), then the feature axes,
    group-indexing ones before reduced ones (C = G * K), with parameters of the feature shape:
    BN/IN/GN channels-last with at most :data:`NATIVE_MAX_CHANNELS` channels (wider ones where
    a sample's ``x`` and ``g`` exceed :data:`TWO_SWEEP_BYTES`, for the backward only:
    ``forward`` is then false), LayerNorm and RMSNorm over trailing axes. (Channels-first
    inputs stay on the XLA path: a kernel for their forward statistics was measured slower
    there.)
    """
    # Off the CPU the kernels' pure-JAX twins run: they need no compiled kernels, and the
    # switch (which is about the CPU kernels) does not apply there.
    kernels = cfg.native and build.native_available() if cfg.cpu else True
    # fast_variance asks for flax's one-pass variance, which the XLA path computes (the
    # kernels' variance is the stable one): they step aside for it.
    if (mask is not None or cfg.axis_name is not None or x.dtype != jnp.float32
            or not kernels or cfg.fast_variance):
        return None
    size = lambda axes: int(np.prod([x.shape[a] for a in axes]))  # noqa: E731
    if size(range(x.ndim)) == 0:
        return None
    feat, first, batch = cfg.feature_axes, cfg.first_axes, cfg.batch_axes(x.ndim)
    within = [a for a in feat if a in cfg.reduction_axes]
    index = [a for a in feat if a not in cfg.reduction_axes]
    expected = feature_shape(x.shape, feat)
    if ([*batch, *first, *index, *within] != list(range(x.ndim))
            or any(p is not None and jnp.shape(p) != expected for p in params)):
        return None
    lay = NativeLayout(size(batch), size(first), size(feat), size(index))
    if lay.r > 1 and lay.c > NATIVE_MAX_CHANNELS and 8 * lay.r * lay.c <= TWO_SWEEP_BYTES:
        return None
    return lay


def native_forward(cfg: Config, x: Array, lay: NativeLayout) -> Moments:
    """Keepdims moments from the kernel (stable two-pass per L1 chunk, merged exactly)."""
    b, r, c, g = lay
    mean, var = _native_ops.group_moments(x.reshape(b, r, c), g, cfg.center)
    return _keepdims(cfg, x, lay, mean, var)


def _keepdims(cfg: Config, x: Array, lay: NativeLayout, mean: Array, var: Array) -> Moments:
    kshape = tuple(1 if a in cfg.reduction_axes else d for a, d in enumerate(x.shape))
    count = jnp.full(kshape, float(lay.r * (lay.c // lay.g)), jnp.float32)
    return Moments(mean.reshape(kshape), var.reshape(kshape), count)


def _params(scale: Any, bias: Any, c: int) -> tuple[Array, Array]:
    f32 = jnp.float32
    gamma = jnp.ones((1, c), f32) if scale is None else scale.astype(f32).reshape(1, c)
    beta = jnp.zeros((1, c), f32) if bias is None else bias.astype(f32).reshape(1, c)
    return gamma, beta


def _eps(eps: Array, lay: NativeLayout) -> Array:
    """The kernels take epsilon per (sample, group): ``[B, G]`` float32."""
    return jnp.broadcast_to(eps.astype(jnp.float32), (lay.b, lay.g))


def native_rows_forward(cfg: Config, x: Array, scale: Any, bias: Any, eps: Array,
                        lay: NativeLayout) -> tuple[Array, Moments]:
    """``(y, keepdims moments)`` of LayerNorm / RMSNorm rows from the rows kernel."""
    b, _, c, _ = lay
    gamma, beta = _params(scale, bias, c)
    y, mean, var = _native_ops.rows_forward(x.reshape(b, 1, c), gamma, beta, _eps(eps, lay),
                                            cfg.center)
    return y.reshape(x.shape).astype(cfg.dtype), _keepdims(cfg, x, lay, mean, var)


def native_backward(cfg: Config, res: tuple, cts: tuple, lay: NativeLayout) -> tuple:
    """``(dx, dscale, dbias, None, deps)`` of :func:`normjax._backend.closed_form.backward`
    from the kernel, or from its pure-JAX twin when compiling for another platform than the CPU
    (no custom call is emitted then, so nothing depends on the kernels being built)."""
    x, scale, bias, _, eps, _, _, _, _, _ = res
    gy, gmean, gvar, _ = cts
    b, r, c, g = lay
    f32 = jnp.float32
    gamma, _ = _params(scale, None, c)
    grad = (_native_ops.normalize_grad if cfg.cpu
            else _native_ops.ref_normalize_grad)
    dx, dscale, dbias, deps = grad(
        gy.astype(f32).reshape(b, r, c), x.reshape(b, r, c), _eps(eps, lay), gamma,
        gmean.astype(f32).reshape(b, g), gvar.astype(f32).reshape(b, g), cfg.center)
    deps = jnp.sum(deps).astype(jnp.result_type(eps))
    dscale = None if scale is None else dscale.reshape(scale.shape).astype(scale.dtype)
    dbias = None if bias is None else dbias.reshape(bias.shape).astype(bias.dtype)
    return dx.reshape(x.shape).astype(x.dtype), dscale, dbias, None, deps
