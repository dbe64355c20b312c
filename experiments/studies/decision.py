"""How a study decides: paired tests over seeds, confidence intervals, and calibrated verdicts.

The runs of one study share seeds: seed ``s`` of every setting starts from the same data order
(and, where the model is the same, the same initial weights), so two settings are compared *as
pairs*.  For per-seed values ``a`` and ``b`` (:func:`compare`):

* ``d_s = a_s - b_s`` per seed (a pair where either is NaN is dropped; ``inf - inf`` counts
  as no difference, e.g. both never reached a target);
* the **exact Wilcoxon signed-rank test** (two-sided, zero differences dropped, tied
  ``|d|`` given their average rank; the null distribution of the rank sum is enumerated, so the
  test is exact with ties too) decides whether the settings differ at level
  :data:`ALPHA`; the sign of the rank sum says which is better;
* a **95% percentile-bootstrap interval** of the median difference (10,000 resamples of the
  seed pairs, a fixed generator so reruns agree) says how large the difference is.

The exact test keeps the false-win rate at most :data:`ALPHA` under no effect for any number
of seeds; but with ``n`` pairs its smallest two-sided p-value is ``2 / 2**n``, so 5 seeds can
never reach 0.05 (0.0625): studies use at least 6 seeds, 8 where cheap.

:func:`check` turns a comparison into a :class:`Check` ("supports", "contradicts" or
"unclear"), whose sentence gives both medians, the difference with its interval, ``p`` and
``n``; :func:`verdict` combines a claim's checks into ``holds``, ``holds in part``,
``mixed``, ``opposite`` or ``not detected``.  :func:`check_near` compares with a published
number.  :func:`spread` (median and quartiles) is what the tables show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ALPHA", "CRITERION", "Check", "Comparison", "Spread", "bootstrap_median_ci",
           "check", "check_near", "compare", "paired_differences", "spread", "verdict",
           "wilcoxon_signed_rank"]

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 10_000
CRITERION = ("seeds compared as pairs; a difference counts if the exact two-sided Wilcoxon "
             f"signed-rank test gives p < {ALPHA}; the interval is a 95% bootstrap confidence "
             "interval of the median paired difference")
Outcome = Literal["supports", "contradicts", "unclear"]


@dataclass(frozen=True)
class Spread:
    """Median and quartiles over seeds (``inf`` allowed, e.g. a target never reached)."""

    median: float
    low: float
    high: float
    n: int

    @property
    def iqr(self) -> float:
        if self.high == self.low:  # also when both are inf
            return 0.0
        return self.high - self.low if math.isfinite(self.high - self.low) else math.inf

    def format(self, fmt: str = ".3g") -> str:
        """``median [q25, q75]``, e.g. ``0.93 [0.92, 0.94]``."""
        return f"{_fmt(self.median, fmt)} [{_fmt(self.low, fmt)}, {_fmt(self.high, fmt)}]"


def _fmt(v: float, fmt: str, *, sign: bool = False) -> str:
    if math.isnan(v):
        return "-"
    if math.isinf(v):  # a value: a target never reached; a difference: unbounded
        return ("+inf" if v > 0 else "-inf") if sign else ("never" if v > 0 else "-inf")
    return format(v, ("+" if sign else "") + fmt)


def _quantile(sorted_values: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile of sorted values that may hold ``+-inf``."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    a, b = float(sorted_values[lo]), float(sorted_values[hi])
    if a == b or pos == lo:
        return a
    if math.isinf(a) or math.isinf(b):  # sorted: b = +inf, or a = -inf
        return b if b == math.inf else a
    return a + (b - a) * (pos - lo)


def spread(values: Sequence[float]) -> Spread:
    """Median and quartiles (linear interpolation, as numpy's default) of the non-NaN
    ``values``; all NaN or empty gives NaN with ``n = 0``.  ``inf`` (e.g. "never reached")
    is ordered as a number, never turned into NaN.
    """
    v = np.sort(np.asarray(values, np.float64).ravel())
    v = v[~np.isnan(v)]
    if not len(v):
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(_quantile(v, 0.5), _quantile(v, 0.25), _quantile(v, 0.75), len(v))


def paired_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` per seed; pairs with a NaN are dropped and ``inf - inf`` is 0."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values need one value per seed on both sides, got "
                         f"{x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    same = x == y  # also inf == inf
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, x - y)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (values may be ``inf``)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_v = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_signed_rank(differences: Sequence[float]) -> tuple[float, float]:
    """Exact two-sided Wilcoxon signed-rank test of "the differences are centred on 0".

    Returns ``(p, z)`` where ``z = T+ - E[T+]`` (the positive ranks' sum minus its null mean;
    ``> 0``: the differences lean positive).  Zeros are dropped, tied ``|d|`` get average
    ranks, and ``p`` is exact: the null distribution of ``T+`` over all ``2**m`` sign patterns
    is counted by dynamic programming over the (doubled, hence integer) ranks.
    """
    d = np.asarray(differences, np.float64).ravel()
    if np.isnan(d).any():
        raise ValueError("differences must not be NaN (drop those pairs first)")
    d = d[d != 0]
    m = len(d)
    if m == 0:
        return 1.0, 0.0
    ranks2 = np.rint(2 * _ranks(np.abs(d))).astype(np.int64)  # average ranks are k/2
    t_plus = int(ranks2[d > 0].sum())
    counts = np.zeros(int(ranks2.sum()) + 1, np.float64)
    counts[0] = 1.0
    for r in ranks2:  # counts[s]: sign patterns whose positive (doubled) ranks sum to s
        counts[r:] = counts[r:] + counts[:-r].copy()
    probs = counts / counts.sum()
    low, high = probs[:t_plus + 1].sum(), probs[t_plus:].sum()
    z = (t_plus - ranks2.sum() / 2) / 2
    return float(min(1.0, 2 * min(low, high))), float(z)


def bootstrap_median_ci(differences: Sequence[float], *, level: float = 0.95,
                        samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``differences`` (``inf`` allowed).

    Resamples the pairs with replacement ``samples`` times with the generator
    ``numpy.random.default_rng(seed)``, so a rerun on the same data gives the same interval.
    Empty input gives NaNs.
    """
    d = np.asarray(differences, np.float64).ravel()
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not len(d):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = np.sort(d[rng.integers(0, len(d), (samples, len(d)))], axis=1)
    lo, hi = boot[:, (len(d) - 1) // 2], boot[:, len(d) // 2]
    with np.errstate(invalid="ignore"):
        medians = np.where(lo == hi, lo, (lo + hi) / 2)
    medians = np.sort(medians[~np.isnan(medians)])
    tail = (1 - level) / 2
    return _quantile(medians, tail), _quantile(medians, 1 - tail)


@dataclass(frozen=True)
class Comparison:
    """``winner`` is ``"a"``, ``"b"`` or ``"tie"``; ``difference`` is the median of the paired
    differences ``a - b`` with its 95% interval ``ci``; ``p`` the Wilcoxon p-value over ``n``
    pairs."""

    winner: Literal["a", "b", "tie"]
    difference: float
    ci: tuple[float, float]
    p: float
    n: int
    a: Spread
    b: Spread

    def format(self, fmt: str = ".3g") -> str:
        """``difference +0.12 [95% CI +0.05, +0.2], Wilcoxon p = 0.008, n = 8``."""
        lo, hi = (_fmt(v, fmt, sign=True) for v in self.ci)
        return (f"paired difference {_fmt(self.difference, fmt, sign=True)} [95% CI {lo}, "
                f"{hi}], Wilcoxon p = {self.p:.2g}, n = {self.n}")


def compare(a: Sequence[float], b: Sequence[float], *,
            better: Literal["lower", "higher"]) -> Comparison:
    """Compare two settings' per-seed values (same seeds, same order) by :data:`CRITERION`."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    d = paired_differences(a, b)
    p, z = wilcoxon_signed_rank(d)
    median = spread(d).median
    winner: Literal["a", "b", "tie"] = "tie"
    if p < ALPHA and z != 0:
        a_better = z < 0 if better == "lower" else z > 0
        winner = "a" if a_better else "b"
    return Comparison(winner, median, bootstrap_median_ci(d), p, len(d), spread(a), spread(b))


@dataclass(frozen=True)
class Check:
    """One sub-claim: its outcome and a sentence with the numbers, the test and the interval."""

    outcome: Outcome
    detail: str


def check(name: str, comparison: Comparison, *, expect: Literal["a", "b"],
          labels: tuple[str, str], fmt: str = ".3g") -> Check:
    """The sub-claim "``expect`` is better" judged by ``comparison``.

    ``name`` says what was measured (e.g. ``"steps to train loss 0.1"``); ``labels`` name the
    two settings (a, b).
    """
    if expect not in ("a", "b"):
        raise ValueError(f"expect must be 'a' or 'b', got {expect!r}")
    outcome: Outcome = ("unclear" if comparison.winner == "tie" else
                        "supports" if comparison.winner == expect else "contradicts")
    word = {"supports": "as claimed", "contradicts": "the opposite of the claim",
            "unclear": "no difference detected"}[outcome]
    detail = (f"{name}: {labels[0]} {comparison.a.format(fmt)} vs {labels[1]} "
              f"{comparison.b.format(fmt)}; {comparison.format(fmt)} ({word})")
    return Check(outcome, detail)


def check_near(name: str, values: Sequence[float], reference: float, *, tolerance: float,
               fmt: str = ".3g") -> Check:
    """The sub-claim "the values reproduce ``reference``" (e.g. a published number).

    With ``I`` the 95% bootstrap interval of the median: supports if ``I`` lies inside
    ``reference +- tolerance``, contradicts if it lies wholly outside, unclear otherwise.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    s = spread(v)
    lo, hi = bootstrap_median_ci(v)
    low_edge, high_edge = reference - tolerance, reference + tolerance
    outcome: Outcome = ("unclear" if not s.n else "supports"
                        if low_edge <= lo and hi <= high_edge else "contradicts"
                        if hi < low_edge or lo > high_edge else "unclear")
    word = {"supports": "reproduced", "contradicts": "not reproduced",
            "unclear": "interval overlaps the tolerance's edge"}[outcome]
    return Check(outcome, f"{name}: median {_fmt(s.median, fmt)} [95% CI {_fmt(lo, fmt)}, "
                          f"{_fmt(hi, fmt)}], n = {s.n}, vs reference {reference:{fmt}} "
                          f"+- {tolerance:{fmt}} ({word})")


def verdict(checks: Sequence[Check]) -> str:
    """One phrase for a claim from its sub-claims' outcomes.

    all support: ``holds``; some support, none contradict: ``holds in part``; some of each:
    ``mixed``; none support, some contradict: ``opposite``; all unclear: ``not detected``.
    """
    if not checks:
        raise ValueError("verdict needs at least one check")
    outcomes = [c.outcome for c in checks]
    supports, contradicts = outcomes.count("supports"), outcomes.count("contradicts")
    if supports == len(outcomes):
        return "holds"
    if supports and not contradicts:
        return "holds in part"
    if supports:
        return "mixed"
    return "opposite" if contradicts else "not detected"
