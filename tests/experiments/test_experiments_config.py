"""Tests for experiments.config / experiments.validation: every bad-config error path."""

from __future__ import annotations

import dataclasses
import textwrap

import ml_collections
import pytest

from experiments.config import (
    SWEEPABLE,
    base_config,
    load_config,
    technique,
    technique_labels,
)
from experiments.errors import ConfigError
from experiments.runner import load_data, run
from experiments.testing import tiny_config
from experiments.typed_config import typed_config
from experiments.validation import validate_config, validate_with_data


def _set(path: str, value):
    def mutate(config: ml_collections.ConfigDict) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        with config.unlocked(), config.ignore_type():  # as a hand-written config might
            node[last] = value
    return mutate


BAD = [
    (_set("steps", 0), r"steps must be an integer >= 1, got 0"),
    (_set("batch_size", -4), r"batch_size must be an integer >= 1, got -4"),
    (_set("num_seeds", 0), r"num_seeds must be an integer >= 1"),
    (_set("log_every", 0), r"log_every must be an integer >= 1"),
    (_set("eval_batch_size", 0), r"eval_batch_size must be an integer >= 1"),
    (_set("eval_train_examples", -1), r"eval_train_examples must be an integer >= 0"),
    (_set("seed", -1), r"seed must be an integer >= 0"),
    (_set("dataset.validation_fraction", 0.5),
     r"dataset.validation_fraction must be a number in \[0.0, 0.5\), got 0.5"),
    (_set("steps", 2.5), r"steps must be an integer >= 1, got 2.5"),
    (_set("dataset.name", ""), r"dataset.name must be a dataset name"),
    (_set("model.kind", "rnn"), r"model.kind must be one of \['cnn', 'mlp'\], got 'rnn'"),
    (_set("model.depth", -1), r"model.depth must be an integer >= 0"),
    (_set("model.width", 0), r"model.width must be an integer >= 1"),
    (_set("model.activation", "relu6"), r"model.activation must be one of"),
    (_set("model.init_scale", 0.0), r"model.init_scale must be a number in \(0.0, inf\)"),
    (_set("model.kernel_init", "zeros"), r"model.kernel_init must be one of"),
    (_set("model.norm_position", "pre"), r"model.norm_position must be one of"),
    (_set("model.conv_impl", "fft"), r"model.conv_impl must be one of"),
    (_set("optimizer.name", "lamb"), r"optimizer.name must be one of"),
    (_set("optimizer.learning_rate", 0.0), r"optimizer.learning_rate must be a number in \(0"),
    (_set("optimizer.learning_rate", float("nan")), r"optimizer.learning_rate must be a"),
    (_set("optimizer.momentum", 1.0), r"optimizer.momentum must be a number in \[0.0, 1.0\)"),
    (_set("optimizer.schedule", "step"), r"optimizer.schedule must be one of"),
    (_set("optimizer.warmup_steps", 10), r"optimizer.warmup_steps \(10\) exceeds steps \(4\)"),
    (_set("optimizer.grad_clip_norm", -1.0), r"optimizer.grad_clip_norm must be a number"),
    (_set("techniques.none.dropout", 1.5), r"techniques.none.dropout must be a number in "
                                           r"\[0.0, 1.0\], got 1.5"),
    (_set("techniques.none.dropout", -0.1), r"techniques.none.dropout must be a number"),
    (_set("techniques.none.l1", -1.0), r"techniques.none.l1 must be a number in \[0.0"),
    (_set("techniques.none.l2", -1.0), r"techniques.none.l2 must be a number in \[0.0"),
    (_set("techniques.none.weight_decay", -1.0), r"techniques.none.weight_decay must be"),
    (_set("techniques.none.learning_rate", 0.0), r"techniques.none.learning_rate must be"),
    (_set("techniques.none.norm", "bacth"), r"techniques.none.norm: unknown norm 'bacth'"),
    (_set("techniques.batch.norm_options.momentum", 1.5), r"techniques.batch.norm_options: "
                                                          r"momentum must be in \[0, 1\)"),
    (_set("techniques.none.foo", 1), r"unknown config key 'techniques.none.foo'"),
    (_set("model.widht", 3), r"unknown config key 'model.widht' \(did you mean "
                             r"'model.width'\?\)"),
    (_set("stepz", 3), r"unknown config key 'stepz' \(did you mean 'steps'\?\)"),
    (_set("model", 3), r"model must be a group, got 3"),
    (_set("sweep.learning_rate", 0.1), r"sweep.learning_rate must be a tuple of values"),
    (_set("sweep.learning_rate", (0.1, 0.0)), r"sweep.learning_rate must be a number in \(0"),
    (_set("sweep.dropout", (0.1, 1.2)), r"sweep.dropout must be a number in \[0.0, 1.0\]"),
    (_set("sweep.l2", (0.1, 0.1)), r"sweep.l2 has repeated values"),
    (_set("only", "none,lyaer"), r"only: unknown technique label\(s\) \['lyaer'\]"),
]


@pytest.mark.parametrize(("mutate", "match"), BAD)
def test_bad_config_names_the_field(mutate, match):
    config = tiny_config()
    mutate(config)
    with pytest.raises(ConfigError, match=match):
        validate_config(config)


