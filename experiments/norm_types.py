"""The types a technique of the runner is made of (see :mod:`experiments.registry`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import flax.linen as nn

__all__ = ["KINDS", "Check", "NormContext", "NormEntry", "NormLayers"]

KINDS = ("activation", "weight")


class NormContext(NamedTuple):
    """What a factory needs to know about the activations it normalizes.

    ``ndim`` is the rank of the activations (2 for an MLP, 3 for a 1-D CNN ``(N, L, C)``, 4 for a
    2-D CNN ``(N, H, W, C)``), ``features`` the size of the last axis, and
    ``use_running_average`` the BatchNorm mode of this forward pass.
    """

    ndim: int
    features: int
    use_running_average: bool


Check = Callable[[Mapping[str, Any], int, int], str | None]


@dataclass(frozen=True)
class NormEntry:
    """A registered technique: factory, accepted options with defaults, kind, extra check.

    ``check(options, features, ndim)`` returns an error message (naming the option) or ``None``;
    ``centers`` says the norm subtracts a mean (see the module docstring).
    """

    name: str
    factory: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "activation"
    check: Check | None = None
    centers: bool = False


class NormLayers(NamedTuple):
    """What a model receives: an activation-norm factory and/or a linear-layer wrapper.

    ``centers``: the norm subtracts a mean, so a linear layer right before it needs no bias.
    """

    norm: Callable[..., nn.Module] | None = None
    wrap_linear: Callable[..., nn.Module] | None = None
    centers: bool = False
