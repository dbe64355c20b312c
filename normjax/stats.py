"""The shared statistics core: every normalization in normjax is built on these functions.

BatchNorm, LayerNorm, InstanceNorm, GroupNorm and RMSNorm differ only in *which axes* the
statistics run over. :func:`moments` computes those statistics once, carefully:

* **Precision.** Accumulation happens in ``float32`` for ``float16`` / ``bfloat16`` /
  ``float32`` inputs (``float64`` stays ``float64``), whatever the input dtype.
* **Stability.** The default variance is *guarded*: the one-pass ``E[x^2] - E[x]^2`` (one read
  of the input, as fast as flax) wherever every group has ``mean^2 <= 16 var``, where its
  relative error is at most about 17 roundings (float32: ~2e-6), and the two-pass
  ``E[(x - E[x])^2]`` (exact when ``|mean| >> std``) for the whole call otherwise, chosen by a
  ``lax.cond`` on a scalar. ``guard=False`` always takes the two-pass form. The unguarded
  one-pass form (what flax and haiku use by default; it loses all precision at e.g. mean 3000,
  std 1 in float32) is ``fast_variance=True``.
* **Masks and devices.** With a ``mask`` only masked-in elements count. With ``axis_name`` the
  statistics are the *global* ones over every member of the named axis, weighted by the true
  element counts: sums, sums of squared deviations and counts are reduced with ``psum`` —
  never a mean of per-device means, which is wrong as soon as counts differ.

* **Complex input** is normalized as flax does: ``mean = E[x]`` (complex) and
  ``var = E[|x - mean|^2]`` (real).

The norms built on this core (BN/LN/IN/GN/RMSNorm) compute it through ``normjax._backend``,
which gives the same values with closed-form derivatives in both autodiff modes.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from normjax import _platform
from normjax._checks import (
    broadcast_mask,
    canonicalize_axes,
    check_epsilon,
    check_reduction,
    feature_shape,
    poison_epsilon,
)
from normjax._numerics import (
    Moments,
    abs2,
    guarded_variance,
    pool_moments,
    safe_div,
    shifted_moments,
    stats_dtype,
    work_dtype,
)
from normjax._typing import Array, ArrayLike, Axes, AxisName

__all__ = ["Moments", "moments", "pool_moments", "standardize", "standardize_core"]


def _psum(tree: Any, axis_name: AxisName, axis_index_groups: Any) -> Any:
    if axis_name is None:
        return tree
    return lax.psum(tree, axis_name, axis_index_groups=axis_index_groups)


def moments(
    x: ArrayLike,
    reduction_axes: Axes,
    *,
    mask: ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    center: bool = True,
    fast_variance: bool = False,
    guard: bool = True,
    keepdims: bool = False,
) -> Moments:
    """Mean, variance and element count of ``x`` over ``reduction_axes``.

    With weights ``m_i`` (the mask, or 1), the statistics are::

        n    = sum_i m_i                      (psum over axis_name)
        mean = sum_i m_i x_i / n              (psum over axis_name)
        var  = sum_i m_i (x_i - mean)^2 / n   (two-pass)
        var  = max(0, sum_i m_i x_i^2 / n - mean^2)      (one-pass)

    By default (no mask, ``center=True``) the one-pass form is taken when every group has
    ``mean^2 <= 16 var`` (relative error at most about 17 roundings, float32 ~2e-6; one read of
    ``x`` and one collective round) and the two-pass form otherwise (see :data:`GUARD_RATIO`);
    with a mask, or ``guard=False``, always the two-pass form; with ``fast_variance=True``
    always the one-pass form. Compiled for a GPU or TPU (where the guard's branch would cost a
    device-to-host sync per call), the default without mask or ``axis_name`` is
    :func:`shifted_moments` instead: one read, no branch, no cancellation at large means.

    The variance is the biased (population) one. With ``center=False`` the mean is zero and
    ``var`` is the raw second moment ``E[x^2]`` (RMSNorm). Where no element is masked in
    (``n == 0``) mean and var are 0.

    Args:
      x: input array.
      reduction_axes: axes to reduce over (an int or a sequence of ints).
      mask: optional boolean array broadcastable to ``x``; only ``True`` elements count.
        Masked-out values never enter the arithmetic (NaN padding is harmless).
      axis_name: a named axis (``jax.vmap``, ``shard_map``, ``pmap``) to reduce across too.
        The result is the statistics of all members' elements pooled together.
      axis_index_groups: subgroups of ``axis_name`` to reduce within (see ``lax.psum``).
      center: subtract the mean (``False`` gives ``E[x^2]`` in ``var``).
      fast_variance: always use the one-pass ``E[x^2] - E[x]^2`` form (one collective round
        instead of two, inaccurate when ``|mean| >> std``).
      guard: with the default stable variance, take the one-pass form where it is accurate
        (``False``: always two passes).
      keepdims: keep the reduced axes as size-1 dimensions.

    Returns:
      :class:`Moments` in the statistics dtype (float32, or float64 for float64 input).

    With no ``reduction_axes`` and no ``axis_name`` every element is its own group (as in
    flax): ``mean = x``, ``var = 0`` (a norm then returns its bias).

    Raises:
      ValueError: reduction axes that hold no elements, or a mask that does not broadcast.
      TypeError: axes that are not ints, or a non-boolean mask.
      NameError: an ``axis_name`` no enclosing transform binds.
    """
    x = jnp.asarray(x)
    axes = canonicalize_axes(reduction_axes, x.ndim, name="reduction_axes")
    check_reduction(x.shape, axes, axis_name, "moments")
    xf = x.astype(work_dtype(x.dtype))
    keep = broadcast_mask(mask, x.shape) if mask is not None else None
    if jnp.iscomplexobj(xf):
        stats = _complex_moments(xf, axes, keep, axis_name, axis_index_groups, center)
        return stats if keepdims else Moments(*(jnp.squeeze(a, axes) for a in stats))
    if not axes and axis_name is None:
        stats = _elementwise_moments(xf, keep, center)
        return stats  # nothing reduced: keepdims changes nothing
    if keep is not None:
        xf = jnp.where(keep, xf, 0)
        n = jnp.sum(keep, axes, dtype=xf.dtype, keepdims=True)
    else:
        n = jnp.full((1,) * x.ndim, math.prod(x.shape[a] for a in axes), xf.dtype)
    if not center:
        sq, n = _psum((jnp.sum(xf * xf, axes, keepdims=True), n), axis_name, axis_index_groups)
        var = safe_div(sq, n)
        mean = jnp.zeros_like(var)
    elif guard and keep is None and not fast_variance and axis_name is None and (
            not _platform.cpu_target()):
        shifted = shifted_moments(xf, axes)  # no branch off the CPU (see normjax._platform)
        mean, var = shifted.mean, shifted.var
    elif fast_variance or (guard and keep is None):
        s, sq, n = _psum(
            (jnp.sum(xf, axes, keepdims=True), jnp.sum(xf * xf, axes, keepdims=True), n),
            axis_name,
            axis_index_groups,
        )
        mean = safe_div(s, n)
        one_pass = safe_div(sq, n) - mean * mean
        if fast_variance:
            var = jnp.maximum(one_pass, 0)
        else:
            var, _ = guarded_variance(mean, one_pass, lambda: _two_pass_var(
                xf, mean, n, axes, keep, axis_name, axis_index_groups))
    else:
        s, n = _psum((jnp.sum(xf, axes, keepdims=True), n), axis_name, axis_index_groups)
        mean = safe_div(s, n)
        var = _two_pass_var(xf, mean, n, axes, keep, axis_name, axis_index_groups)
    n = jnp.broadcast_to(n, mean.shape)
    if not keepdims:
        mean, var, n = (jnp.squeeze(a, axes) for a in (mean, var, n))
    return Moments(mean, var, n)


def _elementwise_moments(xf: Array, keep: Array | None, center: bool) -> Moments:
    """The moments over no axes, as flax computes them: each element is its own group, so
    ``mean = x`` and ``var = 0`` (``center=False``: ``mean = 0``, ``var = |x|^2``), and the
    normalized value is 0 (a norm returns its bias). Masked-out elements get count 0 and
    zero statistics."""
    rdt = stats_dtype(xf.dtype)
    n = jnp.ones(xf.shape, rdt) if keep is None else keep.astype(rdt)
    mean = xf * n.astype(xf.dtype) if center else jnp.zeros_like(xf)
    var = jnp.zeros(xf.shape, rdt) if center else abs2(xf) * n
    return Moments(mean, var, n)


def _complex_moments(xf: Array, axes: tuple[int, ...], keep: Array | None, axis_name: AxisName,
                     axis_index_groups: Any, center: bool) -> Moments:
    """Keepdims moments of complex ``xf``, as flax normalizes complex input: ``mean = E[x]``
    (complex; 0 without ``center``) and ``var = E[|x - mean|^2]`` (real, two-pass)."""
    rdt = stats_dtype(xf.dtype)
    if keep is not None:
        xf = jnp.where(keep, xf, 0)
        n = jnp.sum(keep, axes, dtype=rdt, keepdims=True)
    else:
        n = jnp.full((1,) * xf.ndim, math.prod(xf.shape[a] for a in axes), rdt)
    s, n = _psum((jnp.sum(xf, axes, keepdims=True), n), axis_name, axis_index_groups)
    mean = s * safe_div(jnp.ones_like(n), n).astype(s.dtype) if center else jnp.zeros_like(s)
    dev2 = abs2(xf - mean)
    if keep is not None:
        dev2 = jnp.where(keep, dev2, 0)
    var = safe_div(_psum(jnp.sum(dev2, axes, keepdims=True), axis_name, axis_index_groups), n)
    return Moments(mean, var, jnp.broadcast_to(n, var.shape))


def _two_pass_var(xf: Array, mean: Array, n: Array, axes: tuple[int, ...], keep: Array | None,
                  axis_name: AxisName, axis_index_groups: Any) -> Array:
    """``sum m (x - mean)^2 / n`` over ``axes`` (and ``axis_name``): the second pass."""
    dev = xf - mean
    if keep is not None:
        dev = jnp.where(keep, dev, 0)
    ss = _psum(jnp.sum(dev * dev, axes, keepdims=True), axis_name, axis_index_groups)
    return safe_div(ss, n)


def _as_broadcastable(
    value: ArrayLike, x_shape: tuple[int, ...], feature_axes: tuple[int, ...], name: str
) -> Array:
    """Reshapes a per-feature array to broadcast against ``x``.

    Accepts either the feature shape (``x.shape`` at ``feature_axes``) or an array of rank
    ``x.ndim`` that broadcasts to ``x`` (e.g. statistics computed with ``keepdims=True``).
    """
    value = jnp.asarray(value)
    expected = feature_shape(x_shape, feature_axes)
    if value.shape == expected:
        bshape = [1] * len(x_shape)
        for a in feature_axes:
            bshape[a] = x_shape[a]
        return value.reshape(bshape)
    if value.ndim == len(x_shape):
        try:
            if np.broadcast_shapes(value.shape, x_shape) == tuple(x_shape):
                return value
        except ValueError:
            pass
    raise ValueError(
        f"{name} has shape {value.shape}, expected {expected} (the input shape {x_shape} at "
        f"feature_axes {feature_axes}) or a rank-{len(x_shape)} shape that broadcasts to "
        "the input."
    )


def standardize(
    x: ArrayLike,
    mean: ArrayLike,
    var: ArrayLike,
    *,
    epsilon: float,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    feature_axes: Axes = -1,
    dtype: Any = None,
) -> Array:
    """``y = (x - mean) * rsqrt(var + epsilon) * scale + bias``.

    Arithmetic runs in the statistics dtype (at least float32; its complex form for complex
    ``x``, with a real ``var``); the output has ``dtype`` (default: the dtype of ``x``).

    Args:
      x: input.
      mean, var: statistics, either shaped like the features (``x.shape`` at
        ``feature_axes``) or of rank ``x.ndim`` broadcastable to ``x`` (``keepdims=True``).
      epsilon: added to the variance before the reciprocal square root.
      scale, bias: optional per-feature parameters of shape ``x.shape`` at ``feature_axes``.
      feature_axes: the axes that carry the statistics / parameters.
      dtype: output dtype (default ``x.dtype``).

    A concrete ``epsilon`` must be finite and ``>= 0`` (``ValueError``); a traced invalid one
    gives NaN and fails a ``checkify`` check (:func:`normjax._checks.poison`).
    """
    check_epsilon(epsilon)
    y = standardize_core(x, mean, var, epsilon=epsilon, scale=scale, bias=bias,
                         feature_axes=feature_axes, dtype=dtype)
    return poison_epsilon(y, epsilon)


def standardize_core(
    x: ArrayLike,
    mean: ArrayLike,
    var: ArrayLike,
    *,
    epsilon: float | Array,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    feature_axes: Axes = -1,
    dtype: Any = None,
) -> Array:
    """:func:`standardize` without its ``epsilon`` checks: for the backend, whose programs
    receive an ``epsilon`` already checked where the user passed it."""
    x = jnp.asarray(x)
    feat = canonicalize_axes(feature_axes, x.ndim, name="feature_axes")
    sdt, wdt = stats_dtype(x.dtype), work_dtype(x.dtype)
    mean = _as_broadcastable(mean, x.shape, feat, "mean").astype(wdt)
    var = _as_broadcastable(var, x.shape, feat, "var")
    var = (jnp.real(var) if jnp.iscomplexobj(var) else var).astype(sdt)
    mul = lax.rsqrt(var + jnp.asarray(epsilon, sdt)).astype(wdt)
    if scale is not None:
        mul = mul * _as_broadcastable(scale, x.shape, feat, "scale").astype(wdt)
    y = (x.astype(wdt) - mean) * mul
    if bias is not None:
        y = y + _as_broadcastable(bias, x.shape, feat, "bias").astype(wdt)
    return y.astype(x.dtype if dtype is None else dtype)
