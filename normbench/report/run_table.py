"""Rich tables of one run (``normbench run`` and ``normbench show``).

Kernel stage: one row per sweep point (only the axes that vary are shown),
one column per provider with ``median us (GB/s)``; the fastest provider of each row is
bold green (bold in Markdown). Cells of cases that did not run say
SKIPPED / INCORRECT / FAILED; their reasons are listed under the table, grouped.

End-to-end stage: one row per variant (and input length), one column per
metric, with the delta against the suite's baseline variant.

Pure: takes a ``RunRecord``; no torch.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from normbench.report import varying_axes
from normbench.report.fit import Column, fit_chunks
from normbench.report.labels import case_label, e2e_label, params_text
from normbench.store import CaseRecord, RunRecord

STATUS_STYLE = {"SKIPPED": "dim", "INCORRECT": "bold red", "FAILED": "bold red", "OK": ""}
BEST_STYLE = "bold green"
#: The params that make separate rows of one variant in an end-to-end table (``vllm bench latency``).
E2E_POINT_AXES = ("input_len",)


def _first_line(text: str | None) -> str:
    return text.splitlines()[0] if text else ""


def _stages(record: RunRecord) -> dict[str, list[CaseRecord]]:
    by_stage: dict[str, list[CaseRecord]] = defaultdict(list)
    for c in record.cases:
        by_stage[c.stage].append(c)
    return by_stage


def _pooled_median(cases: list[CaseRecord], metric: str) -> float | None:
    """Median over every sample of ``metric`` in ``cases`` (repeats pooled)."""
    samples = [x for c in cases for x in c.metrics[metric].samples] if all(metric in c.metrics for c in cases) else []
    if samples:
        return statistics.median(samples)
    values = [c.metrics[metric].value for c in cases if metric in c.metrics and c.metrics[metric].value is not None]
    return statistics.median(values) if values else None


def _fmt_us(us: float) -> str:
    return f"{us:,.2f}" if us < 1000 else f"{us:,.0f}"


@dataclass
class Cell:
    text: str
    style: str = ""


@dataclass
class Grid:
    """A stage's table, independent of how it is drawn (rich or Markdown)."""

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    notes: list[str]  # grouped reasons of the cases that did not run
    right_align_from: int = 1


def kernel_grid(stage: str, cases: list[CaseRecord]) -> Grid:
    """One kernel stage: rows are sweep points, columns providers; the fastest cell is marked."""
    providers: list[str] = []  # columns: providers with at least one case that ran
    for c in cases:
        if c.status != "SKIPPED" and (c.provider or "-") not in providers:
            providers.append(c.provider or "-")
    axes = varying_axes(c.params for c in cases)
    points: dict[tuple, dict[str, list[CaseRecord]]] = {}
    point_params: dict[tuple, dict[str, Any]] = {}
    for c in cases:
        key = tuple(sorted((k, repr(v)) for k, v in c.params.items()))
        points.setdefault(key, defaultdict(list))[c.provider or "-"].append(c)
        point_params[key] = c.params
    op = cases[0].op or ""
    const = {k: v for k, v in cases[0].params.items() if k not in axes and k not in ("num_tokens", "hidden_size")}
    title = (op if stage == op else f"{stage}: {op}") + ", median us (GB/s)" + (f"; {params_text(const)}" if const else "")
    rows: list[list[Cell]] = []
    reasons: dict[tuple[str, str, str], int] = defaultdict(int)
    for c in cases:
        if (c.provider or "-") not in providers:
            reasons[(c.provider or "-", c.status, _first_line(c.reason))] += 1
    for key, by_provider in points.items():
        times = {p: _pooled_median(cs, "time_us") for p, cs in by_provider.items() if all(c.status == "OK" for c in cs)}
        times = {p: t for p, t in times.items() if t is not None}
        best = min(times, key=times.get) if times else None
        row = [Cell(case_label(point_params[key], axes))]
        for p in providers:
            cs = by_provider.get(p)
            if not cs:
                row.append(Cell(""))
                continue
            bad = next((c for c in cs if c.status != "OK"), None)
            if bad is not None:
                row.append(Cell(bad.status, STATUS_STYLE[bad.status]))
                reasons[(p, bad.status, _first_line(bad.reason))] += 1
                continue
            t = times.get(p)
            if t is None:  # OK but without a time_us (a record from another tool): nothing to show
                row.append(Cell("-"))
                continue
            gbps = _pooled_median(cs, "gbps")
            text = f"{_fmt_us(t)} ({gbps:,.0f})" if gbps is not None else _fmt_us(t)
            row.append(Cell(text, BEST_STYLE if p == best and len(times) > 1 else ""))
        rows.append(row)
    notes = [f"{p}: {status} x{n}: {why}" for (p, status, why), n in sorted(reasons.items())]
    return Grid(title, ["case", *providers], rows, notes)


