"""The comparison engine: run records in, delta rows with verdicts out. Pure: no torch.

Three uses, one engine:

* ``compare(baseline, [candidate])``: run against run (``normbench compare A B``);
* ``compare(baseline, [c1, c2, ...])``: N runs against one baseline;
* ``compare_variants(run, baseline_variant)``: the variants of one run (the
  end-to-end ``--compilation-config`` settings) against its baseline variant.

Matching
    Cases are matched by ``CaseRecord.fingerprint`` (``stage/op-or-kind/
    provider/variant/k=v,...``, see ``normbench.expand.Case``); for variants
    the variant segment is left out of the key. Repeats of a fingerprint
    (``case_id = fingerprint#repeat``) are one group: for kernel cases their
    metric samples are pooled, for end-to-end cases each repeat's value is one
    sample. Fingerprints present on one side only become rows that say so,
    never silently dropped; so do cases that are OK on one side and
    INCORRECT / FAILED / SKIPPED on the other (a status, not a number).

Rows (``Row``): one per matched case and metric: baseline and candidate
    medians (in the metric's unit), ``ratio = cand / base``, ``delta_pct`` (the
    signed change in the metric's own terms: +5% on ``time_us`` is 5% more
    time), ``speedup`` (> 1 is an improvement: ``base / cand`` for
    lower-is-better metrics such as times, ``cand / base`` for throughputs),
    the interval of ``delta_pct``, the verdict (``normbench.stats``) and the
    samples per side. A derived metric (``Metric.derived_from``, e.g. GB/s of
    ``time_us``) takes its source's verdict and interval, so one measurement
    is not judged twice. gsm8k metrics (``exact_match,strict-match`` /
    ``exact_match,flexible-extract``) whose cases carry per-item results
    (``items: [{"doc_id", "strict", "flexible"}]``) are judged by McNemar's
    test paired on the shared ``doc_id``s (the lowest repeat that has items).
    Kernel cases run with ``--repeat N`` add a per-case noise floor: a change
    must also exceed the spread between that case's repeat medians (in either
    run), so drift between identical repeats is never called a change
    (``CompareOptions.repeat_floor``; ``normbench noise`` shows those spreads).

Fusion evidence (``compare_variants`` only): per variant, what its server
    starts logged about vLLM's fusion passes (the records' ``evidence``, see
    ``normbench.runners.e2e``): patterns replaced per pass, the effective
    ``fuse_norm_quant``, the enabled fusions. A candidate variant is flagged
    (``VariantEvidence.flag``) when it asked for ``fuse_norm_quant`` and the
    norm+quant pass replaced nothing, or when its passes and replacement
    counts equal the baseline variant's: its deltas then compare the same
    fusion, and a difference is not the fusion's. Unknown evidence (vLLM's
    CPU platform, a compile-cache load, no pass debug lines) is shown with its
    reason and never flagged.

Environment differences (GPU, driver, CUDA, package versions, git commit,
    anything else in ``RunRecord.environment``) are listed, asv/pyperf style;
    ``strict=True`` refuses runs on different GPUs (``IncomparableError``);
    when a run's cases ran on several GPU models (a heterogeneous Ray
    cluster: each case's ``device_info.name``), it instead keeps them apart:
    cases match only on the same fingerprint *and* GPU model, and rows gain a
    ``gpu`` parameter.

Gating (``parse_fail_on`` / ``check_gates``): ``median:+5%`` or per metric
    (``time_us:+5%``, ``output_throughput:-3%``) fails only for a row whose
    verdict is a regression (significant and at least ``min_effect``) *and*
    whose change is beyond the threshold, and for a case that was OK in the
    baseline and is INCORRECT or FAILED in the candidate. Noise never fails.

Errors: ``IncomparableError`` (``--strict``), ``NormbenchError`` for bad gate
specs, unknown gated metrics, unknown variants.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from normbench import stats
from normbench.errors import IncomparableError, NormbenchError
from normbench.store import CaseRecord, Metric, RunRecord

#: The metric kernel tables are about; bandwidth (unit GB/s) is shown beside it.
PRIMARY_KERNEL_METRIC = "time_us"

def important_env_keys() -> tuple[str, ...]:
    """Environment keys shown first, in this order: the device, the footer's packages
    (``normbench.env.footer_packages``, derived from the provider registry), git, bandwidth."""
    from normbench.env import footer_packages

    return (
        "gpu.name", "gpu.sm", "gpu.sm_count", "driver", "cuda", "torch.cuda",
        *(f"packages.{p}" for p in footer_packages()), "git.commit", "git.dirty",
        "peak_bandwidth_gbps", "device", "cpu", "host",
    )

SEVERITY = {"INCORRECT": 3, "FAILED": 2, "SKIPPED": 1, "OK": 0}

# Row.status values
COMPARED = "compared"
ONLY_BASE = "only in baseline"
ONLY_CAND = "only in candidate"
NOT_OK = "not comparable"
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
    """

    confidence: float = stats.DEFAULT_CONFIDENCE
    min_effect: float = stats.DEFAULT_MIN_EFFECT
    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = stats.DEFAULT_SEED
    strict: bool = False
    mcnemar_method: str = "exact"
    repeat_floor: bool = True


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
    then says why (``only in baseline``, ``not comparable`` with both statuses).
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

        ``short`` (narrow tables): ``INCORRECT (cand)``, ``only in base``.
        """
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

    def line(self) -> str:
        words = {stats.Verdict.N1.value: "with n=1 (no verdict)", stats.Verdict.UNDEFINED.value: "without a verdict"}
        order = [v.value for v in stats.Verdict]
        parts = [f"{self.counts[v]} {words.get(v, v)}" for v in order if self.counts.get(v)]
        text = ", ".join(parts) or "nothing compared"
        if self.metric and math.isfinite(self.geomean_speedup):
            text += f" · geometric-mean speedup {self.geomean_speedup:.3f}× ({self.compared} cases)"
        if self.not_compared:
            text += f" · {self.not_compared} not compared"
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
        keys_not = {r.key for r in rows if not r.compared}
        geo = stats.geometric_mean([r.speedup for r in judged]) if primary else float("nan")
        return Summary(counts, geo, primary, len(judged), len(keys_not))

    def overall(self, candidate: str) -> Summary:
        """Counts over every stage (primary metrics of kernel stages, all e2e metrics)."""
        counts: dict[str, int] = {}
        compared = not_compared = 0
        for st in self.stages():
            s = self.summary(candidate, st)
            for k, v in s.counts.items():
                counts[k] = counts.get(k, 0) + v
            compared += s.compared
            not_compared += s.not_compared
        return Summary(counts, float("nan"), None, compared, not_compared)

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


# --------------------------------------------------------------------------- environment
def flatten(env: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; keys that already hold dots are kept as they are."""
    out: dict[str, Any] = {}
    for k, v in env.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def env_get(env: dict[str, Any], key: str, default: Any = None) -> Any:
    """``env["gpu.name"]`` whether the environment is flat (``{"gpu.name": ..}``) or nested."""
    if key in env:
        return env[key]
    node: Any = env
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return flatten(env).get(key, default)
        node = node[part]
    return node


