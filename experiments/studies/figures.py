"""Figures of the studies (matplotlib Agg canvas, no pyplot state): confidence bands everywhere.

Every panel plots the mean over seeds as a line and its 95% confidence interval (Student's t
over the seeds) as a band (or, for bars, as error bars with the individual seeds as dots), and
says so in its title (:data:`BAND`).  :func:`panels` makes a row of axes; :func:`save` letters
the panels (a), (b), ... and writes a 150-dpi PNG and an SVG beside it.  Sizes and fonts are
chosen for a figure shown at the width of a README (about 900 px).
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["BAND", "DPI", "bars", "color", "curve", "log_scale", "mean_ci", "panels", "profile",
           "save", "sweep"]

BAND = "mean over seeds, 95% CI"
DPI = 150
TITLE_SIZE, LABEL_SIZE, SMALL_SIZE = 10, 10, 9  # points
# tab10, then four more distinct colours: up to 14 series without a repeat
PALETTE = [*colormaps["tab10"].colors, "black", "#b8860b", "#000080", "#7cfc00"]


def color(i: int) -> Any:
    """The ``i``-th color of a qualitative palette of 14 distinct colours."""
    return PALETTE[i % len(PALETTE)]


def panels(n: int, *, width: float = 4.2, height: float = 3.3,
           rows: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows x n`` axes (returned flat)."""
    fig = Figure(figsize=(width * n, height * rows))
    axes = fig.subplots(rows, n, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _set_fonts(ax: Axes) -> None:
    """The studies' font sizes, whatever the panel's code asked for."""
    ax.title.set_fontsize(TITLE_SIZE)
    ax.xaxis.label.set_fontsize(LABEL_SIZE)
    ax.yaxis.label.set_fontsize(LABEL_SIZE)
    ax.tick_params(labelsize=SMALL_SIZE)
    legend = ax.get_legend()
    for text in legend.get_texts() if legend else ():
        text.set_fontsize(SMALL_SIZE)


def save(fig: Figure, path: str | Path) -> Path:
    """Letter the panels, write ``path`` (PNG, :data:`DPI`) and the same figure as SVG beside
    it (both atomically); return the PNG's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i, ax in enumerate(axes):
        title = f"({chr(ord('a') + i)}) {ax.get_title()}" if len(axes) > 1 else ax.get_title()
        inches = ax.get_position().width * fig.get_figwidth()
        ax.set_title(textwrap.fill(title, max(20, int(inches * 72 / (0.52 * TITLE_SIZE)))))
        _set_fonts(ax)
    fig.tight_layout()
    for target, fmt in ((path, "png"), (path.with_suffix(".svg"), "svg")):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fig.savefig(tmp, format=fmt, dpi=DPI, metadata={"Date": None})
        os.replace(tmp, target)
    return path


def mean_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``values (seeds, T)``: the mean over the finite seeds and its 95%
    Student-t interval (``mean -+ t_{0.975, n-1} s / sqrt(n)``; the interval is the mean
    itself where only one seed is finite, NaN where none is)."""
    from scipy.stats import t as student_t

    v = np.asarray(values, np.float64)
    v = np.where(np.isfinite(v), v, np.nan)
    n = np.sum(~np.isnan(v), axis=0)
    with warnings.catch_warnings():  # all-NaN columns (every seed failed) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=0)
        sd = np.nanstd(v, axis=0, ddof=1)
    half = np.where(n > 1, student_t.ppf(0.975, np.maximum(n - 1, 1)) * sd
                    / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, mean - half, mean + half


def curve(ax: Axes, x: Sequence[float], values: np.ndarray, *, label: str, c: Any,
          linestyle: str = "-") -> None:
    """Mean over seeds of ``values (seeds, len(x))`` with its 95% confidence band."""
    mid, low, high = mean_ci(values)
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
    """Bars of the mean with 95% confidence error bars, each seed as a dot; the axis starts
    at zero.  ``reference`` draws labelled horizontal lines (e.g. published numbers)."""
    for i, values in enumerate(per_seed):
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        (mid,), (low,), (high,) = mean_ci(v[:, None])
        ax.bar(i, mid, 0.6, color=color(i), alpha=0.7,
               yerr=[[mid - low], [high - mid]], capsize=4)
        ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, s=10,
                   color="black", zorder=3, label="seeds" if i == 0 else None)
    for j, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=color(j + 5), linestyle="--", label=name)
    ax.set_ylim(bottom=0)
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
    ax.set(ylabel=ylabel, title=f"{ylabel}: {BAND}; dots: seeds")
    ax.legend()
