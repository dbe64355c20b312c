"""Normalization techniques by name: ``name -> factory`` plus option defaults and checks.

A technique is one of two kinds:

* ``"activation"``: a layer applied to the activations after each hidden linear layer,
  ``y = norm(x)`` (BatchNorm, LayerNorm, RMSNorm, GroupNorm, InstanceNorm).  Its factory is
  called as ``factory(ctx, name=..., **options)`` with a :class:`NormContext` and returns a
  Flax module applied as ``module(y)``.
* ``"weight"``: a reparameterization wrapping the linear layer itself (WeightNorm,
  ``w = g * v / ||v||``).  Its factory is called as ``factory(layer, name=..., **options)``.

A norm that subtracts a mean over the features it normalizes (``centers=True``: BatchNorm,
LayerNorm, GroupNorm, InstanceNorm) makes the bias of the linear layer before it redundant: its
gradient is zero in exact arithmetic, and under Adam float noise in that zero gradient would
move it by about the learning rate per step.  Models therefore drop that bias when such a norm
comes right after the linear layer.

Conventions for convolutional activations ``(N, *spatial, C)``: LayerNorm and RMSNorm run over
all non-batch axes (``(C, *spatial)``, as in Wu & He 2018, "Group Normalization"), GroupNorm over
channel groups and all spatial axes, InstanceNorm over the spatial axes of each channel.  For
MLP activations ``(N, C)`` InstanceNorm would normalize each unit alone (constant output), so it
is rejected.  The research variants are defined in :mod:`experiments.registry_research` and
registered here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import flax.linen as nn

from experiments.errors import ConfigError
from experiments.imports import qualified_name
from experiments.norm_types import KINDS, Check, NormContext, NormEntry, NormLayers
from experiments.registry_research import RESEARCH_ENTRIES
from normjax import linen as norm_layers

__all__ = [
    "NormContext",
    "NormEntry",
    "NormLayers",
    "build_norm",
    "check_norm",
    "get_norm",
    "known_norms",
    "norm_defaults",
    "register_norm",
]

_REGISTRY: dict[str, NormEntry] = {}


def register_norm(name: str, factory: Callable[..., nn.Module], *,
                  defaults: Mapping[str, Any] | None = None, kind: str = "activation",
                  check: Check | None = None, centers: bool = False,
                  overwrite: bool = False) -> NormEntry:
    """Register ``factory`` under ``name`` (see the module docstring for the call signatures).

    ``defaults`` lists every option the factory accepts (configs may override only these, also
    from the command line: ``--config.techniques.<label>.norm_options.<option>=...``).
    Registering the same factory again (a module imported twice, e.g. by a config file and by
    a package) is a no-op; another factory under a taken name needs ``overwrite=True``.

    Example, in a module your config imports:

    >>> import normjax
    >>> def my_norm(ctx, *, name, epsilon):  # ctx: NormContext(ndim, features, ...)
    ...     return normjax.linen.RMSNorm(epsilon=epsilon, name=name)
    >>> entry = register_norm("my_rms", my_norm, defaults={"epsilon": 1e-6})
    >>> "my_rms" in known_norms(), entry.defaults["epsilon"]
    (True, 1e-06)
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"norm name must be a non-empty identifier, got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    entry = NormEntry(name, factory, MappingProxyType(dict(defaults or {})), kind, check,
                      centers)
    if name in _REGISTRY and not overwrite:
        if _same_entry(_REGISTRY[name], entry):  # a module imported twice: nothing to do
            return _REGISTRY[name]
        raise ValueError(f"norm {name!r} is already registered with another factory or "
                         "options; pass overwrite=True to replace it")
    _REGISTRY[name] = entry
    return entry


def _same_entry(a: NormEntry, b: NormEntry) -> bool:
    """The same registration, also when its module was imported again (new function objects
    with the same qualified name)."""
    def key(e: NormEntry) -> tuple[Any, ...]:
        return (qualified_name(e.factory), dict(e.defaults), e.kind, qualified_name(e.check),
                e.centers)

    return key(a) == key(b)


def known_norms() -> tuple[str, ...]:
    """Registered names, in registration order."""
    return tuple(_REGISTRY)