def gpu_name(env: dict[str, Any]) -> str | None:
    return env_get(env, "gpu.name") or env_get(env, "gpu_name")


def _env_value(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.4g}")
    return v


def env_differences(base: dict[str, Any], cands: dict[str, dict[str, Any]]) -> list[EnvDiff]:
    """Every environment key whose value differs between the baseline and a candidate.

    Floats are compared at 4 significant digits (a re-measured copy bandwidth
    of 2998.7 vs 2998.9 GB/s is the same machine). Important keys come first.
    """
    fb = flatten(base)
    fcs = {label: flatten(e) for label, e in cands.items()}
    keys = list(dict.fromkeys([*fb, *(k for f in fcs.values() for k in f)]))
    rank = {k: i for i, k in enumerate(important_env_keys())}
    keys.sort(key=lambda k: (rank.get(k, len(rank)), k))
    diffs = []
    for k in keys:
        b = _env_value(fb.get(k))
        vals = {label: _env_value(f.get(k)) for label, f in fcs.items()}
        if any(v != b for v in vals.values()):
            diffs.append(EnvDiff(k, fb.get(k), {label: f.get(k) for label, f in fcs.items()}))
    return diffs


# --------------------------------------------------------------------------- grouping
@dataclass
class _Group:
    """The repeats of one fingerprint on one side."""

    key: str
    cases: list[CaseRecord]

    @property
    def first(self) -> CaseRecord:
        return self.cases[0]

    @property
    def ok(self) -> list[CaseRecord]:
        return [c for c in self.cases if c.status == "OK"]

    def status(self) -> tuple[str, str | None, str | None]:
        """(status, reason, note): INCORRECT anywhere wins; else OK if any repeat is OK."""
        bad = sorted((c for c in self.cases if c.status != "OK"), key=lambda c: -SEVERITY.get(c.status, 0))
        if bad and bad[0].status == "INCORRECT":
            return "INCORRECT", bad[0].reason, None
        if self.ok:
            note = None
            if bad:
                note = f"{len(bad)} of {len(self.cases)} repeats {bad[0].status}: {_first_line(bad[0].reason)}"
            return "OK", None, note
        return bad[0].status, bad[0].reason, None

    def metrics(self) -> dict[str, Metric]:
        """Metric name -> a representative Metric (for unit, direction, derived_from)."""
        out: dict[str, Metric] = {}
        for c in self.ok:
            for name, m in c.metrics.items():
                out.setdefault(name, m)
        return out

    def samples(self, name: str) -> list[float]:
        """Kernel: every sample of every OK repeat, pooled; end to end: one value per repeat."""
        ms = [c.metrics[name] for c in sorted(self.ok, key=lambda c: c.repeat) if name in c.metrics]
        if self.first.kind == "kernel" and any(m.samples for m in ms):
            return [float(x) for m in ms for x in m.samples if x is not None and math.isfinite(x)]
        return [float(m.value) for m in ms if m.value is not None and math.isfinite(m.value)]

    def repeat_spread(self, name: str) -> float | None:
        """Kernel: ``max / min - 1`` of the per-repeat medians of ``name`` (None with < 2 repeats)."""
        if self.first.kind != "kernel":
            return None
        meds = [stats.median(c.metrics[name].samples) for c in self.ok
                if name in c.metrics and c.metrics[name].samples]
        if len(meds) < 2 or min(meds) <= 0:
            return None
        return max(meds) / min(meds) - 1.0

    def items(self) -> list[dict[str, Any]] | None:
        for c in sorted(self.ok, key=lambda c: c.repeat):
            items = c.items
            if items:
                return items
        return None