def e2e_grid(stage: str, cases: list[CaseRecord], baseline: str | None) -> Grid:
    """Variants x metrics of one end-to-end stage, with deltas against ``baseline``."""
    by_row: dict[tuple[str, str], list[CaseRecord]] = defaultdict(list)
    reasons: dict[tuple[str, str, str], int] = defaultdict(int)
    metric_names: list[str] = []
    for c in cases:
        extra = e2e_label(c.params, [k for k in E2E_POINT_AXES if k in c.params], compact=True)
        by_row[(c.variant or "-", extra)].append(c)
        for m in c.metrics:
            if m not in metric_names:
                metric_names.append(m)
    with_point = any(extra for _, extra in by_row)
    units = {}
    for c in cases:
        for name, m in c.metrics.items():
            units.setdefault(name, (m.unit, m.higher_is_better))
    headers = ["variant", *(["point"] if with_point else []), *(f"{n} ({units[n][0]})" if units[n][0] else n for n in metric_names)]
    rows: list[list[Cell]] = []
    values: dict[tuple[str, str], dict[str, float]] = {}
    for key, cs in by_row.items():
        ok = [c for c in cs if c.status == "OK"]
        values[key] = {
            name: v for name in metric_names if (v := _pooled_median(ok, name) if ok else None) is not None
        }
        for c in cs:
            if c.status != "OK":
                reasons[(c.variant or "-", c.status, _first_line(c.reason))] += 1
    for (variant, extra), vals in values.items():
        row = [Cell(variant + (" (baseline)" if variant == baseline else ""))]
        if with_point:
            row.append(Cell(extra))
        base = values.get((baseline, extra)) if baseline else None
        for name in metric_names:
            if name not in vals:
                bad = next((c for c in by_row[(variant, extra)] if c.status != "OK"), None)
                row.append(Cell(bad.status, STATUS_STYLE[bad.status]) if bad else Cell(""))
                continue
            v = vals[name]
            text = f"{v:,.4g}"
            style = ""
            if base and name in base and variant != baseline and base[name]:
                delta = 100.0 * (v - base[name]) / abs(base[name])
                text += f" ({delta:+.1f}%)"
                style = "green" if (delta > 0) == units[name][1] else "red"
            row.append(Cell(text, style))
        rows.append(row)
    notes = [f"{v}: {status} x{n}: {why}" for (v, status, why), n in sorted(reasons.items())]
    title = stage if stage == cases[0].kind else f"{stage}: {cases[0].kind}"
    return Grid(title, headers, rows, notes, right_align_from=2 if with_point else 1)


def stage_grids(record: RunRecord) -> list[Grid]:
    baseline = record.suite.spec.get("baseline")
    return [
        kernel_grid(stage, cases) if cases[0].kind == "kernel" else e2e_grid(stage, cases, baseline)
        for stage, cases in _stages(record).items()
    ]


def _columns(grid: Grid) -> list[Column]:
    cols = []
    for i, h in enumerate(grid.headers):
        # "unfused[norm=a,quant=b]" -> three header lines, so the column stays narrow
        header = h.replace("[", "\n").replace(",", "\n").rstrip("]") if h.startswith("unfused[") else h
        cols.append(Column(header, "right" if i >= grid.right_align_from else "left",
                           key=i < grid.right_align_from, stack_label=h))
    return cols


