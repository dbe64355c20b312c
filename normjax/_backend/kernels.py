"""JAX operations on the CPU kernels of :mod:`normjax._backend.build`, with pure-JAX twins.

The operations work on the kernels' layout ``x[B, R, C]`` (B samples, R rows reduced over,
C channels in G contiguous groups of K = C / G; see ``csrc/norm_kernels.cc``):

* :func:`group_moments`: per (sample, group) mean and biased variance (``center=False``:
  mean 0 and ``E[x^2]``, RMSNorm's statistic), stable (no ``E[x^2] - E[x]^2`` cancellation).
* :func:`normalize_grad`: the closed-form backward of ``y = (x - mean) * rstd * scale + bias``
  (Ioffe & Szegedy 2015, arXiv:1502.03167, Sec. 3; see :mod:`normjax._backend.closed_form`), with
  ``(mean, var)`` recomputed from ``x`` as :func:`group_moments` computes them (on the CPU the
  same code, so the same bits) and ``rstd = 1 / sqrt(var + eps)``::

      h = g * scale,  s1 = sum_group h,  t2 = sum_group h (x - mean),  n = R * K
      dx = rstd h + (g_mean - rstd s1) / n + (2 g_var - rstd^3 t2) / n * (x - mean)
      dscale = sum_{B,R} g (x - mean) rstd,   dbias = sum_{B,R} g,   deps = -rstd^3 t2 / 2

  with ``dscale``/``dbias`` summed over the samples that share a parameter row (``scale`` is
  ``[S, C]`` with S dividing B: one row per vmapped seed).

* :func:`rows_forward`: the whole forward of LayerNorm / RMSNorm rows (``R = 1``): the group
  moments and ``y = (x - mean) * rstd * scale + bias``, ``rstd = 1 / sqrt(var + eps)``.

On the CPU they lower to the custom calls; on any other platform (``lax.platform_dependent``)
and under forward-mode autodiff (a ``jax.custom_jvp`` whose tangent is that of the twin), the
pure-JAX twin runs. ``vmap`` adds leading sample axes (``vmap_method="broadcast_all"``).
Inside ``shard_map`` a kernel runs on each member's block (the operations are local): its
operands are cast to vary over the same manual axes and its results are declared to vary over
them (what JAX's own primitives do), so both branches of the platform switch have one type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from normjax._typing import Array

__all__ = ["group_moments", "normalize_grad", "ref_group_moments", "ref_normalize_grad",
           "ref_rows_forward", "rows_forward", "same_vma"]


def check_groups(channels: int, groups: int) -> None:
    """The kernels' layout needs G groups of equal size: ``channels % groups == 0``."""
    if groups <= 0 or channels % groups:
        raise ValueError(f"groups={groups} must be positive and divide the {channels} channels "
                         "(the last axis of the kernel layout x[..., R, C]).")


def _groups(x: Array, groups: int) -> Array:
    *lead, r, c = x.shape
    return x.reshape(*lead, r, groups, c // groups)


def ref_group_moments(x: Array, groups: int, center: bool) -> tuple[Array, Array]:
    """Pure-JAX :func:`group_moments` (two-pass variance)."""
    xg = _groups(x, groups)
    if not center:
        var = jnp.mean(xg * xg, (-3, -1))
        return jnp.zeros_like(var), var
    mean = jnp.mean(xg, (-3, -1), keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), (-3, -1))
    return jnp.squeeze(mean, (-3, -1)), var


def _expand(a: Array, k: int) -> Array:
    """``[..., G]`` per-group values to ``[..., 1, C]`` per channel."""
    return jnp.repeat(a, k, axis=-1)[..., None, :]


def ref_normalize_grad(g: Array, x: Array, eps: Array, scale: Array, g_mean: Array,
                       g_var: Array, center: bool) -> tuple[Array, ...]:
    """Pure-JAX :func:`normalize_grad` (the same formulas with XLA reductions)."""
    *_lead, r, c = x.shape
    groups = eps.shape[-1]
    mean, var = ref_group_moments(x, groups, center)
    rstd = lax.rsqrt(var + eps)
    k = c // groups
    per = scale.reshape(scale.shape[0], -1, 1, c)  # [S, B/S, 1, C]
    xs = x.reshape(scale.shape[0], -1, r, c)
    gs = g.reshape(xs.shape)
    mu = _expand(mean, k).reshape(scale.shape[0], -1, 1, c) if center else 0.0
    xc = xs - mu
    sg, sgx = jnp.sum(gs, 2, keepdims=True), jnp.sum(gs * xc, 2, keepdims=True)
    s1 = jnp.sum((per * sg).reshape(*sg.shape[:2], groups, k), -1)
    t2 = jnp.sum((per * sgx).reshape(*sg.shape[:2], groups, k), -1)
    rs = rstd.reshape(s1.shape)
    n = float(r * k)
    c1 = (2 * g_var.reshape(s1.shape) - rs**3 * t2) / n
    c0 = (g_mean.reshape(s1.shape) - rs * s1) / n if center else jnp.zeros_like(s1)
    dx = _expand(rs, k) * per * gs + _expand(c0, k) + _expand(c1, k) * xc
    dscale = jnp.sum(_expand(rs, k) * sgx, (1, 2))
    dbias = jnp.sum(sg, (1, 2))
    return dx.reshape(x.shape), dscale, dbias, (-0.5 * rs**3 * t2).reshape(eps.shape)


def _varying(a: Any) -> frozenset:
    """The manual mesh axes (``shard_map``) along which ``a`` varies; empty elsewhere."""
    mat = getattr(jax.typeof(a), "manual_axis_type", None)
    return frozenset(mat.varying) if mat is not None else frozenset()