def _first_line(s: str | None) -> str:
    return (s or "").strip().splitlines()[0] if (s or "").strip() else ""


def variantless_key(c: CaseRecord) -> str:
    """The fingerprint without its variant segment (how variants of one run match)."""
    head = f"{c.stage}/{c.op or c.kind}/{c.provider or '-'}/{c.variant or '-'}/"
    if c.fingerprint.startswith(head):
        return f"{c.stage}/{c.op or c.kind}/{c.provider or '-'}/*/" + c.fingerprint[len(head):]
    tail = ",".join(f"{k}={v}" for k, v in c.params.items())
    return f"{c.stage}/{c.op or c.kind}/{c.provider or '-'}/*/{tail}"


def _groups(cases: Iterable[CaseRecord], keyfn) -> dict[str, _Group]:
    out: dict[str, _Group] = {}
    for c in cases:
        k = keyfn(c)
        out.setdefault(k, _Group(k, [])).cases.append(c)
    return out


# --------------------------------------------------------------------------- rows
def _identity(g: _Group, candidate: str, variant: str | None) -> dict[str, Any]:
    c = g.first
    return dict(
        candidate=candidate, stage=c.stage, kind=c.kind, op=c.op, provider=c.provider,
        variant=variant, params=dict(c.params), key=g.key,
    )


def _pct(r: float | None) -> float | None:
    return None if r is None or not math.isfinite(r) else 100.0 * (r - 1.0)


def _speedup(ratio: float, higher_is_better: bool) -> float | None:
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    return ratio if higher_is_better else 1.0 / ratio


def _items_key(metric: str) -> str | None:
    m = metric.lower()
    if "strict" in m:
        return "strict"
    if "flexible" in m:
        return "flexible"
    return None


def _paired(base_items: list[dict], cand_items: list[dict], field_: str) -> tuple[list[int], list[int]]:
    def index(items: list[dict]) -> dict[str, int]:
        out = {}
        for it in items:
            if "doc_id" in it and field_ in it and it[field_] is not None:
                out[str(it["doc_id"])] = int(it[field_])
        return out

    a, b = index(base_items), index(cand_items)
    shared = [k for k in a if k in b]
    return [a[k] for k in shared], [b[k] for k in shared]


def _start_row(
    name: str, bg: _Group, cg: _Group, bm: Metric, ident: dict[str, Any]
) -> tuple[Row, list[float], list[float]]:
    """A metric's row with both medians filled, or marked as present on one side only."""
    row = Row(**ident, metric=name, unit=bm.unit, higher_is_better=bm.higher_is_better,
              derived_from=bm.derived_from, base_status="OK", cand_status="OK")
    bs, cs = bg.samples(name), cg.samples(name)
    if not bs or not cs:
        row.status = METRIC_ONLY_CAND if not bs else METRIC_ONLY_BASE
        row.note = "no value on one side"
        return row, bs, cs
    row.base_value, row.cand_value = stats.median(bs), stats.median(cs)
    row.n_base, row.n_cand = len(bs), len(cs)
    return row, bs, cs


def _compare_metric(
    name: str, bg: _Group, cg: _Group, bm: Metric, opts: CompareOptions, ident: dict[str, Any]
) -> Row:
    row, bs, cs = _start_row(name, bg, cg, bm, ident)
    if not bs or not cs:
        return row
    speed = stats.is_speed_unit(bm.unit)

    key = _items_key(name)
    bi, ci = (bg.items(), cg.items()) if key else (None, None)
    if key and bi and ci:
        a, b = _paired(bi, ci, key)
        if a:
            r = stats.mcnemar(a, b, method=opts.mcnemar_method)  # type: ignore[arg-type]
            row.method = f"mcnemar-{r.method}"
            row.p_value = r.p_value
            row.n_base = row.n_cand = r.n
            row.extra = {"paired_items": r.n, "base_only_correct": r.b, "cand_only_correct": r.c,
                         "base_rate": r.base_rate, "cand_rate": r.cand_rate}
            v = stats.mcnemar_verdict(r, opts.confidence, opts.min_effect)
            _fill_ratio(row, row.cand_value / row.base_value if row.base_value else float("nan"))
            row.verdict = v.value
            return row

    ri = stats.ratio_test(bs, cs, opts.confidence, opts.resamples, opts.seed)
    row.method = "bootstrap" if ri.resamples else "single"
    row.p_value = ri.p_value if math.isfinite(ri.p_value) else None
    _fill_ratio(row, ri.ratio)
    row.ci_low_pct, row.ci_high_pct = _pct(ri.low), _pct(ri.high)
    threshold = opts.min_effect
    if opts.repeat_floor:
        spreads = [x for x in (bg.repeat_spread(name), cg.repeat_spread(name)) if x is not None]
        if spreads:
            row.extra["repeat_spread_pct"] = 100.0 * max(spreads)
            threshold = max(threshold, max(spreads))
    verdict = stats.ratio_verdict(ri, bm.higher_is_better, threshold, speed)
    if threshold > opts.min_effect and verdict is stats.Verdict.NOISE and \
            stats.ratio_verdict(ri, bm.higher_is_better, opts.min_effect, speed) is not stats.Verdict.NOISE:
        row.note = f"within the {100 * threshold:.1f}% spread between repeats"
    row.verdict = verdict.value
    return row


