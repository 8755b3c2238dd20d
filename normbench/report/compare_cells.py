"""The cells and stage layout that ``normbench compare``'s rich and Markdown tables share.

For ``compare_rich`` and ``compare_markdown``, not for a reader: one stage's rows
arranged for a table (``StageView``), the text of every cell, the fusion evidence
rows and the lines under the tables, so both formats say the same things.

Layout, per stage:

* kernel stages: one row per case (provider, shape and the axes that vary)
  for the primary metric ``time_us``: baseline and candidate medians in µs,
  Δ% (signed, + is more time), the interval of Δ%, speedup (> 1 is faster),
  verdict, samples per side, and GB/s of both sides (Markdown; rich when the
  console is at least 120 columns wide);
* end-to-end stages: one row per variant (and point, e.g. ``input_len``) and
  metric; the interval column shows McNemar's p-value for gsm8k rows.

Variant comparisons whose records carry fusion evidence get a "fusion evidence"
table first (per variant: the effective ``fuse_norm_quant``, vLLM's enabled
fusions, patterns replaced per pass, engine starts), and a flagged variant
(``VariantEvidence.flag``: fusion requested but nothing replaced, or the same
passes and counts as the baseline) is marked ``⚠`` in every table row.

Cases that could not be compared (only in one run, INCORRECT/FAILED/SKIPPED
on a side, sampled under power or thermal throttling: ``throttled (cand)``,
with both medians and the reasons under the table) are rows with their status;
cases SKIPPED in both runs are counted under the table with their reasons. Every stage ends with its summary line
(``k faster, m slower, n within noise; geometric-mean speedup``), and the
output ends with the environment differences and how verdicts were reached
(``options_line``).

Pure: no torch, no rich.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

from normbench.report import varying_axes
from normbench.report.labels import HIDDEN_PARAMS, params_text
from normbench.report.labels import case_label as kernel_case_label
from normbench.report.labels import e2e_label as e2e_point_label
from normbench.compare import (
    COMPARED,
    NOT_OK,
    THROTTLED,
    Comparison,
    Row,
    VariantEvidence,
)


# --------------------------------------------------------------------------- formatting
def unit_label(unit: str | None) -> str:
    return {"us": "µs"}.get(unit or "", unit or "")


def fmt_value(v: float | None, unit: str | None = None) -> str:
    """A median for a table: 4 significant digits or so, thousands separated."""
    if v is None or not math.isfinite(v):
        return "-"
    if unit == "GB/s" and abs(v) >= 100:
        return f"{v:,.0f}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:#.3g}"


def fmt_pct(d: float | None) -> str:
    return "-" if d is None or not math.isfinite(d) else f"{d:+.1f}%"


def fmt_interval(r: Row) -> str:
    """``[-12.5, -10.8]`` (percent change), ``p=0.012`` for McNemar rows, else ``-``."""
    if r.method and r.method.startswith("mcnemar") and r.p_value is not None:
        return f"p={r.p_value:.2g}" if r.p_value < 0.1 else f"p={r.p_value:.2f}"
    if r.ci_low_pct is None or r.ci_high_pct is None:
        return "-"
    return f"[{r.ci_low_pct:+.1f}, {r.ci_high_pct:+.1f}]"


def fmt_speedup(s: float | None) -> str:
    return "-" if s is None or not math.isfinite(s) else f"{s:.2f}×"


def fmt_n(r: Row) -> str:
    if r.method and r.method.startswith("mcnemar"):
        return f"{r.n_base} items"
    return f"{r.n_base}/{r.n_cand}"


def short_id(value: Any) -> Any:
    """40-hex git commits shortened to 12 characters; anything else unchanged."""
    if isinstance(value, str) and len(value) == 40 and all(ch in "0123456789abcdef" for ch in value):
        return value[:12]
    return value


def fmt_env(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(short_id(value))


def verdict_text(r: Row, short: bool = False) -> str:
    return r.verdict if r.compared and r.verdict else r.status_text(short)


def _constants(rows: list[Row], varying: list[str], skip: Iterable[str] = ()) -> dict[str, Any]:
    if not rows:
        return {}
    out = {}
    for k, v in rows[0].params.items():
        if k in varying or k in skip or k in HIDDEN_PARAMS or v is None:
            continue
        if isinstance(v, (list, tuple, dict)) and not v:
            continue
        out[k] = v
    return out


# --------------------------------------------------------------------------- fusion evidence
FLAG_MARK = "⚠"


def variant_label(cmp: Comparison, variant: str | None) -> str:
    """The variant's name, with ``⚠`` when its fusion evidence is flagged."""
    name = variant or "-"
    return f"{name} {FLAG_MARK}" if cmp.flag(variant) else name


