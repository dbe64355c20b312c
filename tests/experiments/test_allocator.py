"""The malloc tuning the command-line entry points re-execute themselves with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import allocator

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import os, sys
from experiments.allocator import allocator_setting, reexec_with_malloc_tuning
print("start", flush=True)
reexec_with_malloc_tuning("probe_allocator", sys.argv[1:])
print("args", sys.argv[1:])
print("setting", allocator_setting())
"""


def _run_probe(tmp_path: Path, **env_overrides: str) -> str:
    (tmp_path / "probe_allocator.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items()
           if k not in (*allocator.MALLOC_TUNING, allocator.OPT_OUT, "LD_PRELOAD")}
    env.update(env_overrides, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    out = subprocess.run([sys.executable, "-m", "probe_allocator", "a", "--b=1"], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_entry_point_reexecutes_once_with_the_tuning(tmp_path):
    out = _run_probe(tmp_path)
    assert out.count("start") == 2  # the original process and the re-executed one
    assert "args ['a', '--b=1']" in out
    assert "setting tuned: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184" in out


def test_opt_out_keeps_the_environment(tmp_path):
    out = _run_probe(tmp_path, NORMJAX_MALLOC_TUNING="0")
    assert out.count("start") == 1
    assert "setting glibc default" in out


def test_already_tuned_process_is_not_reexecuted(tmp_path):
    out = _run_probe(tmp_path, **allocator.MALLOC_TUNING)
    assert out.count("start") == 1
    assert "setting tuned:" in out


def test_setting_names_a_preloaded_allocator(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc.so.4")
    assert allocator.allocator_setting() == "preloaded: /usr/lib/libtcmalloc.so.4"
    assert not allocator._wanted()