def _derived_values(name: str, bg: _Group, cg: _Group, bm: Metric, ident: dict[str, Any]) -> Row:
    """A derived metric's medians and ratio; ``_apply_derived`` gives it its source's verdict."""
    row, bs, cs = _start_row(name, bg, cg, bm, ident)
    if not bs or not cs:
        return row
    _fill_ratio(row, row.cand_value / row.base_value if row.base_value else float("nan"))
    return row


def _fill_ratio(row: Row, ratio: float) -> None:
    if not math.isfinite(ratio):
        row.verdict = stats.Verdict.UNDEFINED.value
        return
    row.ratio = ratio
    row.delta_pct = _pct(ratio)
    row.speedup = _speedup(ratio, bool(row.higher_is_better))


def _apply_derived(rows: list[Row]) -> None:
    """Derived metrics take their source's verdict, interval (mapped) and n."""
    by_metric = {r.metric: r for r in rows if r.compared}
    for r in rows:
        if not (r.compared and r.derived_from):
            continue
        src = by_metric.get(r.derived_from)
        if src is None or src.verdict is None:
            continue
        r.verdict = src.verdict
        r.method = f"derived from {r.derived_from}"
        r.n_base, r.n_cand, r.p_value = src.n_base, src.n_cand, src.p_value
        if src.ci_low_pct is not None and src.ci_high_pct is not None:
            lo, hi = 1 + src.ci_low_pct / 100, 1 + src.ci_high_pct / 100
            if bool(r.higher_is_better) != bool(src.higher_is_better):  # reciprocal (GB/s = bytes / time)
                lo, hi = 1 / hi, 1 / lo
            r.ci_low_pct, r.ci_high_pct = _pct(lo), _pct(hi)


def _status_row(ident: dict[str, Any], bg: _Group | None, cg: _Group | None) -> Row:
    row = Row(**ident)
    if bg is None or cg is None:
        row.status = ONLY_CAND if bg is None else ONLY_BASE
        g = bg or cg
        assert g is not None
        st, reason, _ = g.status()
        if bg is None:
            row.cand_status = st
        else:
            row.base_status = st
        row.reason = _first_line(reason) or None
        _side_values(row, g, bg is not None)
        return row
    bst, breason, _ = bg.status()
    cst, creason, _ = cg.status()
    row.status = NOT_OK
    row.base_status, row.cand_status = bst, cst
    row.reason = _first_line(creason if cst != "OK" else breason) or None
    ok = bg if bst == "OK" else cg if cst == "OK" else None
    if ok is not None:
        row.extra["metrics"] = sorted(ok.metrics())
        _side_values(row, ok, ok is bg)
    return row


def _side_values(row: Row, g: _Group, is_base: bool) -> None:
    """Show the primary value of the side that has one (kernel: time_us)."""
    ms = g.metrics()
    name = PRIMARY_KERNEL_METRIC if PRIMARY_KERNEL_METRIC in ms else next((n for n, m in ms.items() if not m.derived_from), None)
    if name is None:
        return
    s = g.samples(name)
    if not s:
        return
    row.metric, row.unit, row.higher_is_better = name, ms[name].unit, ms[name].higher_is_better
    if is_base:
        row.base_value, row.n_base = stats.median(s), len(s)
    else:
        row.cand_value, row.n_cand = stats.median(s), len(s)


def _compare_groups(
    bgroups: dict[str, _Group], cgroups: dict[str, _Group], candidate: str, opts: CompareOptions,
    variant_of: callable,  # type: ignore[valid-type]
) -> list[Row]:
    rows: list[Row] = []
    keys = list(dict.fromkeys([*bgroups, *cgroups]))
    for k in keys:
        bg, cg = bgroups.get(k), cgroups.get(k)
        ident = _identity(bg or cg, candidate, variant_of(cg or bg))  # type: ignore[arg-type]
        if bg is None or cg is None:
            rows.append(_status_row(ident, bg, cg))
            continue
        bst, _, bnote = bg.status()
        cst, _, cnote = cg.status()
        if bst != "OK" or cst != "OK":
            rows.append(_status_row(ident, bg, cg))
            continue
        bms, cms = bg.metrics(), cg.metrics()
        case_rows = []
        for name in dict.fromkeys([*bms, *cms]):
            if name not in bms or name not in cms:
                m = bms.get(name) or cms[name]
                case_rows.append(Row(**ident, metric=name, unit=m.unit, higher_is_better=m.higher_is_better,
                                     derived_from=m.derived_from,
                                     status=METRIC_ONLY_BASE if name in bms else METRIC_ONLY_CAND,
                                     base_status=bst, cand_status=cst))
                continue
            src = bms[name].derived_from
            if src and src in bms and src in cms:
                r = _derived_values(name, bg, cg, bms[name], ident)  # judged through its source below
            else:
                r = _compare_metric(name, bg, cg, bms[name], opts, ident)
            note = "; ".join(n for n in (bnote and f"baseline: {bnote}", cnote and f"candidate: {cnote}") if n)
            if note:
                r.note = note if not r.note else f"{r.note}; {note}"
            case_rows.append(r)
        _apply_derived(case_rows)
        rows.extend(case_rows)
    return rows


