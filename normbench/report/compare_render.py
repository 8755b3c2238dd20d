"""Render a ``Comparison`` (and a noise report): rich, Markdown, JSON, CSV. Pure: no torch.

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
output ends with the environment differences and how verdicts were reached.

``to_markdown`` is made to be pasted into a pull request as it is: a header,
one table per stage, then a footer with the commands that produced the runs,
the versions and the GPU.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from typing import Any, Iterable

from rich import box
from rich.console import Console, Group
from rich.text import Text

from normbench import stats
from normbench.report import varying_axes
from normbench.report.fit import Column, fit_table
from normbench.report.labels import HIDDEN_PARAMS, params_text
from normbench.report.labels import case_label as kernel_case_label
from normbench.report.labels import e2e_label as e2e_point_label
from normbench.compare import (
    COMPARED,
    NOT_OK,
    THROTTLED,
    Comparison,
    NoiseReport,
    Row,
    VariantEvidence,
    env_get,
    flatten,
)

V = stats.Verdict
VERDICT_STYLE = {
    V.FASTER.value: "bold green", V.BETTER.value: "bold green",
    V.SLOWER.value: "bold red", V.WORSE.value: "bold red",
    V.NOISE.value: "dim", V.N1.value: "yellow", V.UNDEFINED.value: "yellow",
}
STATUS_STYLE = {"only in baseline": "yellow", "only in candidate": "yellow", "only in base": "yellow",
                "only in cand": "yellow"}


def footer_packages(env: dict[str, Any]) -> list[str]:
    """The packages the footer names for ``env``: ``normbench.env.footer_packages()`` (the
    providers' distributions from the registry, and the tools), then any other package the
    record holds that nothing here declares (an outside provider's, recorded where it was
    installed), in the record's order."""
    from normbench.env import footer_packages as declared, recorded_packages

    known = set(recorded_packages())
    extra = [k.split(".", 1)[1] for k in flatten(env) if k.startswith("packages.")]
    return [*declared(), *(p for p in extra if p not in known)]


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


def _direction_style(r: Row) -> str:
    if not r.compared or r.speedup is None:
        return ""
    v = r.verdict or ""
    if v in (V.NOISE.value, V.N1.value, V.UNDEFINED.value):
        return "dim"
    return "green" if r.speedup > 1 else "red"


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
class _StageView:
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


def _row_notes(view: _StageView, long: bool = False) -> list[str]:
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
            head = f"{_cand_short(view.cmp, r.candidate)}: {head}"
        lines.append(f"{head}: {status}{text}")
    return list(dict.fromkeys(lines))


# --------------------------------------------------------------------------- rich
def _cand_short(cmp: Comparison, label: str) -> str:
    if cmp.mode == "variants":
        return label
    return label.rsplit("-", 1)[-1] if "-" in label else label


#: rich.Table settings shared by the comparison's tables.
TABLE_STYLE: dict[str, Any] = dict(title_justify="left", box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
                                   show_edge=False, padding=(0, 1), collapse_padding=True)


def _fitted(cols: list[Column], rows: list[list[Any]], width: int, title: str | None,
            sections: list[bool] = ()) -> list[Any]:
    """The table within ``width`` (``fit.fit_table``), and a note naming the columns it left out."""
    fitted = fit_table(cols, rows, width, title=title, sections=sections, **TABLE_STYLE)
    out: list[Any] = list(fitted.renderables)
    loud = [c for c in fitted.dropped if c not in QUIET_COLUMNS]
    if loud:
        out.append(Text(f"  not shown at {width} columns: {', '.join(loud)} (--format markdown has every column)",
                        style="dim"))
    return out


#: Columns only a wide console shows, left out below that without a note.
QUIET_COLUMNS = {"GB/s base→cand"}


def _verdict_cell(r: Row) -> Text:
    vt = verdict_text(r, short=True)
    fallback = "bold red" if r.status == NOT_OK else "yellow" if r.status == THROTTLED else ""
    return Text(vt, style=VERDICT_STYLE.get(vt, STATUS_STYLE.get(vt, fallback)))


def _rich_kernel(view: _StageView, width: int) -> list[Any]:
    """The kernel stage's table within ``width``: case and verdict always whole; GB/s, n,
    speedup and the interval are left out in that order when it is too wide, then rows stack."""
    cols: list[Column] = []
    if view.multi:
        cols.append(Column("vs", key=True))
    cols += [
        Column("provider", key=True),
        Column("case", key=True),
        Column("base", "right"),
        Column("cand", "right"),
        Column("Δ%", "right"),
        Column(f"{view.cmp.options.confidence:.0%} CI Δ%", "right", drop=4),
        Column("speedup", "right", drop=5),
        Column("verdict", key=True, wrap=True, min_width=12),
        Column("n", "right", drop=6),
    ]
    show_bw = view.has_bandwidth()
    if show_bw:
        cols.append(Column("GB/s base→cand", "right", drop=7))
    rows = view.table_rows()
    body: list[list[Any]] = []
    sections: list[bool] = []
    for i, r in enumerate(rows):
        style = _direction_style(r)
        cells: list[Any] = []
        if view.multi:
            cells.append(_cand_short(view.cmp, r.candidate))
        cells += [
            r.provider or "-",
            kernel_case_label(r.params, view.varying),
            fmt_value(r.base_value, r.unit),
            fmt_value(r.cand_value, r.unit),
            Text(fmt_pct(r.delta_pct), style=style),
            fmt_interval(r) if r.compared else "",
            Text(fmt_speedup(r.speedup), style=style),
            _verdict_cell(r),
            fmt_n(r) if r.compared else "",
        ]
        if show_bw:
            bw = view.bandwidth(r)
            cells.append(f"{fmt_value(bw.base_value, 'GB/s')}→{fmt_value(bw.cand_value, 'GB/s')}" if bw else "")
        body.append(cells)
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        sections.append(nxt is not None and _shape(nxt) != _shape(r))
    return _fitted(cols, body, width, view.title(), sections)


def _shape(r: Row) -> tuple:
    return tuple((k, repr(v)) for k, v in r.params.items())


def _rich_e2e(view: _StageView, width: int) -> list[Any]:
    """An end-to-end stage's table within ``width``: variant, point, metric and verdict always whole."""
    variants_mode = view.cmp.mode == "variants"
    cols: list[Column] = []
    if view.multi and not variants_mode:
        cols.append(Column("vs", key=True))
    cols.append(Column("variant", key=True))
    if view.varying:
        cols.append(Column("point", key=True))
    cols += [
        Column("metric", key=True),
        Column("base", "right"),
        Column("cand", "right"),
        Column("Δ%", "right"),
        Column(f"{view.cmp.options.confidence:.0%} CI Δ%", "right", drop=4),
        Column("verdict", key=True, wrap=True, min_width=12),
        Column("n", "right", drop=6),
    ]
    rows = view.table_rows()
    body: list[list[Any]] = []
    sections: list[bool] = []
    for i, r in enumerate(rows):
        style = _direction_style(r)
        cells: list[Any] = []
        if view.multi and not variants_mode:
            cells.append(_cand_short(view.cmp, r.candidate))
        cells.append(variant_label(view.cmp, r.variant) if variants_mode else (r.variant or "-"))
        if view.varying:
            cells.append(e2e_point_label(r.params, view.varying))
        metric = r.metric or "-"
        if r.unit:
            metric += f" ({unit_label(r.unit)})"
        cells += [
            metric,
            fmt_value(r.base_value, r.unit),
            fmt_value(r.cand_value, r.unit),
            Text(fmt_pct(r.delta_pct), style=style),
            fmt_interval(r) if r.compared else "",
            _verdict_cell(r),
            fmt_n(r) if r.compared else "",
        ]
        body.append(cells)
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        sections.append(nxt is not None and (nxt.candidate, nxt.variant, _shape(nxt)) != (r.candidate, r.variant, _shape(r)))
    return _fitted(cols, body, width, view.title(), sections)


def _sides_text(cmp: Comparison) -> Text:
    t = Text()
    if cmp.mode == "variants":
        t.append("run ", style="bold")
        t.append(f"{cmp.baseline.run_id}")
        t.append(f"  ({env_get(cmp.baseline.environment, 'gpu.name') or env_get(cmp.baseline.environment, 'cpu') or '?'})\n")
        t.append("baseline variant ", style="bold")
        t.append(cmp.baseline.label)
        t.append("  vs  ", style="dim")
        t.append(", ".join(c.label for c in cmp.candidates))
        return t
    sides = [("baseline ", cmp.baseline)] + [
        (("candidate " if len(cmp.candidates) == 1 else f"candidate {_cand_short(cmp, c.label)} "), c)
        for c in cmp.candidates
    ]
    for i, (head, s) in enumerate(sides):
        t.append(head, style="bold")
        t.append(s.run_id)
        if s.status and s.status != "complete":
            t.append(f" [{s.status}]", style="yellow")
        gpu = env_get(s.environment, "gpu.name") or env_get(s.environment, "cpu")
        if gpu:
            t.append(f"  ({gpu})", style="dim")
        if i + 1 < len(sides):
            t.append("\n")
    return t


def _options_line(cmp: Comparison) -> str:
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


def rich_renderables(cmp: Comparison, width: int = 100) -> list[Any]:
    """Everything ``render_rich`` prints, as rich renderables fitted to ``width`` columns (``normbench.report.fit``)."""
    out: list[Any] = [_sides_text(cmp), Text("")]
    if cmp.evidence:
        cols = [Column("variant", key=True), Column("fuse_norm_quant"), Column("enabled fusions", wrap=True),
                Column("patterns replaced (per pass)", wrap=True), Column("engine starts", wrap=True),
                Column("flag", wrap=True)]
        rows = [[*row[:-1], Text(row[-1], style="bold yellow" if row[-1] else "")] for row in evidence_rows(cmp)]
        out += _fitted(cols, rows, width, "fusion evidence (per engine start)")
        out += [Text(f"  {evidence_note(cmp).replace('`', '')}", style="dim"), Text("")]
    for stage in cmp.stages():
        view = _StageView(cmp, stage)
        if not view.rows:
            continue
        out += _rich_kernel(view, width) if view.kind == "kernel" else _rich_e2e(view, width)
        if view.kind == "kernel":  # cases run with --profile: why a kernel is where it is (normbench.profile)
            from normbench.profile.render import profile_renderables

            out += profile_renderables(view.table_rows(), lambda r: kernel_case_label(r.params, view.varying), width,
                                       view.multi, lambda r: _cand_short(view.cmp, r.candidate))
        for c in cmp.candidates:
            line = cmp.summary(c.label, stage).line()
            prefix = f"{_cand_short(cmp, c.label)}: " if len(cmp.candidates) > 1 else ""
            out.append(Text(f"  {prefix}{line}"))
        for line in view.skipped_lines():
            out.append(Text(f"  {line}", style="dim"))
        for n in _row_notes(view):
            out.append(Text(f"  {n}", style="dim"))
        out.append(Text(""))
    if cmp.env_diffs:
        cols = [Column("key", key=True), Column("baseline", wrap=True)]
        cols += [Column("candidate" if len(cmp.candidates) == 1 else _cand_short(cmp, c.label), wrap=True)
                 for c in cmp.candidates]
        rows = [[d.key, fmt_env(d.baseline), *(fmt_env(d.candidates.get(c.label)) for c in cmp.candidates)]
                for d in cmp.env_diffs]
        out += _fitted(cols, rows, width, "environment differences")
        out.append(Text(""))
    elif cmp.mode == "runs":
        out.append(Text("environments: no differences", style="dim"))
    out.append(Text(_options_line(cmp), style="dim"))
    return out


def render_rich(cmp: Comparison, console: Console) -> None:
    """Print the comparison to ``console`` (colours by verdict and direction)."""
    for r in rich_renderables(cmp, console.width):
        console.print(r)


# --------------------------------------------------------------------------- Markdown
def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_verdict(r: Row) -> str:
    vt = verdict_text(r)
    if r.compared and r.verdict_enum and (r.verdict_enum.is_improvement or r.verdict_enum.is_regression):
        return f"**{vt}**"
    if not r.compared:
        return f"_{vt}_"
    return vt


def _md_table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _md_stage(view: _StageView) -> list[str]:
    cmp = view.cmp
    conf = f"{cmp.options.confidence:.0%} CI"
    out = [f"### {_md(view.title())}", ""]
    rows = view.table_rows()
    kernel = view.kind == "kernel"
    header: list[str] = []
    align: list[str] = []
    if view.multi:
        header.append("candidate")
        align.append("---")
    if kernel:
        header.append("provider")
        align.append("---")
        params = [k for k in ("num_tokens", "hidden_size") if any(k in r.params for r in rows)]
        params += [k for k in view.varying if k not in params]
    else:
        if not (view.multi and cmp.mode == "variants"):
            header.append("variant")
            align.append("---")
        params = list(view.varying)
    header += params
    align += ["--:"] * len(params)
    unit = ""
    if kernel:
        unit = unit_label(next((r.unit for r in rows if r.unit), ""))
        header += [f"baseline {unit}".strip(), f"candidate {unit}".strip()]
    else:
        header += ["metric", "baseline", "candidate"]
        align.append("---")
    align += ["--:", "--:"]
    header += ["Δ%", conf, "speedup", "verdict", "n"]
    align += ["--:", "--:", "--:", "---", "--:"]
    bw = view.has_bandwidth()
    if bw:
        header.append("GB/s")
        align.append("--:")
    body = []
    for r in rows:
        cells: list[str] = []
        variants_mode = cmp.mode == "variants"
        if view.multi:
            cells.append(variant_label(cmp, r.candidate) if variants_mode and not kernel else r.candidate)
        if kernel:
            cells.append(r.provider or "-")
        elif not (view.multi and variants_mode):
            cells.append(variant_label(cmp, r.variant) if variants_mode else (r.variant or "-"))
        for k in params:
            v = r.params.get(k)
            cells.append(str(v) if v is not None else "")
        if not kernel:
            cells.append(f"{r.metric or '-'}" + (f" ({unit_label(r.unit)})" if r.unit else ""))
        cells += [
            fmt_value(r.base_value, r.unit) if r.base_value is not None else (r.base_status or "-"),
            fmt_value(r.cand_value, r.unit) if r.cand_value is not None else (r.cand_status or "-"),
            fmt_pct(r.delta_pct),
            fmt_interval(r) if r.compared else "",
            fmt_speedup(r.speedup),
            _md_verdict(r),
            fmt_n(r) if r.compared else "",
        ]
        if bw:
            b = view.bandwidth(r)
            cells.append(f"{fmt_value(b.base_value, 'GB/s')} → {fmt_value(b.cand_value, 'GB/s')}" if b else "")
        body.append(cells)
    out += _md_table(header, align, body)
    out.append("")
    if kernel:  # cases run with --profile (normbench.profile)
        from normbench.profile.render import profile_markdown

        out += profile_markdown(rows, lambda r: kernel_case_label(r.params, view.varying), view.multi)
    if len(cmp.candidates) == 1:
        out += [f"**Summary**: {cmp.summary(cmp.candidates[0].label, view.stage).line()}", ""]
    else:
        out += [f"- `{c.label}`: {cmp.summary(c.label, view.stage).line()}" for c in cmp.candidates]
        out.append("")
    extra = view.skipped_lines() + _row_notes(view, long=True)
    for line in extra:
        out.append(f"- {_md(line)}")
    out.append("")
    return out


def _versions(env: dict[str, Any]) -> str:
    gpu = env_get(env, "gpu.name")
    parts = []
    if gpu:
        extra = ", ".join(x for x in (
            f"driver {env_get(env, 'driver')}" if env_get(env, "driver") else "",
            f"CUDA {env_get(env, 'cuda')}" if env_get(env, "cuda") else "",
        ) if x)
        parts.append(f"{gpu}" + (f" ({extra})" if extra else ""))
    else:
        parts.append(str(env_get(env, "cpu") or "unknown device"))
    for p in footer_packages(env):
        v = env_get(env, f"packages.{p}")
        if v:
            parts.append(f"{p} {v}")
    commit = env_get(env, "git.commit")
    if commit:
        parts.append(f"commit {short_id(commit)}" + (" (dirty)" if env_get(env, "git.dirty") else ""))
    bw = env_get(env, "peak_bandwidth_gbps")
    if isinstance(bw, (int, float)):
        parts.append(f"copy bandwidth {bw:,.0f} GB/s")
    if env_get(env, "clocks.lock") == "locked":
        parts.append(f"SM clock locked at {fmt_env(env_get(env, 'clocks.locked_sm_mhz'))} MHz")
    return " · ".join(parts)


def _cmdline(cmd: list[str]) -> str:
    return " ".join(cmd) if cmd else "(command not recorded)"


def to_markdown(cmp: Comparison) -> str:
    """The comparison as Markdown for a pull request (pasteable as is)."""
    o = cmp.options
    lines: list[str] = []
    if cmp.mode == "variants":
        cands = ", ".join(f"`{c.label}`" for c in cmp.candidates)
        lines += [f"## normbench: variants {cands} vs `{cmp.baseline.label}`", ""]
        lines += [f"Run `{cmp.baseline.run_id}`; baseline variant `{cmp.baseline.label}`. "
                  f"{o.confidence:.0%} confidence, min effect {o.min_effect:.0%}.", ""]
    else:
        if len(cmp.candidates) == 1:
            lines += [f"## normbench: `{cmp.candidates[0].label}` vs `{cmp.baseline.label}`", ""]
        else:
            lines += [f"## normbench: {len(cmp.candidates)} runs vs `{cmp.baseline.label}`", ""]
        lines += [f"Baseline `{cmp.baseline.label}`, candidate{'s' if len(cmp.candidates) > 1 else ''} "
                  + ", ".join(f"`{c.label}`" for c in cmp.candidates)
                  + f". {o.confidence:.0%} confidence, min effect {o.min_effect:.0%}.", ""]
    if cmp.evidence:
        lines += ["### Fusion evidence", "", evidence_note(cmp), ""]
        lines += _md_table(EVIDENCE_HEADER, ["---", "---", "---", "---", "---", "---"], evidence_rows(cmp))
        lines.append("")
    for stage in cmp.stages():
        view = _StageView(cmp, stage)
        if view.rows:
            lines += _md_stage(view)
    lines += ["---", ""]
    if cmp.mode == "variants":
        lines.append(f"- **Run** `{cmp.baseline.run_id}`: `{_cmdline(cmp.baseline.command)}`")
    else:
        lines.append(f"- **Baseline** `{cmp.baseline.run_id}`: `{_cmdline(cmp.baseline.command)}`")
        for c in cmp.candidates:
            lines.append(f"- **Candidate** `{c.run_id}`: `{_cmdline(c.command)}`")
    lines.append(f"- **Environment**: {_versions(cmp.baseline.environment)}")
    lines.append("")
    if cmp.env_diffs:
        lines.append("**Environment differences**:")
        lines.append("")
        head = ["key", "baseline"] + (["candidate"] if len(cmp.candidates) == 1 else [c.label for c in cmp.candidates])
        body = [[f"`{d.key}`", fmt_env(d.baseline), *(fmt_env(d.candidates.get(c.label)) for c in cmp.candidates)]
                for d in cmp.env_diffs]
        lines += _md_table(head, ["---"] * len(head), body)
        lines.append("")
    elif cmp.mode == "runs":
        lines += ["Environments: no differences.", ""]
    from normbench import __version__

    lines.append(f"<sub>{_md(_options_line(cmp))} normbench {__version__}.</sub>")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- JSON / CSV
def to_json(cmp: Comparison) -> str:
    return json.dumps(cmp.to_dict(), indent=2, ensure_ascii=False) + "\n"


CSV_FIELDS = [
    "candidate", "stage", "kind", "op", "provider", "variant", "metric", "unit", "higher_is_better",
    "derived_from", "status", "base_status", "cand_status", "base_value", "cand_value", "ratio", "speedup",
    "delta_pct", "ci_low_pct", "ci_high_pct", "p_value", "method", "verdict", "n_base", "n_cand", "note", "reason",
]


def flat_params(params: dict[str, Any], taken: Iterable[str]) -> dict[str, Any]:
    """Params as columns (``param_<k>`` where ``k`` collides with a fixed column); lists as JSON."""
    taken = set(taken)
    out = {}
    for k, v in params.items():
        col = f"param_{k}" if k in taken else k
        out[col] = json.dumps(v) if isinstance(v, (list, tuple, dict)) else v
    return out


def write_csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def to_csv(cmp: Comparison) -> str:
    """One line per row, params as columns (pandas: ``pd.read_csv``)."""
    param_cols: list[str] = []
    records = []
    for r in cmp.rows:
        rec = {k: getattr(r, k) for k in CSV_FIELDS}
        p = flat_params(r.params, CSV_FIELDS)
        for k in p:
            if k not in param_cols:
                param_cols.append(k)
        records.append({**rec, **p})
    fields = CSV_FIELDS[:6] + param_cols + CSV_FIELDS[6:]
    return write_csv(records, fields)


def render(cmp: Comparison, fmt: str, console: Console) -> str | None:
    """``rich`` prints to ``console`` and returns None; the others return text."""
    if fmt == "rich":
        render_rich(cmp, console)
        return None
    if fmt == "markdown":
        return to_markdown(cmp)
    if fmt == "json":
        return to_json(cmp)
    if fmt == "csv":
        return to_csv(cmp)
    raise ValueError(fmt)


# --------------------------------------------------------------------------- noise
def noise_renderables(report: NoiseReport, top: int | None = None, width: int = 100) -> list[Any]:
    """The noise table (largest ``resolves`` first; fitted to ``width`` columns) and its summary line.

    Cases with a single value (an end-to-end stage run once) have no spread:
    they are counted under the table, not shown as rows of dashes.
    """
    measured = [r for r in report.rows if r.resolves_pct is not None]
    rows = sorted(measured, key=lambda r: -(r.resolves_pct or 0.0))
    shown = rows[:top] if top else rows
    stages = list(dict.fromkeys(r.stage for r in rows))
    one_stage = len(stages) == 1
    metrics = list(dict.fromkeys(r.metric for r in rows))
    one_metric = len(metrics) == 1
    head = Text(f"A/A noise of {report.run_id}" + (f" ({report.gpu})" if report.gpu else ""), style="bold")
    title = " · ".join(x for x in (
        f"stage {stages[0]}" if one_stage else "",
        f"{metrics[0]} ({unit_label(rows[0].unit)})" if one_metric and rows else "",
    ) if x)
    cols: list[Column] = [Column("stage", key=True)] if not one_stage else []
    cols += [Column("case", key=True)] + ([] if one_metric else [Column("metric", key=True)])
    cols += [Column("reps", "right", drop=4), Column("n", "right", drop=5), Column("medians", "right", drop=3),
             Column("spread", "right", drop=2), Column("A/A Δ% ± CI", "right"), Column("resolves", "right", key=True)]
    by_stage: dict[str, list] = defaultdict(list)
    for r in report.rows:
        by_stage[r.stage].append(r)
    varying = {st: _varying_params(rs) for st, rs in by_stage.items()}
    body: list[list[Any]] = []
    for r in shown:
        if r.kind == "kernel":
            case = f"{r.provider} {kernel_case_label(r.params, varying[r.stage])}"
        else:
            case = f"{r.variant} {e2e_point_label(r.params, varying[r.stage])}".strip()
        med = r.repeat_medians
        meds = fmt_value(med[0], r.unit) if len(med) == 1 else f"{fmt_value(min(med), r.unit)}–{fmt_value(max(med), r.unit)}"
        aa = "-" if r.aa_delta_pct is None or r.halfwidth_pct is None else f"{r.aa_delta_pct:+.1f}% ± {r.halfwidth_pct:.1f}%"
        if r.method == "split samples":
            aa += " (split)"
        body.append([
            *(() if one_stage else (r.stage,)), case, *(() if one_metric else (r.metric,)), str(r.repeats), str(r.samples), meds,
            "-" if r.spread_pct is None else f"{r.spread_pct:.1f}%", aa,
            Text(f"{r.resolves_pct:.1f}%", style="bold" if (r.resolves_pct or 0) >= 2 else ""),
        ])
    out: list[Any] = [head] + (_fitted(cols, body, width, title or None) if rows else [])
    if top and len(rows) > top:
        out.append(Text(f"  ... {len(rows) - top} more (--top 0 shows all)", style="dim"))
    if rows:
        p95, p50 = report.resolvable(95.0), report.resolvable(50.0)
        out.append(Text(f"smallest effect this machine resolves: ~{p95:.1f}% (p95 over {len(rows)} cases; "
                        f"median {p50:.1f}%)", style="bold"))
        out.append(Text(f"  compare runs of this machine with --min-effect {max(p95, 0.1):.1f}% or more", style="dim"))
    else:
        out.append(Text("no case has the repeats or samples to measure its noise "
                        "(`normbench run --repeat N` repeats kernel cases; end-to-end stages take `repeats:`)",
                        style="yellow"))
    if any(r.method == "split samples" for r in rows):
        out.append(Text(
            "  (split): a single repeat, split into even and odd samples: within-run noise only; "
            "`normbench run --repeat N` measures the drift between repeats", style="dim"))
    unmeasured = len(report.rows) - len(measured)
    if unmeasured:
        out.append(Text(f"  {unmeasured} case metric{'s' if unmeasured != 1 else ''} with a single value "
                        "(n=1): no spread to measure", style="dim"))
    return out


def _varying_params(rows: list) -> list[str]:
    values: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for r in rows:
        for k, v in r.params.items():
            if k not in values:
                order.append(k)
            values[k].add(repr(v))
    return [k for k in order if len(values[k]) > 1]


def render_noise(report: NoiseReport, console: Console, top: int | None = None) -> None:
    console.print(Group(*noise_renderables(report, top, console.width)))
