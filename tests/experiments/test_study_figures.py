"""Figure helpers of the studies (experiments/studies/figures.py): bands, NaN-safety, output."""

from __future__ import annotations

import math

import numpy as np

from experiments.studies import figures as fig


def test_panels_curves_and_save(tmp_path):
    f, axes = fig.panels(3)
    assert len(axes) == 3
    values = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, np.nan]])
    fig.curve(axes[0], [10, 20, 30], values, label="a", c=fig.color(0))
    line = axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0, 3.5])  # median, NaN ignored
    fig.sweep(axes[1], [0.01, 0.1, 1.0], np.full((3, 2), np.nan), label="all failed",
              c=fig.color(1))
    assert axes[1].get_xscale() == "log"
    fig.profile(axes[2], np.array([[1.0, 10.0], [2.0, 20.0]]), label="p", c=fig.color(2))
    assert axes[2].get_yscale() == "log"
    path = fig.save(f, tmp_path / "sub" / "x.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_log_scale_only_with_positive_values():
    _, (ax,) = fig.panels(1)
    fig.log_scale(ax, [0.0, -1.0, math.inf, np.nan])
    assert ax.get_yscale() == "linear"
    fig.log_scale(ax, [0.0, 2.0])
    assert ax.get_yscale() == "log"


def test_bars_skip_empty_groups_and_draw_references(tmp_path):
    f, (ax,) = fig.panels(1)
    fig.bars(ax, ["a", "b", "c"], [[1.0, 2.0, 3.0], [np.nan, np.inf], [4.0]], ylabel="acc",
             reference={"paper": 2.5})
    assert len(ax.patches) == 2  # "b" has no finite value
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_legend() is not None
    fig.save(f, tmp_path / "bars.png")