def _side(run: RunRecord, label: str | None = None, variant: str | None = None) -> Side:
    return Side(label or run.run_id, run.run_id, run.name, list(run.command), dict(run.environment), variant, run.path,
                run.status)


def _stage_kinds(runs: Sequence[RunRecord]) -> dict[str, str]:
    out: dict[str, str] = {}
    for run in runs:
        for c in run.cases:
            out.setdefault(c.stage, c.kind)
    return out


def _check_options(opts: CompareOptions) -> None:
    if not 0.0 < opts.confidence < 1.0:
        raise NormbenchError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {opts.confidence}")
    if not 0.0 <= opts.min_effect < 1.0:
        raise NormbenchError(f"--min-effect must be between 0% and 100%, got {opts.min_effect:.0%}")
    if opts.resamples < 100:
        raise NormbenchError(f"resamples must be at least 100, got {opts.resamples}")


def compare(baseline: RunRecord, candidates: Sequence[RunRecord], options: CompareOptions | None = None) -> Comparison:
    """Each candidate run against the baseline run, case by case.

    Raises:
        IncomparableError: ``options.strict`` and the runs' GPUs differ.
        NormbenchError: no candidates, or bad options.
    """
    opts = options or CompareOptions()
    _check_options(opts)
    if not candidates:
        raise NormbenchError("compare needs a baseline run and at least one candidate run")
    base_side = _side(baseline)
    sides = []
    seen: dict[str, int] = {}
    for c in candidates:
        label = c.run_id if c.run_id != baseline.run_id and c.run_id not in seen else f"{c.run_id}[{len(seen) + 1}]"
        seen[c.run_id] = 1
        sides.append(_side(c, label))
    models = [_gpu_models(r) for r in (baseline, *candidates)]
    split = opts.strict and any(len(m) > 1 for m in models)
    if opts.strict and not split:
        def one(run: RunRecord, m: set) -> str | None:
            return next(iter(m)) if m else gpu_name(run.environment)

        g0 = one(baseline, models[0])
        bad = [(s.label, g) for s, r, m in zip(sides, candidates, models[1:]) if (g := one(r, m)) != g0]
        if bad:
            listing = "; ".join(f"{lbl}: {g or 'no GPU'}" for lbl, g in bad)
            raise IncomparableError(
                f"--strict: the runs were measured on different GPUs (baseline {baseline.run_id}: {g0 or 'no GPU'}; "
                f"{listing}); drop --strict to compare them anyway"
            )

    def keyer(run: RunRecord):
        if not split:
            return lambda c: c.fingerprint
        return lambda c: f"{c.fingerprint} @ {case_gpu(c, run.environment) or 'no GPU'}"

    bgroups = _groups(baseline.cases, keyer(baseline))
    rows: list[Row] = []
    for run, side in zip(candidates, sides):
        cgroups = _groups(run.cases, keyer(run))
        rows += _compare_groups(bgroups, cgroups, side.label, opts, lambda g: g.first.variant)
    if split:
        for r in rows:
            r.params = {**r.params, "gpu": r.key.rsplit(" @ ", 1)[1]}
    diffs = env_differences(baseline.environment, {s.label: s.environment for s in sides})
    return Comparison("runs", base_side, sides, rows, diffs, opts, _stage_kinds([baseline, *candidates]))


def case_gpu(case: CaseRecord, environment: dict[str, Any]) -> str | None:
    """The GPU model a case ran on: its worker's ``device_info.name``, else its ``device``, else the run's GPU.

    (``device`` is what the runner recorded: the GPU's name, e.g. ``NVIDIA H100 80GB HBM3``, or ``cpu``.)
    """
    info = getattr(case, "device_info", None) or {}
    return info.get("name") or case.device or gpu_name(environment)


def _gpu_models(run: RunRecord) -> set[str]:
    return {g for c in run.cases if c.status != "SKIPPED" and (g := case_gpu(c, run.environment))}


def run_variants(run: RunRecord) -> list[str]:
    """The variants of a run's cases, in order of appearance."""
    return list(dict.fromkeys(c.variant for c in run.cases if c.variant))


def default_baseline_variant(run: RunRecord) -> str | None:
    """The suite's ``baseline`` variant if set and present, else the first variant."""
    variants = run_variants(run)
    chosen = run.suite.spec.get("baseline") if isinstance(run.suite.spec, dict) else None
    if chosen in variants:
        return chosen
    return variants[0] if variants else None