def fmt_fusion(ev: VariantEvidence) -> str:
    """Patterns replaced per pass: ``RMSNormQuantFusionPass 16, activation_quant_fusion_pass 8``;
    ``none`` when passes ran but no pattern pass; starts that differ are joined by `` / ``;
    unknown starts say why."""
    def one(f: dict[str, int]) -> str:
        return ", ".join(f"{name} {n:,}" for name, n in f.items()) if f else "none (no pattern pass ran)"

    parts = [one(f) for f in ev.fusion]
    text = " / ".join(parts)
    if len(parts) > 1:
        text = f"differs between starts: {text}"
    if ev.unknown:
        why = f"unknown ({ev.note})" if ev.note else "unknown"
        if ev.unknown < ev.starts:
            why = f"{ev.unknown} of {ev.starts} starts {why}"
        text = f"{text}; {why}" if text else why
    return text


def fmt_starts(ev: VariantEvidence) -> str:
    how = ", ".join(f"{n} {k}" for k, n in ev.compile.items())
    what = "latency engine" if ev.source == "latency" else "server start"
    return f"{ev.starts} {what}{'s' if ev.starts != 1 else ''} ({how})"


def _fmt_bool(b: bool | None) -> str:
    return "-" if b is None else str(b)


def evidence_rows(cmp: Comparison) -> list[list[str]]:
    """``[variant, fuse_norm_quant, enabled fusions, patterns replaced, starts, flag]`` per variant, baseline first."""
    order = [cmp.baseline.label] + [c.label for c in cmp.candidates]
    rows = []
    for v in order:
        ev = cmp.evidence.get(v)
        if ev is None:
            continue
        name = variant_label(cmp, v) + (" (baseline)" if v == cmp.baseline.label else "")
        rows.append([name, _fmt_bool(ev.fuse_norm_quant), ", ".join(ev.enabled_fusions or []) or "-",
                     fmt_fusion(ev), fmt_starts(ev), f"{FLAG_MARK} {ev.flag}" if ev.flag else ""])
    return rows


FLAG_NOTE = f"{FLAG_MARK}: the variant's deltas below do not measure a norm+quant fusion (its evidence says why)."


def evidence_note(cmp: Any) -> str:
    """The evidence table's note; the flag's legend only when a variant is flagged."""
    flagged = any(ev.flag for ev in cmp.evidence.values())
    return EVIDENCE_NOTE + (" " + FLAG_NOTE if flagged else "")


EVIDENCE_HEADER = ["variant", "fuse_norm_quant", "enabled fusions", "patterns replaced (per pass)", "engine starts",
                   "flag"]
EVIDENCE_NOTE = (
    "From each start's log: vLLM's `Replaced N patterns` per pattern-matching pass, summed over the graphs "
    "that start compiled; `fuse_norm_quant` and the enabled fusions as the engine logged them."
)


