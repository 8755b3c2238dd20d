"""The comparison's data: options, sides, rows, environment differences, summaries and the
``Comparison`` itself, with the row statuses (see ``normbench.compare``). Pure: no torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from normbench import stats

if TYPE_CHECKING:
    from normbench.compare.evidence import VariantEvidence

#: The metric kernel tables are about; bandwidth (unit GB/s) is shown beside it.
PRIMARY_KERNEL_METRIC = "time_us"

SEVERITY = {"INCORRECT": 3, "FAILED": 2, "SKIPPED": 1, "OK": 0}

# Row.status values
COMPARED = "compared"
ONLY_BASE = "only in baseline"
ONLY_CAND = "only in candidate"
NOT_OK = "not comparable"
#: OK on both sides, but sampled under power or thermal throttling on one side or both
#: (``normbench.conditions``): not compared unless ``CompareOptions.allow_throttled``.
THROTTLED = "not comparable: throttled"
METRIC_ONLY_BASE = "metric only in baseline"
METRIC_ONLY_CAND = "metric only in candidate"


@dataclass(frozen=True)
class CompareOptions:
    """How verdicts are reached (``normbench.stats``).

    Attributes:
        confidence: interval level and 1 - significance level (0.95).
        min_effect: smallest relative change that counts (0.02 = 2%).
        resamples: bootstrap resamples per row.
        seed: the bootstrap's RNG seed (same seed, same intervals).
        strict: refuse runs on different GPUs; keep the GPU models of a
            heterogeneous run apart (see the module docstring).
        mcnemar_method: ``exact`` (binomial), ``chi2`` or ``auto``.
        repeat_floor: for kernel cases run with ``--repeat N`` (N >= 2), a
            change must also exceed the case's own repeat-to-repeat spread
            (``max / min - 1`` of the per-repeat medians, the larger of the two
            runs): a delta smaller than the drift between identical repeats is
            within noise however many samples make its interval narrow.
        allow_throttled: compare kernel cases sampled under power or thermal
            throttling (their records' ``conditions.thermal_or_power_throttled``;
            a case with several repeats counts as throttled when any OK repeat
            is) like any other, with a note; by default such a case is a row
            of status ``THROTTLED``: no verdict, left out of gates and of the
            verdict counts (``Summary.throttled`` counts it).
    """

    confidence: float = stats.DEFAULT_CONFIDENCE
    min_effect: float = stats.DEFAULT_MIN_EFFECT
    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = stats.DEFAULT_SEED
    strict: bool = False
    mcnemar_method: str = "exact"
    repeat_floor: bool = True
    allow_throttled: bool = False


@dataclass
class Side:
    """One side of a comparison: a run, or one variant of a run."""

    label: str
    run_id: str
    name: str
    command: list[str]
    environment: dict[str, Any]
    variant: str | None = None
    path: str | None = None
    status: str | None = None  # the run's: complete, interrupted, running


@dataclass
class Row:
    """One delta: a matched case and metric (or a case that could not be compared).

    Values are medians in ``unit``; ``delta_pct``, ``ci_low_pct`` and
    ``ci_high_pct`` are percent changes of the candidate against the baseline
    (the interval of ``delta_pct`` at ``confidence``); ``speedup`` > 1 is an
    improvement whatever the metric's direction. ``verdict`` is a
    ``stats.Verdict`` value for compared rows and None otherwise; ``status``
    then says why (``only in baseline``, ``not comparable`` with both statuses,
    ``THROTTLED`` with ``extra["throttled"]`` naming the side: ``baseline``,
    ``candidate`` or ``both``).
    """

    candidate: str
    stage: str
    kind: str
    op: str | None
    provider: str | None
    variant: str | None
    params: dict[str, Any]
    key: str
    metric: str | None = None
    unit: str | None = None
    higher_is_better: bool | None = None
    derived_from: str | None = None
    status: str = COMPARED
    base_status: str | None = None
    cand_status: str | None = None
    reason: str | None = None
    base_value: float | None = None
    cand_value: float | None = None
    ratio: float | None = None
    speedup: float | None = None
    delta_pct: float | None = None
    ci_low_pct: float | None = None
    ci_high_pct: float | None = None
    p_value: float | None = None
    method: str | None = None
    verdict: str | None = None
    n_base: int = 0
    n_cand: int = 0
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def compared(self) -> bool:
        return self.status == COMPARED

    @property
    def verdict_enum(self) -> stats.Verdict | None:
        return stats.Verdict(self.verdict) if self.verdict else None

    def status_text(self, short: bool = False) -> str:
        """What a table shows in place of a verdict for rows that were not compared.

        ``short`` (narrow tables): ``INCORRECT (cand)``, ``only in base``, ``throttled (cand)``.
        """
        if self.status == THROTTLED:
            side = self.extra.get("throttled", "both")
            if short:
                return f"throttled ({_SHORT_SIDE.get(side, 'both')})"
            return f"not comparable: throttled in {'both' if side == 'both' else side}"
        if self.status == NOT_OK:
            b, c = self.base_status, self.cand_status
            if b == c:
                return f"{b} (both)" if short else f"{b} in both"
            if b == "OK":
                return f"{c} (cand)" if short else f"{c} in candidate"
            if c == "OK":
                return f"{b} (base)" if short else f"{b} in baseline"
            return f"{b}/{c}" if short else f"{b} / {c}"
        if short:
            return self.status.replace("baseline", "base").replace("candidate", "cand")
        return self.status


_SHORT_SIDE = {"baseline": "base", "candidate": "cand"}


@dataclass
class EnvDiff:
    key: str
    baseline: Any
    candidates: dict[str, Any]


@dataclass
class Summary:
    """Verdict counts of one stage (kernel: its primary metric; end to end: every metric)."""

    counts: dict[str, int]
    geomean_speedup: float
    metric: str | None
    compared: int
    not_compared: int
    throttled: int = 0

    def line(self) -> str:
        words = {stats.Verdict.N1.value: "with n=1 (no verdict)", stats.Verdict.UNDEFINED.value: "without a verdict"}
        order = [v.value for v in stats.Verdict]
        parts = [f"{self.counts[v]} {words.get(v, v)}" for v in order if self.counts.get(v)]
        text = ", ".join(parts) or "nothing compared"
        if self.metric and math.isfinite(self.geomean_speedup):
            text += f" · geometric-mean speedup {self.geomean_speedup:.3f}× ({self.compared} cases)"
        if self.not_compared:
            text += f" · {self.not_compared} not compared"
        if self.throttled:
            text += f" · {self.throttled} throttled, not compared (--allow-throttled)"
        return text


@dataclass
class Comparison:
    """The result of ``compare`` / ``compare_variants``."""

    mode: str  # "runs" | "variants"
    baseline: Side
    candidates: list[Side]
    rows: list[Row]
    env_diffs: list[EnvDiff]
    options: CompareOptions
    stage_kinds: dict[str, str]
    evidence: dict[str, "VariantEvidence"] = field(default_factory=dict)

    def flag(self, variant: str | None) -> str | None:
        """The evidence flag of ``variant`` (None: not flagged or no evidence)."""
        ev = self.evidence.get(variant or "")
        return ev.flag if ev else None

    def stages(self) -> list[str]:
        return list(self.stage_kinds)

    def rows_of(self, candidate: str | None = None, stage: str | None = None) -> list[Row]:
        return [
            r for r in self.rows
            if (candidate is None or r.candidate == candidate) and (stage is None or r.stage == stage)
        ]

    def primary_metric(self, stage: str) -> str | None:
        """Kernel stages: ``time_us`` (else the first non-derived metric); end to end: None."""
        if self.stage_kinds.get(stage) != "kernel":
            return None
        names = [r.metric for r in self.rows_of(stage=stage) if r.metric and not r.derived_from]
        if PRIMARY_KERNEL_METRIC in names:
            return PRIMARY_KERNEL_METRIC
        return names[0] if names else None

    def summary(self, candidate: str, stage: str) -> Summary:
        rows = self.rows_of(candidate, stage)
        primary = self.primary_metric(stage)
        judged = [r for r in rows if r.compared and not r.derived_from and (primary is None or r.metric == primary)]
        counts: dict[str, int] = {}
        for r in judged:
            counts[r.verdict or ""] = counts.get(r.verdict or "", 0) + 1
        keys_not = {r.key for r in rows if not r.compared and r.status != THROTTLED}
        throttled = {r.key for r in rows if r.status == THROTTLED}
        geo = stats.geometric_mean([r.speedup for r in judged]) if primary else float("nan")
        return Summary(counts, geo, primary, len(judged), len(keys_not), len(throttled))

    def overall(self, candidate: str) -> Summary:
        """Counts over every stage (primary metrics of kernel stages, all e2e metrics)."""
        counts: dict[str, int] = {}
        compared = not_compared = throttled = 0
        for st in self.stages():
            s = self.summary(candidate, st)
            for k, v in s.counts.items():
                counts[k] = counts.get(k, 0) + v
            compared += s.compared
            not_compared += s.not_compared
            throttled += s.throttled
        return Summary(counts, float("nan"), None, compared, not_compared, throttled)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: sides, options, rows, environment differences and summaries."""
        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        summaries = {
            c.label: {st: {**asdict(self.summary(c.label, st))} for st in self.stages()} for c in self.candidates
        }
        out = {
            "mode": self.mode,
            "baseline": asdict(self.baseline),
            "candidates": [asdict(c) for c in self.candidates],
            "options": asdict(self.options),
            "stages": self.stage_kinds,
            "rows": [asdict(r) for r in self.rows],
            "environment_differences": [asdict(d) for d in self.env_diffs],
            "summary": summaries,
        }
        if self.evidence:
            out["evidence"] = {v: asdict(e) for v, e in self.evidence.items()}
        return clean(out)
