"""The backend: the one entry point that computes a normalization and its derivatives.

:func:`normalize` is what ``batch_norm`` (train), ``layer_norm``, ``rms_norm``,
``instance_norm`` and ``group_norm`` (and the research variants built on them) call. It
computes ``y = standardize(x, *moments(x, reduction_axes)) * scale + bias`` and the moments:

* floating-point input, scalar ``epsilon``: :func:`fused_normalize`, the ``jax.custom_jvp`` of
  :mod:`normjax._backend.jvp`: the fast forward of :mod:`normjax._backend.closed_form` (CPU
  kernels where they serve), one fused program for forward mode, and the closed-form backward
  as the transpose of the tangent (:mod:`normjax._backend.tangent`) for reverse mode. Every
  JAX transform works on it.
* integer and bool input: promoted to float first (``promote_types(float32, dtype)``, as
  flax's norms do), then as above; the output is floating-point.
* complex input, a per-feature ``epsilon``, or :func:`use_fused_backward` ``(False)``:
  :func:`normjax.moments` + :func:`normjax.standardize` under plain autodiff (complex input is
  normalized with ``E[|x - mu|^2]``, as flax does).

Whether the CPU kernels serve is decided here, at trace time, once: the switch
(:func:`normjax.use_native_kernels`), the platform (:mod:`normjax._platform`) and the context
(an input that XLA partitions over devices, on an Explicit or an Auto mesh, takes the XLA
formulation; inside ``shard_map`` the kernels run per member). No setting is needed for
correctness.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normjax import _platform
from normjax._backend import jvp
from normjax._backend.build import (
    native_available,
    native_kernels_enabled,
    native_status,
    native_switch_on,
    set_native_kernels,
    use_native_kernels,
)
from normjax._backend.config import Config, param_view
from normjax._backend.switches import (
    fused_backward_enabled,
    set_fused_backward,
    use_fused_backward,
)
from normjax._checks import (
    broadcast_mask,
    canonicalize_axes,
    check_epsilon,
    check_reduction,
    poison_epsilon,
)
from normjax._numerics import Moments, stats_dtype
from normjax._typing import Array, ArrayLike, Axes
from normjax.stats import moments, standardize

__all__ = [
    "fused_backward_enabled",
    "fused_normalize",
    "native_available",
    "native_kernels_enabled",
    "native_status",
    "normalize",
    "routes_to_fused",
    "set_fused_backward",
    "set_native_kernels",
    "use_fused_backward",
    "use_native_kernels",
]


def _check_input(x: Array, epsilon: Any) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"fused_normalize needs a floating-point input, got dtype {x.dtype}; cast the "
            "input first (e.g. x.astype(jnp.float32))."
        )
    if jnp.ndim(epsilon) != 0:
        raise ValueError(f"epsilon must be a scalar, got an array of shape {jnp.shape(epsilon)}.")
    check_epsilon(epsilon)


def partitioned(x: Array) -> bool:
    """Whether XLA's partitioner splits, or may split, ``x`` over devices at trace time: ``x``
    sharded over an Explicit mesh axis (its type carries the spec), or a computation over an
    Auto mesh axis of several devices (``x``'s mesh or the context mesh, ``jax.set_mesh``),
    whose shardings XLA chooses. Inside ``shard_map`` (Manual axes) each member's block is
    local: not partitioned."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is not None and any(s is not None for s in spec):
        return True
    for mesh in (getattr(sharding, "mesh", None), jax.sharding.get_abstract_mesh()):
        if mesh is not None and not mesh.empty and any(
                t == jax.sharding.AxisType.Auto and n > 1
                for n, t in zip(mesh.axis_sizes, mesh.axis_types, strict=True)):
            return True
    return False


def kernels_may_serve(x: Array, cpu: bool) -> bool:
    """Whether the kernels' layout (the CPU kernels, or their pure-JAX twins off the CPU) may
    serve ``x``: on the CPU while the switch is on, and never on a :func:`partitioned` input
    (a custom call's operands would be gathered onto every device; the reshape to the kernels'
    layout would need a resharding)."""
    return (native_switch_on() or not cpu) and not partitioned(x)


def fused_normalize(
    x: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    reduction_axes: Axes,
    feature_axes: Axes,
    epsilon: float | ArrayLike,
    center: bool = True,
    mask: ArrayLike | None = None,
    axis_name: Hashable | None = None,
    axis_index_groups: Sequence[Sequence[int]] | None = None,
    fast_variance: bool = False,
    dtype: Any = None,
    keepdims: bool = False,
) -> tuple[Array, Moments]:
    """``y = standardize(x, *moments(x, reduction_axes)) * scale + bias`` and the moments.

    The values equal :func:`normjax.moments` followed by :func:`normjax.standardize` with the
    same arguments (``center=False`` is RMSNorm: ``var`` holds ``E[x^2]``); the gradient with
    respect to ``x``, ``scale``, ``bias``, ``epsilon`` and the returned moments is the closed
    form in :mod:`normjax._backend.closed_form`.

    Args:
      x: floating-point input.
      scale, bias: optional parameters shaped like ``x`` at ``feature_axes`` (or of rank
        ``x.ndim``, broadcastable to ``x``).
      reduction_axes: axes the statistics run over.
      feature_axes: axes carrying ``scale``/``bias``.
      epsilon: added to the variance; a Python number or a scalar array.
      center: subtract the mean (``False``: RMSNorm).
      mask: boolean, broadcastable to ``x``; only ``True`` elements enter the statistics.
      axis_name, axis_index_groups: pool the statistics across a named axis (``psum`` of sums
        and counts, as in :func:`normjax.moments`).
      fast_variance: one-pass variance in the forward (see :func:`normjax.moments`).
      dtype: output dtype (default ``x.dtype``).
      keepdims: return the moments with the reduced axes kept as size 1.

    Returns:
      ``(y, Moments(mean, var, count))``.

    Differentiable in both modes, to any order, under every transform (see
    :mod:`normjax._backend.tangent`).

    Raises:
      TypeError: a non-floating input.
      ValueError: bad axes, an empty reduction, a non-scalar or negative epsilon, or a
        parameter / mask that does not fit the input.
    """
    x = jnp.asarray(x)
    _check_input(x, epsilon)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    feat = canonicalize_axes(feature_axes, x.ndim, name="feature_axes")
    check_reduction(x.shape, axes, axis_name, "fused_normalize")
    if not axes and axis_name is None:
        raise ValueError(
            "fused_normalize: the statistics reduce over no axes (reduction_axes=()); "
            "normalize() takes that case (each element its own group, normalized to 0)."
        )
    scale, bias, mask = (None if a is None else jnp.asarray(a) for a in (scale, bias, mask))
    for name, p in (("scale", scale), ("bias", bias)):
        if p is not None:
            param_view(p, x.shape, feat, name)
    groups = None if axis_index_groups is None else tuple(tuple(g) for g in axis_index_groups)
    cpu = _platform.cpu_target()
    cfg = Config(axes, feat, bool(center), bool(fast_variance), axis_name, groups,
                 np.dtype(x.dtype if dtype is None else dtype), kernels_may_serve(x, cpu), cpu)
    eps = jnp.asarray(epsilon, stats_dtype(x.dtype))
    y, mean, var, count = jvp.normalize(cfg, x, scale, bias, mask, eps)
    if not keepdims:
        mean, var, count = (jnp.squeeze(a, axes) for a in (mean, var, count))
    return poison_epsilon(y, epsilon), Moments(mean, var, count)


def routes_to_fused(x: Array, epsilon: Any) -> bool:
    """Whether :func:`normalize` takes :func:`fused_normalize` for input ``x`` (after the
    promotion of integer and bool inputs) and this ``epsilon``."""
    return (not jnp.issubdtype(x.dtype, jnp.complexfloating) and jnp.ndim(epsilon) == 0
            and fused_backward_enabled())


def as_inexact(x: ArrayLike) -> Array:
    """``x``, with integer and bool inputs promoted to ``promote_types(float32, dtype)`` (what
    flax's norms compute their statistics in); floating and complex inputs unchanged."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    with jax.numpy_dtype_promotion("standard"):  # JAX's lattice, whatever the user's setting
        return x.astype(jnp.promote_types(jnp.float32, x.dtype))


def normalize(
    x: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    reduction_axes: Axes,
    feature_axes: Axes,
    epsilon: float | ArrayLike,
    center: bool = True,
    mask: ArrayLike | None = None,
    axis_name: Hashable | None = None,
    axis_index_groups: Any = None,
    fast_variance: bool = False,
    dtype: Any = None,
    keepdims: bool = True,
) -> tuple[Array, Moments]:
    """``(y, moments)`` of the norms: :func:`fused_normalize` where :func:`routes_to_fused`,
    else :func:`normjax.moments` + :func:`normjax.standardize` (the same values).

    The arguments are those of :func:`fused_normalize`. Bad axes, an empty reduction and a bad
    mask raise the errors of :func:`normjax.moments` on both paths, before anything else.
    Integer and bool inputs are promoted first (:func:`as_inexact`), so ``y`` is
    floating-point (``dtype`` default: the promoted dtype).
    """
    x = as_inexact(x)
    kwargs = dict(mask=mask, axis_name=axis_name, axis_index_groups=axis_index_groups,
                  center=center, fast_variance=fast_variance)
    elementwise = not canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes") and (
        axis_name is None)  # nothing to reduce: flax's values, by plain autodiff
    if elementwise or not routes_to_fused(x, epsilon):
        stats = moments(x, reduction_axes, keepdims=True, **kwargs)
        y = standardize(x, stats.mean, stats.var, epsilon=epsilon, scale=scale, bias=bias,
                        feature_axes=feature_axes, dtype=dtype)
        if not keepdims:
            axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
            stats = Moments(*(jnp.squeeze(a, axes) for a in stats))
        return y, stats
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    check_reduction(x.shape, axes, axis_name, "moments")
    if mask is not None:
        broadcast_mask(mask, x.shape)  # moments' check and message, ahead of the parameters'
    return fused_normalize(x, scale, bias, reduction_axes=axes, feature_axes=feature_axes,
                           epsilon=epsilon, dtype=dtype, keepdims=keepdims, **kwargs)
