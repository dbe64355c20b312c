"""The tangent map of a normalization as a linear primitive whose transpose is the closed form.

For ``y = (x - mu) * r * gamma + beta``, ``r = (var + eps)^-1/2``, the tangent is

    mu'  = sum m x' / n,          var' = 2 sum m (x - mu) x' / n     (sums psum'd on axis_name)
    r'   = -r^3 (var' + eps') / 2
    y'   = ((x' - mu') r + (x - mu) r') gamma + (x - mu) r gamma' + beta'

(``m`` the mask or 1, ``n`` the count; ``center=False``, RMSNorm, drops ``mu`` and ``mu'``).
:func:`ref_tangent` computes it with jnp operations. ``tangent_p`` is that map as a primitive,
linear in ``(x', gamma', beta', eps')``, whose transpose rule *is* the closed-form backward
(:func:`closed_form.backward`, and the CPU kernels behind it): left to JAX, the transpose of the
jnp tangent runs several times slower. Its rules: abstract evaluation (``y'`` typed like ``x'``,
shape and sharding, in the output dtype; the moments' tangents like the moments; inside
``shard_map`` the operands are first cast to vary over the same manual axes, as JAX's own
primitives require), lowering (:func:`ref_tangent`), JVP (second order) and batching (the same
primitive on a normalization with one more leading sample axis).

With ``axis_name`` (:func:`tangent`) the jnp tangent is used directly and JAX transposes it,
collectives included: a ``vmap`` axis name cannot be seen from inside a primitive's lowering.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from normjax._backend import closed_form
from normjax._backend.config import Config, param_view
from normjax._backend.kernels import same_vma
from normjax._checks import feature_shape
from normjax._numerics import safe_div
from normjax._typing import Array

__all__ = ["batched_config", "compiled", "front", "param_pair", "ref_tangent", "split_operands",
           "tangent", "tangent_p", "unbatched_shape"]

# Operands: res = (x, scale, bias, mask, eps, mean, var, count, center, bad), the residuals of
# closed_form.forward, and tangents = (x', gamma', beta', eps'); missing ones (no scale, no mask,
# ...) are None, and the primitives take the flattened pair with its treedef as a parameter.


def ref_tangent(cfg: Config, res: tuple, tangents: tuple) -> tuple[Array, Array, Array]:
    """``(y', mean', var')`` of the module docstring in jnp operations (keepdims moments)."""
    x, scale, _, mask, eps, mean, var, count, _, _ = res
    x_dot, scale_dot, bias_dot, eps_dot = tangents
    sdt = mean.dtype
    xd = x_dot.astype(sdt)
    xc = x.astype(sdt) - mean if cfg.center else x.astype(sdt)
    keep = None if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
    w = (lambda a: a) if keep is None else (lambda a: jnp.where(keep, a, 0))
    axes = cfg.reduction_axes
    sums = (jnp.sum(w(xd), axes, keepdims=True) if cfg.center else None,
            jnp.sum(w(xc * xd), axes, keepdims=True))
    if cfg.axis_name is not None:
        sums = lax.psum(sums, cfg.axis_name, axis_index_groups=cfg.axis_index_groups)
    inv_n = safe_div(jnp.ones_like(count), count).astype(sdt)
    mean_dot = sums[0] * inv_n if cfg.center else jnp.zeros_like(mean)
    var_dot = 2 * sums[1] * inv_n
    r = lax.rsqrt(var + eps.astype(sdt))
    r_dot = -0.5 * r**3 * (var_dot + eps_dot.astype(sdt))
    view = lambda p: param_view(p, x.shape, cfg.feature_axes, "parameter").astype(sdt)  # noqa: E731
    gamma = 1 if scale is None else view(scale)
    y_dot = ((xd - mean_dot) * r + xc * r_dot) * gamma
    if scale_dot is not None:
        y_dot = y_dot + xc * r * view(scale_dot)
    if bias_dot is not None:
        y_dot = y_dot + view(bias_dot)
    return y_dot.astype(cfg.dtype), mean_dot, var_dot


# --- the linear primitive --------------------------------------------------------------------

tangent_p = Primitive("normjax_normalize_tangent")
tangent_p.multiple_results = True


def split_operands(flat: Any, tree: Any) -> tuple[tuple, tuple]:
    """The ``(res, tangents)`` (or ``(primals, tangents)``) pair of a primitive's operands."""
    return jax.tree_util.tree_unflatten(tree, list(flat))


def _ref_flat(*flat: Any, cfg: Config, tree: Any) -> list[Array]:
    return list(ref_tangent(cfg, *split_operands(flat, tree)))


def _abstract_eval(*avals: Any, cfg: Config, tree: Any) -> list[Any]:
    res, tangents = split_operands(avals, tree)
    y = tangents[0].update(dtype=cfg.dtype, weak_type=False)
    mean, var = res[5], res[6]
    return [y, mean.update(weak_type=False), var.update(weak_type=False)]


def _transpose(cts: list, *flat: Any, cfg: Config, tree: Any) -> list:
    res, tangents = split_operands(flat, tree)
    avals = [jax.typeof(a) for a in res[5:7]]
    gy = ad.instantiate_zeros(cts[0])
    gstats = [jnp.zeros(a.shape, a.dtype) if type(ct) is ad.Zero else ct
              for ct, a in zip(cts[1:], avals, strict=True)]
    dx, dscale, dbias, _, deps = closed_form.backward(cfg, res, (gy, *gstats, None))
    grads = (dx, dscale, dbias, deps)
    out: list = [None] * sum(a is not None for a in res)
    for t, g in zip(tangents, grads, strict=True):
        if t is not None:
            out.append(g if ad.is_undefined_primal(t) else None)
    return out


def _jvp(primals: tuple, tangents: tuple, *, cfg: Config, tree: Any) -> tuple:
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    return jax.jvp(partial(_ref_flat, cfg=cfg, tree=tree), primals, tangents)


@lru_cache(maxsize=256)
def compiled(fn: Any, cfg: Config, tree: Any) -> Any:
    """``fn`` with its static parameters bound, jitted once: a primitive's eager evaluation
    (one compiled call instead of one dispatch per jnp operation)."""
    return jax.jit(partial(fn, cfg=cfg, tree=tree))


def _impl(*flat: Any, cfg: Config, tree: Any) -> list[Array]:
    return compiled(_ref_flat, cfg, tree)(*flat)


tangent_p.def_impl(_impl)
tangent_p.def_abstract_eval(_abstract_eval)
ad.primitive_transposes[tangent_p] = _transpose
ad.primitive_jvps[tangent_p] = _jvp
mlir.register_lowering(tangent_p, mlir.lower_fun(_ref_flat, multiple_results=True))


# --- batching: one more leading sample axis ---------------------------------------------------

def front(a: Any, d: Any, size: int) -> Any:
    """``a`` with its batch axis first (broadcast along a new first axis if unbatched)."""
    if a is None:
        return None
    if d is None:
        return jnp.broadcast_to(a, (size, *jnp.shape(a)))
    return jnp.moveaxis(a, d, 0)


def unbatched_shape(a: Any, d: Any) -> tuple[int, ...]:
    shape = list(jnp.shape(a))
    if d is not None:
        del shape[d]
    return tuple(shape)


def param_pair(p: Any, dp: Any, t: Any, dt: Any, size: int, x_shape: tuple[int, ...],
                feat: tuple[int, ...]) -> tuple[Any, Any, bool]:
    """A parameter (or epsilon, ``feat=()``) and its tangent for the batched normalization:
    both ``[B, *view]`` where either is batched (``view``: the rank-``x.ndim`` broadcastable
    form); else a feature-shaped one unchanged and a rank-``x.ndim`` one with a leading 1."""
    present = [(a, d) for a, d in ((p, dp), (t, dt)) if a is not None]
    if not present:
        return p, t, False
    shape = unbatched_shape(*present[0])
    feature_form = shape == feature_shape(x_shape, feat)
    view = (tuple(x_shape[a] if a in feat else 1 for a in range(len(x_shape)))
            if feature_form else shape)
    batched = any(d is not None for _, d in present)

    def lift(a: Any, d: Any) -> Any:
        if a is None:
            return None
        if batched:
            return front(a, d, size).reshape(size, *view)
        return a if feature_form else a.reshape(1, *view)

    return lift(p, dp), lift(t, dt), batched


def batched_config(cfg: Config, eps: Any, eps_batched: bool) -> Config:
    """``cfg`` for one more leading sample axis; without the kernels where epsilon is then
    not a scalar (they take one)."""
    new_cfg = cfg.with_leading_axis()
    if eps_batched or jnp.ndim(eps) > 0:
        new_cfg = new_cfg._replace(native=False)
    return new_cfg


def _batch(args: tuple, dims: tuple, *, cfg: Config, tree: Any) -> tuple[list, list]:
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True)
                if d is not None)
    res, tangents = split_operands(args, tree)
    rdims, tdims = split_operands(dims, tree)
    x, scale, bias, mask, eps, mean, var, count, center, bad = res
    x_shape = unbatched_shape(x, rdims[0])
    front = lambda a, d: front(a, d, size)  # noqa: E731
    x_like = [front(a, d) for a, d in zip((x, mask, mean, var, count, center),
                                          (rdims[0], rdims[3], *rdims[5:9]), strict=True)]
    if bad is not None and rdims[9] is not None:
        bad = jnp.any(bad, axis=rdims[9])
    feat = cfg.feature_axes
    scale, scale_dot, _ = param_pair(scale, rdims[1], tangents[1], tdims[1], size, x_shape,
                                      feat)
    bias, bias_dot, _ = param_pair(bias, rdims[2], tangents[2], tdims[2], size, x_shape, feat)
    eps, eps_dot, eps_batched = param_pair(eps, rdims[4], tangents[3], tdims[3], size,
                                            x_shape, ())
    new_cfg = batched_config(cfg, eps, eps_batched)
    x_b, mask_b, mean_b, var_b, count_b, center_b = x_like
    new_res = (x_b, scale, bias, mask_b, eps, mean_b, var_b, count_b, center_b, bad)
    new_tan = (front(tangents[0], tdims[0]), scale_dot, bias_dot, eps_dot)
    flat, new_tree = jax.tree_util.tree_flatten((new_res, new_tan))
    outs = tangent_p.bind(*flat, cfg=new_cfg, tree=new_tree)
    return outs, [0, 0, 0]


batching.primitive_batchers[tangent_p] = _batch


# --- the tangent map --------------------------------------------------------------------------

def tangent(cfg: Config, res: tuple, tangents: tuple) -> tuple[Array, Array, Array]:
    """The tangent map: the primitive (its transpose is the closed-form backward), or the jnp
    form where ``axis_name`` pools the statistics (see the module notes)."""
    if cfg.axis_name is not None:
        return ref_tangent(cfg, res, tangents)
    flat, tree = jax.tree_util.tree_flatten((res, tangents))
    return tuple(tangent_p.bind(*same_vma(tuple(flat)), cfg=cfg, tree=tree))
