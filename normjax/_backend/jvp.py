"""One differentiable function for every normalization, fast in both autodiff modes.

:func:`normalize` is a ``jax.custom_jvp``: its value is :func:`closed_form.forward` (the fast
forward: guarded variance, CPU kernels where they serve), its tangent the closed form of
:mod:`normjax._backend.tangent`. Its JVP rule binds one primitive, ``jvp_p``, for the value and
the tangent together; what happens next depends on the mode, which JAX tells the primitive
through its rules:

* **Forward mode** (``jax.jvp``, ``jax.jacfwd``): ``jvp_p`` lowers to one jnp program for both
  (:func:`normjax.moments` and its JVP), which XLA fuses as it fuses flax's norms.
* **Reverse mode** (``jax.grad``, ``jax.vjp``, ``jax.linearize``): JAX partially evaluates the
  JVP with the tangents unknown; ``jvp_p``'s partial-evaluation rules (the trace-level one, and
  the jaxpr-level one that ``jax.checkpoint`` uses) split it into the fast forward, evaluated
  now, and the tangent map as ``tangent_p``, whose transpose is the closed-form backward.

``jvp_p`` also has abstract evaluation (the types of its jnp program, shardings and varying
manual axes included), JVP (second order) and batching (one more leading sample axis; tangents
alone, as in ``jax.jacfwd``, batch the jnp program). With ``axis_name`` the value comes from
the fast forward and the tangent from the jnp form, which JAX transposes with its collectives.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import api_util, lax
from jax.extend import core
from jax.extend import linear_util as lu
from jax.extend.core import Primitive
from jax.extend.core.primitives import closed_call_p
from jax.interpreters import ad, batching, mlir
from jax.interpreters import partial_eval as pe

from normjax._backend import closed_form
from normjax._backend.config import Config
from normjax._backend.kernels import same_vma
from normjax._backend.tangent import (
    batched_config,
    compiled,
    front,
    param_pair,
    split_operands,
    tangent,
    unbatched_shape,
)
from normjax._numerics import one_pass_unstable, stats_dtype
from normjax._typing import Array
from normjax.stats import moments, standardize_core

__all__ = ["jvp_p", "normalize"]


# --- value and tangent together: one primitive, split where reverse mode needs it -----------

def _plain(cfg: Config, x: Array, scale: Any, bias: Any, mask: Any, eps: Array,
           guard: bool = True) -> tuple:
    """``(y, mean, var, count)`` in plain jnp operations: :func:`normjax.moments` (its guarded
    one-pass variance on the CPU, the shifted one-pass form elsewhere; the two-pass variance
    with ``guard=False``) and ``standardize``."""
    stats = moments(x, cfg.reduction_axes, mask=mask, axis_name=cfg.axis_name,
                    axis_index_groups=cfg.axis_index_groups, center=cfg.center,
                    fast_variance=cfg.fast_variance, guard=guard, keepdims=True)
    y = standardize_core(x, stats.mean, stats.var, epsilon=eps, scale=scale, bias=bias,
                    feature_axes=cfg.feature_axes, dtype=cfg.dtype)
    return (y, *stats)


def _branch_outside(cfg: Config, x: Array, mask: Any) -> bool:
    """Whether the forward-mode program takes :func:`_guarded_jvp`: the guarded variance of
    :func:`normjax.moments` on the CPU (real input, no mask, no ``axis_name``)."""
    return (cfg.cpu and cfg.center and not cfg.fast_variance and mask is None
            and cfg.axis_name is None and bool(cfg.reduction_axes)
            and not jnp.iscomplexobj(x)
            and math.prod(x.shape[a] for a in cfg.reduction_axes) > 0)


def _guarded_jvp(cfg: Config, x: Array, scale: Any, bias: Any, eps: Array,
                 tangents: tuple) -> list[Array]:
    """:func:`_plain`'s value and tangent with its guard taken once, around the whole output.

    The one-pass moments and their tangents (``sum x``, ``sum x^2``, ``sum x'``,
    ``sum x x'`` per group) decide the guard as :func:`normjax.moments` does; then one
    ``lax.cond`` picks either the output pass over those moments, or the whole two-pass
    program. A branch on the moments alone, between the reductions and the output pass,
    costs XLA:CPU about 15% of the call (measured on InstanceNorm NHWC); around the output
    it costs nothing measurable, and the values are the same.
    """
    x_dot, scale_dot, bias_dot, eps_dot = tangents
    axes, sdt = cfg.reduction_axes, stats_dtype(x.dtype)
    n = math.prod(x.shape[a] for a in axes)

    xf, xf_dot = x.astype(sdt), x_dot.astype(sdt)
    # The four sums written out: the JVP of sum(x * x), sum(x x' + x' x), is a slower
    # reduction for XLA:CPU than sum(x x') (about 25% of the call on InstanceNorm NHWC).
    mean, mean_dot = (jnp.sum(a, axes, keepdims=True) / n for a in (xf, xf_dot))
    var = jnp.sum(xf * xf, axes, keepdims=True) / n - mean * mean
    var_dot = 2 * (jnp.sum(xf * xf_dot, axes, keepdims=True) / n - mean * mean_dot)

    def output(x: Array, mean: Array, var: Array, scale: Any, bias: Any, eps: Array) -> tuple:
        var = jnp.maximum(var, 0)
        y = standardize_core(x, mean, var, epsilon=eps, scale=scale, bias=bias,
                        feature_axes=cfg.feature_axes, dtype=cfg.dtype)
        return y, mean, var

    def fast() -> list[Array]:
        out, dots = jax.jvp(output, (x, mean, var, scale, bias, eps),
                            (x_dot, mean_dot, var_dot, scale_dot, bias_dot, eps_dot))
        return [*out, *dots]

    def two_pass() -> list[Array]:
        f = lambda x, s, b, e: _plain(cfg, x, s, b, None, e, guard=False)  # noqa: E731
        out, dots = jax.jvp(f, (x, scale, bias, eps), tangents)
        return [*out[:3], *dots[:3]]

    y, mean, var, *dots = lax.cond(one_pass_unstable(mean, var), two_pass, fast)
    return [y, mean, var, jnp.full(mean.shape, n, sdt), *dots]


def _fused_jvp(*flat: Any, cfg: Config, tree: Any) -> list[Array]:
    """Pure forward mode: the value and its tangent in one program, which XLA fuses (two reads
    of ``x`` and ``x'``, as for flax's norms)."""
    (x, scale, bias, mask, eps), tangents = split_operands(flat, tree)
    if _branch_outside(cfg, x, mask):
        return _guarded_jvp(cfg, x, scale, bias, eps, tangents)
    f = lambda x, s, b, e: _plain(cfg, x, s, b, mask, e)  # noqa: E731
    out, dots = jax.jvp(f, (x, scale, bias, eps), tangents)
    return [*out, *dots[:3]]


def _split_jvp(*flat: Any, cfg: Config, tree: Any) -> list[Array]:
    """Reverse mode's form: the value from the fast forward (:func:`closed_form.forward`) and
    the tangent from the linear primitive, whose transpose is the closed-form backward."""
    primals, tangents = split_operands(flat, tree)
    outs, res = closed_form.forward(cfg, *primals)
    return [*outs, *tangent(cfg, res, tangents)]


jvp_p = Primitive("normjax_normalize_jvp")
jvp_p.multiple_results = True


@lru_cache(maxsize=256)
def _traced(fn: Any, avals: tuple, cfg: Config, tree: Any) -> tuple[Any, list]:
    """``fn``'s closed jaxpr and output types on ``avals`` (shardings and varying manual axes
    included: they follow from the operations themselves)."""
    f = partial(fn, cfg=cfg, tree=tree)
    dbg = api_util.debug_info("normjax", f, avals, {})
    jaxpr, out_avals, consts = pe.trace_to_jaxpr_dynamic(
        lu.wrap_init(f, debug_info=dbg), avals)
    return core.ClosedJaxpr(jaxpr, consts), out_avals


def _jvp_abstract_eval(*avals: Any, cfg: Config, tree: Any) -> list:
    return _traced(_fused_jvp, avals, cfg, tree)[1]


def _jvp_partial_eval(trace: Any, *tracers: Any, cfg: Config, tree: Any) -> list:
    """Linearization (``jax.grad``, ``jax.linearize``): with the tangents unknown, the value
    is computed now by the fast forward and the tangent map is staged as the linear primitive
    (:func:`_split_jvp`); with everything known, the fused forward-mode program."""
    if all(t.pval.is_known() for t in tracers):
        return trace.default_process_primitive(jvp_p, tracers, dict(cfg=cfg, tree=tree))
    with core.set_current_trace(trace):
        return _split_jvp(*tracers, cfg=cfg, tree=tree)


def _jvp_partial_eval_custom(saveable: Any, unks_in: list, inst_in: list, eqn: Any) -> Any:
    """The same split for JAX's jaxpr-level partial evaluation (``jax.checkpoint``): the
    equation becomes a call of :func:`_split_jvp`'s jaxpr, which JAX's own rule splits."""
    params = eqn.params
    avals = tuple(v.aval for v in eqn.invars)
    closed, _ = _traced(_split_jvp, avals, params["cfg"], params["tree"])
    call = eqn.replace(primitive=closed_call_p, params={"call_jaxpr": closed})
    return pe.partial_eval_jaxpr_custom_rules[closed_call_p](saveable, unks_in, inst_in, call)


def _jvp_jvp(primals: tuple, tangents: tuple, *, cfg: Config, tree: Any) -> tuple:
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    return jax.jvp(partial(_fused_jvp, cfg=cfg, tree=tree), primals, tangents)


def _jvp_batch(args: tuple, dims: tuple, *, cfg: Config, tree: Any) -> tuple[list, list]:
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    if all(d is None for d in dims[:tree.children()[0].num_leaves]):
        # Tangents only (jax.jacfwd): JAX batches the fused jnp program, keeping the value
        # unbatched.
        outs = jax.vmap(partial(_fused_jvp, cfg=cfg, tree=tree), in_axes=tuple(dims))(*args)
        return [o[0] for o in outs[:4]] + list(outs[4:]), [None] * 4 + [0] * 3
    (x, scale, bias, mask, eps), (x_dot, scale_dot, bias_dot, eps_dot) = split_operands(args, tree)
    (dx, ds, db, dm, de), (dxd, dsd, dbd, ded) = split_operands(dims, tree)
    x_shape = unbatched_shape(x, dx)
    feat = cfg.feature_axes
    scale, scale_dot, _ = param_pair(scale, ds, scale_dot, dsd, size, x_shape, feat)
    bias, bias_dot, _ = param_pair(bias, db, bias_dot, dbd, size, x_shape, feat)
    eps, eps_dot, eps_batched = param_pair(eps, de, eps_dot, ded, size, x_shape, ())
    new_cfg = batched_config(cfg, eps, eps_batched)
    primals = (front(x, dx, size), scale, bias, front(mask, dm, size), eps)
    flat, new_tree = jax.tree_util.tree_flatten(
        (primals, (front(x_dot, dxd, size), scale_dot, bias_dot, eps_dot)))
    outs = jvp_p.bind(*flat, cfg=new_cfg, tree=new_tree)
    return outs, [0] * len(outs)


jvp_p.def_impl(lambda *flat, cfg, tree: compiled(_fused_jvp, cfg, tree)(*flat))
jvp_p.def_abstract_eval(_jvp_abstract_eval)
mlir.register_lowering(jvp_p, mlir.lower_fun(_fused_jvp, multiple_results=True))
ad.primitive_jvps[jvp_p] = _jvp_jvp
batching.primitive_batchers[jvp_p] = _jvp_batch
pe.custom_partial_eval_rules[jvp_p] = _jvp_partial_eval
pe.partial_eval_jaxpr_custom_rules[jvp_p] = _jvp_partial_eval_custom


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def normalize(cfg: Config, x: Array, scale: Any, bias: Any, mask: Any, eps: Array) -> tuple:
    """``(y, mean, var, count)`` (keepdims moments) of :func:`closed_form.forward`,
    differentiable in both modes (see the module notes)."""
    return closed_form.forward(cfg, x, scale, bias, mask, eps)[0]


@normalize.defjvp
def _normalize_jvp(cfg: Config, primals: tuple, tangents: tuple) -> tuple:
    x_dot, scale_dot, bias_dot, _, eps_dot = tangents
    flat, tree = jax.tree_util.tree_flatten((primals, (x_dot, scale_dot, bias_dot, eps_dot)))
    if cfg.axis_name is not None:  # the jnp tangent, transposed by JAX with its collectives
        outs = _split_jvp(*flat, cfg=cfg, tree=tree)
    else:
        outs = jvp_p.bind(*same_vma(tuple(flat)), cfg=cfg, tree=tree)
    y, mean, var, count, *dots = outs
    return (y, mean, var, count), (*dots, jnp.zeros_like(count))
