"""Profiles next to a comparison's deltas: one extra table under a kernel stage's table. Pure: no torch.

Rows are the stage's shown rows whose cases have a profile on either side
(``normbench.profile.summary.attach_profiles``): provider, case, the delta (Δ%), then as
``base→cand`` (one value when equal, ``-`` for a side without) the profiled kernels'
summed duration and, where some profile has ncu's counters, DRAM %, achieved occupancy %
and registers per thread; last the candidate's kernels (the baseline's when only it was
profiled). It answers "why": a slower case whose DRAM % fell or whose registers rose says
where to look. Fitted to the console like every table (``normbench.report.fit``): the
kernel names go first, then the durations; the delta and the counters stay. Failed
profiles are listed under the table.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text

from normbench.profile.summary import fmt_pct, fmt_regs, fmt_us, names_text, pair

COUNTERS = ["DRAM %", "occ %", "regs"]
LEGEND = ("profile (base→cand): kernel us = the profiled kernels' durations summed; DRAM % = DRAM throughput "
          "(% of peak) and occ % = achieved occupancy, each weighted by kernel duration; regs = registers per "
          "thread (the most of the case's kernels)")


def _profile(r: Any) -> dict[str, Any] | None:
    extra = getattr(r, "extra", None)
    return extra.get("profile") if isinstance(extra, dict) else None


def _cells(side: dict[str, Any] | None) -> tuple[str, str, str, str]:
    if not side or side.get("error"):
        return "-", "-", "-", "-"
    return (fmt_us(side.get("time_us")), fmt_pct(side.get("dram_pct")), fmt_pct(side.get("occupancy_pct")),
            fmt_regs(side.get("registers")))


def _kernels(prof: dict[str, Any], limit: int) -> str:
    side = prof.get("cand") or prof.get("base") or {}
    if side.get("error"):
        return "profile failed"
    return names_text(side.get("names") or [], limit=limit) or "-"


def has_counters(rows: Sequence[Any]) -> bool:
    """Whether any side of any row has ncu's counters (DRAM %, occupancy, registers)."""
    return any(side.get(k) is not None for r in rows if (p := _profile(r))
               for side in (p.get("base") or {}, p.get("cand") or {})
               for k in ("dram_pct", "occupancy_pct", "registers"))


def failures(rows: Sequence[Any], label: Any) -> list[str]:
    """``provider case: cand profile failed: why`` for each side of each row whose profiling failed
    (``base and cand`` when both failed alike)."""
    out = []
    for r in rows:
        prof = _profile(r) or {}
        errors = {side: (prof.get(side) or {}).get("error") for side in ("base", "cand")}
        if errors["base"] and errors["base"] == errors["cand"]:
            errors = {"base and cand": errors["base"]}
        for side, err in errors.items():
            if err:
                out.append(f"{r.provider or '-'} {label(r)}: {side} profile failed: {err.splitlines()[0][:160]}")
    return list(dict.fromkeys(out))


def header(rows: Sequence[Any], multi: bool = False) -> list[str]:
    """The profile table's columns for ``rows``."""
    return ((["vs"] if multi else []) + ["provider", "case", "Δ%", "kernel us"]
            + (COUNTERS if has_counters(rows) else []) + ["kernels"])


def profile_rows(rows: Sequence[Any], label: Any, multi: bool = False,
                 candidate: Any = lambda r: r.candidate, limit: int = 64) -> list[list[str]]:
    """Table rows (``header(rows, multi)``) for the ``rows`` that carry ``extra["profile"]``;
    ``label(row)`` gives the case column, ``candidate(row)`` the ``vs`` column, ``limit`` the
    kernel names' length."""
    from normbench.report.compare_cells import fmt_pct as fmt_delta

    counters = has_counters(rows)
    out = []
    for r in rows:
        prof = _profile(r)
        if not prof:
            continue
        b, c = _cells(prof.get("base")), _cells(prof.get("cand"))
        cells = [r.provider or "-", label(r), fmt_delta(r.delta_pct) if r.compared else "", pair(b[0], c[0])]
        if counters:
            cells += [pair(b[1], c[1]), pair(b[2], c[2]), pair(b[3], c[3])]
        out.append(([candidate(r)] if multi else []) + cells + [_kernels(prof, limit)])
    return out


def profile_renderables(rows: Sequence[Any], label: Any, width: int, multi: bool = False,
                        candidate: Any = lambda r: r.candidate) -> list[Any]:
    """The profile table of one kernel stage within ``width`` columns, failures and legend under it;
    [] when no row has a profile."""
    from normbench.report.fit import TABLE_STYLE, Column, fit_table

    body = profile_rows(rows, label, multi, candidate)
    if not body:
        return []
    cols = []
    for h in header(rows, multi):
        if h in ("vs", "provider", "case"):
            cols.append(Column(h, key=True))
        elif h == "kernels":
            cols.append(Column(h, wrap=True, drop=2))
        else:
            cols.append(Column(h, "right", drop=1 if h == "kernel us" else 0))
    fitted = fit_table(cols, body, width, title="profile (base→cand)", **TABLE_STYLE)
    out: list[Any] = list(fitted.renderables)
    if fitted.dropped:
        out.append(Text(f"  not shown at {width} columns: {', '.join(fitted.dropped)} (--format markdown has them)",
                        style="dim"))
    out += [Text(f"  {line}", style="yellow") for line in failures(rows, label)]
    return [*out, Text(f"  {LEGEND}", style="dim")]


def profile_markdown(rows: Sequence[Any], label: Any, multi: bool = False,
                     candidate: Any = lambda r: r.candidate) -> list[str]:
    """The same table as Markdown lines (a blank line after), or [] when no row has a profile."""
    body = profile_rows(rows, label, multi, candidate, limit=160)
    if not body:
        return []
    head = header(rows, multi)
    align = ["--:" if h not in ("vs", "provider", "case", "kernels") else "---" for h in head]
    out = ["**Profile** (base→cand):", "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in body]
    out += ["", *(f"- {line}" for line in failures(rows, label))]
    return out + ([""] if out[-1] else []) + [f"_{LEGEND}._", ""]
