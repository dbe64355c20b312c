"""Tiny configs for smoke tests: seconds to compile and run on a CPU.

``tiny_config()`` trains a 2-hidden-layer MLP of width 8 on a 3-class synthetic Gaussian
mixture (64 training, 40 test examples) for 4 steps, logged every 2, with 2 seeds.
``shrink(config)`` cuts a study config down to ``steps`` steps, one seed, little data and at
most two hidden layers, keeping its techniques (or those named); the studies' ``--tiny`` runs
use it too.  ``initial_state(config, label, ds)`` is the step-0 state of a technique's runs as
the runner initializes it.
"""

from __future__ import annotations

import copy
from typing import Any

import flax.serialization
import ml_collections

from experiments.config import base_config, technique
from experiments.data import Dataset
from experiments.program import Program, make_experiment
from experiments.runs import make_grid
from experiments.typed_config import StudyConfig, typed_config

__all__ = ["initial_state", "shrink", "tiny_config"]


def tiny_config(**techniques: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tiny study with the given techniques (default: ``none`` and ``batch``)."""
    config = base_config()
    config.name = "tiny"
    config.dataset.name = "synthetic"
    config.dataset.options = {"num_train": 64, "num_test": 40, "dim": 8, "num_classes": 3}
    config.model.update(kind="mlp", depth=2, width=8)
    config.optimizer.update(name="adam", learning_rate=1e-2)
    config.steps, config.log_every, config.batch_size = 4, 2, 16
    config.eval_batch_size, config.eval_train_examples = 32, 0
    config.num_seeds = 2
    config.devices = 1  # one device: smoke tests need no collectives
    for label, tech in (techniques or {"none": technique(), "batch": technique("batch")}).items():
        config.techniques[label] = tech
    return config


def shrink(config: ml_collections.ConfigDict, *, steps: int = 2, seeds: int = 1,
           keep: tuple[str, ...] | None = None,
           sweep: dict[str, tuple[Any, ...]] | None = None) -> ml_collections.ConfigDict:
    """``config`` cut for a smoke run: ``steps`` steps logged every step, ``seeds`` seeds, one
    device, little data, at most two hidden layers, only the techniques in ``keep`` (``None``:
    all, in their order) and the swept values in ``sweep`` (hparam -> values; sweeps it does
    not name are kept)."""
    order = [label for label in config.techniques if keep is None or label in keep]
    config = copy.deepcopy(config)  # (deepcopy sorts a ConfigDict's keys: restore the order)
    for name, values in (sweep or {}).items():
        if name not in config.sweep or not set(values) <= set(config.sweep[name]):
            raise ValueError(f"sweep {name}={values} is not part of the config's sweep "
                             f"{config.sweep.to_dict()}")
        config.sweep[name] = tuple(values)
    with config.unlocked():
        techniques = ml_collections.ConfigDict(sort_keys=False)
        for label in order:
            techniques[label] = config.techniques[label]
        config.techniques = techniques
        config.steps, config.log_every, config.num_seeds = steps, 1, seeds
        config.devices = 1
        config.model.depth = min(config.model.depth, 2)
        config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, steps)
        config.eval_train_examples = min(config.eval_train_examples, 128)
        config.eval_batch_size = min(config.eval_batch_size, 256)
        _shrink_data(config.dataset)
    return config


def _shrink_data(dataset: ml_collections.ConfigDict) -> None:
    if dataset.name == "mnist1d":
        dataset.options.num_samples = 500  # a test split of 100
    if dataset.name == "synthetic":
        dataset.options.update(num_train=64, num_test=32)
    if dataset.name == "mnist_5k":  # 100 test and about 120 validation images
        dataset.options.test_fraction = 0.02
        if dataset.validation_fraction:
            dataset.validation_fraction = 0.025


def initial_state(config: ml_collections.ConfigDict | StudyConfig, label: str,
                  ds: Dataset) -> dict[str, Any]:
    """The step-0 state dict of every run of ``label`` (leading axis = runs), from the
    runner's own :class:`~experiments.program.Program`."""
    config = typed_config(config)
    program = Program(make_experiment(config, label, ds), ds, make_grid(config, label))
    return flax.serialization.to_state_dict(program.init())
