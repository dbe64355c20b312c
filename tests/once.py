"""Expensive test data computed once per test session, whichever xdist worker asks first."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def computed_once(tmp_path_factory: pytest.TempPathFactory, name: str,
                  compute: Callable[[Path], Any]) -> Any:
    """``compute(folder)`` run once per session into ``folder``; every caller (on any worker)
    gets its result back from JSON, so it must be JSON data (paths as strings). Treat
    ``folder`` as read-only: the workers share it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' temp folders share this parent
    folder, result = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            folder.mkdir(parents=True, exist_ok=True)
            value = compute(folder)
            result.write_text(json.dumps(value))
    return json.loads(result.read_text())
