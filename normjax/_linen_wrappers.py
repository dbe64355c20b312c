"""``normjax.linen`` WeightNorm and Dropout: flax's layers over :func:`normjax.weight_norm`
and :func:`normjax.dropout`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.typing import Axes, Dtype, Initializer
from jax.nn import initializers

from normjax._linen_common import dtype_like_flax
from normjax.dropout import dropout
from normjax.stats import canonicalize_axes, feature_shape
from normjax.weight_norm import weight_norm

__all__ = ["Dropout", "WeightNorm"]


class WeightNorm(nn.Module):
    """Weight Normalization (Salimans & Kingma, 2016, arXiv:1602.07868) of a wrapped layer.

    ``nn.WeightNorm(nn.Dense(4))`` in flax's layout: every variable of ``layer_instance``
    whose path (``"<layer name>/<variable path>"``) contains one of the strings in
    ``variable_filter`` (default ``{"kernel"}``; ``None`` or empty: every variable) is used
    as ``w = scale * v / sqrt(sum(v^2) + epsilon)``, the sum over the axes not in
    ``feature_axes`` (``None``: all axes, one scalar scale). The wrapped layer keeps its own
    ``v`` parameters; the scales are this module's params ``"<layer name>/<path>/scale"``.
    """

    layer_instance: nn.Module
    epsilon: float = 1e-12
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_scale: bool = True
    scale_init: Initializer = initializers.ones
    feature_axes: Axes | None = -1
    variable_filter: Iterable[str] | None = dataclasses.field(
        default_factory=lambda: {"kernel"}
    )

    @nn.compact
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its selected variables weight-normalized."""

        def forward(layer: nn.Module) -> Any:
            return layer(*args, **kwargs)

        return nn.map_variables(
            forward,
            trans_in_fn=lambda vs: jax.tree_util.tree_map_with_path(self._normalize, vs),
            init=self.is_initializing(),
        )(self.layer_instance)

    def _normalize(self, path: tuple[Any, ...], value: jax.Array) -> jax.Array:
        """``scale * v / ||v||`` for a selected variable; other variables pass through."""
        value = jnp.asarray(value)
        name = f"{self.layer_instance.name}/" + jax.tree_util.keystr(
            path[1:], simple=True, separator="/"
        )
        if self.variable_filter and not any(key in name for key in self.variable_filter):
            return value
        features = (
            () if self.feature_axes is None
            else canonicalize_axes(self.feature_axes, value.ndim, name="feature_axes")
        )
        scale = None
        if self.use_scale:
            shape = feature_shape(value.shape, features)
            scale = self.param(f"{name}/scale", self.scale_init, shape, self.param_dtype)
        w = weight_norm(value, scale, feature_axes=features, epsilon=self.epsilon)
        return w.astype(dtype_like_flax(self.dtype, value, scale))


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


def needs_key(rate: Any) -> bool:
    """Whether dropout at ``rate`` draws random bits (not for the constants 0 and 1)."""
    return not (isinstance(rate, (int, float)) and rate in (0, 1))
