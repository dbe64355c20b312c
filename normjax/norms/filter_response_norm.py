"""Filter Response Normalization and the Thresholded Linear Unit (Singh & Krishnan, 2019,
arXiv:1911.09737).

FRN normalizes each example and channel by the mean square of its responses over the spatial
positions, without subtracting a mean and without batch dependence; TLU then follows as the
activation, a ReLU with a learned per-channel threshold that compensates for the missing
centering::

    nu^2 = mean(x^2 over the spatial axes)                      (per example and channel)
    y    = scale * x / sqrt(nu^2 + epsilon) + bias               (FRN)
    z    = max(y, tau)                                           (TLU)

``scale``, ``bias`` and ``tau`` are per channel (the paper initializes them to 1, 0, 0). For
a fully connected layer (no spatial axes) ``nu^2 = x^2``; the paper then recommends a learned
epsilon: ``epsilon`` may be a traced scalar, e.g. ``1e-6 + jnp.abs(eps_param)``. Channels last
by default; ``feature_axes=1`` for NCHW.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from normjax._checks import channel_axes, renamed_arguments, single_axis
from normjax._numerics import stats_dtype
from normjax._typing import Array, ArrayLike, Axes
from normjax.stats import moments, standardize

__all__ = ["filter_response_norm", "frn_tlu", "tlu"]


def _axes(ndim: int, feature_axes: int, batch_axes: Axes) -> tuple[int, tuple[int, ...]]:
    """The canonical channel axis and the spatial axes (all others but the batch axes)."""
    c, _, spatial = channel_axes(ndim, feature_axes, batch_axes)
    return c, spatial


@renamed_arguments(channel_axis="feature_axes")
def filter_response_norm(
    x: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
    epsilon: float | ArrayLike = 1e-6,
    dtype: Any = None,
) -> Array:
    """FRN: ``scale * x / sqrt(mean(x^2 over spatial axes) + epsilon) + bias``.

    Args:
      x: input, e.g. NHWC (``feature_axes=-1``), NCHW (``feature_axes=1``) or ``(N, C)``.
      scale, bias: optional per-channel parameters of shape ``(C,)``.
      feature_axes: the channel axis.
      batch_axes: axes indexing independent examples (``()`` under a per-example ``vmap``).
      epsilon: added to ``nu^2``; may be traced (learned epsilon).
      dtype: output dtype (default ``x.dtype``).
    """
    x = jnp.asarray(x)
    c, spatial = _axes(x.ndim, feature_axes, batch_axes)
    if spatial:
        nu2 = moments(x, spatial, center=False, keepdims=True).var
    else:
        xf = x.astype(stats_dtype(x.dtype))
        nu2 = xf * xf
    return standardize(x, jnp.zeros_like(nu2), nu2, epsilon=epsilon, scale=scale, bias=bias,
                       feature_axes=c, dtype=dtype)


@renamed_arguments(channel_axis="feature_axes")
def tlu(x: ArrayLike, tau: ArrayLike, *, feature_axes: Axes = -1) -> Array:
    """Thresholded linear unit ``max(x, tau)`` with a per-channel ``tau`` of shape ``(C,)``."""
    x = jnp.asarray(x)
    c = single_axis(feature_axes, x.ndim)
    tau = jnp.asarray(tau)
    if tau.shape != (x.shape[c],):
        raise ValueError(
            f"tau has shape {tau.shape}, expected ({x.shape[c]},) (one threshold per channel "
            f"of axis {c} of the input of shape {x.shape})."
        )
    shape = [1] * x.ndim
    shape[c] = x.shape[c]
    return jnp.maximum(x, tau.reshape(shape).astype(x.dtype))


@renamed_arguments(channel_axis="feature_axes")
def frn_tlu(
    x: ArrayLike,
    scale: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    tau: ArrayLike | None = None,
    *,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
    epsilon: float | ArrayLike = 1e-6,
    dtype: Any = None,
) -> Array:
    """FRN followed by TLU (the paper's drop-in replacement for BatchNorm + ReLU).

    ``tau=None`` uses ``tau = 0`` (a ReLU).
    """
    y = filter_response_norm(x, scale, bias, feature_axes=feature_axes, batch_axes=batch_axes,
                             epsilon=epsilon, dtype=dtype)
    if tau is None:
        return jnp.maximum(y, jnp.zeros((), y.dtype))
    return tlu(y, tau, feature_axes=feature_axes)
