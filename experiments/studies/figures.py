"""Figures of the studies (matplotlib Agg canvas, no pyplot state): seed bands everywhere.

Every panel plots the median over seeds as a line and the interquartile range over seeds as a
band (or, for bars, as error bars with the individual seeds as dots), and says so in its
legend or title.  :func:`panels` makes a row of axes, :func:`save` writes the PNG.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["BAND", "bars", "color", "curve", "log_scale", "panels", "profile", "save", "sweep"]

BAND = "median over seeds, IQR band"


def color(i: int) -> Any:
    """The ``i``-th color of a qualitative palette."""
    return colormaps["tab10"](i % 10)


def panels(n: int, *, width: float = 5.0, height: float = 3.8,
           rows: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows x n`` axes (returned flat)."""
    fig = Figure(figsize=(width * n, height * rows))
    axes = fig.subplots(rows, n, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    for ax in fig.axes:  # long titles (they name the band) must fit their panel
        ax.title.set_fontsize(9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path


def _quartiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.asarray(values, np.float64)
    with warnings.catch_warnings():  # all-NaN columns (every seed failed) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanpercentile(np.where(np.isinf(v), np.nan, v), [50, 25, 75], axis=0)
    return q[0], q[1], q[2]


def curve(ax: Axes, x: Sequence[float], values: np.ndarray, *, label: str, c: Any,
          linestyle: str = "-") -> None:
    """Median over seeds of ``values (seeds, len(x))`` with an interquartile band."""
    mid, low, high = _quartiles(values)
    ax.plot(x, mid, color=c, label=label, linestyle=linestyle, marker="o" if len(x) < 12
            else None, markersize=3)
    ax.fill_between(x, low, high, color=c, alpha=0.2, linewidth=0)


def sweep(ax: Axes, x: Sequence[float], per_seed: np.ndarray, *, label: str, c: Any,
          logx: bool = True) -> None:
    """A metric against a swept value: ``per_seed (len(x), seeds)``; NaN = failed run."""
    curve(ax, x, np.asarray(per_seed, np.float64).T, label=label, c=c)
    if logx:
        ax.set_xlim(min(x) / 1.5, max(x) * 1.5)
        ax.set_xscale("log")


def profile(ax: Axes, per_seed: np.ndarray, *, label: str, c: Any,
            linestyle: str = "-") -> None:
    """A per-layer profile ``(seeds, layers)`` against the layer index (log y)."""
    curve(ax, np.arange(per_seed.shape[1]), per_seed, label=label, c=c, linestyle=linestyle)
    log_scale(ax, per_seed)


def log_scale(ax: Axes, values: np.ndarray, axis: str = "y") -> None:
    """Log-scale ``axis`` if ``values`` hold a positive finite number (else keep it linear)."""
    v = np.asarray(values, np.float64)
    if np.any(np.isfinite(v) & (v > 0)):
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def bars(ax: Axes, labels: Sequence[str], per_seed: Sequence[Sequence[float]], *,
         ylabel: str, reference: dict[str, float] | None = None) -> None:
    """Median bars with interquartile error bars and each seed as a dot.

    ``reference`` draws labelled horizontal lines (e.g. published numbers).  The y axis is
    zoomed to the data (the bars do not start at 0), since the values are often close.
    """
    shown = [*(reference or {}).values()]
    for i, values in enumerate(per_seed):
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        shown += v.tolist()
        mid, low, high = np.percentile(v, [50, 25, 75])
        ax.bar(i, mid, 0.6, color=color(i), alpha=0.7,
               yerr=[[mid - low], [high - mid]], capsize=4)
        ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, s=10,
                   color="black", zorder=3, label="seeds" if i == 0 else None)
    for j, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=color(j + 5), linestyle="--", label=name)
    if shown:
        lo, hi = min(shown), max(shown)
        pad = 0.15 * (hi - lo) or 0.05 * abs(hi) or 1.0
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=f"{ylabel}: median, IQR, seeds")
    ax.legend(fontsize=7)
