"""``normjax.nnx`` dropout variants: spatial (channel-wise), alpha and Gaussian dropout.

They share :class:`normjax.nnx.Dropout`'s conventions and key handling: ``rate`` is the
probability of dropping; ``deterministic`` (set by ``model.eval()`` / ``model.train()`` /
``nnx.view``, overridden by the call argument) turns the layer off; keys come from the
``rng_collection`` stream of the ``rngs`` given to the constructor (forked) or to the call
(an ``nnx.Rngs``, an ``nnx.RngStream`` or a key). The math is in
:func:`normjax.spatial_dropout`, :func:`normjax.alpha_dropout` and
:func:`normjax.gaussian_dropout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from flax.typing import Axes

from normjax._checks import renamed_arguments
from normjax._flax_common import first_from
from normjax._typing import ArrayLike
from normjax.regularizers.dropout import dropout, needs_key
from normjax.regularizers.dropout_variants import (
    SELU_ALPHA_PRIME,
    alpha_dropout,
    gaussian_dropout,
    spatial_dropout,
)

__all__ = ["AlphaDropout", "Dropout", "GaussianDropout", "SpatialDropout"]

Rngs = nnx.Rngs | nnx.RngStream | jax.Array | None


#: flax.nnx's message for a training-mode Dropout without keys (verbatim), then the fix.
NO_RNGS_MESSAGE = (
    """`deterministic` is False, but no `rngs` argument was provided to Dropout
          as either a __call__ argument or class attribute."""
    " Pass rngs=nnx.Rngs(...) to the constructor or to the call, or call model.eval() to "
    "turn dropout off."
)


class Dropout(nnx.Module):
    """Inverted dropout (Srivastava et al., 2014), flax.nnx's signature and random bits.

    Each unit is kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``;
    ``broadcast_dims`` share one mask value. ``deterministic`` (set by ``model.eval()`` /
    ``model.train()`` / ``nnx.view``) turns it off. Keys come from the ``rng_collection``
    stream of the ``rngs`` given to the constructor (forked, as in flax) or to the call, and
    the mask is drawn as flax draws it, so the same keys drop the same units.
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = rate
        self.broadcast_dims = broadcast_dims
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"rngs must be an nnx.Rngs, nnx.RngStream or None, got {type(rngs)}.")

    def __call__(
        self,
        inputs: jax.typing.ArrayLike,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Applies dropout unless ``deterministic``; ``rngs`` here overrides the stored ones."""
        train = not first_from(deterministic, self.deterministic, name="deterministic",
                               owner="Dropout")
        key = self._key(rngs) if train and needs_key(self.rate) else None
        return dropout(key, inputs, rate=self.rate, train=train,
                       broadcast_axes=tuple(self.broadcast_dims))

    def _key(self, rngs: nnx.Rngs | nnx.RngStream | jax.Array | None) -> jax.Array:
        source = rngs if rngs is not None else self.rngs
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array):
            return source
        if source is None:
            raise ValueError(NO_RNGS_MESSAGE)
        raise TypeError(
            f"rngs must be an nnx.Rngs, nnx.RngStream or a jax key, got {type(source)}."
        )

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view``: sets ``deterministic`` when given."""
        if deterministic is not None:
            self.deterministic = deterministic


class DropoutVariant(Dropout):
    """:class:`normjax.nnx.Dropout`'s constructor and key handling, without ``broadcast_dims``."""

    def __init__(
        self,
        rate: float,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        super().__init__(rate, deterministic=deterministic, rng_collection=rng_collection,
                         rngs=rngs)
        del self.broadcast_dims

    def _mode_and_key(self, deterministic: bool | None, rngs: Rngs) -> tuple[bool, Any]:
        """``(train, key)``: the call argument over the attribute; a key only where needed."""
        train = not first_from(deterministic, self.deterministic, name="deterministic",
                               owner=type(self).__name__)
        return train, self._key(rngs) if train and needs_key(self.rate) else None


class SpatialDropout(DropoutVariant):
    """Spatial dropout (Tompson et al., 2015, arXiv:1411.4280): whole feature maps dropped.

    One Bernoulli draw per example and channel, shared over the other axes:
    ``y[n, ..., c] = m[n, c] * x[n, ..., c] / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``.
    """

    @renamed_arguments(channel_axis="feature_axes")
    def __init__(
        self,
        rate: float,
        *,
        feature_axes: int = -1,
        batch_axes: Axes = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        super().__init__(rate, deterministic=deterministic, rng_collection=rng_collection,
                         rngs=rngs)
        self.feature_axes = feature_axes
        self.batch_axes = batch_axes

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: Rngs = None
    ) -> jax.Array:
        """Drops channels unless ``deterministic``."""
        train, key = self._mode_and_key(deterministic, rngs)
        return spatial_dropout(key, inputs, rate=self.rate, train=train,
                               feature_axes=self.feature_axes, batch_axes=self.batch_axes)


class AlphaDropout(DropoutVariant):
    """Alpha dropout for SELU networks (Klambauer et al., 2017, arXiv:1706.02515).

    Dropped units take ``alpha_prime`` (about -1.7581), then ``y = a * y' + b`` restores zero
    mean and unit variance: ``a = (q + alpha'^2 q (1 - q))^(-1/2)``, ``b = -a (1 - q) alpha'``,
    ``q = 1 - rate``; ``rate`` in ``[0, 1)``.
    """

    def __init__(
        self,
        rate: float,
        *,
        alpha_prime: float = SELU_ALPHA_PRIME,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        super().__init__(rate, deterministic=deterministic, rng_collection=rng_collection,
                         rngs=rngs)
        self.alpha_prime = alpha_prime

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: Rngs = None
    ) -> jax.Array:
        """Applies alpha dropout unless ``deterministic``."""
        train, key = self._mode_and_key(deterministic, rngs)
        return alpha_dropout(key, inputs, rate=self.rate, train=train,
                             alpha_prime=self.alpha_prime)


class GaussianDropout(DropoutVariant):
    """Gaussian dropout (Srivastava et al., 2014, JMLR 15:1929, Sec. 10).

    ``y = x * eps`` with ``eps ~ N(1, rate / (1 - rate))``: the mean and variance of inverted
    Bernoulli dropout at ``rate`` (in ``[0, 1)``).
    """

    def __call__(
        self, inputs: ArrayLike, *, deterministic: bool | None = None, rngs: Rngs = None
    ) -> jax.Array:
        """Applies multiplicative Gaussian noise unless ``deterministic``."""
        train, key = self._mode_and_key(deterministic, rngs)
        return gaussian_dropout(key, inputs, rate=self.rate, train=train)
