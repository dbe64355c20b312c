"""TensorBoard summaries beside ``metrics.jsonl``: ``tensorboard --logdir runs/`` shows them.

Every row of ``metrics.jsonl`` (one technique cell, one seed, one logged step) becomes the
scalars of its numeric fields at its step, under ``<workdir>/tensorboard/<cell>/seed_<k>/``, so
TensorBoard lists one run per cell and seed (``<study>/tensorboard/batch/seed_0``). Written with
tensorboardX (no TensorFlow). Like ``metrics.jsonl``, the folder is rewritten from the
checkpoints when a run starts or resumes, so a resumed run's curves have each step once.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter

__all__ = ["TensorBoardLog"]

_NOT_SCALARS = ("technique", "cell", "seed", "step")


class TensorBoardLog:
    """Event files per cell and seed; same interface as :class:`experiments.writer.MetricsLog`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._writers: dict[tuple[str, int], SummaryWriter] = {}

    def _writer(self, cell: str, seed: int) -> SummaryWriter:
        key = (cell, seed)
        if key not in self._writers:
            self._writers[key] = SummaryWriter(str(self.folder / cell / f"seed_{seed}"))
        return self._writers[key]

    def rewrite(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace every event file with ``rows``."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.append(rows)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add ``rows`` and flush them to disk."""
        touched = set()
        for row in rows:
            writer = self._writer(str(row["cell"]), int(row["seed"]))
            for key, value in row.items():
                if key in _NOT_SCALARS or isinstance(value, bool):
                    continue
                if isinstance(value, int | float) and math.isfinite(value):
                    writer.add_scalar(key, value, int(row["step"]))
            touched.add(writer)
        for writer in touched:
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
