"""Tests for summary, report, figures, writer and checkpoint files (no training involved)."""

from __future__ import annotations

import csv
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.checkpoint import CheckpointStore, Progress, fingerprint
from experiments.config import technique
from experiments.errors import ConfigError
from experiments.report import render_report, summarize, write_outputs
from experiments.testing import tiny_config
from experiments.train import TrainState
from experiments.typed_config import typed_config
from experiments.writer import MetricsLog, jsonable, read_jsonl, write_csv, write_json

PNG = b"\x89PNG\r\n\x1a\n"


def _config():
    config = tiny_config(none=technique(), batch=technique("batch"), idle=technique("layer"))
    config.sweep.learning_rate = (0.01, 0.1)
    return config


def _rows(label, cell, lr, steps, rng):
    rows = []
    for step in steps:
        for seed in (0, 1):
            row = {"technique": label, "cell": cell, "seed": seed, "step": step, "epoch": 1.0,
                   "hp/learning_rate": lr, "time/steps_per_s": 10.0}
            row.update({k: float(rng.uniform(0.1, 1)) for k in (
                "train/loss", "train/accuracy", "test/loss", "test/accuracy",
                "grad_norm/layer_0", "grad_norm/layer_1", "grad_norm/head", "grad_norm/total",
                "act_mean/layer_0", "act_mean/layer_1", "act_std/layer_0", "act_std/layer_1")})
            rows.append(row)
    return rows


def _progress(config):
    rng = np.random.default_rng(0)
    none = Progress("none", fingerprint(typed_config(config), "none"), ["none[learning_rate=0.01]",
                    "none[learning_rate=0.1]"], ["ok", "diverged at step 3"], step=4, done=True,
                    rows=_rows("none", "none[learning_rate=0.01]", 0.01, (2, 4), rng)
                    + _rows("none", "none[learning_rate=0.1]", 0.1, (2,), rng),
                    compile_s=1.0, train_s=2.0)
    batch = Progress("batch", fingerprint(typed_config(config), "batch"),
                     ["batch[learning_rate=0.01]", "batch[learning_rate=0.1]"],
                     ["running", "running"], step=2,
                     rows=_rows("batch", "batch[learning_rate=0.01]", 0.01, (2,), rng)
                     + _rows("batch", "batch[learning_rate=0.1]", 0.1, (2,), rng))
    return {"none": none, "batch": batch, "idle": None}


def test_summary_statuses_and_stats():
    config = _config()
    progress = _progress(config)
    summary = summarize(typed_config(config), progress)
    results = summary["results"]
    assert summary["swept"] == ["learning_rate"]
    assert [e["status"] for e in results.values()] == [
        "ok", "diverged at step 3", "incomplete (step 2 of 4)", "incomplete (step 2 of 4)",
        "not run", "not run"]
    ok = results["none[learning_rate=0.01]"]
    assert ok["hparams"] == {"learning_rate": 0.01} and ok["steps_per_s"] == 2.0
    last = [r["test/accuracy"] for r in progress["none"].rows
            if r["cell"] == "none[learning_rate=0.01]" and r["step"] == 4]
    assert ok["final"]["test/accuracy"]["values"] == last
    assert ok["final"]["test/accuracy"]["std"] == pytest.approx(np.std(last, ddof=1))
    assert "time/steps_per_s" not in ok["final"] and "hp/learning_rate" not in ok["final"]
    assert results["none[learning_rate=0.1]"]["final"] is None
    assert results["idle[learning_rate=0.01]"]["final"] is None


def test_write_outputs_with_sweep(tmp_path):
    config = _config()
    summary = write_outputs(tmp_path, typed_config(config), _progress(config),
                            command="python -m x")
    with open(tmp_path / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["learning_rate"] == "0.01" and table[1]["test/accuracy_mean"] == ""
    assert float(table[0]["test/accuracy_std"]) == pytest.approx(
        summary["results"]["none[learning_rate=0.01]"]["final"]["test/accuracy"]["std"])
    for name in ("loss", "accuracy", "final_accuracy", "grad_norms", "activations", "sweep"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG)
    report = (tmp_path / "report.md").read_text()
    assert "reproduce: `python -m x`" in report and "![Sweep](sweep.png)" in report
    assert "| none[learning_rate=0.1] | diverged at step 3 | - |" in report


def test_report_without_figures():
    config = _config()
    typed = typed_config(config)
    text = render_report(typed, summarize(typed, _progress(config)), [])
    assert "## Figures" not in text and "| batch[learning_rate=0.01] | incomplete" in text


def test_jsonable_and_writers(tmp_path):
    data = {"a": np.float32(1.5), "b": [float("nan"), np.inf, np.int64(3)], "c": np.ones(2)}
    assert jsonable(data) == {"a": 1.5, "b": [None, None, 3], "c": [1.0, 1.0]}
    write_json(tmp_path / "x.json", data)
    assert json.loads((tmp_path / "x.json").read_text())["b"] == [None, None, 3]
    log = MetricsLog(tmp_path / "m.jsonl")
    log.rewrite([{"x": 1.0}])
    log.append([{"x": float("nan")}, {"x": 2}])
    assert read_jsonl(tmp_path / "m.jsonl") == [{"x": 1.0}, {"x": None}, {"x": 2}]
    log.rewrite([])
    assert read_jsonl(tmp_path / "m.jsonl") == []
    write_csv(tmp_path / "t.csv", ["a", "b"], [{"a": 1, "b": math.nan}, {"a": None}])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,\n,\n"
    assert not list(tmp_path.glob(".*.tmp"))


def _state(value: float) -> TrainState:
    return TrainState(jnp.int32(3), {"w": jnp.full((2, 2), value)}, {}, (jnp.zeros(2),),
                      jnp.uint32(1), {"learning_rate": jnp.float32(0.1)})


def test_checkpoint_roundtrip_and_fingerprint(tmp_path):
    config = tiny_config()
    store = CheckpointStore(tmp_path)
    progress = Progress("none", fingerprint(typed_config(config), "none"), ["none"],
                        ["running"], step=3, rows=[{"step": 2, "x": 1.0}], compile_s=1.5)
    store.save(progress, _state(2.0))
    assert store.load_progress("none", fingerprint(typed_config(config), "none")) == progress
    restored = store.load_state("none", _state(0.0))
    np.testing.assert_array_equal(restored.params["w"], np.full((2, 2), 2.0))
    assert int(restored.step) == 3
    assert store.load_progress("batch", fingerprint(typed_config(config), "batch")) is None
    config.model.width = 16
    with pytest.raises(ConfigError, match=r"different config \(config.model.width: 8 -> 16\)"):
        store.load_progress("none", fingerprint(typed_config(config), "none"))
    with pytest.raises(FileNotFoundError, match="no checkpoint for technique 'batch'"):
        store.load_state("batch", _state(0.0))


def test_fingerprint_ignores_presentation_fields():
    a, b = tiny_config(), tiny_config()
    b.name, b.notes, b.figures, b.only = "other", "text", False, "none"
    assert fingerprint(typed_config(a), "none") == fingerprint(typed_config(b), "none")
    b.techniques.none.dropout = 0.1
    assert fingerprint(typed_config(a), "none") != fingerprint(typed_config(b), "none")
    assert fingerprint(typed_config(a), "batch") == fingerprint(typed_config(b), "batch")
