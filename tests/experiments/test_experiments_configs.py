"""The shipped configs: each runs for 2 steps at tiny sizes and writes finite outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments.config import load_config
from experiments.runner import run
from experiments.testing import shrink
from experiments.validation import validate_config
from experiments.writer import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("config.json", "metrics.jsonl", "summary.json", "summary.csv", "report.md")
FIGURES = ("loss.png", "accuracy.png", "final_accuracy.png", "grad_norms.png", "activations.png")


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize("spec", ["quickstart.py", "mnist1d.py:cnn,tiny", "mnist1d.py:logistic"])
def test_shipped_config_runs_two_steps(spec, tmp_path, monkeypatch):
    """Each shipped config trains every technique; the README's quickstart also draws its
    figures (the other configs' figures would be the same code drawing other lines)."""
    monkeypatch.setenv("NORMJAX_CACHE", str(tmp_path / "cache"))
    config = shrink(load_config(str(ROOT / "configs" / spec)), steps=2)
    config.figures = spec == "quickstart.py"
    summary = run(config, tmp_path / "run")
    for name in OUTPUTS + (FIGURES if config.figures else ()):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    assert list(summary["results"]) == list(config.techniques.keys())
    for label, entry in summary["results"].items():
        assert entry["status"] == "ok", label
        assert entry["final"]["test/accuracy"]["values"], label
    assert _finite(json.loads((tmp_path / "run" / "summary.json").read_text()))
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 2 * len(config.techniques) and all(_finite(r) for r in rows)


@pytest.mark.parametrize("arg", ["", ":mlp", ":logistic,tiny", ":cnn,full", ":mlp,tiny"])
def test_mnist1d_variants_are_valid(arg):
    config = load_config(f"{ROOT / 'configs' / 'mnist1d.py'}{arg}")
    assert config.dataset.name == "mnist1d" and config.dataset.seed == 42
    assert validate_config(config)
    if "tiny" not in arg:
        assert (config.steps, config.batch_size, config.optimizer.learning_rate) == (
            6000, 100, 1e-2)


def test_mnist1d_bad_argument():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['resnet'\]"):
        load_config(f"{ROOT / 'configs' / 'mnist1d.py'}:resnet")


def test_quickstart_shape():
    config = load_config(str(ROOT / "configs" / "quickstart.py"))
    assert list(config.techniques.keys()) == ["none", "batch", "layer", "group", "dropout", "l2"]
    assert 3 <= config.num_seeds <= 5 and config.dataset.name == "digits"
