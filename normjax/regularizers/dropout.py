"""Inverted dropout (Srivastava et al., 2014, JMLR 15:1929).

In training each unit is kept with probability ``1 - rate`` and kept units are scaled by
``1 / (1 - rate)`` so that ``E[y] = x``; at eval time ``y = x``::

    m ~ Bernoulli(1 - rate)            (shared along broadcast_axes)
    y = m * x / (1 - rate)

``rate`` is the probability of *dropping*. ``rate = 1`` drops everything: ``y = 0`` with
finite (zero) gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from normjax._checks import canonicalize_axes, check_train, is_traced, poison

__all__ = ["dropout", "needs_key"]


RATE_MESSAGE = "dropout rate must be in [0, 1] (the probability of dropping a unit), got {rate}."


def _check_rate(rate: float | jax.typing.ArrayLike) -> None:
    """Validates every concrete rate (Python, NumPy or JAX); a traced rate is checked when
    the program runs (see :func:`dropout`)."""
    if is_traced(rate):
        return
    value = np.asarray(rate)
    if not np.all((value >= 0) & (value <= 1)):
        raise ValueError(RATE_MESSAGE.format(rate=repr(rate)))


def dropout(
    key: jax.Array | None,
    x: jax.typing.ArrayLike,
    *,
    rate: float | jax.typing.ArrayLike,
    train: bool,
    broadcast_axes: int | Sequence[int] = (),
) -> jax.Array:
    """Inverted dropout.

    Args:
      key: a ``jax.random`` key (may be ``None`` when ``train=False`` or ``rate == 0``).
      x: input.
      rate: probability of dropping each unit, in ``[0, 1]``. May be a traced scalar (e.g.
        vmapped over a grid of rates); concrete values are validated when traced, a traced
        value outside ``[0, 1]`` gives a NaN output (and fails a ``checkify`` check: run
        under ``checkify.checkify(f, errors=checkify.user_checks)`` to get the message).
      train: keyword-only: apply dropout (``True``) or return ``x`` (``False``).
      broadcast_axes: axes along which the same mask is shared (e.g. the spatial axes for
        channel-wise dropout of an NHWC tensor: ``(1, 2)``).

    Returns:
      An array of the dtype and shape of ``x``.
    """
    train = check_train(train)
    x = jnp.asarray(x)
    _check_rate(rate)
    axes = canonicalize_axes(broadcast_axes, x.ndim, name="broadcast_axes")
    concrete = isinstance(rate, (int, float))
    if not train or (concrete and rate == 0):
        return x
    if concrete and rate == 1:
        return jnp.zeros_like(x)
    if key is None:
        raise ValueError("dropout(train=True, rate > 0) needs a PRNG key; got key=None.")
    keep_prob = 1 - jnp.asarray(rate, jnp.float32)
    mask_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    keep = jax.random.bernoulli(key, keep_prob, mask_shape)
    positive = keep_prob > 0
    inv = jnp.where(positive, 1 / jnp.where(positive, keep_prob, 1), 0).astype(x.dtype)
    y = jnp.where(keep, x * inv, jnp.zeros((), x.dtype))
    if is_traced(rate):
        rate = jnp.asarray(rate, jnp.float32)
        y = poison((rate >= 0) & (rate <= 1), y, RATE_MESSAGE.format(rate="{rate}"), rate=rate)
    return y


def needs_key(rate: Any) -> bool:
    """Whether dropout at ``rate`` draws random bits (not for the constants 0 and 1)."""
    return not (isinstance(rate, (int, float)) and rate in (0, 1))