def compare_variants(
    run: RunRecord, baseline_variant: str | None = None, options: CompareOptions | None = None
) -> Comparison:
    """Every other variant of ``run`` against ``baseline_variant`` (default: the suite's baseline).

    Cases are matched on the fingerprint without its variant segment; cases
    without a variant (kernel stages) are not part of a variant comparison.

    Raises:
        NormbenchError: the run has fewer than two variants, or the baseline
            variant is not one of them.
    """
    opts = options or CompareOptions()
    _check_options(opts)
    variants = run_variants(run)
    if len(variants) < 2:
        raise NormbenchError(
            f"run {run.run_id} has {len(variants) or 'no'} variant{'s' if len(variants) != 1 else ''}"
            f"{' (' + variants[0] + ')' if variants else ''}: --variants needs at least two"
        )
    base_v = baseline_variant or default_baseline_variant(run)
    if base_v not in variants:
        close = difflib.get_close_matches(base_v or "", variants, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise NormbenchError(f"unknown baseline variant '{base_v}'.{hint} Variants of {run.run_id}: {', '.join(variants)}")
    by_variant: dict[str, list[CaseRecord]] = {v: [] for v in variants}
    for c in run.cases:
        if c.variant:
            by_variant[c.variant].append(c)
    bgroups = _groups(by_variant[base_v], variantless_key)
    base_side = _side(run, base_v, base_v)
    sides, rows = [], []
    for v in variants:
        if v == base_v:
            continue
        sides.append(_side(run, v, v))
        cgroups = _groups(by_variant[v], variantless_key)
        rows += _compare_groups(bgroups, cgroups, v, opts, lambda g, v=v: v)
    kinds = {c.stage: c.kind for c in run.cases if c.variant}
    return Comparison("variants", base_side, sides, rows, [], opts, kinds,
                      variant_evidence(run, variants, base_v))


# --------------------------------------------------------------------------- fusion evidence
#: Records whose evidence is a server start's (a latency engine's is used only when a variant has none).
SERVER_START_KINDS = ("startup", "throughput", "accuracy")
FLAG_ZERO = "fusion requested, 0 patterns replaced"
FLAG_SAME = "same fusion passes and patterns replaced as the baseline: no fusion difference to measure"


@dataclass
class VariantEvidence:
    """What one variant's engine starts logged about fusion (from the records' ``evidence``).

    Attributes:
        starts: engine starts with evidence (one per server start and repeat).
        source: ``server`` or ``latency`` (engines of ``vllm bench latency``, used
            when the variant has no server start).
        fusion: the distinct ``{pass: patterns replaced}`` of the starts whose
            fusion is known, in repeat order (one entry when every start agrees).
        unknown: starts whose fusion could not be known; ``note`` says why (the
            first such start's note, e.g. ``no fusion pass on this platform``).
        fuse_norm_quant: the effective ``pass_config.fuse_norm_quant`` (None: not logged).
        enabled_fusions: vLLM's ``Enabled custom fusions`` (None: not logged).
        compile: how each start got its graph: ``compiled`` / ``cache`` (counts).
        flag: why this variant's deltas do not measure the fusion (see the module docstring), or None.
    """

    variant: str
    starts: int
    source: str
    fusion: list[dict[str, int]]
    unknown: int
    note: str | None
    fuse_norm_quant: bool | None
    enabled_fusions: list[str] | None
    compile: dict[str, int]
    flag: str | None = None

    @property
    def known(self) -> bool:
        """Every start's fusion is known (and there is at least one)."""
        return self.starts > 0 and self.unknown == 0


def _norm_quant_total(fusion: dict[str, int]) -> int | None:
    """Patterns the RMSNorm+quant passes replaced (None: no such pass ran)."""
    counts = [n for name, n in fusion.items() if "norm" in name.lower() and "quant" in name.lower()]
    return sum(counts) if counts else None


def _evidence_of(cases: list[CaseRecord]) -> list[dict[str, Any]]:
    """One evidence dict per engine start, in repeat order (cases of one server start share it)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for c in sorted(cases, key=lambda c: c.repeat):
        ev = c.evidence
        if not isinstance(ev, dict):
            continue
        server = c.server or {}
        key = (c.repeat, server.get("pid"), ev.get("source")) if c.kind in SERVER_START_KINDS else (c.case_id,)
        seen.setdefault(key, ev)
    return list(seen.values())


def variant_evidence(run: RunRecord, variants: list[str], baseline: str) -> dict[str, VariantEvidence]:
    """Each variant's ``VariantEvidence`` (variants without any evidence are left out) with flags vs ``baseline``."""
    out: dict[str, VariantEvidence] = {}
    for v in variants:
        cases = [c for c in run.cases if c.variant == v]
        evs, source = _evidence_of([c for c in cases if c.kind in SERVER_START_KINDS]), "server"
        if not evs:
            evs, source = _evidence_of([c for c in cases if c.kind == "latency"]), "latency"
        if not evs:
            continue
        fusions: list[dict[str, int]] = []
        unknown, note = 0, None
        for ev in evs:
            f = ev.get("fusion")
            if isinstance(f, dict):
                f = {str(k): int(n) for k, n in f.items()}
                if f not in fusions:
                    fusions.append(f)
            else:
                unknown += 1
                note = note or ev.get("note")
        compiled: dict[str, int] = {}
        for ev in evs:
            compiled[ev.get("compile") or "unknown"] = compiled.get(ev.get("compile") or "unknown", 0) + 1
        last = evs[-1]
        out[v] = VariantEvidence(v, len(evs), source, fusions, unknown, note, last.get("fuse_norm_quant"),
                                 last.get("enabled_fusions"), compiled)
    base = out.get(baseline)

    def distinct(ev: VariantEvidence) -> set[str]:
        return {json.dumps(f, sort_keys=True) for f in ev.fusion}

    for v, ev in out.items():
        if not ev.known:
            continue
        if ev.fuse_norm_quant and any(not _norm_quant_total(f) for f in ev.fusion):
            ev.flag = FLAG_ZERO  # the baseline too: it then measures something else than it says
        elif v != baseline and base is not None and base.known and distinct(ev) == distinct(base):
            ev.flag = FLAG_SAME
    return out


# --------------------------------------------------------------------------- noise floor
@dataclass
class NoiseRow:
    """A/A spread of one case and metric.

    Attributes:
        repeats: repeats with a value; ``samples``: samples pooled over them.
        repeat_medians: per repeat (kernel: median of its samples; e2e: its value).
        spread_pct: ``100 * (max / min - 1)`` of the repeat medians (None with one repeat).
        aa_delta_pct: the A/A delta between the two halves (even vs odd repeats,
            or with one repeat even vs odd samples), and ``halfwidth_pct`` half
            the width of its bootstrap interval.
        resolves_pct: ``max(spread_pct, |aa_delta_pct| + halfwidth_pct)``: an
            effect smaller than this cannot be told from repeat-to-repeat drift.
        method: ``repeats`` or ``split samples`` (one repeat: within-run noise only).
    """

    stage: str
    kind: str
    op: str | None
    provider: str | None
    variant: str | None
    params: dict[str, Any]
    fingerprint: str
    metric: str
    unit: str
    repeats: int
    samples: int
    repeat_medians: list[float]
    spread_pct: float | None
    aa_delta_pct: float | None
    halfwidth_pct: float | None
    resolves_pct: float | None
    method: str


@dataclass
class NoiseReport:
    run_id: str
    gpu: str | None
    confidence: float
    rows: list[NoiseRow]

    def resolvable(self, q: float = 95.0) -> float:
        """The ``q``-th percentile over cases of ``resolves_pct`` (percent)."""
        return stats.percentile([r.resolves_pct for r in self.rows if r.resolves_pct is not None], q)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolvable_p95_pct"] = self.resolvable(95.0)
        d["resolvable_median_pct"] = self.resolvable(50.0)
        return _json_clean(d)


def _json_clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_clean(v) for v in x]
    return x


