"""The runs of one technique: seeds x sweep points, and their per-run scalar hyperparameters.

Runs are ordered cell by cell (a *cell* is one point of the sweep grid), seeds innermost::

    run r = cell * num_seeds + i,   seed = config.seed + i

Without a sweep there is one cell, labelled with the technique; otherwise cells are labelled
``"<technique>[learning_rate=0.01,dropout=0.1]"``.  Sweep values override the technique's.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from experiments.config import SWEEPABLE
from experiments.typed_config import StudyConfig, TechniqueConfig

__all__ = ["Grid", "base_hparams", "make_grid", "structure_flags"]


class Grid(NamedTuple):
    """Per-run seeds and hyperparameters (arrays of length R) and the cells they belong to."""

    seeds: np.ndarray  # (R,) uint32
    hparams: dict[str, np.ndarray]  # name -> (R,) float64 (cast to float32 on device)
    cell: np.ndarray  # (R,) int: index into labels
    labels: list[str]  # one per cell
    swept: list[dict[str, float]]  # the swept values of each cell

    @property
    def num_runs(self) -> int:
        return len(self.seeds)


def base_hparams(config: StudyConfig, tech: TechniqueConfig) -> dict[str, float]:
    """The technique's scalar hyperparameters before any sweep override."""
    lr = tech.learning_rate if tech.learning_rate is not None else config.optimizer.learning_rate
    return {"learning_rate": float(lr), "weight_decay": float(tech.weight_decay),
            "dropout": float(tech.dropout), "l1": float(tech.l1), "l2": float(tech.l2),
            "init_scale": float(config.model.init_scale)}


def structure_flags(config: StudyConfig, tech: TechniqueConfig) -> dict[str, bool]:
    """Static model/loss structure: dropout layers and penalties exist if used by any run."""
    return {"use_dropout": tech.dropout > 0 or bool(config.sweep.dropout),
            "use_l1": tech.l1 > 0 or bool(config.sweep.l1),
            "use_l2": tech.l2 > 0 or bool(config.sweep.l2)}


def _cell_label(label: str, swept: dict[str, float]) -> str:
    if not swept:
        return label
    return f"{label}[{','.join(f'{k}={v:g}' for k, v in swept.items())}]"


def make_grid(config: StudyConfig, label: str) -> Grid:
    """All runs of technique ``label`` (see the module docstring for the order)."""
    tech = config.techniques[label]
    names = [name for name in SWEEPABLE if config.sweep[name]]
    base = base_hparams(config, tech)
    seeds, cells, swept, rows = [], [], [], {name: [] for name in SWEEPABLE}
    for ci, point in enumerate(itertools.product(*(config.sweep[n] for n in names))):
        values = {n: float(v) for n, v in zip(names, point, strict=True)}
        swept.append(values)
        for i in range(config.num_seeds):
            seeds.append(config.seed + i)
            cells.append(ci)
            for name in SWEEPABLE:
                rows[name].append(values.get(name, base[name]))
    return Grid(np.asarray(seeds, np.uint32),
                {n: np.asarray(v, np.float64) for n, v in rows.items()},
                np.asarray(cells, np.int64), [_cell_label(label, s) for s in swept], swept)
