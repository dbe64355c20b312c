"""Dropout variants: spatial (channel-wise), alpha and Gaussian dropout.

All follow :func:`normjax.dropout`: ``f(key, x, *, rate, train, ...)``, ``rate`` the
probability of dropping (may be a traced scalar; concrete values are validated),
``train=False`` returns ``x`` unchanged, the output has the dtype and shape of ``x``.

* **Spatial dropout** (Tompson et al., 2015, arXiv:1411.4280): one Bernoulli draw per example
  and channel, shared over the spatial positions, so whole feature maps are dropped (adjacent
  pixels are correlated, so element-wise dropout barely regularizes conv features)::

      m[n, c] ~ Bernoulli(1 - rate),   y[n, ..., c] = m[n, c] * x[n, ..., c] / (1 - rate)

* **Alpha dropout** (Klambauer et al., 2017, "Self-Normalizing Neural Networks",
  arXiv:1706.02515, Sec. 3): for SELU networks. Dropped units are set to SELU's negative
  saturation ``alpha' = -lambda * alpha ~ -1.7581`` instead of 0, then an affine map restores
  zero mean and unit variance for inputs of zero mean and unit variance (``q = 1 - rate``)::

      m ~ Bernoulli(q),   a = (q + alpha'^2 q (1 - q))^(-1/2),   b = -a (1 - q) alpha'
      y = a * (m * x + (1 - m) * alpha') + b

* **Gaussian dropout** (Srivastava et al., 2014, JMLR 15:1929, Sec. 10): multiplicative noise
  with the mean and variance of inverted Bernoulli dropout, ``E[y] = x``,
  ``Var[y] = x^2 rate / (1 - rate)``::

      eps ~ N(1, rate / (1 - rate)),   y = x * eps
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from normjax._checks import canonicalize_axes, renamed_arguments, single_axis
from normjax._numerics import stats_dtype
from normjax._typing import Array, ArrayLike, Axes
from normjax.regularizers.dropout import dropout

__all__ = ["SELU_ALPHA_PRIME", "alpha_dropout", "gaussian_dropout", "spatial_dropout"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA_PRIME = -SELU_SCALE * SELU_ALPHA  # SELU's limit for x -> -inf, ~ -1.7581


def _check(train: bool, rate: float | ArrayLike, *, allow_one: bool, what: str) -> bool:
    """Validates the arguments; returns whether the call is the identity."""
    if not isinstance(train, bool):
        raise TypeError(
            f"train must be a Python bool (static: True or False), got {type(train).__name__}."
        )
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        upper_ok = rate <= 1 if allow_one else rate < 1
        if not (0 <= rate and upper_ok):
            bound = "[0, 1]" if allow_one else "[0, 1)"
            raise ValueError(
                f"{what} rate must be in {bound} (the probability of dropping a unit), got "
                f"{rate!r}." + ("" if allow_one else f" rate=1 is undefined for {what}.")
            )
        return not train or rate == 0
    return not train


@renamed_arguments(channel_axis="feature_axes")
def spatial_dropout(
    key: Array | None,
    x: ArrayLike,
    *,
    rate: float | ArrayLike,
    train: bool,
    feature_axes: Axes = -1,
    batch_axes: Axes = 0,
) -> Array:
    """Channel-wise dropout: whole feature maps are dropped per example (Tompson et al. 2015).

    Args:
      key: a ``jax.random`` key (may be ``None`` when ``train=False`` or ``rate == 0``).
      x: input, e.g. NHWC (``feature_axes=-1``) or NCHW (``feature_axes=1``).
      rate: probability of dropping each channel of each example.
      train: keyword-only: apply dropout or return ``x``.
      feature_axes: the channel axis.
      batch_axes: axes indexing independent examples (``()`` under a per-example ``vmap``).
    """
    x = jnp.asarray(x)
    c = single_axis(feature_axes, x.ndim)
    batch = canonicalize_axes(batch_axes, x.ndim, name="batch_axes")
    if c in batch:
        raise ValueError(
            f"feature_axes={feature_axes} is also a batch axis (batch_axes={batch_axes!r}); "
            "an axis is either the channel axis or a batch axis."
        )
    shared = tuple(a for a in range(x.ndim) if a != c and a not in batch)
    return dropout(key, x, rate=rate, train=train, broadcast_axes=shared)


def alpha_dropout(
    key: Array | None,
    x: ArrayLike,
    *,
    rate: float | ArrayLike,
    train: bool,
    alpha_prime: float = SELU_ALPHA_PRIME,
) -> Array:
    """Alpha dropout for SELU networks: keeps zero mean and unit variance (Klambauer et al.).

    Args:
      key: a ``jax.random`` key (may be ``None`` when ``train=False`` or ``rate == 0``).
      x: input (typically SELU activations).
      rate: probability of dropping each unit, in ``[0, 1)``.
      train: keyword-only: apply dropout or return ``x``.
      alpha_prime: the value dropped units take before the affine correction (SELU's
        negative saturation by default).
    """
    x = jnp.asarray(x)
    if _check(train, rate, allow_one=False, what="alpha_dropout"):
        return x
    if key is None:
        raise ValueError("alpha_dropout(train=True, rate > 0) needs a PRNG key; got key=None.")
    q = 1 - jnp.asarray(rate, jnp.float32)
    a = jax.lax.rsqrt(q + alpha_prime**2 * q * (1 - q))
    b = -a * (1 - q) * alpha_prime
    keep = jax.random.bernoulli(key, q, x.shape)
    xf = x.astype(stats_dtype(x.dtype))
    kept = jnp.where(keep, xf, jnp.asarray(alpha_prime, xf.dtype))
    return (a.astype(xf.dtype) * kept + b.astype(xf.dtype)).astype(x.dtype)


def gaussian_dropout(
    key: Array | None,
    x: ArrayLike,
    *,
    rate: float | ArrayLike,
    train: bool,
) -> Array:
    """Multiplicative Gaussian noise ``N(1, rate / (1 - rate))`` (Srivastava et al. 2014).

    Args:
      key: a ``jax.random`` key (may be ``None`` when ``train=False`` or ``rate == 0``).
      x: input.
      rate: the equivalent Bernoulli dropout rate, in ``[0, 1)``.
      train: keyword-only: apply the noise or return ``x``.
    """
    x = jnp.asarray(x)
    if _check(train, rate, allow_one=False, what="gaussian_dropout"):
        return x
    if key is None:
        raise ValueError(
            "gaussian_dropout(train=True, rate > 0) needs a PRNG key; got key=None."
        )
    dt = stats_dtype(x.dtype)
    rate = jnp.asarray(rate, dt)
    noise = 1 + jnp.sqrt(rate / (1 - rate)) * jax.random.normal(key, x.shape, dt)
    return (x.astype(dt) * noise).astype(x.dtype)