def get_norm(name: str, *, field_name: str = "norm") -> NormEntry:
    """The entry for ``name``; a :class:`ConfigError` naming ``field_name`` if unknown."""
    if name not in _REGISTRY:
        raise ConfigError(f"{field_name}: unknown norm {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def norm_defaults(name: str) -> dict[str, Any]:
    """Default options of ``name`` (a fresh dict)."""
    return dict(get_norm(name).defaults)


def check_norm(name: str, options: Mapping[str, Any], *, features: int | None, ndim: int,
               field_name: str) -> None:
    """Validate ``options`` for ``name`` on activations of rank ``ndim`` with ``features``
    (``None``: unknown, e.g. a ``model.factory`` model; only the option names are checked)."""
    entry = get_norm(name, field_name=f"{field_name}.norm")
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        raise ConfigError(f"{field_name}.norm_options: unknown option(s) {unknown} for norm "
                          f"{name!r}; accepted: {sorted(entry.defaults) or 'none'}")
    if entry.check is not None and features is not None:
        message = entry.check({**entry.defaults, **options}, features, ndim)
        if message:
            raise ConfigError(f"{field_name}.norm_options: {message}")


def build_norm(name: str, options: Mapping[str, Any]) -> NormLayers:
    """The :class:`NormLayers` a model needs for technique ``name`` with ``options``."""
    entry = get_norm(name)
    opts = {**entry.defaults, **options}
    if name == "none":
        return NormLayers()
    if entry.kind == "weight":
        return NormLayers(wrap_linear=_bind(entry.factory, opts))
    return NormLayers(norm=_bind(entry.factory, opts), centers=entry.centers)


def _bind(factory: Callable[..., nn.Module], opts: dict[str, Any]) -> Callable[..., nn.Module]:
    def bound(*args: Any, **kwargs: Any) -> nn.Module:
        return factory(*args, **kwargs, **opts)

    bound.__name__ = getattr(factory, "__name__", "norm")
    return bound


def _all_but_batch(ndim: int) -> tuple[int, ...]:
    return tuple(range(1, ndim))


def _positive_epsilon(options: Mapping[str, Any], features: int, ndim: int) -> str | None:
    eps = options.get("epsilon", 1.0)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        return f"epsilon must be a number > 0, got {eps!r}"
    return None


def _check_batch(options: Mapping[str, Any], features: int, ndim: int) -> str | None:
    momentum = options["momentum"]
    if isinstance(momentum, bool) or not isinstance(momentum, int | float) or not (
            0 <= momentum < 1):
        return f"momentum must be in [0, 1) (flax's weight on the old running value), " \
               f"got {momentum!r}"
    return _positive_epsilon(options, features, ndim)


def _check_group(options: Mapping[str, Any], features: int, ndim: int) -> str | None:
    groups = options["num_groups"]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
        return f"num_groups must be a positive integer, got {groups!r}"
    if features % groups:
        return (f"num_groups={groups} does not divide the {features} channels of the hidden "
                f"layers (model.width); choose a divisor of {features}")
    return _positive_epsilon(options, features, ndim)


def _check_instance(options: Mapping[str, Any], features: int, ndim: int) -> str | None:
    if ndim < 3:
        return ("norm 'instance' needs spatial axes (model.kind='cnn'); on MLP activations "
                "each unit would be normalized alone, giving a constant output")
    return _positive_epsilon(options, features, ndim)


def _identity(ctx: NormContext, *, name: str) -> nn.Module:
    return _Identity(name=name)


class _Identity(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        return x


def _batch(ctx: NormContext, *, name: str, momentum: float, epsilon: float) -> nn.Module:
    return norm_layers.BatchNorm(use_running_average=ctx.use_running_average,
                                 momentum=momentum, epsilon=epsilon, name=name)


def _layer(ctx: NormContext, *, name: str, epsilon: float) -> nn.Module:
    return norm_layers.LayerNorm(epsilon=epsilon, reduction_axes=_all_but_batch(ctx.ndim),
                                 name=name)


def _rms(ctx: NormContext, *, name: str, epsilon: float) -> nn.Module:
    return norm_layers.RMSNorm(epsilon=epsilon, reduction_axes=_all_but_batch(ctx.ndim),
                               name=name)


def _group(ctx: NormContext, *, name: str, num_groups: int, epsilon: float) -> nn.Module:
    return norm_layers.GroupNorm(num_groups=num_groups, epsilon=epsilon, name=name)


def _instance(ctx: NormContext, *, name: str, epsilon: float) -> nn.Module:
    return norm_layers.InstanceNorm(epsilon=epsilon, name=name)


def _weight(layer: nn.Module, *, name: str, epsilon: float) -> nn.Module:
    return norm_layers.WeightNorm(layer, epsilon=epsilon, name=name)


register_norm("none", _identity)
register_norm("batch", _batch, defaults={"momentum": 0.9, "epsilon": 1e-5}, check=_check_batch,
              centers=True)
register_norm("layer", _layer, defaults={"epsilon": 1e-6}, check=_positive_epsilon,
              centers=True)
register_norm("rms", _rms, defaults={"epsilon": 1e-6}, check=_positive_epsilon)
register_norm("group", _group, defaults={"num_groups": 8, "epsilon": 1e-6}, check=_check_group,
              centers=True)
register_norm("instance", _instance, defaults={"epsilon": 1e-6}, check=_check_instance,
              centers=True)
register_norm("weight", _weight, defaults={"epsilon": 1e-12}, kind="weight",
              check=_positive_epsilon)

for _entry in RESEARCH_ENTRIES:  # the research variants
    register_norm(_entry.name, _entry.factory, defaults=_entry.defaults, kind=_entry.kind,
                  check=_entry.check, centers=_entry.centers)
