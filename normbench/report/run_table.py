"""Rich tables of one run (``normbench run`` and ``normbench show``).

Kernel stage: one row per sweep point (only the axes that vary are shown),
one column per provider with ``median us`` and ``GB/s`` (and ``% of peak``); the
fastest provider of each row is bold green. Cells of cases that did not run say
SKIPPED / INCORRECT / FAILED; their reasons are listed under the table, grouped.

End-to-end stage: one row per variant (and input length), one column per
metric, with the delta against the suite's baseline variant.

Pure: takes a ``RunRecord``; no torch.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from normbench.store import CaseRecord, RunRecord

STATUS_STYLE = {"SKIPPED": "dim", "INCORRECT": "bold red", "FAILED": "bold red", "OK": ""}
HIDDEN_PARAMS = {"eps"}
SHORT_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


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


def _varying(cases: Iterable[CaseRecord]) -> list[str]:
    keys: dict[str, set] = defaultdict(set)
    order: list[str] = []
    for c in cases:
        for k, v in c.params.items():
            if k not in keys:
                order.append(k)
            keys[k].add(repr(v))
    return [k for k in order if len(keys[k]) > 1 and k not in HIDDEN_PARAMS]


def _fmt_point(params: dict[str, Any], axes: list[str]) -> str:
    parts = []
    shape_done = False
    for k in axes:
        if k in ("num_tokens", "hidden_size"):
            if not shape_done:
                parts.append(f"{params['num_tokens']}x{params['hidden_size']}")
                shape_done = True
            continue
        v = params[k]
        if isinstance(v, bool):
            parts.append(f"+{k}" if v else f"-{k}")
        elif k == "dtype":
            parts.append(SHORT_DTYPE.get(v, v))
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "-"


def _fmt_us(us: float) -> str:
    return f"{us:,.2f}" if us < 1000 else f"{us:,.0f}"


def kernel_table(stage: str, cases: list[CaseRecord], peak: float | None) -> tuple[Table, list[str]]:
    """The table of one kernel stage and the grouped reasons of cases that did not run."""
    providers: list[str] = []  # columns: providers with at least one case that ran
    for c in cases:
        if c.status != "SKIPPED" and (c.provider or "-") not in providers:
            providers.append(c.provider or "-")
    axes = _varying(cases)
    if "num_tokens" not in axes and "hidden_size" not in axes:
        axes = ["num_tokens", *axes]
    points: dict[tuple, dict[str, list[CaseRecord]]] = {}
    point_params: dict[tuple, dict[str, Any]] = {}
    for c in cases:
        key = tuple(sorted((k, repr(v)) for k, v in c.params.items()))
        points.setdefault(key, defaultdict(list))[c.provider or "-"].append(c)
        point_params[key] = c.params
    op = cases[0].op or ""
    const = {k: v for k, v in cases[0].params.items() if k not in axes and k not in ("num_tokens", "hidden_size")}
    title = f"{stage}: {op}, median us (GB/s)" + (f"; {', '.join(f'{k}={v}' for k, v in const.items())}" if const else "")
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("case", no_wrap=True)
    for p in providers:
        table.add_column(p, justify="right")
    reasons: dict[tuple[str, str, str], int] = defaultdict(int)
    for c in cases:
        if (c.provider or "-") not in providers:
            reasons[(c.provider or "-", c.status, _first_line(c.reason))] += 1
    for key, by_provider in points.items():
        times = {p: _pooled_median(cs, "time_us") for p, cs in by_provider.items() if all(c.status == "OK" for c in cs)}
        times = {p: t for p, t in times.items() if t is not None}
        best = min(times, key=times.get) if times else None
        row: list[Text] = [Text(_fmt_point(point_params[key], axes))]
        for p in providers:
            cs = by_provider.get(p)
            if not cs:
                row.append(Text(""))
                continue
            bad = next((c for c in cs if c.status != "OK"), None)
            if bad is not None:
                row.append(Text(bad.status, style=STATUS_STYLE[bad.status]))
                reasons[(p, bad.status, _first_line(bad.reason))] += 1
                continue
            t = times[p]
            gbps = _pooled_median(cs, "gbps") or (cs[0].metrics["gbps"].value if "gbps" in cs[0].metrics else None)
            cell = f"{_fmt_us(t)} ({gbps:,.0f})" if gbps is not None else _fmt_us(t)
            row.append(Text(cell, style="bold green" if p == best and len(times) > 1 else ""))
        table.add_row(*row)
    lines = [f"{p}: {status} x{n}: {why}" for (p, status, why), n in sorted(reasons.items())]
    return table, lines


def e2e_table(stage: str, cases: list[CaseRecord], baseline: str | None) -> tuple[Table, list[str]]:
    """Variants x metrics of one end-to-end stage, with deltas against ``baseline``."""
    by_row: dict[tuple[str, str], list[CaseRecord]] = defaultdict(list)
    reasons: dict[tuple[str, str, str], int] = defaultdict(int)
    metric_names: list[str] = []
    for c in cases:
        extra = ""
        if "input_len" in c.params:
            extra = f"in={c.params['input_len']}"
        by_row[(c.variant or "-", extra)].append(c)
        for m in c.metrics:
            if m not in metric_names:
                metric_names.append(m)
    table = Table(title=f"{stage}: {cases[0].kind}", title_justify="left", header_style="bold")
    table.add_column("variant", no_wrap=True)
    if any(extra for _, extra in by_row):
        table.add_column("point")
    units = {}
    for c in cases:
        for name, m in c.metrics.items():
            units.setdefault(name, (m.unit, m.higher_is_better))
    for name in metric_names:
        table.add_column(f"{name}\n({units[name][0]})", justify="right")
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
        row: list[Text] = [Text(variant + (" (baseline)" if variant == baseline else ""))]
        if any(e for _, e in by_row):
            row.append(Text(extra))
        base = values.get((baseline, extra)) if baseline else None
        for name in metric_names:
            if name not in vals:
                bad = next((c for c in by_row[(variant, extra)] if c.status != "OK"), None)
                row.append(Text(bad.status if bad else "", style=STATUS_STYLE.get(bad.status, "") if bad else ""))
                continue
            v = vals[name]
            cell = Text(f"{v:,.4g}")
            if base and name in base and variant != baseline and base[name]:
                delta = 100.0 * (v - base[name]) / abs(base[name])
                better = (delta > 0) == units[name][1]
                cell.append(f" ({delta:+.1f}%)", style="green" if better else "red")
            row.append(cell)
        table.add_row(*row)
    lines = [f"{v}: {status} x{n}: {why}" for (v, status, why), n in sorted(reasons.items())]
    return table, lines


def render_run(record: RunRecord, console: Console) -> None:
    """Print every stage's table of ``record``, then a one-line summary."""
    peak = record.environment.get("peak_bandwidth_gbps")
    baseline = record.suite.spec.get("baseline")
    for stage, cases in _stages(record).items():
        if cases[0].kind == "kernel":
            table, reasons = kernel_table(stage, cases, peak)
        else:
            table, reasons = e2e_table(stage, cases, baseline)
        console.print(table)
        for line in reasons:
            console.print(Text("  " + line, style="dim"))
        console.print()
    console.print(summary_line(record))


def summary_line(record: RunRecord) -> Text:
    counts: dict[str, int] = defaultdict(int)
    for c in record.cases:
        counts[c.status] += 1
    gpu = record.environment.get("gpu.name") or record.environment.get("cpu", "cpu")
    peak = record.environment.get("peak_bandwidth_gbps")
    text = Text(f"run {record.run_id} ({record.status}) on {gpu}")
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
