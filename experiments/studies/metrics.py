"""Metrics that several studies share, computed from the runner's rows (``metrics.jsonl``).

Per-seed data:

* :func:`seed_curves` / :func:`final_values`: one value series per seed of a cell, and the
  last logged value of each seed.

Scalar measures of a run:

* :func:`steps_to_threshold`: first step at which a curve crosses a target (linear interpolation
  between logged points), ``inf`` if it never does.
* :func:`largest_passing`: the largest grid value (e.g. learning rate) whose score still reaches
  a threshold.
* :func:`generalization_gap`: ``train - test`` (accuracy), per seed.
* :func:`layer_values` / :func:`log_depth_ratio`: per-layer values (``grad_norm/layer_i``) in
  depth order, and ``log10(first / last)`` (> 0: larger near the input, i.e. exploding towards
  the input; < 0: vanishing).
* :func:`quantile_series` / :func:`path_length`: quantiles of a unit's input over training and
  how far they travel (the BN paper's Figure 1, Ioffe & Szegedy 2015).
* :func:`landscape_summary`: loss range, gradient change and effective beta-smoothness along
  the gradient direction (Santurkar et al. 2018, "How does batch normalization help
  optimization?", Sec. 3.1).

Verdicts compare such per-seed values between settings: :mod:`experiments.studies.decision`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["final_values", "generalization_gap", "landscape_summary", "largest_passing",
           "layer_keys", "layer_values", "log_depth_ratio", "path_length", "quantile_series",
           "seed_curves", "steps_to_threshold"]

Rows = Sequence[Mapping[str, Any]]


def seed_curves(rows: Rows, cell: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logged ``key`` of ``cell``: steps ``(T,)``, seeds ``(S,)`` and values ``(S, T)``.

    A seed with no row at some step (a diverged cell stops logging) gets NaN there.
    Raises ``KeyError`` when ``cell`` has no row with ``key``.
    """
    table: dict[int, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row.get("cell") == cell and row.get(key) is not None:
            table[int(row["seed"])][int(row["step"])] = float(row[key])
    if not table:
        raise KeyError(f"no logged {key!r} for cell {cell!r}; check the cell label and the "
                       f"metric name")
    seeds = np.asarray(sorted(table))
    steps = np.asarray(sorted({s for series in table.values() for s in series}))
    values = np.full((len(seeds), len(steps)), np.nan)
    index = {int(s): i for i, s in enumerate(steps)}
    for i, seed in enumerate(seeds):
        for step, value in table[int(seed)].items():
            values[i, index[step]] = value
    return steps, seeds, values


def final_values(rows: Rows, cell: str, key: str) -> np.ndarray:
    """The last logged value of ``key`` for each seed of ``cell`` (ordered by seed)."""
    _, _, values = seed_curves(rows, cell, key)
    out = np.full(values.shape[0], np.nan)
    for i, series in enumerate(values):
        finite = np.flatnonzero(~np.isnan(series))
        if len(finite):
            out[i] = series[finite[-1]]
    return out


def _check_series(steps: np.ndarray, values: np.ndarray) -> None:
    if steps.ndim != 1 or values.shape != steps.shape:
        raise ValueError(f"steps and values must be 1-D of the same length, got shapes "
                         f"{steps.shape} and {values.shape}")
    if len(steps) > 1 and not np.all(np.diff(steps) > 0):
        raise ValueError("steps must be strictly increasing")


def steps_to_threshold(steps: Sequence[float], values: Sequence[float], threshold: float, *,
                       below: bool = True, start: tuple[float, float] | None = None) -> float:
    """First step at which ``values`` reach ``threshold`` (``<=`` if ``below``, else ``>=``).

    Between two logged points the curve is interpolated linearly, so the answer need not be a
    logged step.  ``start = (step, value)`` adds a point before the first logged one (e.g. the
    loss at initialization); without it a curve that already passes at its first point
    returns that step.  NaN values (a diverged run) never pass.  Returns ``inf`` if the
    threshold is never reached.
    """
    s, v = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if start is not None:
        s, v = np.concatenate([[start[0]], s]), np.concatenate([[start[1]], v])
    _check_series(s, v)
    sign = 1.0 if below else -1.0
    passed = sign * (v - threshold) <= 0  # False for NaN
    if not passed.any():
        return math.inf
    i = int(np.argmax(passed))
    if i == 0 or not np.isfinite(v[i - 1]):
        return float(s[i])
    frac = (v[i - 1] - threshold) / (v[i - 1] - v[i])
    return float(s[i - 1] + frac * (s[i] - s[i - 1]))


def largest_passing(xs: Sequence[float], scores: Sequence[float], threshold: float, *,
                    default: float = 0.0) -> float:
    """The largest ``x`` whose score is ``>= threshold`` (NaN fails); ``default`` if none."""
    x, score = np.asarray(xs, np.float64), np.asarray(scores, np.float64)
    if x.shape != score.shape or x.ndim != 1:
        raise ValueError(f"xs and scores must be 1-D of the same length, got shapes {x.shape} "
                         f"and {score.shape}")
    ok = np.nan_to_num(score, nan=-np.inf) >= threshold
    return float(x[ok].max()) if ok.any() else default


def generalization_gap(train: Sequence[float], test: Sequence[float]) -> np.ndarray:
    """``train - test`` per seed (for accuracies: how much better the model does on its own
    training data); shapes must match."""
    a, b = np.asarray(train, np.float64), np.asarray(test, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"train and test must have the same shape, got {a.shape} and "
                         f"{b.shape}")
    return a - b


def layer_keys(keys: Sequence[str], prefix: str) -> list[str]:
    """Distinct keys ``<prefix>layer_<i>`` in depth order (others, e.g. ``.../total``, are
    dropped)."""
    pattern = re.compile(re.escape(prefix) + r"layer_(\d+)$")
    found = {(int(m.group(1)), k) for k in keys if (m := pattern.match(k))}
    return [k for _, k in sorted(found)]


def layer_values(row: Mapping[str, Any], prefix: str) -> np.ndarray:
    """Values of ``<prefix>layer_<i>`` in ``row``, ordered by ``i``."""
    keys = layer_keys(list(row), prefix)
    if not keys:
        raise KeyError(f"row has no per-layer keys starting with {prefix!r}")
    return np.asarray([float(row[k]) for k in keys])


def log_depth_ratio(profile: Sequence[float]) -> float:
    """``log10(profile[0] / profile[-1])`` for a per-layer profile (first layer = input side).

    For gradient norms, ``> 0`` means gradients grow towards the input (explode backwards),
    ``< 0`` that they vanish; ``|ratio| < 1`` means within a factor of 10 across depth.
    """
    p = np.asarray(profile, np.float64)
    if p.ndim != 1 or len(p) < 2:
        raise ValueError(f"profile must list at least two layers, got shape {p.shape}")
    if p[0] <= 0 or p[-1] <= 0:
        return math.nan
    return float(np.log10(p[0] / p[-1]))


def quantile_series(values: np.ndarray, qs: Sequence[float] = (0.15, 0.5, 0.85)) -> np.ndarray:
    """Quantiles over the last axis: ``values (T, N) -> (T, len(qs))``."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be (steps, samples), got shape {v.shape}")
    if not all(0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"quantiles must lie in [0, 1], got {tuple(qs)}")
    return np.quantile(v, np.asarray(qs), axis=1).T


def path_length(series: np.ndarray) -> float:
    """How far a multi-quantile series travels: ``sum_t mean_k |s[t, k] - s[t-1, k]|``."""
    s = np.asarray(series, np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or len(s) < 2:
        raise ValueError(f"series must be (steps >= 2, quantiles), got shape {s.shape}")
    return float(np.abs(np.diff(s, axis=0)).mean(axis=1).sum())


def landscape_summary(etas: Sequence[float], losses: Sequence[float],
                      grad_changes: Sequence[float], grad_norm: float) -> dict[str, float]:
    """Santurkar et al. (2018)'s three measures along ``theta - eta * g`` for the ``etas``.

    ``losses[i] = L(theta - eta_i g)``, ``grad_changes[i] = ||grad L(theta - eta_i g) - g||``
    and ``grad_norm = ||g||``.  Returns ``loss_range = max - min`` of the losses,
    ``grad_change = max_i grad_changes[i]`` and ``beta = max_i grad_changes[i] / (eta_i ||g||)``
    (effective beta-smoothness).
    """
    e, loss, dg = (np.asarray(a, np.float64) for a in (etas, losses, grad_changes))
    if not (e.shape == loss.shape == dg.shape) or e.ndim != 1 or not len(e):
        raise ValueError(f"etas, losses and grad_changes must be 1-D of one length, got "
                         f"{e.shape}, {loss.shape}, {dg.shape}")
    if np.any(e <= 0):
        raise ValueError(f"step sizes must be > 0, got {e.tolist()}")
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = float(np.max(dg / (e * grad_norm))) if grad_norm > 0 else math.nan
    return {"loss_range": float(loss.max() - loss.min()), "grad_change": float(dg.max()),
            "beta": beta}
