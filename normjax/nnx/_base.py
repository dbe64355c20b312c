"""What every ``normjax.nnx`` layer with parameters or running statistics shares: the
``scale``/``bias`` params in flax's key order, and :class:`RunningStatsNorm`, the base of the
layers with running statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
from flax import nnx
from flax.nnx.nn import initializers
from flax.typing import Dtype, Initializer

from normjax._flax_common import first_from, promote_like_flax
from normjax._typing import ArrayLike

__all__ = ["KERNELS", "NO_METADATA", "ONES", "ZEROS", "Path", "RunningStatsNorm", "ScaleBiasNorm",
           "missing", "nnx_scale_bias", "params_of", "swapped_in", "value_of"]

NO_METADATA: Mapping[str, Any] = MappingProxyType({})
ZEROS: Initializer = initializers.zeros_init()
ONES: Initializer = initializers.ones_init()


def nnx_scale_bias(
    shape: tuple[int, ...],
    *,
    use_scale: bool,
    use_bias: bool,
    scale_init: Callable[..., Any],
    bias_init: Callable[..., Any],
    param_dtype: Any,
    rngs: Any,
    scale_metadata: Mapping[str, Any],
    bias_metadata: Mapping[str, Any],
) -> tuple[Any, Any]:
    """NNX ``scale`` then ``bias`` params (``nnx.data(None)`` when off), in flax's key order."""
    scale = nnx.data(None)
    if use_scale:
        scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype), **scale_metadata)
    bias = nnx.data(None)
    if use_bias:
        bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype), **bias_metadata)
    return scale, bias


def value_of(variable: Any) -> jax.Array | None:
    """The array held by an NNX variable, or ``None`` for a switched-off parameter."""
    return None if variable is None else variable[...]


class ScaleBiasNorm(nnx.Module):
    """The base of every ``normjax.nnx`` normalization layer: the ``scale``/``bias`` params (in
    flax's key order) and the attributes all of them have, and flax's dtype promotion."""

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float,
        dtype: Dtype | None,
        param_dtype: Dtype,
        use_bias: bool,
        use_scale: bool,
        bias_init: Initializer,
        scale_init: Initializer,
        axis_name: Any,
        axis_index_groups: Any,
        promote_dtype: Callable[..., Any],
        rngs: nnx.Rngs,
        bias_metadata: Mapping[str, Any],
        scale_metadata: Mapping[str, Any],
        use_fast_variance: bool | None = None,
    ) -> None:
        self.scale, self.bias = nnx_scale_bias(
            (num_features,), use_scale=use_scale, use_bias=use_bias, scale_init=scale_init,
            bias_init=bias_init, param_dtype=param_dtype, rngs=rngs,
            scale_metadata=scale_metadata, bias_metadata=bias_metadata,
        )
        self.num_features = num_features
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_bias = use_bias
        self.use_scale = use_scale
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.promote_dtype = promote_dtype
        if use_fast_variance is not None:
            self.use_fast_variance = use_fast_variance

    def _promoted(self, x: ArrayLike, *params: Any) -> tuple[Any, ...]:
        """``(x, scale, bias, *params)`` cast by ``promote_dtype`` (flax's dtype rule)."""
        arrays = (x, value_of(self.scale), value_of(self.bias), *params)
        return promote_like_flax(self.promote_dtype, arrays, self.dtype)


class RunningStatsNorm(ScaleBiasNorm):
    """The base of every ``normjax.nnx`` layer with running statistics (BatchNorm and its
    variants, EvoNorm-B0, SwitchableNorm): the state as ``nnx.BatchStat`` fields,
    ``scale``/``bias`` and the common attributes, the train/eval rule and ``set_view``.

    ``stored`` names the state fields kept as variables (default: all); the others are zeros
    of their initial shape and dtype on every call and are not stored (BatchNorm's ``count``,
    which only ``momentum=None`` and ``debias`` read).
    """

    def __init__(
        self,
        num_features: int,
        state: NamedTuple,
        *,
        use_running_average: bool | None,
        momentum: float | None,
        stored: tuple[str, ...] | None = None,
        **common: Any,
    ) -> None:
        """``common``: :class:`ScaleBiasNorm`'s arguments."""
        self.state_type = type(state)
        self.stored = tuple(state._fields if stored is None else stored)
        self.unstored = {name: (jax.numpy.shape(value), jax.numpy.result_type(value))
                         for name, value in zip(state._fields, state, strict=True)
                         if name not in self.stored}
        for name in self.stored:
            setattr(self, name, nnx.BatchStat(getattr(state, name)))
        super().__init__(num_features, **common)
        self.use_running_average = use_running_average
        self.momentum = momentum

    def _training(self, use_running_average: bool | None) -> bool:
        """The call argument, else the attribute (set by ``.train()`` / ``.eval()``)."""
        return not first_from(use_running_average, self.use_running_average,
                              name="use_running_average", owner=type(self).__name__)

    def _state(self) -> Any:
        return self.state_type(*(getattr(self, name)[...] if name in self.stored
                                 else jax.numpy.zeros(*self.unstored[name])
                                 for name in self.state_type._fields))

    def _store(self, new: NamedTuple, train: bool) -> None:
        if train:
            for name in self.stored:
                getattr(self, name)[...] = getattr(new, name)

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: sets ``use_running_average`` when given."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


# Weight wrappers (WeightNorm, SpectralNorm, WeightStandardization): the wrapped layer keeps
# its raw parameters; the transformed ones are swapped in for one call.

Path = tuple[Any, ...]
KERNELS = nnx.PathContains("kernel")


@contextmanager
def swapped_in(replacements: Sequence[tuple[nnx.Variable, jax.Array]]) -> Iterator[None]:
    """Holds each variable at its replacement value inside the block, restoring it after."""
    originals = [variable[...] for variable, _ in replacements]
    for variable, value in replacements:
        variable[...] = value
    try:
        yield
    finally:
        for (variable, _), value in zip(replacements, originals, strict=True):
            variable[...] = value


def params_of(layer: nnx.Module, keep: Callable[[Path, nnx.Variable], bool]) -> list[Any]:
    """``(path, variable)`` of the ``nnx.Param`` leaves of ``layer`` selected by ``keep``."""
    state = nnx.state(layer, nnx.Param)
    return [(p, v) for p, v in nnx.to_flat_state(state) if keep(p, v)]


def missing(wrapper: str, path: Path) -> RuntimeError:
    return RuntimeError(
        f"{wrapper} has no state for the wrapped layer's parameter {path}; the wrapped "
        f"layer's parameters must not change after {wrapper} is built."
    )
