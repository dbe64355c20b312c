"""Figure helpers of the studies (experiments/studies/figures.py): confidence bands, NaN-safety,
lettered panels, PNG and SVG output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.studies import figures as fig


def test_panels_curves_and_save(tmp_path):
    f, axes = fig.panels(3)
    assert len(axes) == 3
    values = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, np.nan]])
    fig.curve(axes[0], [10, 20, 30], values, label="a", c=fig.color(0))
    line = axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [2.0, 3.0, 3.5])  # mean, NaN ignored
    mean, _, high = fig.mean_ci(values)
    # column 0: mean 2, sd 1, n 3 -> half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert high[0] - mean[0] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert high[2] - mean[2] == pytest.approx(12.706205 * 0.5, rel=1e-5)  # n = 2: t(0.975, 1)
    single = fig.mean_ci(np.array([[5.0], [np.nan]]))
    assert [float(v[0]) for v in single] == [5.0, 5.0, 5.0]  # one seed: no band
    fig.sweep(axes[1], [0.01, 0.1, 1.0], np.full((3, 2), np.nan), label="all failed",
              c=fig.color(1))
    assert axes[1].get_xscale() == "log"
    fig.profile(axes[2], np.array([[1.0, 10.0], [2.0, 20.0]]), label="p", c=fig.color(2))
    assert axes[2].get_yscale() == "log"
    path = fig.save(f, tmp_path / "sub" / "x.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in path.with_suffix(".svg").read_bytes()[:400]
    assert [ax.get_title()[:3] for ax in axes] == ["(a)", "(b)", "(c)"]
    from PIL import Image
    with Image.open(path) as image:
        assert image.info["dpi"][0] == pytest.approx(fig.DPI, abs=1)


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
    assert ax.get_ylim()[0] == 0  # bars start at zero
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_legend() is not None
    fig.save(f, tmp_path / "bars.png")
