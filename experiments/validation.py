"""Config validation: every check runs before any training and names the offending field.

:func:`validate_config` checks the config alone (schema, ranges, techniques, sweep);
:func:`validate_with_data` the parts that need the dataset (batch size, input rank).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

import ml_collections

from experiments.config import SWEEPABLE, base_config, technique, technique_labels
from experiments.errors import ConfigError
from experiments.imports import is_import_path
from experiments.models import ACTIVATIONS, CONV_IMPLS, KERNEL_INITS, NORM_POSITIONS
from experiments.optim import OPTIMIZERS, SCHEDULES
from experiments.parallel import BN_SYNC_MODES
from experiments.registry import check_norm, get_norm
from experiments.strategy import RUN_STRATEGIES
from experiments.typed_config import StudyConfig

__all__ = ["validate_config", "validate_with_data"]

_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")
_FREE_FORM = ("dataset.options", "model.options", "techniques")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict,
                prefix: str) -> None:
    """Unknown keys (typos) anywhere in ``config`` relative to ``schema``."""
    for key in config.keys():
        path = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema.keys()), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {path!r}{hint}")
        sub, ref = config[key], schema[key]
        if isinstance(ref, ml_collections.ConfigDict) != isinstance(
                sub, ml_collections.ConfigDict):
            kind = "a group" if isinstance(ref, ml_collections.ConfigDict) else "a value"
            raise ConfigError(f"{path} must be {kind}, got {sub!r}")
        free = path in _FREE_FORM or path.endswith(".norm_options")  # checked elsewhere
        if isinstance(ref, ml_collections.ConfigDict) and not free:
            _check_keys(sub, ref, f"{path}.")


def _int_at_least(path: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{path} must be an integer >= {minimum}, got {value!r}")


def _number_in(path: str, value: Any, low: float, high: float = math.inf, *,
               low_open: bool = False, high_open: bool = True) -> None:
    ok = _is_number(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(f"{path} must be a number in {left}{low}, {high}{right}, got {value!r}")


def _choice(path: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ConfigError(f"{path} must be one of {sorted(choices)}, got {value!r}")


def _check_run(config: ml_collections.ConfigDict) -> None:
    for name in ("steps", "batch_size", "log_every", "num_seeds", "eval_batch_size"):
        _int_at_least(name, config[name], 1)
    _int_at_least("seed", config.seed, 0)
    _int_at_least("devices", config.devices, 0)
    _choice("bn_sync", config.bn_sync, BN_SYNC_MODES)
    _choice("run_strategy", config.run_strategy, RUN_STRATEGIES)
    _number_in("checkpoint_every_s", config.checkpoint_every_s, 0.0)
    _int_at_least("eval_train_examples", config.eval_train_examples, 0)
    _int_at_least("dataset.seed", config.dataset.seed, 0)
    _number_in("dataset.validation_fraction", config.dataset.validation_fraction, 0.0, 0.5)
    if not isinstance(config.dataset.name, str) or not config.dataset.name:
        raise ConfigError(f"dataset.name must be a dataset name, got {config.dataset.name!r}")


def _check_model(model: ml_collections.ConfigDict) -> None:
    if not isinstance(model.factory, str) or (model.factory and not is_import_path(
            model.factory)):
        raise ConfigError(f"model.factory must be '' (the shipped models) or an import path "
                          f"'package.module:function', got {model.factory!r}")
    _choice("model.kind", model.kind, ("mlp", "cnn"))
    _int_at_least("model.depth", model.depth, 0)
    _int_at_least("model.width", model.width, 1)
    _int_at_least("model.kernel_size", model.kernel_size, 1)
    _int_at_least("model.stride", model.stride, 1)
    _choice("model.activation", model.activation, ACTIVATIONS)
    _choice("model.kernel_init", model.kernel_init, ("auto", *KERNEL_INITS))
    _choice("model.norm_position", model.norm_position, NORM_POSITIONS)
    _choice("model.conv_impl", model.conv_impl, CONV_IMPLS)
    _number_in("model.init_scale", model.init_scale, 0.0, low_open=True)


def _check_optimizer(opt: ml_collections.ConfigDict, steps: int) -> None:
    _choice("optimizer.name", opt.name, OPTIMIZERS)
    _choice("optimizer.schedule", opt.schedule, SCHEDULES)
    _number_in("optimizer.learning_rate", opt.learning_rate, 0.0, low_open=True)
    _number_in("optimizer.momentum", opt.momentum, 0.0, 1.0)
    _number_in("optimizer.grad_clip_norm", opt.grad_clip_norm, 0.0)
    _int_at_least("optimizer.warmup_steps", opt.warmup_steps, 0)
    if opt.warmup_steps > steps:
        raise ConfigError(f"optimizer.warmup_steps ({opt.warmup_steps}) exceeds steps ({steps})")


def _check_dropout_kind(path: str, tech: Any) -> None:
    from experiments.models import DROPOUTS

    if tech.dropout_kind not in DROPOUTS:
        raise ConfigError(f"{path}.dropout_kind must be one of {sorted(DROPOUTS)}, "
                          f"got {tech.dropout_kind!r}")
    if tech.dropout_kind in ("alpha", "gaussian") and tech.dropout >= 1:
        raise ConfigError(f"{path}.dropout must be < 1 for dropout_kind={tech.dropout_kind!r} "
                          f"(it rescales by 1/(1 - rate)), got {tech.dropout}")


def _check_technique(label: str, tech: Any, model: ml_collections.ConfigDict) -> None:
    path = f"techniques.{label}"
    if not _LABEL.match(label):
        raise ConfigError(f"{path}: labels may use letters, digits and _.+- only")
    if not isinstance(tech, ml_collections.ConfigDict):
        raise ConfigError(f"{path} must be made with technique(...), got {tech!r}")
    _check_keys(tech, technique(), f"{path}.")
    _number_in(f"{path}.dropout", tech.dropout, 0.0, 1.0, high_open=False)
    _check_dropout_kind(path, tech)
    for name in ("l1", "l2", "weight_decay"):
        _number_in(f"{path}.{name}", tech[name], 0.0)
    if tech.learning_rate is not None:
        _number_in(f"{path}.learning_rate", tech.learning_rate, 0.0, low_open=True)
    if not isinstance(tech.norm, str):
        raise ConfigError(f"{path}.norm must be a norm name, got {tech.norm!r}")
    if model.depth == 0 and not model.factory and (tech.norm != "none" or tech.dropout > 0):
        raise ConfigError(f"{path}: model.depth=0 has no hidden layers, so norm "
                          f"{tech.norm!r} / dropout {tech.dropout} would have no effect")
    options = tech.norm_options.to_dict() if isinstance(
        tech.norm_options, ml_collections.ConfigDict) else tech.norm_options
    if model.factory and get_norm(tech.norm, field_name=f"{path}.norm").kind == "weight":
        raise ConfigError(f"{path}.norm: {tech.norm!r} reparametrizes the shipped models' "
                          "linear layers; a model.factory model takes activation norms only")
    check_norm(tech.norm, options, features=None if model.factory else model.width,
               field_name=path, ndim=2 if model.kind == "mlp" else 3)


_SWEEP_RANGES = {"learning_rate": (0.0, math.inf, True, True), "init_scale":
                 (0.0, math.inf, True, True), "dropout": (0.0, 1.0, False, False)}


def _check_sweep(sweep: ml_collections.ConfigDict) -> None:
    for name in SWEEPABLE:
        values = sweep[name]
        if not isinstance(values, tuple | list):
            raise ConfigError(f"sweep.{name} must be a tuple of values, got {values!r}")
        low, high, low_open, high_open = _SWEEP_RANGES.get(name, (0.0, math.inf, False, True))
        for value in values:
            _number_in(f"sweep.{name}", value, low, high, low_open=low_open,
                       high_open=high_open)
        if len(set(values)) != len(values):
            raise ConfigError(f"sweep.{name} has repeated values: {tuple(values)}")


def validate_config(config: ml_collections.ConfigDict) -> list[str]:
    """Check everything that does not need the data; returns the technique labels to run."""
    _check_keys(config, base_config(), "")
    _check_run(config)
    _check_model(config.model)
    _check_optimizer(config.optimizer, config.steps)
    if not len(config.techniques):
        raise ConfigError("techniques is empty; add e.g. config.techniques.none = technique()")
    for label, tech in config.techniques.items():
        _check_technique(label, tech, config.model)
    _check_sweep(config.sweep)
    if config.model.factory and config.sweep.dropout:
        raise ConfigError("sweep.dropout: a model.factory model gets its dropout rate as a "
                          "Python float when it is built; set techniques.<label>.dropout")
    return technique_labels(config)


def validate_with_data(config: StudyConfig, input_shape: tuple[int, ...],
                       num_train: int, num_test: int) -> None:
    """Checks that need the dataset: batch size vs. its size, CNN input rank."""
    if config.batch_size > num_train:
        raise ConfigError(f"batch_size ({config.batch_size}) is larger than the training set "
                          f"of {config.dataset.name!r} ({num_train} examples)")
    if num_test < 1:
        raise ConfigError(f"dataset {config.dataset.name!r} has an empty test split")
    if config.model.kind == "cnn" and not config.model.factory and len(input_shape) not in (
            2, 3):
        raise ConfigError(f"model.kind='cnn' needs inputs with spatial axes ((L, C) or "
                          f"(H, W, C)); dataset {config.dataset.name!r} has input_shape "
                          f"{input_shape}; use model.kind='mlp'")
