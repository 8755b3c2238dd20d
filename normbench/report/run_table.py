"""Rich tables of one run (``normbench run`` and ``normbench show``).

Kernel stage: one row per sweep point (only the axes that vary are shown),
one column per provider with ``median us (GB/s)``; the fastest provider of each row is
bold green (bold in Markdown). Cells of cases that did not run say
SKIPPED / INCORRECT / FAILED; their reasons are listed under the table, grouped.

End-to-end stage: one row per variant (and input length), one column per
metric, with the delta against the suite's baseline variant.

Profiled kernel cases (``normbench run --profile ncu|torch``) get a second table under
their stage's: per case, the profiled kernels' summed duration, DRAM throughput (% of
peak) and achieved occupancy (each weighted by kernel duration), registers per thread
(the most of its kernels) and the kernels' short names (``profile_grid``); a profile
without ncu's counters (torch) shows no counter columns.

Pure: takes a ``RunRecord``; no torch.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from normbench.process import reason_line
from normbench.profile.summary import fmt_pct, fmt_regs, names_text, summarize
from normbench.profile.summary import fmt_us as fmt_profile_us
from normbench.report import varying_axes
from normbench.report.fit import TABLE_STYLE, Column, fit_chunks, fit_table
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
            reasons[(c.provider or "-", c.status, reason_line(c.reason))] += 1
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
                reasons[(p, bad.status, reason_line(bad.reason))] += 1
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
    if not metric_names:  # no case gave a value: a status column, so the table says what happened
        headers.append("status")
    rows: list[list[Cell]] = []
    values: dict[tuple[str, str], dict[str, float]] = {}
    for key, cs in by_row.items():
        ok = [c for c in cs if c.status == "OK"]
        values[key] = {
            name: v for name in metric_names if (v := _pooled_median(ok, name) if ok else None) is not None
        }
        for c in cs:
            if c.status != "OK":
                reasons[(c.variant or "-", c.status, reason_line(c.reason))] += 1
    for (variant, extra), vals in values.items():
        row = [Cell(variant + (" (baseline)" if variant == baseline else ""))]
        if with_point:
            row.append(Cell(extra))
        base = values.get((baseline, extra)) if baseline else None
        if not metric_names:
            counts = Counter(c.status for c in by_row[(variant, extra)])
            text = ", ".join(f"{st} x{n}" for st, n in sorted(counts.items()))
            row.append(Cell(text, STATUS_STYLE.get(max(counts, key=counts.get), "")))
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


def _profile_notes(profiles: list[dict[str, Any]]) -> list[str]:
    """How the stage's cases were profiled, one line per tool, and what the columns mean."""
    lines = []
    seen: set[str] = set()
    for p in profiles:
        tool = p.get("tool")
        if tool in seen or p.get("error"):
            continue
        seen.add(str(tool))
        calls = f"{p.get('launches', 1)} call(s) after {p.get('warmup', 0)} warm-up call(s)"
        if tool == "ncu":
            st = p.get("settings") or {}
            lines.append(f"ncu --set {st.get('set', '?')} --clock-control {st.get('clock_control', '?')} "
                         f"({p.get('tool_version') or 'version unknown'}): {calls}, caches flushed; DRAM % = DRAM "
                         "throughput, % of peak; occ % = achieved occupancy; both weighted by kernel duration; "
                         "regs = registers per thread, the most of the case's kernels")
        else:
            acts = "+".join((p.get("settings") or {}).get("activities", []))
            lines.append(f"torch.profiler ({acts}; torch {p.get('tool_version') or '?'}): {calls}; kernel us = "
                         "self time of its kernels (on a CPU: its aten ops) per call; trace: the case's torch_trace")
    return lines


def profile_grid(stage: str, cases: list[CaseRecord]) -> Grid | None:
    """The profiled cases of one kernel stage: provider, case, kernel us, [DRAM %, occ %, regs,] kernels.

    The counter columns appear only when some profile has them (ncu). A profile that failed
    is a row saying so; notes say how the cases were profiled. None when no case has a profile.
    """
    profiled = [c for c in cases if c.profile]
    if not profiled:
        return None
    axes = varying_axes(c.params for c in cases)
    summaries = [(c, summarize(c.profile)) for c in profiled]
    counters = any(s is not None and (s.dram_pct is not None or s.occupancy_pct is not None or s.registers is not None)
                   for _, s in summaries)
    headers = ["provider", "case", "kernel us", *(["DRAM %", "occ %", "regs"] if counters else []), "kernels"]
    rows: list[list[Cell]] = []
    for c, s in summaries:
        assert s is not None
        row = [Cell(c.provider or "-"), Cell(case_label(c.params, axes))]
        if s.error:
            row += [Cell("-")] * (len(headers) - 3) + [Cell(f"profile failed: {_first_line(s.error)[:120]}",
                                                            STATUS_STYLE["FAILED"])]
        else:
            row.append(Cell(fmt_profile_us(s.time_us)))
            if counters:
                row += [Cell(fmt_pct(s.dram_pct)), Cell(fmt_pct(s.occupancy_pct)), Cell(fmt_regs(s.registers))]
            row.append(Cell(names_text(s.names) or "-"))
        rows.append(row)
    tools = ", ".join(dict.fromkeys(s.tool for _, s in summaries if s is not None))
    op = cases[0].op or ""
    title = (op if stage == op else f"{stage}: {op}") + f", profile ({tools})"
    return Grid(title, headers, rows, _profile_notes([c.profile for c in profiled if c.profile]), right_align_from=2)


