"""Matching runs and cases by fingerprint, and the delta rows with verdicts built from them:
``compare`` (runs against a baseline run) and ``compare_variants`` (the variants of one run);
see ``normbench.compare``. Pure: no torch."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from normbench import stats
from normbench.compare.environment import env_differences, gpu_name, with_conditions
from normbench.compare.evidence import variant_evidence
from normbench.compare.model import (
    METRIC_ONLY_BASE,
    METRIC_ONLY_CAND,
    NOT_OK,
    ONLY_BASE,
    ONLY_CAND,
    PRIMARY_KERNEL_METRIC,
    SEVERITY,
    THROTTLED,
    CompareOptions,
    Comparison,
    Row,
    Side,
)
from normbench.conditions import case_throttle_reasons, case_throttled
from normbench.errors import IncomparableError, NormbenchError
from normbench.process import reason_line
from normbench.store import CaseRecord, Metric, RunRecord


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
                note = f"{len(bad)} of {len(self.cases)} repeats {bad[0].status}: {reason_line(bad[0].reason)}"
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

    def throttled(self) -> tuple[int, int, list[str]]:
        """``(k, n, reasons)``: k of the n OK repeats were sampled under power or thermal throttling
        (``normbench.conditions``), with their reasons."""
        hit = [c for c in self.ok if case_throttled(c)]
        reasons = list(dict.fromkeys(r for c in hit for r in case_throttle_reasons(c)))
        return len(hit), len(self.ok), reasons

    def items(self) -> list[dict[str, Any]] | None:
        for c in sorted(self.ok, key=lambda c: c.repeat):
            items = c.items
            if items:
                return items
        return None


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
        row.reason = reason_line(reason) or None
        _side_values(row, g, bg is not None)
        return row
    bst, breason, _ = bg.status()
    cst, creason, _ = cg.status()
    row.status = NOT_OK
    row.base_status, row.cand_status = bst, cst
    row.reason = reason_line(creason if cst != "OK" else breason) or None
    ok = bg if bst == "OK" else cg if cst == "OK" else None
    if ok is not None:
        row.extra["metrics"] = sorted(ok.metrics())
        _side_values(row, ok, ok is bg)
    return row


def _throttle_note(base: tuple[int, int, list[str]], cand: tuple[int, int, list[str]]) -> tuple[str, str] | None:
    """``(side, text)`` when either side was throttled: side ``baseline``, ``candidate`` or ``both``;
    text ``candidate: throttled (sw_power_cap)`` / ``baseline: 1 of 3 repeats throttled (...)``."""
    parts = []
    for name, (k, n, reasons) in (("baseline", base), ("candidate", cand)):
        if k:
            what = "throttled" if n == 1 else f"{k} of {n} repeats throttled"
            parts.append(f"{name}: {what} ({', '.join(reasons) or 'thermal or power'})")
    if not parts:
        return None
    side = "both" if base[0] and cand[0] else ("baseline" if base[0] else "candidate")
    return side, "; ".join(parts)


def _throttled_row(ident: dict[str, Any], bg: _Group, cg: _Group, side: str, text: str) -> Row:
    """A case OK on both sides but sampled under throttling: both medians shown, no delta, no verdict."""
    row = Row(**ident, status=THROTTLED, base_status="OK", cand_status="OK", reason=text)
    row.extra["throttled"] = side
    row.extra["metrics"] = sorted(set(bg.metrics()) | set(cg.metrics()))
    _side_values(row, bg, True)
    _side_values(row, cg, False)
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
        throttle = _throttle_note(bg.throttled(), cg.throttled())
        if throttle and not opts.allow_throttled:
            rows.append(_throttled_row(ident, bg, cg, *throttle))
            continue
        tnote = f"compared though throttled (--allow-throttled): {throttle[1]}" if throttle else None
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
            note = "; ".join(n for n in (bnote and f"baseline: {bnote}", cnote and f"candidate: {cnote}", tnote) if n)
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
    diffs = env_differences(with_conditions(baseline), {s.label: with_conditions(r) for s, r in zip(sides, candidates)})
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