def test_technique_errors():
    config = tiny_config()
    with config.unlocked():
        config.techniques["bad/label"] = technique()
    with pytest.raises(ConfigError, match=r"techniques.bad/label: labels may use"):
        validate_config(config)
    config = tiny_config()
    with config.unlocked():
        config.techniques.odd = 3
    with pytest.raises(ConfigError, match=r"techniques.odd must be made with technique"):
        validate_config(config)
    config = tiny_config(group=technique("group", num_groups=3))
    with pytest.raises(ConfigError, match=r"techniques.group.norm_options: num_groups=3 does "
                                          r"not divide the 8 channels"):
        validate_config(config)
    with pytest.raises(ConfigError, match="techniques.inst.norm_options: norm 'instance' needs"):
        validate_config(tiny_config(inst=technique("instance")))
    with pytest.raises(ConfigError, match="techniques is empty"):
        validate_config(_no_techniques())


def _no_techniques() -> ml_collections.ConfigDict:
    config = tiny_config()
    with config.unlocked():
        config.techniques = ml_collections.ConfigDict()
    return config


@pytest.mark.parametrize("tech", [technique("batch"), technique(dropout=0.5)])
def test_depth_zero_rejects_norms_and_dropout(tech):
    config = tiny_config(t=tech)
    config.model.depth = 0
    with pytest.raises(ConfigError, match=r"techniques.t: model.depth=0 has no hidden layers"):
        validate_config(config)


def test_technique_helper():
    tech = technique("batch", momentum=0.5, dropout=0.1)
    assert tech.norm_options.to_dict() == {"momentum": 0.5, "epsilon": 1e-5}
    assert tech.dropout == 0.1 and tech.learning_rate is None
    with pytest.raises(ConfigError, match=r"technique\(norm='batch'\): unknown norm option"):
        technique("batch", groups=2)
    with pytest.raises(ConfigError, match=r"unknown norm 'btach'"):
        technique("btach")


def test_order_and_only():
    config = tiny_config(z=technique(), a=technique(), m=technique("layer"))
    assert validate_config(config) == ["z", "a", "m"]
    config.only = "m, z"
    assert technique_labels(config) == ["z", "m"]


def test_validate_with_data():
    config = tiny_config()
    config.batch_size = 65
    with pytest.raises(ConfigError, match=r"batch_size \(65\) is larger than the training set"):
        validate_with_data(typed_config(config), (8,), 64, 40)
    config = tiny_config()
    config.model.kind = "cnn"
    with pytest.raises(ConfigError, match=r"model.kind='cnn' needs inputs with spatial axes"):
        validate_with_data(typed_config(config), (8,), 64, 40)
    validate_with_data(typed_config(config), (8, 1), 64, 40)


def test_dataset_errors_name_the_dataset():
    config = tiny_config()
    config.dataset.name = "imagenet"
    with pytest.raises(ConfigError, match=r"dataset \('imagenet'\): unknown dataset"):
        load_data(config)
    config = tiny_config()
    with config.dataset.options.unlocked():
        config.dataset.options.num_sampels = 3
    with pytest.raises(ConfigError, match=r"unexpected option\(s\) \['num_sampels'\]"):
        load_data(config)


def test_run_validates_before_training(tmp_path):
    config = tiny_config()
    config.batch_size = 1000
    with pytest.raises(ConfigError, match="batch_size"):
        run(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()
    with pytest.raises(ConfigError, match="max_chunks must be >= 0"):
        run(tiny_config(), tmp_path / "w", max_chunks=-1)


def _write(tmp_path, body: str):
    path = tmp_path / "study.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_load_config(tmp_path):
    path = _write(tmp_path, """
        from experiments.config import base_config, technique
        def get_config(arg=None):
            c = base_config()
            c.steps = int(arg or 7)
            c.techniques.none = technique()
            return c
    """)
    assert load_config(str(path)).steps == 7
    config = load_config(f"{path}:3")
    assert config.steps == 3 and config.is_locked
    with pytest.raises(AttributeError, match="stepz"):
        config.stepz = 3


@pytest.mark.parametrize(("body", "spec", "match"), [
    ("x = 1\n", "", "has no get_config"),
    ("def get_config():\n    return {}\n", "", "must return a ConfigDict"),
    ("def get_config():\n    return None\n", ":arg", "takes no argument, got 'arg'"),
])
def test_load_config_errors(tmp_path, body, spec, match):
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=match):
        load_config(f"{path}{spec}")


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.py"))


def test_base_config_is_valid_once_it_has_a_technique():
    config = base_config()
    config.techniques.none = technique()
    assert validate_config(config) == ["none"]


def test_typed_config_is_frozen_and_keeps_the_data():
    config = tiny_config(b=technique("batch", momentum=0.5), a=technique(learning_rate=0.1))
    config.sweep.l2 = (0.0, 0.1)
    typed = typed_config(config)
    assert typed.to_dict() == config.to_dict() and typed_config(typed) is typed
    assert list(typed.techniques) == ["b", "a"]  # config order
    assert typed.techniques["b"].norm_options["momentum"] == 0.5
    assert typed.sweep["l2"] == typed.sweep.l2 == (0.0, 0.1)
    assert [name for name, _ in typed.sweep.items()] == list(SWEEPABLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.steps = 3
    with pytest.raises(TypeError):
        typed.techniques["b"].norm_options["momentum"] = 0.9
    assert typed.replace(devices=4).devices == 4 and typed.devices == 1
