"""Routing of the norms through the closed-form backward of :mod:`normjax._fused_grad`.

:func:`fused_normalize` computes ``standardize(x, *moments(x, reduction_axes)) * scale + bias``
and the moments in one ``jax.custom_vjp`` whose backward is the closed form of
:mod:`normjax._fused_grad` (Ioffe & Szegedy 2015, arXiv:1502.03167, Sec. 3): the same values as
:func:`normjax.moments` followed by :func:`normjax.standardize`, and faster gradients.

:func:`normalize` is what ``batch_norm`` (train), ``layer_norm``, ``rms_norm``,
``instance_norm`` and ``group_norm`` call: :func:`fused_normalize` for a floating-point input
with a scalar ``epsilon`` while :func:`normjax.use_fused_backward` is on (the default), else
``moments`` + ``standardize`` under plain autodiff (integer inputs, a per-feature ``epsilon``,
and forward-mode AD, which no ``custom_vjp`` supports).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normjax import _platform
from normjax._fused_grad import Config, merge_moments, normalize_vjp, param_view
from normjax._fused_switch import fused_backward_enabled
from normjax._native import native_switch_on
from normjax.stats import (
    Axes,
    Moments,
    broadcast_mask,
    canonicalize_axes,
    check_epsilon,
    check_reduction,
    moments,
    standardize,
    stats_dtype,
)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

__all__ = ["fused_normalize", "merge_moments", "normalize"]

FORWARD_MODE_HINT = (
    "normjax's fused normalization has a closed-form reverse-mode gradient (a jax.custom_vjp), "
    "and JAX cannot apply forward-mode autodiff (jax.jvp, jax.jacfwd, jax.linearize) to it. "
    "Turn it off for this computation with `with normjax.use_fused_backward(False): ...` or "
    "globally with `normjax.set_fused_backward(False)`; reverse mode (jax.grad, jax.vjp) and "
    "jax.hessian work with it on."
)


def _call(cfg: Config, x: Array, scale: Any, bias: Any, mask: Any, eps: Array) -> tuple:
    """:func:`normalize_vjp`, with a hint to the switch where forward-mode AD reaches it.

    (Only where the ``jvp`` is traced through this call; a ``jvp`` of a ``jax.jit``-wrapped
    function meets the ``custom_vjp`` inside JAX and raises JAX's own ``TypeError``.)
    """
    try:
        return normalize_vjp(cfg, x, scale, bias, mask, eps)
    except TypeError as err:
        if "forward-mode" not in str(err):
            raise
        raise TypeError(FORWARD_MODE_HINT) from err


def _check_input(x: Array, epsilon: Any) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"fused_normalize needs a floating-point input, got dtype {x.dtype}; cast the "
            "input first (e.g. x.astype(jnp.float32))."
        )
    if jnp.ndim(epsilon) != 0:
        raise ValueError(f"epsilon must be a scalar, got an array of shape {jnp.shape(epsilon)}.")
    check_epsilon(epsilon)


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
    form in :mod:`normjax._fused_grad`.

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

    Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) raises a ``TypeError``: use
    :func:`normalize` with :func:`normjax.use_fused_backward` ``(False)`` instead.

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
    scale, bias, mask = (None if a is None else jnp.asarray(a) for a in (scale, bias, mask))
    for name, p in (("scale", scale), ("bias", bias)):
        if p is not None:
            param_view(p, x.shape, feat, name)
    groups = None if axis_index_groups is None else tuple(tuple(g) for g in axis_index_groups)
    cfg = Config(axes, feat, bool(center), bool(fast_variance), axis_name, groups,
                  np.dtype(x.dtype if dtype is None else dtype), native_switch_on(),
                  _platform.cpu_target())
    eps = jnp.asarray(epsilon, stats_dtype(x.dtype))
    y, mean, var, count = _call(cfg, x, scale, bias, mask, eps)
    if not keepdims:
        mean, var, count = (jnp.squeeze(a, axes) for a in (mean, var, count))
    return y, Moments(mean, var, count)


def routes_to_fused(x: Array, epsilon: Any) -> bool:
    """Whether :func:`normalize` takes the fused path for input ``x`` and this ``epsilon``."""
    return (bool(jnp.issubdtype(x.dtype, jnp.floating)) and jnp.ndim(epsilon) == 0
            and fused_backward_enabled())


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
    """
    x = jnp.asarray(x)
    kwargs = dict(mask=mask, axis_name=axis_name, axis_index_groups=axis_index_groups,
                  center=center, fast_variance=fast_variance)
    if not routes_to_fused(x, epsilon):
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
