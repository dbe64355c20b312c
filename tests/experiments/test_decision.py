"""How studies decide (experiments/studies/decision.py): the exact Wilcoxon signed-rank test
against scipy and by hand, its false-win rate under no effect, bootstrap intervals, checks and
verdict words."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.studies import decision


def test_spread_quartiles_and_infinity():
    s = decision.spread([5.0, 1.0, 3.0, 2.0, 4.0, np.nan])
    assert (s.median, s.low, s.high, s.n) == (3.0, 2.0, 4.0, 5)
    assert s.format(".1f") == "3.0 [2.0, 4.0]"
    never = decision.spread([math.inf, math.inf, 10.0])
    assert (never.median, never.high, never.low) == (math.inf, math.inf, math.inf)
    assert never.iqr == 0.0 and never.format() == "never [never, never]"
    assert decision.spread([1.0, 2.0, math.inf]).iqr == math.inf
    assert decision.spread([]).n == 0 and math.isnan(decision.spread([np.nan]).median)


@pytest.mark.parametrize("n", [4, 6, 8, 11])
def test_wilcoxon_matches_scipy_exact(n):
    d = np.random.default_rng(n).normal(0.4, 1.0, n)
    p, z = decision.wilcoxon_signed_rank(d)
    assert p == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    ranks = stats.rankdata(np.abs(d))
    assert z == pytest.approx(ranks[d > 0].sum() - n * (n + 1) / 4)


def test_wilcoxon_by_hand_with_ties_and_zeros():
    # |d| ranks 1.5, 1.5, 3, 4 (the zero is dropped); all positive: T+ = 10 is the largest of
    # 16 equally likely sign patterns, so p = 2 / 16
    assert decision.wilcoxon_signed_rank([1.0, 1.0, 2.0, 3.0, 0.0]) == (0.125, 5.0)
    assert decision.wilcoxon_signed_rank([0.0, 0.0]) == (1.0, 0.0)
    # the smallest two-sided p with n pairs is 2 / 2**n: 5 seeds can never reach 0.05
    assert decision.wilcoxon_signed_rank(np.arange(1.0, 6.0))[0] == 0.0625
    assert decision.wilcoxon_signed_rank(np.arange(1.0, 7.0))[0] == 0.03125
    with pytest.raises(ValueError, match="NaN"):
        decision.wilcoxon_signed_rank([1.0, np.nan])


def test_false_wins_under_no_effect_stay_below_alpha():
    """The issue's complaint about the old rule (6.6% false one-sided wins at 5 seeds): the
    exact test keeps two-sided false wins at most ALPHA for 8 seeds of pure noise."""
    rng = np.random.default_rng(0)
    wins = [decision.wilcoxon_signed_rank(rng.normal(size=8) - rng.normal(size=8))[0]
            < decision.ALPHA for _ in range(2000)]
    assert np.mean(wins) <= decision.ALPHA + 0.01  # exact: 0.039 for n = 8 without ties
    shifted = [decision.wilcoxon_signed_rank(rng.normal(1.5, 1.0, 8))[0] < decision.ALPHA
               for _ in range(200)]
    assert np.mean(shifted) > 0.8  # and a clear effect is found


def test_bootstrap_interval():
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    lo, hi = decision.bootstrap_median_ci(d)
    assert lo < 4.5 < hi and 1.0 <= lo and hi <= 8.0
    assert decision.bootstrap_median_ci(d) == (lo, hi)  # same generator, same interval
    assert decision.bootstrap_median_ci([2.0] * 5) == (2.0, 2.0)
    assert decision.bootstrap_median_ci([math.inf] * 3 + [1.0])[1] == math.inf
    assert all(math.isnan(v) for v in decision.bootstrap_median_ci([]))
    with pytest.raises(ValueError, match="level"):
        decision.bootstrap_median_ci(d, level=1.0)


def test_compare_pairs_the_seeds():
    base = np.array([10.0, 30.0, 50.0, 70.0, 90.0, 110.0, 130.0, 150.0])
    # unpaired the two overlap almost entirely; paired, b is larger on every seed
    c = decision.compare(base, base + 1.0, better="lower")
    assert c.winner == "a" and c.difference == -1.0 and c.n == 8 and c.p == 2 / 2**8
    assert c.ci == (-1.0, -1.0)
    assert decision.compare(base, base + 1.0, better="higher").winner == "b"
    noisy = base + np.array([1.0, -1.0, 2.0, -2.0, 1.0, -1.0, 0.5, -0.5])
    assert decision.compare(base, noisy, better="lower").winner == "tie"
    # "never reached" on both sides is no difference; against a number it is the worst
    c = decision.compare([1, 2, 3, 4, 5, math.inf], [9, 9, 9, 9, 9, math.inf], better="lower")
    assert c.winner == "tie" and c.n == 6  # 5 nonzero pairs cannot reach p < 0.05
    c = decision.compare([1.0] * 6, [math.inf] * 6, better="lower")
    assert c.winner == "a" and c.difference == -math.inf
    assert c.format().startswith("paired difference -inf [95% CI -inf, -inf]")
    assert decision.compare([1.0, np.nan], [2.0, 3.0], better="lower").n == 1
    with pytest.raises(ValueError, match="one value per seed"):
        decision.compare([1.0, 2.0], [1.0], better="lower")
    with pytest.raises(ValueError, match="'lower' or 'higher'"):
        decision.compare([1], [2], better="smaller")


def test_check_states_test_and_interval():
    better = decision.compare([1.0] * 6, [5.0] * 6, better="lower")
    good = decision.check("steps", better, expect="a", labels=("A", "B"))
    assert good.outcome == "supports"
    assert "paired difference -4 [95% CI -4, -4], Wilcoxon p = 0.031, n = 6" in good.detail
    worse = decision.check("steps", better, expect="b", labels=("A", "B"))
    assert worse.outcome == "contradicts" and "opposite" in worse.detail
    tie = decision.compare([1, 2, 3], [1, 2, 3], better="lower")
    assert decision.check("x", tie, expect="a", labels=("A", "B")).outcome == "unclear"
    with pytest.raises(ValueError, match="expect must be 'a' or 'b'"):
        decision.check("x", tie, expect="c", labels=("A", "B"))


def test_check_near():
    close = [0.93, 0.94, 0.95, 0.94, 0.935, 0.945]
    assert decision.check_near("acc", close, 0.94, tolerance=0.02).outcome == "supports"
    far = [0.70, 0.71, 0.72, 0.70, 0.71, 0.72]
    assert decision.check_near("acc", far, 0.94, tolerance=0.05).outcome == "contradicts"
    edge = [0.8, 0.88, 1.0, 0.85, 0.95, 0.9]  # the interval straddles 0.94 - 0.05
    check = decision.check_near("acc", edge, 0.94, tolerance=0.05)
    assert check.outcome == "unclear" and "95% CI" in check.detail
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        decision.check_near("acc", [0.9], 0.9, tolerance=-1.0)


@pytest.mark.parametrize(("outcomes", "expected"), [
    (["supports", "supports"], "holds"),
    (["supports", "unclear"], "holds in part"),
    (["supports", "contradicts"], "mixed"),
    (["unclear", "contradicts"], "opposite"),
    (["unclear", "unclear"], "not detected"),
])
def test_verdict(outcomes, expected):
    assert decision.verdict([decision.Check(o, "") for o in outcomes]) == expected
    with pytest.raises(ValueError, match="at least one check"):
        decision.verdict([])
