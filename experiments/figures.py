"""PNG figures (matplotlib, Agg canvas; no pyplot global state).

* ``loss.png`` / ``accuracy.png``: train and test curves over steps, one line per cell (mean
  over seeds) with a band of +/- one standard deviation; dashed: test accuracy with BatchNorm
  batch statistics.
* ``final_accuracy.png``: final test and train accuracy per cell, bars with std error bars.
* ``grad_norms.png``: gradient norm per layer at the first and the last logged step (log scale),
  which shows vanishing or exploding gradients through depth.
* ``activations.png``: mean and std of each block's activations at the last logged step.
* ``sweep.png`` (one swept hyperparameter only): final test accuracy against its value.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["make_figures", "seed_series"]

Rows = list[dict[str, Any]]


def seed_series(rows: Rows, cell: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and std (over seeds) of ``key`` for ``cell``."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row["cell"] == cell and row.get(key) is not None:
            by_step[row["step"]].append(row[key])
    steps = np.asarray(sorted(by_step))
    values = [np.asarray(by_step[s], np.float64) for s in steps]
    return (steps, np.asarray([v.mean() for v in values]),
            np.asarray([v.std() for v in values]))


def _colors(cells: list[str]) -> dict[str, Any]:
    cmap = colormaps["tab10" if len(cells) <= 10 else "tab20"]
    return {cell: cmap(i % cmap.N) for i, cell in enumerate(cells)}


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _band(ax: Axes, rows: Rows, cell: str, key: str, color: Any, **kwargs: Any) -> float:
    """Plot mean +/- std of ``key``; returns the smallest mean (inf if nothing to plot)."""
    steps, mean, std = seed_series(rows, cell, key)
    if not len(steps):
        return math.inf
    ax.plot(steps, mean, color=color, **kwargs)
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    return float(mean.min())


def _curves(path: Path, rows: Rows, cells: list[str], metric: str) -> None:
    fig = Figure(figsize=(11, 4))
    colors = _colors(cells)
    for ax, split in zip(fig.subplots(1, 2), ("train", "test"), strict=True):
        lowest = min(_band(ax, rows, cell, f"{split}/{metric}", colors[cell], label=cell)
                     for cell in cells)
        both_modes = split == "test" and metric == "accuracy"
        for cell in cells if both_modes else ():
            _band(ax, rows, cell, "test_batch_stats/accuracy", colors[cell], linestyle="--")
        ax.set(xlabel="step", ylabel=f"{split} {metric}", title=f"{split} {metric} (mean ± std "
               "over seeds)" + (", dashed: BN batch stats" if both_modes else ""))
        if metric == "loss" and 0 < lowest < math.inf:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    _save(fig, path)


def _final_bars(path: Path, summary: dict[str, Any], cells: list[str]) -> None:
    fig = Figure(figsize=(max(6, 0.9 * len(cells) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(cells))
    lows = [1.0]
    for offset, (metric, name) in zip((-0.2, 0.2), (("test/accuracy", "test"),
                                                    ("train/accuracy", "train")), strict=True):
        finals = [(summary["results"][c]["final"] or {}).get(metric) for c in cells]
        means = [f["mean"] if f else 0.0 for f in finals]
        stds = [f["std"] if f else 0.0 for f in finals]
        lows += [f["mean"] - f["std"] for f in finals if f]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=name)
    bottom = max(0.0, min(lows) - 0.05)  # zoom in: accuracies are often close to each other
    for i, cell in enumerate(cells):
        status = summary["results"][cell]["status"]
        if status != "ok":
            ax.text(i, bottom + 0.02 * (1 - bottom), status, rotation=90, ha="center",
                    va="bottom", fontsize=7)
    ax.set_xticks(x, cells, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="final accuracy", ylim=(bottom, 1.0 + 0.02 * (1 - bottom)),
           title="final accuracy (mean ± std over seeds)")
    ax.legend()
    _save(fig, path)


def _layer_keys(rows: Rows, prefix: str) -> list[str]:
    keys = {k for row in rows for k in row if k.startswith(prefix) and not k.endswith("total")}

    def order(key: str) -> tuple[int, int]:
        match = re.search(r"layer_(\d+)$", key)
        return (0, int(match.group(1))) if match else (1, 0)

    return sorted(keys, key=order)


def _at_step(rows: Rows, cell: str, keys: list[str], first: bool) -> np.ndarray:
    mine = [row for row in rows if row["cell"] == cell]
    step = min(r["step"] for r in mine) if first else max(r["step"] for r in mine)
    at = [row for row in mine if row["step"] == step]
    return np.asarray([np.mean([r[k] for r in at if r.get(k) is not None] or [np.nan])
                       for k in keys])


def _layer_profiles(path: Path, rows: Rows, cells: list[str], panels: list[tuple]) -> None:
    """One panel per (prefix, first?, ylabel, log?): value per layer, one line per cell."""
    fig = Figure(figsize=(5.5 * len(panels), 4))
    colors = _colors(cells)
    for ax, (prefix, first, ylabel, log) in zip(fig.subplots(1, len(panels)), panels,
                                                 strict=True):
        keys = _layer_keys(rows, prefix)
        for cell in cells:
            ax.plot(range(len(keys)), _at_step(rows, cell, keys, first), marker="o",
                    color=colors[cell], label=cell)
        names = [k.split("/", 1)[1].removeprefix("layer_") for k in keys]
        ax.set_xticks(range(len(keys)), names, fontsize=8)
        ax.set(xlabel="layer", ylabel=ylabel,
               title=f"{ylabel}, {'first' if first else 'last'} logged chunk")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    _save(fig, path)


def _sweep(path: Path, summary: dict[str, Any], name: str) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    by_tech: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for entry in summary["results"].values():
        acc = (entry["final"] or {}).get("test/accuracy")
        if acc is not None:
            by_tech[entry["technique"]].append((entry["hparams"][name], acc["mean"],
                                                acc["std"]))
    for tech, points in by_tech.items():
        xs, means, stds = map(np.asarray, zip(*sorted(points), strict=True))
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=tech)
    if name in ("learning_rate", "weight_decay", "l1", "l2", "init_scale"):
        ax.set_xscale("log")
    ax.set(xlabel=name, ylabel="final test accuracy",
           title=f"final test accuracy vs {name} (diverged points omitted)")
    ax.legend(fontsize=7)
    _save(fig, path)


def make_figures(workdir: str | Path, summary: dict[str, Any],
                 rows: Rows) -> list[tuple[str, str]]:
    """Write the figures into ``workdir``; returns ``(title, file name)`` pairs."""
    workdir = Path(workdir)
    cells = [c for c in summary["results"] if any(r["cell"] == c for r in rows)]
    if not cells:
        return []
    out = [("Loss", "loss.png"), ("Accuracy", "accuracy.png"),
           ("Final accuracy", "final_accuracy.png"), ("Gradient norm per layer",
                                                      "grad_norms.png"),
           ("Activations per layer", "activations.png")]
    _curves(workdir / "loss.png", rows, cells, "loss")
    _curves(workdir / "accuracy.png", rows, cells, "accuracy")
    _final_bars(workdir / "final_accuracy.png", summary, list(summary["results"]))
    _layer_profiles(workdir / "grad_norms.png", rows, cells,
                    [("grad_norm/", True, "gradient norm", True),
                     ("grad_norm/", False, "gradient norm", True)])
    _layer_profiles(workdir / "activations.png", rows, cells,
                    [("act_mean/", False, "activation mean", False),
                     ("act_std/", False, "activation std", False)])
    if len(summary["swept"]) == 1:
        _sweep(workdir / "sweep.png", summary, summary["swept"][0])
        out.append(("Sweep", "sweep.png"))
    return out