def _results(shapes: Sequence[tuple[int, ...]], like: Array) -> tuple:
    """float32 result types of a custom call on operands typed like ``like``: inside
    ``shard_map``, varying over the same manual axes (per-member results)."""
    aval = jax.typeof(like)
    if not _varying(like):
        return tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)
    sharding = NamedSharding(aval.sharding.mesh, PartitionSpec())
    return tuple(jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding,
                                      manual_axis_type=aval.manual_axis_type) for s in shapes)


def same_vma(args: tuple) -> tuple:
    """``args`` cast to vary over the union of their manual axes (a custom call's operands
    must agree; a no-op outside ``shard_map``)."""
    union = frozenset().union(*(_varying(a) for a in args))
    if not union:
        return args
    return tuple(lax.pcast(a, tuple(sorted(union - _varying(a), key=str)), to="varying")
                 if union - _varying(a) else a for a in args)


def _dispatch(call: Callable, ref: Callable, args: tuple, *static: Any) -> Any:
    """The custom call on the CPU, the pure-JAX twin on every other platform."""
    return lax.platform_dependent(*same_vma(args), cpu=lambda *a: call(*a, *static),
                                  default=lambda *a: ref(*a, *static))


def _twin_jvp(op: Callable, ref: Callable, primals: tuple, tangents: tuple, *static: Any
              ) -> tuple:
    """``op``'s primal outputs with the tangents of its pure-JAX twin ``ref``."""
    _, dout = jax.jvp(lambda *a: ref(*a, *static), primals, tangents)
    return op(*primals, *static), dout


def _moments_call(x: Array, groups: int, center: bool) -> tuple[Array, Array]:
    outs = _results([(*x.shape[:-2], groups)] * 2, x)
    call = jax.ffi.ffi_call("normjax_moments", outs, vmap_method="broadcast_all")
    return tuple(call(x, center=center))


def _grad_call(g: Array, x: Array, eps: Array, scale: Array, g_mean: Array, g_var: Array,
               center: bool) -> tuple[Array, ...]:
    outs = _results([x.shape, scale.shape, scale.shape, eps.shape], x)
    call = jax.ffi.ffi_call("normjax_grad", outs, vmap_method="broadcast_all")
    return tuple(call(g, x, eps, scale, g_mean, g_var, center=center))


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def group_moments(x: Array, groups: int, center: bool) -> tuple[Array, Array]:
    """``(mean, var)`` of float32 ``x[..., R, C]`` per sample and channel group: ``[..., G]``."""
    check_groups(x.shape[-1], groups)
    return _dispatch(_moments_call, ref_group_moments, (x,), groups, center)


@group_moments.defjvp
def _group_moments_jvp(groups: int, center: bool, primals: tuple, tangents: tuple) -> tuple:
    return _twin_jvp(group_moments, ref_group_moments, primals, tangents, groups, center)


@partial(jax.custom_jvp, nondiff_argnums=(6,))
def normalize_grad(g: Array, x: Array, eps: Array, scale: Array, g_mean: Array, g_var: Array,
                   center: bool) -> tuple[Array, ...]:
    """``(dx, dscale, dbias, deps)`` of the module docstring, all float32; ``eps``, ``g_mean``,
    ``g_var`` and ``deps`` are ``[..., G]`` (per sample and group), ``scale`` is ``[S, C]``."""
    check_groups(x.shape[-1], eps.shape[-1])
    return _dispatch(_grad_call, ref_normalize_grad, (g, x, eps, scale, g_mean, g_var), center)


@normalize_grad.defjvp
def _normalize_grad_jvp(center: bool, primals: tuple, tangents: tuple) -> tuple:
    return _twin_jvp(normalize_grad, ref_normalize_grad, primals, tangents, center)


def ref_rows_forward(x: Array, scale: Array, bias: Array, eps: Array, center: bool
                     ) -> tuple[Array, Array, Array]:
    """Pure-JAX :func:`rows_forward`."""
    groups = eps.shape[-1]
    k = x.shape[-1] // groups
    mean, var = ref_group_moments(x, groups, center)
    rstd = lax.rsqrt(var + eps)
    sc = scale.reshape(scale.shape[0], -1, 1, x.shape[-1])
    bi = bias.reshape(sc.shape)
    xs = x.reshape(scale.shape[0], -1, *x.shape[-2:])
    per = lambda a: _expand(a, k).reshape(scale.shape[0], -1, 1, x.shape[-1])  # noqa: E731
    y = (xs - per(mean)) * (per(rstd) * sc) + bi
    return y.reshape(x.shape), mean, var


def _rows_call(x: Array, scale: Array, bias: Array, eps: Array, center: bool
               ) -> tuple[Array, Array, Array]:
    outs = _results([x.shape, eps.shape, eps.shape], x)
    call = jax.ffi.ffi_call("normjax_rows", outs, vmap_method="broadcast_all")
    return tuple(call(x, scale, bias, eps, center=center))


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def rows_forward(x: Array, scale: Array, bias: Array, eps: Array, center: bool
                 ) -> tuple[Array, Array, Array]:
    """``(y, mean, var)`` of float32 rows ``x[..., 1, C]``: ``eps`` (and the moments) are
    ``[..., G]`` per row and group, ``scale`` and ``bias`` ``[S, C]``."""
    if x.shape[-2] != 1:
        raise ValueError(f"rows_forward takes rows x[..., 1, C]; got shape {x.shape}.")
    check_groups(x.shape[-1], eps.shape[-1])
    return _dispatch(_rows_call, ref_rows_forward, (x, scale, bias, eps), center)


@rows_forward.defjvp
def _rows_forward_jvp(center: bool, primals: tuple, tangents: tuple) -> tuple:
    return _twin_jvp(rows_forward, ref_rows_forward, primals, tangents, center)