# --------------------------------------------------------------------------- stage views
class StageView:
    """The rows of one stage arranged for a table (shared by rich and Markdown)."""

    def __init__(self, cmp: Comparison, stage: str):
        self.cmp = cmp
        self.stage = stage
        self.kind = cmp.stage_kinds.get(stage, "kernel")
        self.rows = cmp.rows_of(stage=stage)
        self.primary = cmp.primary_metric(stage)
        self.multi = len(cmp.candidates) > 1
        self.varying = varying_axes(r.params for r in self.rows)
        skip = ("num_tokens", "hidden_size") if self.kind == "kernel" else ()
        self.constants = _constants(self.rows, self.varying, skip)
        self.op = next((r.op for r in self.rows if r.op), None)

    def both_skipped(self) -> list[Row]:
        """Not-comparable rows with the same non-OK status on both sides (listed under the table)."""
        return [r for r in self.rows if r.status == NOT_OK and r.base_status == r.cand_status]

    def table_rows(self) -> list[Row]:
        hidden = set(map(id, self.both_skipped()))
        out = []
        for r in self.rows:
            if id(r) in hidden:
                continue
            if r.status == COMPARED or r.status.startswith("metric only"):
                if self.kind == "kernel" and r.metric != self.primary:
                    continue
            out.append(r)
        return out

    def bandwidth(self, r: Row) -> Row | None:
        """The GB/s row of the same case and candidate (kernel stages)."""
        if not hasattr(self, "_bw"):
            self._bw = {(x.candidate, x.key): x for x in self.rows if x.unit == "GB/s" and x.compared}
        return self._bw.get((r.candidate, r.key))

    def has_bandwidth(self) -> bool:
        return self.kind == "kernel" and any(x.unit == "GB/s" for x in self.rows)

    def title(self) -> str:
        if self.kind == "kernel":
            unit = next((r.unit for r in self.rows if r.metric == self.primary and r.unit), "")
            head = f"{self.stage}: {self.op or 'kernel'} · {self.primary or '-'} ({unit_label(unit)}, lower is better)"
            if self.primary:
                hib = next((r.higher_is_better for r in self.rows if r.metric == self.primary), False)
                head = head.replace("lower is better", "higher is better" if hib else "lower is better")
        else:
            head = f"{self.stage}: {self.kind}"
        if self.constants:
            head += " · " + params_text(self.constants)
        return head

    def skipped_lines(self) -> list[str]:
        """``6 cases SKIPPED in both: liger (liger not installed: ...)`` grouped by status, who and why."""
        groups: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for r in self.both_skipped():
            who = r.provider or r.variant or "-"
            groups[(r.status_text(), who, r.reason or "")].add(r.key)
        lines = []
        for (status, who, why), keys in groups.items():
            n = len(keys)
            lines.append(f"{n} case{'s' if n != 1 else ''} {status}: {who}" + (f" ({why})" if why else ""))
        return lines


def row_notes(view: StageView, long: bool = False) -> list[str]:
    """One line per shown row with a reason (why not compared) or a note (repeat spread, failed repeats)."""
    lines: list[str] = []
    for r in view.table_rows():
        text = r.reason if r.status in (NOT_OK, THROTTLED) else r.note
        if not text:
            continue
        who = r.provider or r.variant or "-"
        where = kernel_case_label(r.params, view.varying) if view.kind == "kernel" else e2e_point_label(r.params, view.varying)
        head = " ".join(x for x in (who, where, r.metric if view.kind != "kernel" else "") if x)
        status = f"{r.status_text()}: " if long and r.status == NOT_OK else ""
        if long and r.status == THROTTLED:
            status = "throttled, not compared: "
        if view.multi:
            head = f"{cand_short(view.cmp, r.candidate)}: {head}"
        lines.append(f"{head}: {status}{text}")
    return list(dict.fromkeys(lines))


def cand_short(cmp: Comparison, label: str) -> str:
    if cmp.mode == "variants":
        return label
    return label.rsplit("-", 1)[-1] if "-" in label else label


# --------------------------------------------------------------------------- how verdicts were reached
def options_line(cmp: Comparison) -> str:
    o = cmp.options
    return (
        f"verdicts: {o.confidence:.0%} percentile-bootstrap interval of the ratio of medians "
        f"({o.resamples} resamples, seed {o.seed}) and two-sided Mann-Whitney U at p < {1 - o.confidence:.2g}; "
        f"a change counts when both agree and it is at least {o.min_effect:.0%} (--min-effect)"
        f"{' and the spread between repeats of its case' if o.repeat_floor else ''}. "
        f"gsm8k: McNemar ({o.mcnemar_method}) on paired items. Derived metrics (GB/s) follow their source."
        + _throttle_sentence(cmp)
    )


def _throttle_sentence(cmp: Comparison) -> str:
    """How throttled cases were treated, when there were any (else nothing: the line stays as it was)."""
    if any(r.status == THROTTLED for r in cmp.rows):
        return (" Throttled: NVML reported power or thermal throttling right after the case's samples; "
                "not compared (--allow-throttled compares them).")
    if cmp.options.allow_throttled and any("--allow-throttled" in (r.note or "") for r in cmp.rows):
        return " Throttled cases compared (--allow-throttled): see their notes."
    return ""