def profile_renderables(grid: Grid, width: int) -> list[Any]:
    """The profile grid within ``width``: provider and case whole, kernel names wrapping
    (``normbench.report.fit``: stacked per case when even that is too wide)."""
    cols = [Column(h, "right" if 2 <= i < len(grid.headers) - 1 else "left", key=i < 2, wrap=i == len(grid.headers) - 1)
            for i, h in enumerate(grid.headers)]
    rows = [[Text(c.text, style=c.style) for c in row] for row in grid.rows]

    return fit_table(cols, rows, width, title=grid.title, **TABLE_STYLE).renderables


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


def profile_grids(record: RunRecord) -> list[Grid | None]:
    """Per stage, in ``stage_grids``' order: its ``profile_grid`` (None for a stage without profiles)."""
    return [profile_grid(stage, cases) if cases[0].kind == "kernel" else None
            for stage, cases in _stages(record).items()]


def render_run(record: RunRecord, console: Console) -> None:
    """Print every stage's table of ``record`` fitted to the console's width (and its profile
    table, where cases were profiled), then a one-line summary."""
    for grid, prof in zip(stage_grids(record), profile_grids(record)):
        for r in grid_renderables(grid, console.width):
            console.print(r)
        for line in grid.notes:
            console.print(Text("  " + line, style="dim"))
        if prof is not None:
            for r in profile_renderables(prof, console.width):
                console.print(r)
            for line in prof.notes:
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
    for grid, prof in zip(stage_grids(record), profile_grids(record)):
        out += [f"### {grid.title}", ""]
        out.append("| " + " | ".join(grid.headers) + " |")
        out.append("|" + "|".join("---" if i < grid.right_align_from else "--:" for i in range(len(grid.headers))) + "|")
        for row in grid.rows:
            cells = [f"**{c.text}**" if c.style == BEST_STYLE else c.text for c in row]
            out.append("| " + " | ".join(cells) + " |")
        if grid.notes:
            out += ["", *(f"- {n}" for n in grid.notes)]
        out.append("")
        if prof is not None:
            out += [f"#### {prof.title}", "", "| " + " | ".join(prof.headers) + " |",
                    "|" + "|".join("---" if i < 2 or i == len(prof.headers) - 1 else "--:"
                                   for i in range(len(prof.headers))) + "|"]
            out += ["| " + " | ".join(c.text.replace("|", "\\|") for c in row) + " |" for row in prof.rows]
            out += ["", *(f"- {n}" for n in prof.notes), ""]
    out.append(summary_line(record).plain)
    return "\n".join(out) + "\n"


def cold_l2_fact(env: dict) -> str | None:
    """The run's cold-L2 cross-check in one phrase (``normbench.env.cold_l2_check``), or None."""
    if "cold_l2_check.error" in env:
        return f"cold-L2 check failed: {env['cold_l2_check.error']}"
    if "cold_l2_check.agree" not in env:
        return None
    verdict = "agree" if env["cold_l2_check.agree"] else "DISAGREE"
    overhead = env.get("cold_l2_check.events_overhead_us") or 0.0  # absent in records before 2026-12-07
    events = (f"{env['cold_l2_check.events_us'] - overhead:.2f} (less {overhead:.2f} event overhead)"
              if overhead else f"{env['cold_l2_check.events_us']:.2f}")
    return (f"cold-L2 check: graph replay {env['cold_l2_check.graph_us']:.2f} vs events + flush "
            f"{events} us per call, {verdict} within {100 * env['cold_l2_check.noise_floor']:.1f}%")


def worker_startup_fact(record: RunRecord) -> str | None:
    """A parallel run's workers' start-up in one phrase, or None when no case recorded one.

    Per worker (host, device label, pid; a replaced worker is listed again), in the order
    of the labels: ``device_info.startup_s``, seconds from spawning it to its ready answer,
    and ``startup_wait_s``, how many of them the run waited for (``normbench.executors.pool``):
    ``worker start-up, spawn to ready: cuda:0 9.8 s (run waited 4.1 s), cuda:1 10.2 s (...)``.
    """
    seen: dict[tuple, tuple[float, float | None]] = {}
    for c in record.cases:
        info = c.device_info or {}
        if "startup_s" in info:
            key = (str(info.get("label", "?")), info.get("host"), info.get("pid"))
            seen.setdefault(key, (info["startup_s"], info.get("startup_wait_s")))
    if not seen:
        return None
    parts = [f"{label} {s:.1f} s" + (f" (run waited {w:.1f} s)" if w is not None else "")
             for (label, _, _), (s, w) in sorted(seen.items(), key=lambda kv: kv[0][0])]
    return "worker start-up, spawn to ready: " + ", ".join(parts)


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
