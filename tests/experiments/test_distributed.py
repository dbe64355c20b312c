"""Two processes on 127.0.0.1 (2 CPU devices each) train like one process on one device.

Runs the launch line of ``docs/distributed.md``: ``python -m experiments`` started twice with
``NORMJAX_COORDINATOR_ADDRESS`` / ``NORMJAX_NUM_PROCESSES`` / ``NORMJAX_PROCESS_ID``, each
process writing to its own workdir, on a shrunk quickstart config (BatchNorm, 3 steps).  The
4 global devices split every batch and synchronize the BatchNorm statistics across processes
(gloo collectives), so the metrics equal those of a single-device run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.cli import parse_command_line
from experiments.runner import run
from experiments.writer import read_jsonl

pytestmark = pytest.mark.cpu_only  # CPU devices in two processes (gloo collectives)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/quickstart.py"
OVERRIDES = [("steps", "3"), ("log_every", "1"), ("num_seeds", "1"), ("only", "batch"),
             ("figures", "false"), ("model.depth", "1"), ("eval_train_examples", "256")]
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir: Path, port: int, process_id: int, log: Any) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": re.sub(r"--xla_force_host_platform_device_count=\d+",  # conftest's,
                               "--xla_force_host_platform_device_count=2",  # 2 devices each
                               os.environ.get("XLA_FLAGS", "")),
           "NORMJAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "NORMJAX_NUM_PROCESSES": "2", "NORMJAX_PROCESS_ID": str(process_id)}
    args = [f"--config.{k}={v}" for k, v in OVERRIDES]
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", "--config", CONFIG, "--workdir", str(workdir),
         *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: list[subprocess.Popen], workdirs: list[Path]) -> None:
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two processes did not finish within {TIMEOUT_S} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, workdir in zip(procs, workdirs, strict=True):
        log = workdir.with_suffix(".log").read_text()
        assert p.returncode == 0, f"{workdir.name} exited with {p.returncode}:\n{log[-3000:]}"


def _metric_table(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = [k for k, v in rows[0].items() if isinstance(v, float) and not k.startswith("time/")]
    return {k: np.asarray([row[k] for row in rows]) for k in keys}


def test_two_processes_equal_one_device(tmp_path):
    workdirs = [tmp_path / f"process_{i}" for i in range(2)]
    port = _free_port()
    with ExitStack() as stack:
        logs = [stack.enter_context(open(w.with_suffix(".log"), "w")) for w in workdirs]
        pairs = enumerate(zip(workdirs, logs, strict=True))
        procs = [_launch(w, port, i, log) for i, (w, log) in pairs]
        try:
            args = [f"--config.{k}={v}" for k, v in [*OVERRIDES, ("devices", "1")]]
            config = parse_command_line(["--config", str(ROOT / CONFIG), "--workdir", "unused",
                                         *args]).config
            reference = run(config, tmp_path / "single")  # meanwhile, on one device
        finally:
            _wait(procs, workdirs)
    want = _metric_table(read_jsonl(tmp_path / "single" / "metrics.jsonl"))
    assert reference["parallel"]["devices"] == 1 and len(want["train/batch_loss"]) == 3
    for workdir in workdirs:
        summary = json.loads((workdir / "summary.json").read_text())
        assert summary["parallel"] == {"devices": 4, "processes": 2, "bn_sync": "global",
                                       "bn_groups": 1, "platform": "cpu"}
        got = _metric_table(read_jsonl(workdir / "metrics.jsonl"))
        assert got.keys() == want.keys()
        for key, values in want.items():
            np.testing.assert_allclose(got[key], values, rtol=1e-5, atol=1e-5, err_msg=key)
