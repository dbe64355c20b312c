"""Folding an eval-mode BatchNorm into the preceding Dense / Conv layer for inference.

In eval mode BatchNorm is a fixed per-channel affine map, so ``BN(x @ W + b)`` is again a
Dense (or Conv) layer with a rescaled kernel and a shifted bias::

    s  = scale / sqrt(var + epsilon)                 (per output channel; scale = 1 if None)
    W' = W * s                                       (along the output-feature axis)
    b' = (b - mean) * s + bias_bn                    (b = 0 if the layer had no bias)

with ``mean``/``var`` the running statistics and ``scale``/``bias_bn`` BatchNorm's parameters.
The folded layer computes ``x @ W' + b'`` (or the convolution with ``W'``), one op instead of
two, up to float rounding (Jacob et al. 2018, arXiv:1712.05877, Sec. 3.2, fold BN this way
for quantized inference).

Kernels: Dense ``(in, out)`` and Conv ``(..., in, out)`` (flax / TF layout,
``feature_axis=-1``) or PyTorch Conv ``(out, in, ...)`` (``feature_axis=0``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from normjax._checks import canonicalize_axes, check_epsilon
from normjax._numerics import stats_dtype
from normjax._typing import Array, ArrayLike
from normjax.running import BatchNormState

__all__ = ["fold_batch_norm"]


def _check_feature(name: str, value: ArrayLike | None, channels: int) -> None:
    if value is not None and jnp.shape(value) != (channels,):
        raise ValueError(
            f"{name} has shape {jnp.shape(value)}, expected ({channels},) (one per output "
            "channel of the kernel, i.e. its size at feature_axis)."
        )


def fold_batch_norm(
    kernel: ArrayLike,
    bias: ArrayLike | None,
    state: BatchNormState,
    scale: ArrayLike | None = None,
    bias_bn: ArrayLike | None = None,
    *,
    epsilon: float = 1e-5,
    feature_axis: int = -1,
) -> tuple[Array, Array]:
    """Folds ``BatchNorm(eval) o Dense/Conv`` into one ``(kernel, bias)`` pair.

    Args:
      kernel: the layer's kernel, output features at ``feature_axis``.
      bias: the layer's bias of shape ``(out,)``, or ``None`` for a layer without bias.
      state: the BatchNorm running statistics, shape ``(out,)``.
      scale, bias_bn: BatchNorm's ``gamma`` and ``beta`` (``None``: 1 and 0).
      epsilon: BatchNorm's ``epsilon`` (must match the layer's, e.g. 1e-5 for flax).
      feature_axis: the kernel's output-feature axis (``-1`` for flax, ``0`` for PyTorch).

    Returns:
      ``(folded_kernel, folded_bias)``, both in the dtype of ``kernel`` (arithmetic in float32
      at least).
    """
    kernel = jnp.asarray(kernel)
    check_epsilon(epsilon)
    if not isinstance(state, BatchNormState):
        raise TypeError(
            f"state must be a BatchNormState (see batch_norm_init), got {type(state).__name__}."
        )
    if kernel.ndim < 2:
        raise ValueError(f"kernel must have rank >= 2 (Dense or Conv), got shape {kernel.shape}.")
    (axis,) = canonicalize_axes(feature_axis, kernel.ndim, name="feature_axis")
    channels = kernel.shape[axis]
    for name, value in (("bias", bias), ("state.mean", state.mean), ("state.var", state.var),
                        ("scale", scale), ("bias_bn", bias_bn)):
        _check_feature(name, value, channels)
    dt = stats_dtype(kernel.dtype)
    s = lax.rsqrt(state.var.astype(dt) + jnp.asarray(epsilon, dt))
    if scale is not None:
        s = s * jnp.asarray(scale).astype(dt)
    mean = state.mean.astype(dt)
    b = -mean if bias is None else jnp.asarray(bias).astype(dt) - mean
    b = b * s
    if bias_bn is not None:
        b = b + jnp.asarray(bias_bn).astype(dt)
    shape = [1] * kernel.ndim
    shape[axis] = channels
    folded = kernel.astype(dt) * s.reshape(shape)
    return folded.astype(kernel.dtype), b.astype(kernel.dtype)
