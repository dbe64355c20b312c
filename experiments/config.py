"""Config schema of a study, the ``technique(...)`` helper and config-file loading.

A config file is a Python module with ``get_config(arg=None) -> ConfigDict`` (the run command in
its docstring).  It starts from :func:`base_config`, which fixes the schema: every key a study
may set exists there with its default, and the loaded config is locked, so a misspelled key is
an error.  Fields (see :func:`base_config` for the defaults)::

    name, notes                      title and free text shown in report.md
    dataset.{name, seed, path, options}
                                     experiments.data.load_dataset(name, seed=, path=, **options);
                                     name: a registered dataset or 'package.module:loader'
                                     (experiments.data.register_dataset)
    dataset.validation_fraction      hold out this share of the training split (stratified,
                                     seeded by dataset.seed) as a validation set, logged as
                                     val/loss and val/accuracy: tune on it, report test/*
    model.{kind, depth, width, activation, init_scale, kernel_init, kernel_size, stride,
           conv_impl, norm_position} kind 'mlp' | 'cnn'; depth 0 = linear classifier;
                                     kernel_init 'auto' = He normal for rectifiers (relu,
                                     gelu, ...), LeCun normal otherwise;
                                     conv_impl 'im2col' (matmul) | 'xla' (lax.conv)
    model.{factory, options}         your own model instead: an import path
                                     'package.module:function' called with the technique's
                                     norm and **options (experiments.extensions); the
                                     fields above then do not apply, but init_scale
    optimizer.{name, learning_rate, momentum, schedule, warmup_steps, grad_clip_norm}
    steps, batch_size, log_every     training length, minibatch size, steps per logged chunk
    eval_batch_size, eval_train_examples
                                     eval chunking; training examples used for train/* (0 = all)
    seed, num_seeds                  seeds seed, seed+1, ..., trained together (run_strategy)
    devices                          devices the batch is split over (0 = all, or as many as
                                     batch_size splits evenly over; an explicit count must
                                     divide batch_size), see experiments.parallel
    bn_sync                          BatchNorm statistics over the global batch ('global',
                                     synchronized) or each device's share ('local')
    run_strategy                     how the runs of a technique share one program: 'auto'
                                     (by backend and model), 'vmap', 'sequential',
                                     'interleaved' or 'measure' (time each, keep the fastest;
                                     see experiments.strategy)
    checkpoint_every_s               save a technique's checkpoint at most this often (seconds;
                                     0 = after every chunk), and always when it ends or the
                                     run stops; a killed run redoes the chunks since
    techniques.<label>               technique(norm, dropout=, l1=, l2=, weight_decay=,
                                     learning_rate=, **norm_options); add them one by one
                                     (``config.techniques.none = technique()``) to keep their
                                     order, which is the order of runs, tables and legends
    only                             comma-separated subset of technique labels ('' = all)
    sweep.<hparam>                   tuple of values (vmapped grid, values override the
                                     techniques'); hparam in SWEEPABLE
    figures                          write PNG figures and embed them in report.md
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import ml_collections

from experiments.errors import ConfigError
from experiments.registry import get_norm

__all__ = ["SWEEPABLE", "base_config", "load_config", "technique", "technique_labels"]

SWEEPABLE = ("learning_rate", "weight_decay", "dropout", "l1", "l2", "init_scale")


def base_config() -> ml_collections.ConfigDict:
    """The full schema with defaults; configs override fields and add ``techniques``."""
    c = ml_collections.ConfigDict()
    c.name = "study"
    c.notes = ""
    c.dataset = {"name": "digits", "seed": 0, "path": "", "options": {},
                 "validation_fraction": 0.0}
    c.model = {"kind": "mlp", "depth": 2, "width": 64, "activation": "relu",
               "init_scale": 1.0, "kernel_init": "auto", "kernel_size": 3,
               "stride": 1, "conv_impl": "im2col", "norm_position": "before_activation",
               "factory": "", "options": {}}
    c.optimizer = {"name": "adam", "learning_rate": 1e-3, "momentum": 0.9,
                   "schedule": "constant", "warmup_steps": 0, "grad_clip_norm": 0.0}
    c.steps = 1000
    c.batch_size = 64
    c.log_every = 100
    c.eval_batch_size = 1024
    c.eval_train_examples = 2048
    c.seed = 0
    c.num_seeds = 3
    c.devices = 0
    c.bn_sync = "global"
    c.run_strategy = "auto"
    c.checkpoint_every_s = 30.0
    c.techniques = ml_collections.ConfigDict(sort_keys=False)  # keeps the order they are added
    c.only = ""
    c.sweep = {name: () for name in SWEEPABLE}
    c.figures = True
    return c


def technique(norm: str = "none", *, dropout: float = 0.0, dropout_kind: str = "bernoulli",
              l1: float = 0.0, l2: float = 0.0,
              weight_decay: float = 0.0, learning_rate: float | None = None,
              **norm_options: Any) -> ml_collections.ConfigDict:
    """One technique: a registered norm (with its options) plus regularizers.

    ``dropout`` is the drop probability after each hidden block, ``dropout_kind`` its form
    (``bernoulli``, ``spatial`` (channel-wise), ``alpha`` (SELU nets) or ``gaussian``);
    ``l1``/``l2`` weight the coupled penalties ``sum |w|`` and ``1/2 sum w^2`` on kernels;
    ``weight_decay`` is decoupled (AdamW-style, on kernels); ``learning_rate`` overrides
    ``optimizer.learning_rate`` (None: keep it).  All norm options get the registry's defaults,
    so each can be overridden from the command line.
    """
    entry = get_norm(norm, field_name="technique(norm=...)")
    unknown = sorted(set(norm_options) - set(entry.defaults))
    if unknown:
        raise ConfigError(f"technique(norm={norm!r}): unknown norm option(s) {unknown}; "
                          f"accepted: {sorted(entry.defaults) or 'none'}")
    return ml_collections.ConfigDict({
        "norm": norm, "norm_options": {**entry.defaults, **norm_options}, "dropout": dropout,
        "dropout_kind": dropout_kind,
        "l1": l1, "l2": l2, "weight_decay": weight_decay,
        # a typed None, so --config.techniques.<label>.learning_rate=0.1 can set it
        "learning_rate": (ml_collections.config_dict.placeholder(float)
                          if learning_rate is None else learning_rate)})


def technique_labels(config: ml_collections.ConfigDict) -> list[str]:
    """Labels to run, in config order, restricted by ``config.only`` when it is set."""
    labels = list(config.techniques.keys())
    if not config.only:
        return labels
    chosen = [s.strip() for s in config.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in labels]
    if unknown:
        raise ConfigError(f"only: unknown technique label(s) {unknown}; known: {labels}")
    return [label for label in labels if label in chosen]


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Load ``path/to/config.py[:arg]`` by calling its ``get_config([arg])``; returns it locked."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config: config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_normjax_config_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"--config: cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        raise ConfigError(f"--config: {path!r} has no get_config(arg=None) function")
    takes_arg = bool(inspect.signature(get_config).parameters)
    if arg and not takes_arg:
        raise ConfigError(f"--config: {path!r}'s get_config() takes no argument, got {arg!r}")
    config = get_config(arg or None) if takes_arg else get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"--config: get_config() in {path!r} must return a ConfigDict")
    config.lock()
    return config
