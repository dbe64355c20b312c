"""Study metrics (experiments/studies/metrics.py), against hand-computed
values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.studies import metrics


def _rows():
    rows = []
    for seed, values in ((0, [3.0, 2.0, 1.0]), (1, [4.0, 3.0])):  # seed 1 stops early
        for step, v in zip((10, 20, 30), values, strict=False):
            rows.append({"cell": "a", "seed": seed, "step": step, "loss": v})
    rows.append({"cell": "b", "seed": 0, "step": 10, "loss": 9.0})
    return rows


def test_seed_curves_pads_missing_steps_with_nan():
    steps, seeds, values = metrics.seed_curves(_rows(), "a", "loss")
    assert steps.tolist() == [10, 20, 30] and seeds.tolist() == [0, 1]
    np.testing.assert_array_equal(values, [[3.0, 2.0, 1.0], [4.0, 3.0, np.nan]])


def test_final_values_is_last_logged_value_per_seed():
    np.testing.assert_array_equal(metrics.final_values(_rows(), "a", "loss"), [1.0, 3.0])


def test_seed_curves_unknown_cell():
    with pytest.raises(KeyError, match="no logged 'loss' for cell 'zz'"):
        metrics.seed_curves(_rows(), "zz", "loss")


@pytest.mark.parametrize(("values", "threshold", "expected"), [
    ([1.0, 0.5, 0.1], 0.5, 20.0),     # hits a logged point
    ([1.0, 0.6, 0.2], 0.4, 25.0),     # interpolated between 20 (0.6) and 30 (0.2)
    ([0.3, 0.2, 0.1], 0.5, 10.0),     # already below at the first point
    ([1.0, 0.9, 0.8], 0.5, math.inf),  # never
    ([1.0, np.nan, 0.2], 0.5, 30.0),  # NaN never passes; no interpolation across it
])
def test_steps_to_threshold(values, threshold, expected):
    assert metrics.steps_to_threshold([10, 20, 30], values, threshold) == pytest.approx(expected)


def test_steps_to_threshold_above_and_start():
    assert metrics.steps_to_threshold([10, 20], [0.5, 0.9], 0.7, below=False) == pytest.approx(15)
    assert metrics.steps_to_threshold([10], [0.0], 1.0, start=(0, 2.0)) == pytest.approx(5.0)


def test_steps_to_threshold_bad_input():
    with pytest.raises(ValueError, match="same length"):
        metrics.steps_to_threshold([1, 2], [1.0], 0.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        metrics.steps_to_threshold([2, 1], [1.0, 0.0], 0.5)


def test_largest_passing():
    lrs = [0.01, 0.1, 1.0, 10.0]
    assert metrics.largest_passing(lrs, [0.9, 0.95, 0.85, 0.1], 0.8) == 1.0
    assert metrics.largest_passing(lrs, [0.9, np.nan, 0.5, 0.95], 0.8) == 10.0
    assert metrics.largest_passing(lrs, [0.1, 0.1, np.nan, 0.1], 0.8) == 0.0
    assert metrics.largest_passing(lrs, [0.1] * 4, 0.8, default=-1.0) == -1.0
    with pytest.raises(ValueError, match="same length"):
        metrics.largest_passing(lrs, [0.1], 0.8)


def test_generalization_gap():
    np.testing.assert_allclose(metrics.generalization_gap([1.0, 0.9], [0.7, 0.8]), [0.3, 0.1])
    with pytest.raises(ValueError, match="same shape"):
        metrics.generalization_gap([1.0], [0.5, 0.6])


def test_layer_values_in_depth_order():
    row = {"grad_norm/layer_10": 3.0, "grad_norm/layer_2": 2.0, "grad_norm/layer_0": 1.0,
           "grad_norm/head": 9.0, "grad_norm/total": 7.0}
    assert metrics.layer_keys([*row, *row], "grad_norm/") == [
        "grad_norm/layer_0", "grad_norm/layer_2", "grad_norm/layer_10"]
    np.testing.assert_array_equal(metrics.layer_values(row, "grad_norm/"), [1.0, 2.0, 3.0])
    with pytest.raises(KeyError, match="act_std/"):
        metrics.layer_values(row, "act_std/")


def test_log_depth_ratio():
    assert metrics.log_depth_ratio([100.0, 10.0, 1.0]) == pytest.approx(2.0)
    assert metrics.log_depth_ratio([0.01, 1.0]) == pytest.approx(-2.0)
    assert math.isnan(metrics.log_depth_ratio([0.0, 1.0]))
    with pytest.raises(ValueError, match="at least two layers"):
        metrics.log_depth_ratio([1.0])


def test_quantile_series_and_path_length():
    values = np.stack([np.arange(101.0), np.arange(101.0) + 10])  # two steps, shifted by 10
    q = metrics.quantile_series(values)
    np.testing.assert_allclose(q, [[15, 50, 85], [25, 60, 95]])
    assert metrics.path_length(q) == pytest.approx(10.0)
    assert metrics.path_length(np.array([0.0, 1.0, -1.0])) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="steps, samples"):
        metrics.quantile_series(np.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.quantile_series(np.zeros((2, 3)), qs=(1.5,))
    with pytest.raises(ValueError, match="steps >= 2"):
        metrics.path_length(np.zeros((1, 3)))


def test_landscape_summary():
    out = metrics.landscape_summary([0.1, 0.2], [1.0, 0.7], [0.5, 2.0], grad_norm=10.0)
    assert out["loss_range"] == pytest.approx(0.3)
    assert out["grad_change"] == pytest.approx(2.0)
    assert out["beta"] == pytest.approx(max(0.5 / 1.0, 2.0 / 2.0))
    assert math.isnan(metrics.landscape_summary([0.1], [1.0], [0.0], grad_norm=0.0)["beta"])
    with pytest.raises(ValueError, match="one length"):
        metrics.landscape_summary([0.1], [1.0, 2.0], [0.1], grad_norm=1.0)
    with pytest.raises(ValueError, match="step sizes must be > 0"):
        metrics.landscape_summary([0.0], [1.0], [0.1], grad_norm=1.0)
