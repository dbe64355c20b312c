"""``normjax.linen`` dropout variants: spatial (channel-wise), alpha and Gaussian dropout.

The conventions are those of :class:`normjax.linen.Dropout` (and flax's): ``rate`` is the
probability of dropping, ``deterministic`` (constructor or call, not both) turns the layer
off, and the key comes from the ``rng_collection`` stream (default ``"dropout"``) unless one
is passed as ``rng``. The math is in :func:`normjax.spatial_dropout`,
:func:`normjax.alpha_dropout` and :func:`normjax.gaussian_dropout`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn
from flax.typing import Axes

from normjax._typing import ArrayLike
from normjax.linen._base import take_channel_axis
from normjax.regularizers.dropout import dropout, needs_key
from normjax.regularizers.dropout_variants import (
    SELU_ALPHA_PRIME,
    alpha_dropout,
    gaussian_dropout,
    spatial_dropout,
)

__all__ = ["AlphaDropout", "Dropout", "GaussianDropout", "SpatialDropout", "mode_and_key"]



class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al., 2014), flax's attributes and random bits.

    In training each unit is kept with probability ``1 - rate`` and scaled by
    ``1 / (1 - rate)``; ``broadcast_dims`` share one mask value. The key comes from the
    ``rng_collection`` stream (default ``"dropout"``) or the ``rng`` argument, and the mask
    is drawn exactly as flax draws it, so a given key drops the same units as
    ``flax.linen.Dropout``. ``rate=1`` returns zeros.
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self,
        inputs: jax.typing.ArrayLike,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies dropout unless ``deterministic`` (given here or to the constructor)."""
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        train = not deterministic
        if train and rng is None and needs_key(self.rate):
            rng = self.make_rng(self.rng_collection)
        return dropout(rng, inputs, rate=self.rate, train=train,
                       broadcast_axes=tuple(self.broadcast_dims))




def mode_and_key(
    module: nn.Module, deterministic: bool | None, rng: jax.Array | None
) -> tuple[bool, jax.Array | None]:
    """``(train, key)``: flax's ``merge_param`` rule, and a key only where one is needed."""
    train = not nn.merge_param("deterministic", module.deterministic, deterministic)
    if train and rng is None and needs_key(module.rate):
        rng = module.make_rng(module.rng_collection)
    return train, rng


class SpatialDropout(nn.Module):
    """Spatial dropout (Tompson et al., 2015, arXiv:1411.4280): whole feature maps dropped.

    One Bernoulli draw per example and channel, shared over the other axes:
    ``y[n, ..., c] = m[n, c] * x[n, ..., c] / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``.
    ``feature_axes`` is the channel axis, ``batch_axes`` the example axes.
    """

    rate: float
    feature_axes: int = -1
    batch_axes: Axes = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    channel_axis: int | None = None  # the deprecated name of feature_axes

    def __post_init__(self) -> None:
        take_channel_axis(self)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Drops channels unless ``deterministic``."""
        train, key = mode_and_key(self, deterministic, rng)
        return spatial_dropout(key, inputs, rate=self.rate, train=train,
                               feature_axes=self.feature_axes, batch_axes=self.batch_axes)


class AlphaDropout(nn.Module):
    """Alpha dropout for SELU networks (Klambauer et al., 2017, arXiv:1706.02515).

    Dropped units take ``alpha_prime`` (SELU's negative saturation, about -1.7581), then
    ``y = a * y' + b`` restores zero mean and unit variance:
    ``a = (q + alpha'^2 q (1 - q))^(-1/2)``, ``b = -a (1 - q) alpha'``, ``q = 1 - rate``.
    ``rate`` must be in ``[0, 1)``.
    """

    rate: float
    alpha_prime: float = SELU_ALPHA_PRIME
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies alpha dropout unless ``deterministic``."""
        train, key = mode_and_key(self, deterministic, rng)
        return alpha_dropout(key, inputs, rate=self.rate, train=train,
                             alpha_prime=self.alpha_prime)


class GaussianDropout(nn.Module):
    """Gaussian dropout (Srivastava et al., 2014, JMLR 15:1929, Sec. 10).

    ``y = x * eps`` with ``eps ~ N(1, rate / (1 - rate))``: the mean and variance of inverted
    Bernoulli dropout at ``rate`` (in ``[0, 1)``).
    """

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: ArrayLike, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Applies multiplicative Gaussian noise unless ``deterministic``."""
        train, key = mode_and_key(self, deterministic, rng)
        return gaussian_dropout(key, inputs, rate=self.rate, train=train)