def noise(run: RunRecord, confidence: float = stats.DEFAULT_CONFIDENCE,
          resamples: int = 2000, seed: int = stats.DEFAULT_SEED) -> NoiseReport:
    """A/A spread between repeats of identical cases of one run (``normbench noise``).

    For each OK fingerprint and non-derived metric: the repeat medians, their
    max/min spread, and an A/A ratio test (``stats.ratio_test``) between even
    and odd repeats (kernel: pooled samples; end to end: per-repeat values,
    needs 4 repeats). A kernel case run once is split into even and odd
    samples instead, which sees within-run noise only (``normbench run
    --repeat N`` measures drift between repeats).
    """
    groups = _groups(run.cases, lambda c: c.fingerprint)
    rows: list[NoiseRow] = []
    for key, g in groups.items():
        st, _, _ = g.status()
        if st != "OK":
            continue
        ok = sorted(g.ok, key=lambda c: c.repeat)
        for name, m in g.metrics().items():
            if m.derived_from:
                continue
            per_repeat: list[list[float]] = []
            for c in ok:
                mm = c.metrics.get(name)
                if mm is None:
                    continue
                if g.first.kind == "kernel" and mm.samples:
                    per_repeat.append([float(x) for x in mm.samples])
                elif mm.value is not None:
                    per_repeat.append([float(mm.value)])
            if not per_repeat:
                continue
            medians = [stats.median(s) for s in per_repeat]
            spread = 100.0 * (max(medians) / min(medians) - 1.0) if len(medians) > 1 and min(medians) > 0 else None
            if len(per_repeat) >= 2 and (g.first.kind == "kernel" or len(per_repeat) >= 4):
                a = [x for s in per_repeat[0::2] for x in s]
                b = [x for s in per_repeat[1::2] for x in s]
                method = "repeats"
            elif len(per_repeat) == 1 and len(per_repeat[0]) >= 4:
                a, b = per_repeat[0][0::2], per_repeat[0][1::2]
                method = "split samples"
            else:
                a = b = []
                method = "repeats" if len(per_repeat) > 1 else "n=1"
            aa = hw = None
            if len(a) >= 2 and len(b) >= 2:
                ri = stats.ratio_test(a, b, confidence, resamples, seed)
                aa = _pct(ri.ratio)
                hw = 100.0 * ri.half_width if math.isfinite(ri.half_width) else None
            candidates = [x for x in (spread, (abs(aa) + hw) if aa is not None and hw is not None else None) if x is not None]
            resolves = max(candidates) if candidates else None
            rows.append(NoiseRow(
                g.first.stage, g.first.kind, g.first.op, g.first.provider, g.first.variant, dict(g.first.params),
                key, name, m.unit, len(per_repeat), sum(len(s) for s in per_repeat), medians,
                spread, aa, hw, resolves, method,
            ))
    return NoiseReport(run.run_id, gpu_name(run.environment), confidence, rows)


