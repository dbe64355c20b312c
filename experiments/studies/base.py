"""What a study is made of: its runs (:class:`Part`), what ``analyze`` gets (:class:`Study`),
the report section it returns (:class:`Section`), and :func:`tiny_config` for smoke runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from experiments.studies import decision, metrics
from experiments.testing import shrink

__all__ = ["Part", "Section", "Study", "markdown_table", "tiny_config"]


@dataclass
class Part:
    """One finished run of a study: its config, outputs and wall time."""

    name: str
    config: ml_collections.ConfigDict
    workdir: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    seconds: float

    def cells(self, technique: str) -> list[str]:
        """The cells (sweep points) of ``technique``, in grid order."""
        return [c for c, e in self.summary["results"].items() if e["technique"] == technique]

    def ok(self, cell: str) -> bool:
        return self.summary["results"][cell]["status"] == "ok"

    def final(self, cell: str, key: str, *, failed: float = np.nan) -> np.ndarray:
        """Per-seed final ``key`` of ``cell``; every seed is ``failed`` if it diverged."""
        if not self.ok(cell):
            return np.full(self.config.num_seeds, failed)
        return metrics.final_values(self.rows, cell, key)

    def sweep(self, technique: str, key: str, hparam: str, *,
              failed: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
        """Swept values ``(X,)`` of ``hparam`` and per-seed final ``key`` ``(X, seeds)``."""
        cells = self.cells(technique)
        xs = np.asarray([self.summary["results"][c]["hparams"][hparam] for c in cells])
        return xs, np.stack([self.final(c, key, failed=failed) for c in cells])

    def steps_to(self, cell: str, target: float, key: str = "train/loss") -> np.ndarray:
        """Per seed, the first step at which ``key`` falls to ``target`` (interpolated between
        logged steps; ``inf``: never, or the cell diverged)."""
        if not self.ok(cell):
            return np.full(self.config.num_seeds, np.inf)
        steps, values = self.curves(cell, key)
        return np.asarray([metrics.steps_to_threshold(steps, v, target) for v in values])

    def fastest(self, technique: str, target: float,
                key: str = "train/loss") -> tuple[str, np.ndarray]:
        """The cell of ``technique`` with the fewest median steps to ``target`` (e.g. its
        best learning rate by that measure) and its per-seed steps."""
        cells = self.cells(technique)
        per_cell = [self.steps_to(c, target, key) for c in cells]
        i = int(np.argmin([decision.spread(v).median for v in per_cell]))
        return cells[i], per_cell[i]

    def tuned(self, technique: str, *, key: str = "val/accuracy",
              better: str = "higher") -> str:
        """The cell of ``technique`` whose median final ``key`` over seeds is best (a
        diverged cell is never chosen; ties: the first in grid order).  With ``key`` a
        validation metric this is tuning on the validation split."""
        cells = [c for c in self.cells(technique) if self.ok(c)]
        if not cells:
            raise ValueError(f"every cell of {technique!r} diverged; nothing to choose")
        medians = np.asarray([np.nanmedian(self.final(c, key)) for c in cells])
        return cells[int(np.nanargmax(medians) if better == "higher" else np.nanargmin(medians))]

    def hparam(self, cell: str, name: str) -> float:
        """The swept value of ``name`` at ``cell``."""
        return self.summary["results"][cell]["hparams"][name]

    def curves(self, cell: str, key: str, *,
               probes: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Steps and per-seed values ``(seeds, steps)`` of ``key`` (from probes.jsonl)."""
        steps, _, values = metrics.seed_curves(self.probes if probes else self.rows, cell, key)
        return steps, values

    def per_seed_table(self) -> tuple[list[str], list[list[Any]]]:
        """Header and rows for a CSV: each cell's and seed's last logged row (the swept
        ``hp/*`` values, the step and every metric), with the cell's status."""
        results = self.summary["results"]
        last: dict[tuple[str, int], dict[str, Any]] = {}
        for row in self.rows:  # in step order per (cell, seed)
            last.setdefault((row["cell"], int(row["seed"])), {}).update(row)
        keys = sorted({k for r in last.values() for k, v in r.items()
                       if k not in ("cell", "seed", "technique") and isinstance(v, int | float)})
        order = {cell: i for i, cell in enumerate(results)}
        header = ["part", "cell", "technique", "status", "seed", *keys]
        table = [[self.name, cell, row.get("technique", ""),
                  results.get(cell, {}).get("status", ""), seed, *[row.get(k, "") for k in keys]]
                 for (cell, seed), row in sorted(last.items(),
                                                 key=lambda kv: (order.get(kv[0][0], -1),
                                                                 kv[0][1]))]
        return header, table

    def probe_array(self, cell: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps ``(T,)`` and a probe's array values ``(seeds, T, ...)``."""
        rows = sorted((r for r in self.probes if r["cell"] == cell and key in r),
                      key=lambda r: (r["seed"], r["step"]))
        if not rows:
            raise KeyError(f"no probe {key!r} for cell {cell!r}")
        steps = np.asarray(sorted({r["step"] for r in rows}))
        seeds = sorted({r["seed"] for r in rows})
        table = {(r["seed"], r["step"]): r[key] for r in rows}
        return steps, np.asarray([[table[s, t] for t in steps] for s in seeds], np.float64)


@dataclass
class Study:
    """What ``analyze`` gets: the parts, where to put figures, whether this is a tiny run."""

    name: str
    tiny: bool
    parts: dict[str, Part]
    figures_dir: Path

    def figure(self, stem: str) -> Path:
        """Where to save figure ``stem`` (``<out>/figures/<study>_<stem>.png``)."""
        return self.figures_dir / f"{self.name}_{stem}.png"

    def labels(self, names: dict[str, str]) -> dict[str, str]:
        """``names`` (technique -> label) restricted to the techniques that every part ran
        (all of them, except in a ``--tiny`` run that keeps fewer)."""
        return {t: v for t, v in names.items()
                if all(t in p.config.techniques for p in self.parts.values())}

    @property
    def num_seeds(self) -> int:
        return min(p.config.num_seeds for p in self.parts.values())


@dataclass
class Section:
    """One claim's part of the report; the verdict is computed from ``checks``."""

    title: str
    claim: str
    setup: tuple[str, str]
    figures: list[tuple[str, Path]]
    table: list[str]
    checks: list[decision.Check]
    notes: list[str] = field(default_factory=list)
    criterion: str = decision.CRITERION

    @property
    def verdict(self) -> str:
        return decision.verdict(self.checks)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; every row must have one entry per header."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row {row} has {len(row)} entries, header has {len(header)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def tiny_config(config: ml_collections.ConfigDict, keep: tuple[str, ...] | None = None,
                sweep: dict[str, tuple[Any, ...]] | None = None) -> ml_collections.ConfigDict:
    """``config`` for ``--tiny``: :func:`experiments.testing.shrink` to 3 steps and 2 seeds,
    keeping the techniques in ``keep`` and the swept values in ``sweep``; no runner
    figures."""
    config = shrink(config, steps=3, seeds=2, keep=keep, sweep=sweep)
    with config.unlocked():
        config.figures = False
    return config
