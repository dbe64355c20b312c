"""Workdir safety: empty, ``~``, a file, a second live run, a corrupt checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.__main__ import main
from experiments.errors import ConfigError
from experiments.runner import run
from experiments.testing import tiny_config
from experiments.workdir import WorkdirLock, resolve_workdir

ROOT = Path(__file__).resolve().parents[2]


def _one_step():
    config = tiny_config()
    config.steps, config.log_every, config.num_seeds = 1, 1, 1
    return config


@pytest.mark.parametrize("raw", ["", "  ", None])
def test_empty_workdir_is_refused(raw, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"--workdir is empty \(an unset shell variable\?\)"):
        run(_one_step(), raw)
    assert main(["--config", str(ROOT / "configs/quickstart.py"), "--workdir="]) == 2
    assert "--workdir is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


def test_home_and_variables_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    assert resolve_workdir("~/runs/x") == tmp_path / "runs" / "x"
    assert resolve_workdir("$RUNS/y") == tmp_path / "runs" / "y"
    monkeypatch.delenv("NORMJAX_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="the variable in it is not set"):
        resolve_workdir("$NORMJAX_NOT_SET/x")


def test_a_file_is_not_a_workdir(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes.txt' is a file, not a directory"):
        run(_one_step(), tmp_path / "notes.txt")


def test_second_live_run_is_refused_and_names_the_first(tmp_path):
    with WorkdirLock(tmp_path, "python -m experiments --workdir w"):
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()} on "
                                              r".*running: python -m experiments --workdir w\)"):
            run(_one_step(), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_lock_dies_with_its_process(tmp_path):
    """``kill -9`` of the holder frees the workdir: the kernel drops the lock."""
    code = ("import sys, time; from experiments.workdir import WorkdirLock\n"
            "with WorkdirLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"), WorkdirLock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            with WorkdirLock(tmp_path):
                break
        except ConfigError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_truncated_checkpoint_is_named_with_the_fix(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "batch.msgpack").write_bytes(b"\x85\xa7version\x01\xa8pro")
    with pytest.raises(ConfigError, match=r"checkpoint .*batch.msgpack cannot be read .*truncated "
                                          r"or corrupt; delete it to retrain technique 'batch'"):
        run(_one_step(), tmp_path)