# --------------------------------------------------------------------------- gating
@dataclass(frozen=True)
class Gate:
    """One ``--fail-on`` rule.

    Attributes:
        metric: a metric name, or None for ``median`` (every non-derived metric).
        threshold_pct: the change (percent, > 0) beyond which a regression fails.
        sign: +1 / -1 if the spec gave one (the failing direction in the
            metric's own terms), 0 for "the metric's worse direction".
        text: the spec as written.
    """

    metric: str | None
    threshold_pct: float
    sign: int
    text: str


@dataclass
class GateFailure:
    gate: Gate
    row: Row
    why: str


_GATE_RE = re.compile(r"^\s*(?P<metric>.+?)\s*:\s*(?P<sign>[+-]?)\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_fail_on(specs: str | Sequence[str] | None) -> list[Gate]:
    """Parse ``--fail-on`` specs: ``median:+5%``, ``time_us:+5%``, ``output_throughput:-3%``.

    Several rules may be given as repeated options or separated by ``;`` or by
    a comma after the ``%`` (metric names such as ``exact_match,strict-match``
    contain commas). ``median`` (or ``*``) covers every non-derived metric in
    its worse direction.

    Raises:
        NormbenchError: a rule that does not parse (exit code 2).
    """
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    gates = []
    for spec in specs:
        for part in re.split(r"(?<=%)\s*[,;]\s*|;", spec):
            if not part.strip():
                continue
            m = _GATE_RE.match(part)
            if not m:
                raise NormbenchError(
                    f"--fail-on '{part.strip()}': expected METRIC:[+|-]N% (e.g. median:+5%, time_us:+5%, "
                    "output_throughput:-3%)"
                )
            threshold = float(m["num"])
            if threshold <= 0:
                raise NormbenchError(f"--fail-on '{part.strip()}': the threshold must be above 0%")
            metric = m["metric"].strip()
            sign = {"+": 1, "-": -1, "": 0}[m["sign"]]
            if metric.lower() in ("median", "*"):
                gates.append(Gate(None, threshold, sign, part.strip()))
            else:
                gates.append(Gate(metric, threshold, sign, part.strip()))
    return gates


def check_gates(cmp: Comparison, gates: Sequence[Gate]) -> list[GateFailure]:
    """The rows that fail the gates (empty: pass).

    A compared row fails when its verdict is ``slower``/``worse`` (significant
    at the comparison's confidence and at least ``min_effect``) and its change
    is beyond the threshold in the gated direction. A case OK in the baseline
    and INCORRECT or FAILED in the candidate fails a gate that covers one of its
    metrics. ``within noise`` and ``n=1, no verdict`` never fail.

    Raises:
        NormbenchError: a gate names a metric no row has (with did-you-mean), or
            gives a sign that is the metric's better direction.
    """
    failures: list[GateFailure] = []
    metrics = {r.metric: r for r in cmp.rows if r.metric}
    for gate in gates:
        if gate.metric is not None and gate.metric not in metrics:
            known = sorted(m for m in metrics if m)
            close = difflib.get_close_matches(gate.metric, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise NormbenchError(f"--fail-on '{gate.text}': no metric '{gate.metric}' in these runs.{hint} Metrics: {', '.join(known)}")
        if gate.metric is not None and gate.sign:
            ref = metrics[gate.metric]
            worse = -1 if ref.higher_is_better else 1
            if gate.sign != worse:
                direction = "higher" if ref.higher_is_better else "lower"
                want = "-" if ref.higher_is_better else "+"
                raise NormbenchError(
                    f"--fail-on '{gate.text}': {gate.metric} is {direction}-is-better, so a regression is "
                    f"{'a decrease' if ref.higher_is_better else 'an increase'}: write {gate.metric}:{want}{gate.threshold_pct:g}%"
                )
        if gate.metric is None and gate.sign < 0:
            raise NormbenchError(
                f"--fail-on '{gate.text}': 'median' gates every metric in its worse direction; write median:+{gate.threshold_pct:g}%"
            )
        for row in cmp.rows:
            if row.status == NOT_OK:
                if row.base_status == "OK" and row.cand_status in ("INCORRECT", "FAILED"):
                    covered = gate.metric is None or gate.metric in row.extra.get("metrics", [])
                    if covered:
                        failures.append(GateFailure(gate, row, f"{row.cand_status} in candidate"))
                continue
            if not row.compared or row.metric is None:
                continue
            if gate.metric is None and row.derived_from:
                continue  # judged through its source metric
            if gate.metric is not None and row.metric != gate.metric:
                continue
            v = row.verdict_enum
            if v is None or not v.is_regression or row.delta_pct is None:
                continue
            if abs(row.delta_pct) > gate.threshold_pct:
                failures.append(GateFailure(
                    gate, row, f"{row.metric} {row.delta_pct:+.1f}% ({v.value}, beyond {gate.threshold_pct:g}%)"
                ))
    return failures
