"""orbax checkpoints (experiments/checkpoint.py): kill -9 and resume, legacy msgpack, damage."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import flax.serialization
import pytest

from experiments.checkpoint import CheckpointStore, fingerprint, read_state
from experiments.cli import parse_command_line
from experiments.errors import ConfigError
from experiments.runner import run
from experiments.testing import tiny_config
from experiments.typed_config import typed_config
from experiments.writer import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
STUDY = '''
    """A study long enough to be killed mid-run: BatchNorm, 16 steps in 8 chunks."""
    from experiments.testing import tiny_config

    def get_config():
        config = tiny_config()
        config.steps, config.log_every, config.num_seeds = 16, 2, 2
        config.only, config.figures = "batch", False
        return config
'''


def _numbers(workdir: Path) -> list[dict]:
    """metrics.jsonl without the timings, in a canonical order."""
    rows = [{k: v for k, v in r.items() if not k.startswith("time/")}
            for r in read_jsonl(workdir / "metrics.jsonl")]
    return sorted(rows, key=lambda r: (r["technique"], r["step"], r["seed"]))


def _step_dirs(path: Path) -> list[int]:
    return [int(p.name) for p in path.iterdir() if p.name.isdigit()] if path.is_dir() else []


def test_kill_9_mid_run_then_rerun_is_bit_identical(tmp_path):
    study = tmp_path / "study.py"
    study.write_text(textwrap.dedent(STUDY))
    workdir = tmp_path / "killed"
    args = ["--config", str(study), "--workdir", str(workdir), "--config.checkpoint_every_s=0"]
    command = [sys.executable, "-m", "experiments", *args, "--quiet"]
    log = tmp_path / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 120
        while not [s for s in _step_dirs(workdir / "checkpoints" / "batch") if s >= 4]:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 4 <= int(read_state(workdir, "batch")["step"][0]) < 16  # killed mid-run
    config = parse_command_line(args).config
    run(config, workdir)  # the rerun: resumes
    run(config, tmp_path / "uninterrupted")
    assert _numbers(workdir) == _numbers(tmp_path / "uninterrupted")  # exact, not approx
    final = [json.loads((d / "summary.json").read_text())["results"]["batch"]
             for d in (workdir, tmp_path / "uninterrupted")]
    assert final[0]["final"] == final[1]["final"] and final[0]["status"] == "ok"


def _config():
    config = tiny_config()
    config.num_seeds, config.figures, config.only = 1, False, "batch"
    return config


def test_legacy_msgpack_checkpoint_is_resumed_then_replaced(tmp_path):
    run(_config(), tmp_path / "full")
    workdir = tmp_path / "legacy"
    run(_config(), workdir, max_chunks=1)
    store = CheckpointStore(workdir)  # rewrite the checkpoint as the pre-orbax runner did
    progress = store.load_progress("batch", fingerprint(typed_config(_config()), "batch"))
    state = store.read_state("batch")  # in flax.serialization's state-dict form
    store.close()
    shutil.rmtree(store.path("batch"))
    store.legacy_path("batch").write_bytes(flax.serialization.msgpack_serialize({
        "version": 1, "progress": json.dumps(asdict(progress)), "state": state}))
    run(_config(), workdir)
    assert not store.legacy_path("batch").exists() and store.exists("batch")
    assert _numbers(workdir) == _numbers(tmp_path / "full")


def test_damaged_checkpoints_are_named_with_the_fix(tmp_path):
    run(_config(), tmp_path, max_chunks=1)
    step = CheckpointStore(tmp_path).path("batch") / "2"
    for file in (step / "progress").rglob("*"):
        if file.is_file():
            file.write_text("{not json")
    with pytest.raises(ConfigError, match=r"checkpoint .*batch/2 cannot be read .*delete it to "
                                          r"retrain technique 'batch' from the start"):
        run(_config(), tmp_path)
    store = CheckpointStore(tmp_path)
    store.dir.joinpath("none.msgpack").write_bytes(
        flax.serialization.msgpack_serialize({"version": 99}))
    with pytest.raises(ConfigError, match=r"none.msgpack: unsupported format \(version 99\); "
                                          "delete it to retrain technique 'none'"):
        store.load_progress("none", {})
    with pytest.raises(FileNotFoundError, match="no checkpoint for technique 'other'"):
        read_state(tmp_path, "other")
