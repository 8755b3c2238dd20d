"""Statistics behind ``normbench compare`` and ``normbench noise``: pure numpy / scipy.

What a verdict means
--------------------
Every comparable metric of a case gets one of these verdicts (``Verdict``):

* ``faster`` / ``slower`` for speed metrics (a time such as ``us`` / ``ms``, or
  a rate such as ``GB/s``, ``req/s``, ``tok/s``), ``better`` / ``worse`` for
  the others (``exact_match``): the candidate differs from the baseline, the
  difference is real at the chosen confidence, and it is at least
  ``min_effect`` (a fraction, default 0.02 = 2%) of the baseline;
* ``within noise``: anything else. The interval includes "no change", or the
  change is real but smaller than ``min_effect``;
* ``n=1, no verdict``: a side has a single sample (an end-to-end stage run
  once), so there is no spread to judge against. The verdict does not guess.

Direction comes from the metric (``Metric.higher_is_better``): a time that
went up is ``slower``, a throughput that went up is ``faster``.

Samples (kernel times, end-to-end repeats): ``ratio_test``
    * the ratio of medians ``median(candidate) / median(baseline)``;
    * its confidence interval (default 95%) by a **percentile bootstrap**:
      each side is resampled independently, with replacement, at its own size
      (``resamples`` times, default 4000, from a seeded ``numpy.random.Generator``
      so a comparison is reproducible), and the interval is the
      ``(1-c)/2`` and ``(1+c)/2`` quantiles of the resampled ratios;
    * a two-sided **Mann-Whitney U** test (``scipy.stats.mannwhitneyu``; the
      exact distribution for small samples), the check asv's ``compare`` uses.
    * The effect is significant when the interval excludes 1.0 **and**
      ``p < 1 - confidence`` **and** ``|ratio - 1| >= min_effect``. The
      Mann-Whitney condition matters for the few samples of end-to-end repeats,
      where a percentile bootstrap is too narrow: with 3 repeats a side no
      difference can reach p < 0.05 (the smallest exact p is 0.1), so it
      takes at least 4 repeats a side to resolve an end-to-end change at 95%.
      With hundreds of kernel samples both tests agree.

Paired per-item correctness (gsm8k): ``mcnemar``
    McNemar's test on the discordant pairs of the items both runs answered:
    ``b`` items the baseline got right and the candidate wrong, ``c`` the
    reverse. Exact: two-sided binomial test of ``c`` in ``b + c`` trials at
    p = 0.5 (``scipy.stats.binomtest``). ``method="chi2"`` is the classical
    large-sample form with Edwards' continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` against chi-square(1). Pairing is what makes
    this more sensitive than comparing two accuracies with an unpaired z-test:
    items both runs get right (or wrong) carry no information about the change.

Sources: asv (``asv compare``: Mann-Whitney U plus non-overlapping intervals),
pyperf (``pyperf compare_to``: "not significant" when the difference is
within noise), Efron & Tibshirani, *An Introduction to the Bootstrap* (1993),
ch. 13 (percentile intervals); McNemar (1947), Edwards (1948).

Errors: ``ValueError`` for empty inputs, non-finite samples, a confidence
outside (0, 1), or per-item results that are not 0/1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Sequence

import numpy as np
from scipy import stats as _st

DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_EFFECT = 0.02
DEFAULT_RESAMPLES = 4000
DEFAULT_SEED = 0

TIME_UNITS = {"ns", "us", "µs", "ms", "s", "sec", "min"}


class Verdict(str, Enum):
    """The outcome of one comparison (the value is what tables show)."""

    FASTER = "faster"
    SLOWER = "slower"
    BETTER = "better"
    WORSE = "worse"
    NOISE = "within noise"
    N1 = "n=1, no verdict"
    UNDEFINED = "no verdict"  # e.g. a baseline median of 0: no ratio to form

    @property
    def is_regression(self) -> bool:
        return self in (Verdict.SLOWER, Verdict.WORSE)

    @property
    def is_improvement(self) -> bool:
        return self in (Verdict.FASTER, Verdict.BETTER)

    def __str__(self) -> str:  # so f-strings and rich show "within noise", not "Verdict.NOISE"
        return self.value


def is_speed_unit(unit: str | None) -> bool:
    """True for times (``us``, ``ms``, ...) and rates (``GB/s``, ``req/s``, ``tok/s``).

    Speed metrics get ``faster``/``slower``; other metrics (accuracy, ``%``)
    get ``better``/``worse``.
    """
    u = (unit or "").strip()
    return u in TIME_UNITS or u.endswith("/s")


# --------------------------------------------------------------------------- summaries
def _array(x: Sequence[float] | np.ndarray, name: str = "samples") -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: no samples")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: NaN or Inf among the samples")
    return a


def median(x: Sequence[float] | np.ndarray) -> float:
    """The median of ``x`` (same unit as ``x``)."""
    return float(np.median(_array(x)))


def spread(x: Sequence[float] | np.ndarray, low: float = 20, high: float = 80) -> dict[str, float]:
    """``{"p20": .., "p80": ..}`` percentiles of ``x`` (linear interpolation, numpy's default)."""
    a = _array(x)
    lo, hi = np.percentile(a, [low, high])
    return {f"p{low:g}": float(lo), f"p{high:g}": float(hi)}


def check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(confidence)


# --------------------------------------------------------------------------- bootstrap
def bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` bootstrap resamples (with replacement, size ``n = len(x)``) of ``x``.

    Drawn from their exact law in O(resamples), not by materializing
    ``resamples x n`` values: with ``x`` sorted, a resample is ``n`` uniform
    indices ``floor(n U_i)``, and since ``floor`` is monotone its k-th smallest
    index is ``floor(n U_(k))``, where the k-th order statistic of ``n``
    uniforms is ``U_(k) ~ Beta(k, n - k + 1)``. For even ``n`` the median also
    needs the next one: given ``U_(k) = u`` the other ``n - k`` uniforms are
    uniform on ``(u, 1)``, so ``U_(k+1) = u + (1 - u) Beta(1, n - k)``. Same
    distribution as resampling values (tested), and a sweep of a thousand cases
    with hundreds of samples each compares in well under a second.
    """
    xs = np.sort(np.asarray(x, dtype=float))
    n = xs.size
    if n == 1:
        return np.full(resamples, xs[0])
    k = (n + 1) // 2 if n % 2 else n // 2  # 1-based rank of the (lower) median
    u = rng.beta(k, n - k + 1, size=resamples)
    lower = np.minimum((u * n).astype(np.int64), n - 1)
    if n % 2:
        return xs[lower]
    u2 = u + (1.0 - u) * rng.beta(1, n - k, size=resamples)
    upper = np.minimum((u2 * n).astype(np.int64), n - 1)
    return 0.5 * (xs[lower] + xs[upper])


@dataclass(frozen=True)
class RatioInterval:
    """``median(candidate) / median(baseline)`` with its bootstrap interval.

    Attributes:
        ratio: the point estimate (dimensionless; > 1 means the candidate's
            metric is larger, whatever the metric's direction).
        low, high: the interval's ends (``nan`` when it cannot be formed).
        confidence: e.g. 0.95.
        p_value: two-sided Mann-Whitney U p-value (``nan`` with a single sample a side).
        n_base, n_cand: samples per side.
        resamples: bootstrap resamples drawn.
    """

    ratio: float
    low: float
    high: float
    confidence: float
    p_value: float
    n_base: int
    n_cand: int
    resamples: int

    @property
    def excludes_one(self) -> bool:
        return bool(self.low > 1.0 or self.high < 1.0)

    @property
    def half_width(self) -> float:
        """Half the interval's width, as a fraction of the ratio (``nan`` if undefined)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return float("nan")
        return (self.high - self.low) / 2.0


def bootstrap_ratio_ci(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = DEFAULT_SEED,
) -> tuple[float, float, float]:
    """Percentile-bootstrap interval of ``median(cand) / median(base)``.

    Each side is resampled independently with replacement at its own size;
    ``seed`` makes the interval reproducible. Returns ``(ratio, low, high)``.
    A side with a single sample contributes no spread (its median is fixed),
    and a baseline median of 0 gives ``nan`` everywhere.

    Raises:
        ValueError: empty or non-finite samples, a confidence outside (0, 1).
    """
    check_confidence(confidence)
    a, b = _array(base, "baseline"), _array(cand, "candidate")
    ma, mb = float(np.median(a)), float(np.median(b))
    if ma == 0.0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot_a = bootstrap_medians(a, resamples, rng)
    boot_b = bootstrap_medians(b, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_b / boot_a
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return mb / ma, float("nan"), float("nan")
    alpha = 1.0 - confidence
    lo, hi = np.quantile(ratios, [alpha / 2.0, 1.0 - alpha / 2.0])
    return mb / ma, float(lo), float(hi)


def median_interval(
    x: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = DEFAULT_SEED,
) -> tuple[float, float, float]:
    """``(median, low, high)``: percentile-bootstrap interval of one sample set's median.

    With a single sample the interval is ``(nan, nan)``. Used for error bars.
    """
    check_confidence(confidence)
    a = _array(x)
    m = float(np.median(a))
    if a.size < 2:
        return m, float("nan"), float("nan")
    boot = bootstrap_medians(a, resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return m, float(lo), float(hi)


def proportion_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """``(rate, low, high)``: Wilson score interval of a proportion (``scipy.stats.binomtest``)."""
    if n <= 0:
        return float("nan"), float("nan"), float("nan")
    ci = _st.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return successes / n, float(ci.low), float(ci.high)


def mann_whitney_p(base: Sequence[float] | np.ndarray, cand: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (``nan`` when a side has fewer than 2 samples).

    ``scipy.stats.mannwhitneyu`` with ``method="auto"``: the exact null
    distribution for small samples without ties, the normal approximation
    (tie- and continuity-corrected) otherwise.
    """
    a, b = _array(base, "baseline"), _array(cand, "candidate")
    if a.size < 2 or b.size < 2:
        return float("nan")
    if np.ptp(np.concatenate([a, b])) == 0.0:
        return 1.0  # all equal: no evidence of a difference (scipy would return nan)
    return float(_st.mannwhitneyu(b, a, alternative="two-sided", method="auto").pvalue)


def ratio_test(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | None = DEFAULT_SEED,
) -> RatioInterval:
    """Ratio of medians, its bootstrap interval and the Mann-Whitney p-value."""
    a, b = _array(base, "baseline"), _array(cand, "candidate")
    if a.size < 2 or b.size < 2:
        ma = float(np.median(a))
        ratio = float(np.median(b)) / ma if ma != 0.0 else float("nan")
        return RatioInterval(ratio, float("nan"), float("nan"), confidence, float("nan"), a.size, b.size, 0)
    ratio, lo, hi = bootstrap_ratio_ci(a, b, confidence, resamples, seed)
    return RatioInterval(ratio, lo, hi, confidence, mann_whitney_p(a, b), a.size, b.size, resamples)


def ratio_verdict(
    ri: RatioInterval,
    higher_is_better: bool,
    min_effect: float = DEFAULT_MIN_EFFECT,
    speed: bool = True,
) -> Verdict:
    """The verdict for a ratio of medians (see the module docstring).

    Args:
        ri: from ``ratio_test``.
        higher_is_better: the metric's direction.
        min_effect: the smallest relative change that counts (0.02 = 2%).
        speed: ``faster``/``slower`` labels (else ``better``/``worse``).
    """
    if ri.n_base < 2 or ri.n_cand < 2:
        return Verdict.N1
    if not math.isfinite(ri.ratio):
        return Verdict.UNDEFINED
    alpha = 1.0 - ri.confidence
    effect = ri.ratio - 1.0
    significant = (
        ri.excludes_one
        and math.isfinite(ri.p_value)
        and ri.p_value < alpha
        and abs(effect) >= min_effect
    )
    if not significant:
        return Verdict.NOISE
    improved = (effect > 0) == higher_is_better
    if speed:
        return Verdict.FASTER if improved else Verdict.SLOWER
    return Verdict.BETTER if improved else Verdict.WORSE


# --------------------------------------------------------------------------- McNemar
@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired 0/1 outcomes.

    Attributes:
        n: items paired (both runs answered them).
        b: baseline right, candidate wrong.
        c: baseline wrong, candidate right.
        p_value: two-sided.
        statistic: the chi-square statistic (``method="chi2"``) or ``c`` (exact).
        method: ``"exact"`` (binomial) or ``"chi2"`` (continuity-corrected).
        base_rate, cand_rate: accuracy of each side on the paired items.
    """

    n: int
    b: int
    c: int
    p_value: float
    statistic: float
    method: str
    base_rate: float
    cand_rate: float

    @property
    def ratio(self) -> float:
        return self.cand_rate / self.base_rate if self.base_rate else float("nan")


def mcnemar_from_counts(
    b: int, c: int, n: int | None = None, method: Literal["exact", "chi2", "auto"] = "exact",
    base_correct: int | None = None, cand_correct: int | None = None,
) -> McNemarResult:
    """McNemar's test from the discordant counts ``b`` and ``c``.

    ``method="auto"`` uses the exact test below 25 discordant pairs and the
    continuity-corrected chi-square at or above (the textbook rule); the exact
    test is the default because scipy computes it quickly at any size.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    d = b + c
    n = d if n is None else n
    if method == "auto":
        method = "exact" if d < 25 else "chi2"
    if d == 0:
        p, stat = 1.0, 0.0
    elif method == "exact":
        p, stat = float(_st.binomtest(c, d, 0.5, alternative="two-sided").pvalue), float(c)
    elif method == "chi2":
        stat = (abs(b - c) - 1.0) ** 2 / d if abs(b - c) >= 1 else 0.0
        p = float(_st.chi2.sf(stat, df=1))
    else:
        raise ValueError(f"unknown McNemar method {method!r} (exact, chi2, auto)")
    bc = float("nan") if base_correct is None or n == 0 else base_correct / n
    cc = float("nan") if cand_correct is None or n == 0 else cand_correct / n
    return McNemarResult(n, b, c, min(1.0, p), stat, method, bc, cc)


def mcnemar(
    base: Sequence[int], cand: Sequence[int], method: Literal["exact", "chi2", "auto"] = "exact"
) -> McNemarResult:
    """McNemar's test on per-item 0/1 results of the same items, in the same order.

    Raises:
        ValueError: lengths differ, or a value is not 0/1.
    """
    a = np.asarray(base)
    z = np.asarray(cand)
    if a.shape != z.shape or a.ndim != 1:
        raise ValueError(f"paired results need the same length ({a.shape} vs {z.shape})")
    for name, v in (("baseline", a), ("candidate", z)):
        if v.size and not np.all((v == 0) | (v == 1)):
            raise ValueError(f"{name}: per-item results must be 0 or 1")
    a = a.astype(bool)
    z = z.astype(bool)
    b = int(np.sum(a & ~z))
    c = int(np.sum(~a & z))
    return mcnemar_from_counts(b, c, int(a.size), method, int(a.sum()), int(z.sum()))


def mcnemar_verdict(
    r: McNemarResult, confidence: float = DEFAULT_CONFIDENCE, min_effect: float = DEFAULT_MIN_EFFECT
) -> Verdict:
    """``better``/``worse`` when McNemar's p < 1 - confidence and the relative
    change of accuracy on the paired items is at least ``min_effect``; else
    ``within noise``. No paired items: ``no verdict``."""
    if r.n == 0:
        return Verdict.UNDEFINED
    if r.b + r.c == 0:
        return Verdict.NOISE
    effect = r.ratio - 1.0 if math.isfinite(r.ratio) else (math.inf if r.c > r.b else -math.inf)
    if r.p_value < 1.0 - confidence and abs(effect) >= min_effect:
        return Verdict.BETTER if r.c > r.b else Verdict.WORSE
    return Verdict.NOISE


# --------------------------------------------------------------------------- summaries over rows
def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of positive ratios (``nan`` if none); ``scipy.stats.gmean``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x) and x > 0], dtype=float)
    return float(_st.gmean(v)) if v.size else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return float(np.percentile(v, q)) if v.size else float("nan")
