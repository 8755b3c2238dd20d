"""Rich tables of ``normbench compare`` (a ``Comparison``) and ``normbench noise`` (a ``NoiseReport``).

For a person at a terminal. Every table is fitted to the console's width
(``normbench.report.fit``): the key columns (case, verdict, ...) stay whole, the
others are left out in a set order with a note naming them (``--format markdown``
has every column), then rows stack. Deltas and verdicts are coloured by
direction: green faster or better, red slower or worse, dim within noise. The
cells and the stage layout are ``compare_cells``'s, the same as the Markdown's.

``normbench noise`` prints here too: its table of each case's A/A spread (largest
``resolves`` first) is fitted the same way (``_fitted``), and ends with the
smallest effect the machine resolves, the ``--min-effect`` to compare its runs with.

Its tables take ``TABLE_STYLE`` (``normbench.report.fit``), as the run tables (``run_table``) and
the profile table (``normbench.profile.render``) do. Pure: no torch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from normbench import stats
from normbench.report.compare_cells import (
    cand_short,
    options_line,
    row_notes,
    StageView,
    evidence_note,
    evidence_rows,
    fmt_env,
    fmt_interval,
    fmt_n,
    fmt_pct,
    fmt_speedup,
    fmt_value,
    unit_label,
    variant_label,
    verdict_text,
)
from normbench.report.fit import TABLE_STYLE, Column, fit_table
from normbench.report.labels import case_label as kernel_case_label
from normbench.report.labels import e2e_label as e2e_point_label
from normbench.compare import (
    NOT_OK,
    THROTTLED,
    Comparison,
    NoiseReport,
    Row,
    env_get,
)

V = stats.Verdict
VERDICT_STYLE = {
    V.FASTER.value: "bold green", V.BETTER.value: "bold green",
    V.SLOWER.value: "bold red", V.WORSE.value: "bold red",
    V.NOISE.value: "dim", V.N1.value: "yellow", V.UNDEFINED.value: "yellow",
}
STATUS_STYLE = {"only in baseline": "yellow", "only in candidate": "yellow", "only in base": "yellow",
                "only in cand": "yellow"}


def _direction_style(r: Row) -> str:
    if not r.compared or r.speedup is None:
        return ""
    v = r.verdict or ""
    if v in (V.NOISE.value, V.N1.value, V.UNDEFINED.value):
        return "dim"
    return "green" if r.speedup > 1 else "red"


# --------------------------------------------------------------------------- tables
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


def _rich_kernel(view: StageView, width: int) -> list[Any]:
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
            cells.append(cand_short(view.cmp, r.candidate))
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


def _rich_e2e(view: StageView, width: int) -> list[Any]:
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
            cells.append(cand_short(view.cmp, r.candidate))
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
        (("candidate " if len(cmp.candidates) == 1 else f"candidate {cand_short(cmp, c.label)} "), c)
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
        view = StageView(cmp, stage)
        if not view.rows:
            continue
        out += _rich_kernel(view, width) if view.kind == "kernel" else _rich_e2e(view, width)
        if view.kind == "kernel":  # cases run with --profile: why a kernel is where it is (normbench.profile)
            from normbench.profile.render import profile_renderables

            out += profile_renderables(view.table_rows(), lambda r: kernel_case_label(r.params, view.varying), width,
                                       view.multi, lambda r: cand_short(view.cmp, r.candidate))
        for c in cmp.candidates:
            line = cmp.summary(c.label, stage).line()
            prefix = f"{cand_short(cmp, c.label)}: " if len(cmp.candidates) > 1 else ""
            out.append(Text(f"  {prefix}{line}"))
        for line in view.skipped_lines():
            out.append(Text(f"  {line}", style="dim"))
        for n in row_notes(view):
            out.append(Text(f"  {n}", style="dim"))
        out.append(Text(""))
    if cmp.env_diffs:
        cols = [Column("key", key=True), Column("baseline", wrap=True)]
        cols += [Column("candidate" if len(cmp.candidates) == 1 else cand_short(cmp, c.label), wrap=True)
                 for c in cmp.candidates]
        rows = [[d.key, fmt_env(d.baseline), *(fmt_env(d.candidates.get(c.label)) for c in cmp.candidates)]
                for d in cmp.env_diffs]
        out += _fitted(cols, rows, width, "environment differences")
        out.append(Text(""))
    elif cmp.mode == "runs":
        out.append(Text("environments: no differences", style="dim"))
    out.append(Text(options_line(cmp), style="dim"))
    return out


def render_rich(cmp: Comparison, console: Console) -> None:
    """Print the comparison to ``console`` (colours by verdict and direction)."""
    for r in rich_renderables(cmp, console.width):
        console.print(r)


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
