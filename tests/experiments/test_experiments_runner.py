"""Tests for experiments.runner end to end: outputs, divergence, checkpoint/resume."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from experiments.config import technique
from experiments.errors import ConfigError
from experiments.hooks import Hook
from experiments.progress_bar import ProgressBar
from experiments.runner import run
from experiments.testing import tiny_config
from experiments.writer import read_jsonl
from tests.once import computed_once

STEPS, EVERY, SEEDS = 6, 2, 2
PNG = b"\x89PNG\r\n\x1a\n"


def _config(**overrides):
    config = tiny_config(none=technique(), batch=technique("batch", dropout=0.2),
                         huge=technique(learning_rate=1e30))
    config.steps, config.log_every, config.num_seeds = STEPS, EVERY, SEEDS
    config.dataset.validation_fraction = 0.25  # 16 of the 64 training examples
    for key, value in overrides.items():
        config[key] = value
    return config


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _reference_run(workdir):
    records = _Records()
    logger = logging.getLogger("experiments")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        summary = run(_config(), workdir)
    finally:
        logger.removeHandler(records)
    return str(workdir), summary, records.messages


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of none, batch (+dropout) and a diverging technique, made once
    per session (its workdir is shared: copy it before writing)."""
    workdir, summary, messages = computed_once(tmp_path_factory, "runner_reference",
                                               _reference_run)
    return Path(workdir), summary, messages


def _finite_numbers(row):
    return all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def test_metrics_jsonl_schema(reference):
    workdir, _, _ = reference
    rows = read_jsonl(workdir / "metrics.jsonl")
    for label in ("none", "batch"):
        mine = [r for r in rows if r["technique"] == label]
        assert sorted({r["step"] for r in mine}) == list(range(EVERY, STEPS + 1, EVERY))
        assert len(mine) == SEEDS * STEPS // EVERY and {r["seed"] for r in mine} == {0, 1}
    for row in rows:
        assert _finite_numbers(row)
        assert {"technique", "cell", "seed", "step", "epoch", "train/loss", "train/accuracy",
                "test/loss", "test/accuracy", "train/batch_loss", "train/learning_rate",
                "grad_norm/layer_0", "grad_norm/layer_1", "grad_norm/head", "grad_norm/total",
                "act_mean/layer_0", "act_std/layer_1", "hp/learning_rate", "hp/dropout",
                "time/elapsed_s", "time/steps_per_s", "val/loss", "val/accuracy"} <= set(row)
        assert ("test_batch_stats/accuracy" in row) is (row["technique"] == "batch")
        assert 0 <= row["test/accuracy"] <= 1 and row["train/loss"] > 0


