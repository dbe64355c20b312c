"""Root Mean Square Layer Normalization (Zhang & Sennrich, 2019, arXiv:1910.07467).

LayerNorm without re-centering: ``y = x / sqrt(mean(x^2, reduction_axes) + epsilon) * scale``.
Defaults follow flax (last axis, ``epsilon=1e-6``).

The derivatives are closed forms (:mod:`normjax._backend`; faster than autodiff) for a
scalar ``epsilon``, in both modes: reverse (``jax.grad``) and forward (``jax.jvp``,
``jax.jacfwd``, ``jax.linearize``), under every transform.
"""

from __future__ import annotations

from typing import Any

import jax

from normjax._backend import normalize
from normjax._typing import Axes, AxisName

__all__ = ["rms_norm"]


def rms_norm(
    x: jax.typing.ArrayLike,
    scale: jax.typing.ArrayLike | None = None,
    *,
    reduction_axes: Axes = -1,
    feature_axes: Axes = -1,
    epsilon: float = 1e-6,
    mask: jax.typing.ArrayLike | None = None,
    axis_name: AxisName = None,
    axis_index_groups: Any = None,
    dtype: Any = None,
) -> jax.Array:
    """RMS normalization over ``reduction_axes`` with an optional per-feature ``scale``.

    Args:
      x: input.
      scale: optional array of shape ``x.shape`` at ``feature_axes``.
      reduction_axes: axes the mean square runs over (default: the last).
      feature_axes: axes that carry ``scale`` (default: the last).
      epsilon: added to the mean square.
      mask: boolean, broadcastable to ``x``; only masked-in elements enter the statistic.
      axis_name, axis_index_groups: reduce across a named axis too.
      dtype: output dtype (default ``x.dtype``).

    """
    return normalize(x, scale, reduction_axes=reduction_axes, feature_axes=feature_axes,
                     epsilon=epsilon, center=False, mask=mask, axis_name=axis_name,
                     axis_index_groups=axis_index_groups, dtype=dtype)[0]
