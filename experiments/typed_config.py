"""The config as a frozen, typed value: what the runner reads once a config is validated.

A config file builds an ``ml_collections.ConfigDict`` (locked; overridable from the command
line, see :mod:`experiments.config`).  :func:`experiments.runner.run` validates it and turns it
into a :class:`StudyConfig` once, at the boundary; everything downstream (models, programs,
grids, checkpoints, reports) reads that value.  Fields are typed, nothing can be set, and the
free-form groups (options, techniques, sweeps) are read-only mappings.  ``to_dict()`` gives the
plain data of ``ConfigDict.to_dict()`` (``config.json``, checkpoint fingerprints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import ml_collections

__all__ = ["DatasetConfig", "ModelConfig", "OptimizerConfig", "StudyConfig", "SweepConfig",
           "TechniqueConfig", "typed_config"]

Options = Mapping[str, Any]


def _frozen(value: Any) -> Any:
    """``value`` with every mapping read-only and every list a tuple."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


class _Frozen:
    """``from_dict`` / ``to_dict`` for the frozen dataclasses below."""

    _NESTED: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = data[f.name]
            nested = cls._NESTED.get(f.name)
            values[f.name] = nested.from_dict(value) if nested else _frozen(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: dicts, tuples and scalars."""
        return _plain(self)


@dataclasses.dataclass(frozen=True)
class DatasetConfig(_Frozen):
    """``dataset.*``: a registered loader or an import path, and its options."""

    name: str
    seed: int
    path: str
    options: Options
    validation_fraction: float


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Frozen):
    """``model.*``: the shipped MLP / CNN, or ``factory`` (an import path) with ``options``."""

    kind: str
    depth: int
    width: int
    activation: str
    init_scale: float
    kernel_init: str
    kernel_size: int
    stride: int
    conv_impl: str
    norm_position: str
    factory: str
    options: Options


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(_Frozen):
    """``optimizer.*``."""

    name: str
    learning_rate: float
    momentum: float
    schedule: str
    warmup_steps: int
    grad_clip_norm: float


@dataclasses.dataclass(frozen=True)
class TechniqueConfig(_Frozen):
    """One ``techniques.<label>`` entry (see :func:`experiments.config.technique`)."""

    norm: str
    norm_options: Options
    dropout: float
    dropout_kind: str
    l1: float
    l2: float
    weight_decay: float
    learning_rate: float | None


@dataclasses.dataclass(frozen=True)
class SweepConfig(_Frozen):
    """``sweep.*``: the values of each sweepable hyperparameter (empty: not swept); the fields
    are :data:`experiments.config.SWEEPABLE`."""

    learning_rate: tuple[float, ...]
    weight_decay: tuple[float, ...]
    dropout: tuple[float, ...]
    l1: tuple[float, ...]
    l2: tuple[float, ...]
    init_scale: tuple[float, ...]

    def __getitem__(self, name: str) -> tuple[float, ...]:
        return getattr(self, name)

    def items(self) -> list[tuple[str, tuple[float, ...]]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


class _Techniques(_Frozen):
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mapping[str, TechniqueConfig]:
        return MappingProxyType({k: TechniqueConfig.from_dict(v) for k, v in data.items()})


@dataclasses.dataclass(frozen=True)
class StudyConfig(_Frozen):
    """The whole config (fields and defaults: :func:`experiments.config.base_config`)."""

    name: str
    notes: str
    dataset: DatasetConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    steps: int
    batch_size: int
    log_every: int
    eval_batch_size: int
    eval_train_examples: int
    seed: int
    num_seeds: int
    devices: int
    bn_sync: str
    run_strategy: str
    checkpoint_every_s: float
    techniques: Mapping[str, TechniqueConfig]  # in config order
    only: str
    sweep: SweepConfig
    figures: bool

    _NESTED: ClassVar[dict[str, Any]] = {
        "dataset": DatasetConfig, "model": ModelConfig, "optimizer": OptimizerConfig,
        "techniques": _Techniques, "sweep": SweepConfig}

    def replace(self, **changes: Any) -> StudyConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def typed_config(config: ml_collections.ConfigDict | StudyConfig) -> StudyConfig:
    """``config`` as a :class:`StudyConfig` (returned as is if it is one already).

    Run :func:`experiments.validation.validate_config` first: this only converts.
    """
    if isinstance(config, StudyConfig):
        return config
    techniques = {label: config.techniques[label].to_dict() for label in config.techniques}
    return StudyConfig.from_dict({**config.to_dict(), "techniques": techniques})