def test_config_json_and_summary_files(reference):
    workdir, summary, _ = reference
    assert json.loads((workdir / "config.json").read_text()) == json.loads(
        json.dumps(_config().to_dict()))
    assert json.loads((workdir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert list(summary["results"]) == ["none", "batch", "huge"]
    for label in ("none", "batch"):
        entry = summary["results"][label]
        assert entry["status"] == "ok" and entry["step"] == STEPS
        acc = entry["final"]["test/accuracy"]
        assert len(acc["values"]) == SEEDS
        assert acc["mean"] == pytest.approx(np.mean(acc["values"]))
        assert acc["std"] == pytest.approx(np.std(acc["values"], ddof=1))
        assert entry["compile_s"] > 0 and entry["steps_per_s"] > 0
    with open(workdir / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["cell"] for r in table] == ["none", "batch", "huge"]
    assert float(table[1]["test/accuracy_mean"]) == pytest.approx(
        summary["results"]["batch"]["final"]["test/accuracy"]["mean"])
    assert table[2]["test/accuracy_mean"] == "" and table[0]["test_batch_stats/accuracy_mean"] == ""


def test_figures_and_report(reference):
    workdir, _, _ = reference
    report = (workdir / "report.md").read_text()
    for name in ("loss", "accuracy", "final_accuracy", "grad_norms", "activations"):
        data = (workdir / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
        assert f"]({name}.png)" in report
    assert "| batch | ok |" in report and "| huge | diverged at step" in report
    assert not list(workdir.glob(".*.tmp"))


def test_nan_ends_only_that_technique(reference):
    workdir, summary, messages = reference
    status = summary["results"]["huge"]["status"]
    step = int(status.removeprefix("diverged at step "))
    assert 1 <= step <= STEPS and summary["results"]["huge"]["final"] is None
    assert any(f"technique 'huge' diverged at step {step}" in m for m in messages)
    rows = read_jsonl(workdir / "metrics.jsonl")
    assert all(r["step"] < step for r in rows if r["technique"] == "huge")
    assert summary["results"]["batch"]["status"] == "ok"


def _strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


class _Crash(Exception):
    pass


class _Record(Hook):
    def __init__(self, calls):
        self.calls = calls

    def chunk(self, technique, step, state):
        self.calls.append((technique, step))


def test_kill_and_resume_matches_uninterrupted(reference, tmp_path):
    ref_dir, ref_summary, _ = reference
    config = _config(only="none,batch", figures=False)  # figures do not change the numbers
    calls = []

    class CrashAfterFirstBatchChunk(Hook):
        def chunk(self, technique, step, state):
            calls.append((technique, step))
            if technique == "batch":
                raise _Crash

    with pytest.raises(_Crash):
        run(config, tmp_path, hooks=[CrashAfterFirstBatchChunk()])
    assert calls == [("none", 2), ("none", 4), ("none", 6), ("batch", 2)]
    with open(tmp_path / "metrics.jsonl", "a") as fh:  # as if killed before the checkpoint
        fh.write('{"technique": "batch", "cell": "batch", "seed": 0, "step": 4}\n')

    calls.clear()
    partial = run(config, tmp_path, max_chunks=0)  # writes the outputs of the work so far
    assert partial["results"]["batch"]["status"] == f"incomplete (step 2 of {STEPS})"
    assert partial["results"]["huge"]["status"] == "not run"
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == SEEDS * (STEPS // EVERY + 1)
    with pytest.warns(DeprecationWarning, match=r"on_chunk=f\) is deprecated: pass hooks="):
        summary = run(_config(only="none,batch"), tmp_path,  # the deprecated callback form
                      on_chunk=lambda *a: calls.append(a))
    assert calls == [("batch", 4), ("batch", 6)]  # the finished technique is not redone
    # TensorBoard, rewritten from the checkpoints on resume: every step once, none lost
    assert sorted(read_scalars(tmp_path / "tensorboard" / "batch" / "seed_0")["train/loss"]) == [
        2, 4, 6]

    assert (tmp_path / "final_accuracy.png").exists()
    ref_rows = [r for r in read_jsonl(ref_dir / "metrics.jsonl") if r["technique"] != "huge"]
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(rows) == len(ref_rows)
    for got, want in zip(_strip_time(rows), _strip_time(ref_rows), strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float)
                                else value), key
    for label in ("none", "batch"):
        got, want = summary["results"][label], ref_summary["results"][label]
        assert got["status"] == want["status"] == "ok"
        for metric, stats in want["final"].items():
            np.testing.assert_allclose(got["final"][metric]["values"], stats["values"],
                                       rtol=1e-6, err_msg=metric)


def test_resume_with_other_settings_is_an_error(reference, tmp_path):
    shutil.copytree(reference[0], tmp_path, dirs_exist_ok=True)
    with pytest.raises(ConfigError, match=r"technique 'none' made with a different config "
                                          r"\(config.steps: 6 -> 8\)"):
        run(_config(steps=8), tmp_path)


def test_rerun_of_finished_study_trains_nothing(reference, tmp_path):
    ref_dir, ref_summary, _ = reference
    shutil.copytree(ref_dir, tmp_path, dirs_exist_ok=True)
    calls = []
    summary = run(_config(name="renamed"), tmp_path, hooks=[_Record(calls)])
    assert calls == [] and summary["study"] == "renamed"
    assert summary["results"] == ref_summary["results"]


def test_progress_bar_shows_the_compile_phase_then_steps(tmp_path, capsys):
    config = tiny_config()
    config.steps, config.log_every, config.num_seeds, config.only = 4, 2, 1, "batch"
    run(config, tmp_path / "bar", progress_bar=True)
    err = capsys.readouterr().err
    assert "batch: compiling" in err and "4/4" in err and "step/s" in err and "test/acc=" in err
    with ProgressBar("x", 4) as bar:  # stderr is not a terminal here: no bar by default
        assert bar.bar.disable


def read_scalars(folder) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of every event file in ``folder`` (TFRecord framing: length,
    its CRC, an ``Event`` proto, its CRC); a step written twice would be a test failure."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = file.read_bytes(), 0
        while pos < len(data):
            (size,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + size])
            pos += 12 + size + 4
            for value in event.summary.value:
                steps = out.setdefault(value.tag, {})
                assert event.step not in steps, (value.tag, event.step)
                steps[event.step] = value.simple_value
    return out


def test_tensorboard_events_hold_the_metrics(reference):
    workdir, _, _ = reference
    rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["cell"] == "batch"
            and r["seed"] == 1]
    scalars = read_scalars(workdir / "tensorboard" / "batch" / "seed_1")
    for key in ("train/loss", "test/accuracy", "grad_norm/total", "hp/dropout"):
        assert scalars[key] == pytest.approx({r["step"]: r[key] for r in rows}, rel=1e-6), key