def rich_table(grid: Grid) -> Table:
    """The grid as one rich table, whatever its width (``grid_renderables`` fits it to a console)."""
    table = Table(title=grid.title, title_justify="left", header_style="bold")
    for c in _columns(grid):
        table.add_column(c.header, justify=c.justify, no_wrap=True)  # type: ignore[arg-type]
    for row in grid.rows:
        table.add_row(*(Text(c.text, style=c.style) for c in row))
    return table


def grid_renderables(grid: Grid, width: int) -> list[Any]:
    """The grid within ``width`` columns: one table if it fits, else its provider (or metric) columns
    split over several tables that each repeat the case column, else one block per case
    (``normbench.report.fit``). Case names and values are never cut."""
    rows = [[Text(c.text, style=c.style) for c in row] for row in grid.rows]
    return fit_chunks(_columns(grid), rows, width, title=grid.title, title_justify="left",
                      header_style="bold").renderables


def render_run(record: RunRecord, console: Console) -> None:
    """Print every stage's table of ``record`` fitted to the console's width, then a one-line summary."""
    for grid in stage_grids(record):
        for r in grid_renderables(grid, console.width):
            console.print(r)
        for line in grid.notes:
            console.print(Text("  " + line, style="dim"))
        console.print()
    console.print(summary_line(record))


def run_markdown(record: RunRecord) -> str:
    """The run as Markdown: a header with the machine, then one table per stage.

    The fastest provider of each row is bold; notes list the cases that did not run.
    """
    env = record.environment
    device = env.get("gpu.name") or env.get("cpu", "cpu")
    peak = env.get("peak_bandwidth_gbps")
    out = [f"## normbench run `{record.run_id}`", ""]
    facts = [f"suite `{record.suite.name}` ({record.suite.path}, sha256 {record.suite.sha256[:12]})", f"device {device}"]
    if peak:
        facts.append(f"copy bandwidth {peak:,.0f} GB/s")
    versions = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in env.items() if k.startswith("packages.") and v)
    if versions:
        facts.append(versions)
    if env.get("git.commit"):
        facts.append(f"commit {env['git.commit'][:10]}{' (dirty)' if env.get('git.dirty') else ''}")
    out += ["; ".join(facts) + ".", "", f"`{' '.join(record.command)}`", ""]
    for grid in stage_grids(record):
        out += [f"### {grid.title}", ""]
        out.append("| " + " | ".join(grid.headers) + " |")
        out.append("|" + "|".join("---" if i < grid.right_align_from else "--:" for i in range(len(grid.headers))) + "|")
        for row in grid.rows:
            cells = [f"**{c.text}**" if c.style == BEST_STYLE else c.text for c in row]
            out.append("| " + " | ".join(cells) + " |")
        if grid.notes:
            out += ["", *(f"- {n}" for n in grid.notes)]
        out.append("")
    out.append(summary_line(record).plain)
    return "\n".join(out) + "\n"


def summary_line(record: RunRecord) -> Text:
    counts: dict[str, int] = defaultdict(int)
    for c in record.cases:
        counts[c.status] += 1
    gpu = record.environment.get("gpu.name") or record.environment.get("cpu", "cpu")
    peak = record.environment.get("peak_bandwidth_gbps")
    status = record.status
    if record.recovered_from:
        status += f", recovered from the journal {Path(record.recovered_from).name}: its run.json was missing"
    text = Text(f"run {record.run_id} ({status}) on {gpu}")
    if peak:
        text.append(f", copy bandwidth {peak:,.0f} GB/s")
    text.append(": ")
    for i, status in enumerate(("OK", "INCORRECT", "FAILED", "SKIPPED")):
        text.append(f"{counts.get(status, 0)} {status}", style=STATUS_STYLE[status] if counts.get(status) else "")
        if i < 3:
            text.append(", ")
    missing = record.planned - len(record.cases)
    if missing > 0:
        text.append(f", {missing} not run (normbench run --resume {record.run_id})", style="yellow")
    return text
