"""Layer Normalization (Ba, Kiros & Hinton, 2016, arXiv:1607.06450).

Each example is normalized over its own features, so the result does not depend on the batch::

    mu = mean(x, reduction_axes);  var = mean((x - mu)^2, reduction_axes)
    y  = (x - mu) / sqrt(var + epsilon) * scale + bias

``scale`` and ``bias`` live on ``feature_axes``. Defaults follow flax (last axis for both,
``epsilon=1e-6``); for a channels-first image (N, C, H, W) normalized over (C, H, W) with a
per-channel scale use ``reduction_axes=(1, 2, 3), feature_axes=1``.

The derivatives are closed forms (:mod:`normjax._backend`; faster than autodiff) for a
scalar ``epsilon``, in both modes: reverse (``jax.grad``) and forward (``jax.jvp``,
``jax.jacfwd``, ``jax.linearize``), under every transform.
"""

from __future__ import annotations

from typing import Any

import jax

from normjax._backend import normalize
from normjax._typing import Axes, AxisName

__all__ = ["layer_norm"]


def layer_norm(
    x: jax.typing.ArrayLike,
    scale: jax.typing.ArrayLike | None = None,
    bias: jax.typing.ArrayLike | None = None,
    *,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    epsilon: float = 1e-6,
    mask: jax.typing.ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    fast_variance: bool = False,
    dtype: Any = None,
) -> jax.Array:
    """Layer normalization over ``reduction_axes`` with per-feature ``scale``/``bias``.

    Args:
      x: input.
      scale, bias: optional arrays of shape ``x.shape`` at ``feature_axes``.
      reduction_axes: axes the statistics run over (default: the last).
      feature_axes: axes that carry ``scale``/``bias`` (default: the last).
      epsilon: added to the variance.
      mask: boolean, broadcastable to ``x``; only masked-in elements enter the statistics.
      axis_name, axis_index_groups: reduce across a named axis too (model parallelism).
      fast_variance: one-pass variance (less stable).
      dtype: output dtype (default ``x.dtype``).

    """
    return normalize(x, scale, bias, reduction_axes=reduction_axes, feature_axes=feature_axes,
                     epsilon=epsilon, mask=mask, axis_name=axis_name,
                     axis_index_groups=axis_index_groups, fast_variance=fast_variance,
                     dtype=dtype)[0]
