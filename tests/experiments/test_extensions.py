"""A researcher's own model, dataset and technique, from a package outside the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.config import technique
from experiments.data import load_dataset, register_dataset
from experiments.errors import ConfigError
from experiments.imports import resolve_object
from experiments.registry import get_norm, register_norm
from experiments.testing import tiny_config
from experiments.validation import validate_config
from tests.test_readme import README, file_listing

ROOT = Path(__file__).resolve().parents[2]


def test_readme_package_runs_through_the_command_line(tmp_path):
    """The README's four files, written to a folder outside the project, run by its command
    with command-line overrides of the model's and the dataset's options."""
    for path, source in file_listing().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source)
    command = next(line for line in README.splitlines()
                   if line.startswith("python -m experiments --config my_config.py"))
    args = [*command.split()[3:], "--config.steps=2", "--config.log_every=2",
            "--config.num_seeds=1", "--config.only=mine", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "experiments", *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "runs/mine/report.md").read_text()
    assert "model: `mypkg.models:net` (width=16)" in report
    assert "data: `mypkg.data:load` (n=600)" in report
    assert "| mine (my_rms) |" in report
    summary = json.loads((tmp_path / "runs/mine/summary.json").read_text())
    assert summary["results"]["mine"]["status"] == "ok"
    assert summary["results"]["mine"]["run_strategy"].startswith(
        "stepwise (auto: XLA convolutions on cpu")
    assert summary["model"] == "mypkg.models:net"


def _identity(ctx, *, name):
    return get_norm("none").factory(ctx, name=name)


def test_register_norm_is_idempotent_and_guards_names():
    first = register_norm("test_ext_identity", _identity)
    assert register_norm("test_ext_identity", _identity) is first
    with pytest.raises(ValueError, match="already registered with another factory"):
        register_norm("test_ext_identity", lambda ctx, *, name: None)
    with pytest.raises(ValueError, match="already registered with another factory"):
        register_norm("test_ext_identity", _identity, defaults={"epsilon": 1.0})


def _load(seed, *, n=60, classes=3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return {"x_train": rng.normal(size=(n, 4)) + y[:, None], "y_train": y,
            "x_test": rng.normal(size=(n // 2, 4)), "y_test": y[: n // 2]}


def _not_arrays(seed):
    return [seed]


def test_register_dataset_and_import_path():
    register_dataset("test_ext_data", _load, standardize="none")
    register_dataset("test_ext_data", _load, standardize="none")  # again: a no-op
    ds = load_dataset("test_ext_data", seed=1, n=30)
    assert (ds.x_train.shape, ds.num_classes, ds.input_shape) == ((30, 4), 3, (4,))
    np.testing.assert_array_equal(ds.x_train, _load(1, n=30)["x_train"].astype(np.float32))
    by_path = load_dataset(f"{__name__}:_load", seed=1, n=30)
    np.testing.assert_allclose(by_path.x_train.mean(axis=0), 0, atol=1e-5)  # standardized
    with pytest.raises(ValueError, match="already registered with another loader"):
        register_dataset("test_ext_data", lambda seed: None)
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['size'\]; accepted"):
        load_dataset("test_ext_data", size=3)
    with pytest.raises(ValueError, match="must return a Dataset or a dict with"):
        load_dataset(f"{__name__}:_not_arrays")


def test_import_paths_name_the_field():
    with pytest.raises(ConfigError, match=r"model.factory: cannot import 'no_such_pkg_x.models'"):
        resolve_object("no_such_pkg_x.models:net", "model.factory")
    with pytest.raises(ConfigError, match=r"model.factory: 'json' has no attribute 'nope'"):
        resolve_object("json:nope", "model.factory")
    with pytest.raises(ConfigError, match="expected 'package.module:attribute'"):
        resolve_object("json:", "model.factory")


def test_factory_models_refuse_what_they_cannot_take():
    config = tiny_config(w=technique("weight"))
    config.model.factory = "examples.resnet:resnet"
    with pytest.raises(ConfigError, match=r"techniques.w.norm: 'weight' reparametrizes"):
        validate_config(config)
    config = tiny_config(d=technique(dropout=0.1))
    config.model.factory, config.sweep.dropout = "examples.resnet:resnet", (0.1, 0.2)
    with pytest.raises(ConfigError, match="sweep.dropout: a model.factory model"):
        validate_config(config)
    config.model.factory = "resnet"
    with pytest.raises(ConfigError, match="model.factory must be '' .* or an import path"):
        validate_config(config)
