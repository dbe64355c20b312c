"""Instance Normalization (Ulyanov, Vedaldi & Lempitsky, 2016, arXiv:1607.08022).

Each example and each channel is normalized over its spatial positions::

    y[n, ..., c] = (x - mean_{spatial}(x[n, ..., c])) / sqrt(var_{spatial} + epsilon)
                   * scale[c] + bias[c]

It equals GroupNorm with ``group_size=1``. Defaults follow flax (channels last,
``epsilon=1e-6``); pass ``feature_axes=1`` for channels-first (NCHW) input.

The derivatives are closed forms (:mod:`normjax._backend`; faster than autodiff) for a
scalar ``epsilon``, in both modes: reverse (``jax.grad``) and forward (``jax.jvp``,
``jax.jacfwd``, ``jax.linearize``), under every transform.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from normjax._backend import normalize
from normjax._checks import canonicalize_axes, complement_axes
from normjax._typing import Axes, AxisName

__all__ = ["instance_norm"]


def instance_norm(
    x: jax.typing.ArrayLike,
    scale: jax.typing.ArrayLike | None = None,
    bias: jax.typing.ArrayLike | None = None,
    *,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
    epsilon: float = 1e-6,
    mask: jax.typing.ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    fast_variance: bool = False,
    dtype: Any = None,
) -> jax.Array:
    """Instance normalization: statistics over all axes but ``batch_axes`` and ``feature_axes``.

    Args:
      x: input, e.g. NHWC (``feature_axes=-1``) or NCHW (``feature_axes=1``).
      scale, bias: optional arrays of shape ``x.shape`` at ``feature_axes``.
      feature_axes: the channel axes (carry statistics and parameters).
      batch_axes: example axes (``()`` when running per example under ``vmap``).
      epsilon: added to the variance.
      mask: boolean, broadcastable to ``x``; only masked-in elements enter the statistics.
      axis_name, axis_index_groups: pool the statistics across a named axis too (e.g.
        spatially sharded input), weighted by the true element counts.
      fast_variance: one-pass variance (less stable).
      dtype: output dtype (default ``x.dtype``).

    """
    x = jnp.asarray(x)
    feat = canonicalize_axes(feature_axes, x.ndim, name="feature_axes")
    batch = canonicalize_axes(batch_axes, x.ndim, name="batch_axes")
    if set(feat) & set(batch):
        raise ValueError(
            f"feature_axes={feature_axes!r} and batch_axes={batch_axes!r} overlap; an axis is "
            "either a channel axis or a batch axis."
        )
    axes = complement_axes(feat + batch, x.ndim)
    return normalize(x, scale, bias, reduction_axes=axes, feature_axes=feat, epsilon=epsilon,
                     mask=mask, axis_name=axis_name, axis_index_groups=axis_index_groups,
                     fast_variance=fast_variance, dtype=dtype)[0]
