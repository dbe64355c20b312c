"""``normjax.nnx`` WeightNorm and Dropout: flax.nnx's layers over :func:`normjax.weight_norm`
and :func:`normjax.dropout`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers
from flax.typing import Axes, Dtype, Initializer

from normjax._linen_common import DEFAULT_PROMOTE_DTYPE, first_from, promote_like_flax
from normjax._linen_wrappers import needs_key
from normjax.dropout import dropout
from normjax.stats import canonicalize_axes, feature_shape
from normjax.weight_norm import weight_norm

__all__ = ["Dropout", "WeightNorm"]

KERNELS = nnx.PathContains("kernel")


class WeightNorm(nnx.Module):
    """Weight Normalization (Salimans & Kingma, 2016, arXiv:1602.07868) of a wrapped layer.

    ``WeightNorm(nnx.Linear(8, 4, rngs=rngs), rngs=rngs)``: every ``nnx.Param`` of
    ``layer_instance`` selected by ``variable_filter`` (default ``nnx.PathContains("kernel")``)
    is used as ``w = scale * v / sqrt(sum(v^2) + epsilon)``, the sum over the axes not in
    ``feature_axes`` (``None``: all axes). The scales live in ``scales[path]``, as in
    flax.nnx, but as trainable ``nnx.Param`` (flax keeps plain arrays there). The wrapped
    layer's parameters keep holding ``v``: the normalized weights are swapped in for the
    duration of the call only (flax.nnx overwrites them).
    """

    def __init__(
        self,
        layer_instance: nnx.Module,
        *,
        feature_axes: Axes | None = -1,
        use_scale: bool = True,
        scale_init: Initializer = initializers.ones,
        epsilon: float = 1e-12,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        variable_filter: Any = KERNELS,
        promote_dtype: Callable[..., Any] = DEFAULT_PROMOTE_DTYPE,
        rngs: nnx.Rngs,
    ) -> None:
        self.layer_instance = layer_instance
        self.feature_axes = () if feature_axes is None else feature_axes
        self.use_scale = use_scale
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.variable_filter = nnx.filterlib.to_predicate(variable_filter)
        self.promote_dtype = promote_dtype
        self.scales = nnx.data(None)
        if use_scale:
            self.scales = nnx.data({
                path: nnx.Param(scale_init(rngs.params(), self._scale_shape(param), param_dtype))
                for path, param in self._selected()
            })

    def _selected(self) -> list[tuple[tuple[Any, ...], nnx.Variable]]:
        """``(path, variable)`` of the wrapped layer's params chosen by the filter."""
        state = nnx.state(self.layer_instance, nnx.Param)
        return [(p, v) for p, v in nnx.to_flat_state(state) if self.variable_filter(p, v)]

    def _scale_shape(self, param: nnx.Variable) -> tuple[int, ...]:
        shape = jnp.shape(param[...])
        return feature_shape(shape, canonicalize_axes(self.feature_axes, len(shape)))

    def _normalized(self, path: tuple[Any, ...], v: jax.Array) -> jax.Array:
        """``scale * v / ||v||`` for the parameter at ``path``."""
        scale = self.scales[path][...] if self.use_scale else None
        v, scale = promote_like_flax(self.promote_dtype, (v, scale), self.dtype)
        features = canonicalize_axes(self.feature_axes, v.ndim, name="feature_axes")
        return weight_norm(v, scale, feature_axes=features, epsilon=self.epsilon)

    @contextmanager
    def _swapped_in(self) -> Iterator[None]:
        """Swaps ``w`` in for every selected ``v`` and restores ``v`` afterwards."""
        selected = self._selected()
        missing = [path for path, _ in selected if self.use_scale and path not in self.scales]
        if missing:
            raise RuntimeError(
                f"WeightNorm has no scale for the wrapped layer's parameters {missing}; the "
                "wrapped layer's parameters must not change after WeightNorm is built."
            )
        originals = [variable[...] for _, variable in selected]
        try:
            for (path, variable), v in zip(selected, originals, strict=True):
                variable[...] = self._normalized(path, v)
            yield
        finally:
            for (_, variable), v in zip(selected, originals, strict=True):
                variable[...] = v

    def __call__(self, x: jax.typing.ArrayLike, *args: Any, **kwargs: Any) -> Any:
        """Calls the wrapped layer with its selected parameters weight-normalized."""
        with self._swapped_in():
            return self.layer_instance(x, *args, **kwargs)


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
