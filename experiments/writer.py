"""Output files: atomic writes, JSON with non-finite values as ``null``, metrics.jsonl, CSV.

Every file is written to a temporary file in the same directory and renamed over the target
(``os.replace`` is atomic on POSIX), so a crash never leaves a half-written output.
``metrics.jsonl`` is the exception: rows are appended after each chunk, and the runner
rewrites the whole file from the checkpoints when it starts, so a crash between the checkpoint
and the append loses nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricsLog", "atomic_write", "jsonable", "read_jsonl", "write_csv", "write_json"]


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    """Plain-JSON version of ``value``: numpy scalars to Python, NaN/inf to ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(jsonable(obj), allow_nan=False, **kwargs)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(path, _dumps(obj, indent=2) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSON-lines file."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def rewrite(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the file with ``rows`` (atomically)."""
        atomic_write(self.path, "".join(_dumps(row) + "\n" for row in rows))

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append ``rows`` and flush them to disk."""
        with open(self.path, "a") as fh:
            fh.write("".join(_dumps(row) + "\n" for row in rows))
            fh.flush()
            os.fsync(fh.fileno())


def write_csv(path: str | Path, columns: Sequence[str],
              rows: Iterable[Mapping[str, Any]]) -> None:
    """Atomically write ``rows`` as CSV with a header; missing and non-finite cells are empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        clean = jsonable(dict(row))
        writer.writerow({c: "" if clean.get(c) is None else clean[c] for c in columns})
    atomic_write(path, buffer.getvalue())
