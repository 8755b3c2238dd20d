"""normbench.stats: bootstrap intervals, verdicts, McNemar, on synthetic data with known effects."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pytest

from normbench import stats
from normbench.stats import Verdict


def lognormal(seed: int, n: int, scale: float = 1.0, sigma: float = 0.03) -> np.ndarray:
    return scale * np.random.default_rng(seed).lognormal(0.0, sigma, n)


# --------------------------------------------------------------------------- summaries
def test_median_and_spread():
    x = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert stats.median(x) == 3.0
    assert stats.spread(x) == {"p20": pytest.approx(1.8), "p80": pytest.approx(4.2)}
    with pytest.raises(ValueError, match="no samples"):
        stats.median([])
    with pytest.raises(ValueError, match="NaN"):
        stats.median([1.0, float("nan")])


@pytest.mark.parametrize("n", [2, 3, 8, 31, 150])
def test_bootstrap_medians_match_resampling_law(n):
    """The O(resamples) order-statistic draw has the law of medians of resampled values."""
    from scipy.stats import ks_2samp

    x = np.random.default_rng(n).lognormal(0.0, 0.1, n)
    fast = stats.bootstrap_medians(x, 20000, np.random.default_rng(1))
    idx = np.random.default_rng(2).integers(0, n, size=(20000, n))
    brute = np.median(x[idx], axis=1)
    assert ks_2samp(fast, brute).pvalue > 0.001
    assert np.quantile(fast, [0.025, 0.5, 0.975]) == pytest.approx(np.quantile(brute, [0.025, 0.5, 0.975]), rel=0.01)
    midpoints = {round((a + b) / 2, 12) for a in x for b in x}
    assert set(np.round(fast, 12)) <= midpoints  # every draw is a possible resample median


def test_ratio_interval_is_reproducible_and_covers_the_truth():
    base, cand = lognormal(1, 50), lognormal(2, 50, scale=1.10)
    a = stats.bootstrap_ratio_ci(base, cand, seed=7)
    b = stats.bootstrap_ratio_ci(base, cand, seed=7)
    assert a == b
    ratio, lo, hi = a
    assert lo < 1.10 < hi
    assert lo < ratio < hi


# --------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize(
    "factor, higher_is_better, expected",
    [
        (1.10, False, Verdict.SLOWER),  # time up 10%
        (0.90, False, Verdict.FASTER),  # time down 10%
        (1.10, True, Verdict.FASTER),  # throughput up 10%
        (0.90, True, Verdict.SLOWER),  # throughput down 10%
        (1.00, False, Verdict.NOISE),
    ],
)
def test_known_effects(factor, higher_is_better, expected):
    ri = stats.ratio_test(lognormal(10, 30), lognormal(11, 30, scale=factor))
    assert stats.ratio_verdict(ri, higher_is_better) is expected


def test_better_worse_for_non_speed_metrics():
    ri = stats.ratio_test(lognormal(1, 30), lognormal(2, 30, scale=0.9))
    assert stats.ratio_verdict(ri, True, speed=False) is Verdict.WORSE
    assert stats.is_speed_unit("us") and stats.is_speed_unit("tok/s") and stats.is_speed_unit("GB/s")
    assert not stats.is_speed_unit("") and not stats.is_speed_unit("%")


def test_min_effect_separates_real_from_practical():
    """A real 1% slowdown with many samples: significant, but within noise at --min-effect 2%."""
    base, cand = lognormal(3, 400, sigma=0.01), lognormal(4, 400, scale=1.01, sigma=0.01)
    ri = stats.ratio_test(base, cand)
    assert ri.excludes_one and ri.p_value < 0.05
    assert stats.ratio_verdict(ri, False, min_effect=0.02) is Verdict.NOISE
    assert stats.ratio_verdict(ri, False, min_effect=0.005) is Verdict.SLOWER


def test_single_sample_gives_no_verdict():
    ri = stats.ratio_test([10.0], [12.0])
    assert stats.ratio_verdict(ri, False) is Verdict.N1
    assert ri.ratio == pytest.approx(1.2)
    assert math.isnan(ri.low)
    ri = stats.ratio_test([10.0, 10.1, 9.9], [12.0])
    assert stats.ratio_verdict(ri, False) is Verdict.N1
    assert str(Verdict.N1) == "n=1, no verdict"


def test_zero_baseline_has_no_ratio():
    ri = stats.ratio_test([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert stats.ratio_verdict(ri, True) is Verdict.UNDEFINED


def test_few_repeats_need_mann_whitney():
    """3 vs 3 perfectly separated: the percentile bootstrap alone would call it; the exact
    Mann-Whitney p (0.1) does not, so the verdict is noise. 5 vs 5 separated can be resolved."""
    ri = stats.ratio_test([100, 101, 102], [110, 111, 112])
    assert ri.excludes_one
    assert ri.p_value == pytest.approx(0.1)
    assert stats.ratio_verdict(ri, True) is Verdict.NOISE
    ri = stats.ratio_test([100, 101, 102, 100.5, 101.5], [110, 111, 112, 110.5, 111.5])
    assert ri.p_value == pytest.approx(2 / comb(10, 5))
    assert stats.ratio_verdict(ri, True) is Verdict.FASTER


def test_identical_samples_are_noise():
    ri = stats.ratio_test([1.0] * 10, [1.0] * 10)
    assert ri.p_value == 1.0
    assert stats.ratio_verdict(ri, False, min_effect=0.0) is Verdict.NOISE


def test_false_positive_rate_near_nominal():
    """200 seeded A/A draws at 95% (no practical threshold): flagged at most 8% of the time."""
    flagged = 0
    for i in range(200):
        ri = stats.ratio_test(lognormal(1000 + i, 30), lognormal(5000 + i, 30), resamples=2000, seed=i)
        flagged += stats.ratio_verdict(ri, False, min_effect=0.0) is not Verdict.NOISE
    assert flagged / 200 <= 0.08


def test_power_on_a_known_effect():
    """A 5% slowdown with 30 samples of 3% noise is found in (nearly) every draw."""
    found = 0
    for i in range(50):
        ri = stats.ratio_test(lognormal(2000 + i, 30), lognormal(6000 + i, 30, scale=1.05), resamples=2000, seed=i)
        found += stats.ratio_verdict(ri, False) is Verdict.SLOWER
    assert found >= 48


# --------------------------------------------------------------------------- McNemar
def exact_p(b: int, c: int) -> float:
    """Hand computation: two-sided binomial tail doubled, at p = 1/2."""
    n = b + c
    k = min(b, c)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b, c", [(4, 16), (0, 6), (5, 5), (10, 3), (1, 0)])
def test_mcnemar_exact_matches_hand_computation(b, c):
    r = stats.mcnemar_from_counts(b, c)
    assert r.p_value == pytest.approx(exact_p(b, c), rel=1e-9)


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_from_counts(4, 16).p_value == pytest.approx(12392 / 1048576)  # 2 * 6196 / 2^20
    assert stats.mcnemar_from_counts(0, 6).p_value == pytest.approx(2 / 64)
    assert stats.mcnemar_from_counts(0, 0).p_value == 1.0


def test_mcnemar_chi2_with_continuity_correction():
    r = stats.mcnemar_from_counts(4, 16, method="chi2")
    assert r.statistic == pytest.approx((12 - 1) ** 2 / 20)  # 6.05
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(6.05 / 2)))  # chi-square(1) tail
    r = stats.mcnemar_from_counts(30, 50, method="auto")
    assert r.method == "chi2" and r.statistic == pytest.approx(19**2 / 80)
    assert stats.mcnemar_from_counts(3, 9, method="auto").method == "exact"


def test_mcnemar_from_paired_items():
    # 100 items: both right 60, both wrong 20, baseline-only 4, candidate-only 16
    base = [1] * 60 + [0] * 20 + [1] * 4 + [0] * 16
    cand = [1] * 60 + [0] * 20 + [0] * 4 + [1] * 16
    r = stats.mcnemar(base, cand)
    assert (r.n, r.b, r.c) == (100, 4, 16)
    assert r.base_rate == 0.64 and r.cand_rate == 0.76
    assert stats.mcnemar_verdict(r) is Verdict.BETTER
    assert stats.mcnemar_verdict(stats.mcnemar(cand, base)) is Verdict.WORSE
    assert stats.mcnemar_verdict(stats.mcnemar_from_counts(6, 7, 100, base_correct=70, cand_correct=71)) is Verdict.NOISE


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        stats.mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        stats.mcnemar([1, 2], [1, 0])


# --------------------------------------------------------------------------- helpers
def test_proportion_interval_is_wilson():
    k, n, z = 161, 250, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    rate, lo, hi = stats.proportion_interval(k, n)
    assert rate == p
    assert lo == pytest.approx(centre - half, rel=1e-6)
    assert hi == pytest.approx(centre + half, rel=1e-6)


def test_median_interval_and_geomean():
    m, lo, hi = stats.median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert m == 3.0 and lo <= 3.0 <= hi
    assert math.isnan(stats.median_interval([1.0])[1])
    assert stats.geometric_mean([2.0, 0.5, None, float("nan")]) == pytest.approx(1.0)
    assert math.isnan(stats.geometric_mean([]))
