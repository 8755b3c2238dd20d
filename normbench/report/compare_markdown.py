"""Markdown of a ``Comparison``, for a pull request (``normbench compare --format markdown``).

``to_markdown`` is made to be pasted into a pull request as it is: a header, the
fusion evidence table (variant comparisons whose records carry it), one table per
stage with every column (no width to fit: GB/s included), then a footer with the
commands that produced the runs, the versions and the GPU (``_versions``), the
environment differences and how verdicts were reached. Improvements and
regressions are bold, rows that were not compared italic. The cells and the stage
layout are ``compare_cells``'s, the same as the rich tables'.

Pure: no torch, no rich.
"""

from __future__ import annotations

from typing import Any

from normbench.report.compare_cells import (
    EVIDENCE_HEADER,
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
    short_id,
    unit_label,
    variant_label,
    verdict_text,
)
from normbench.report.labels import case_label as kernel_case_label
from normbench.compare import Comparison, Row, env_get, flatten


def footer_packages(env: dict[str, Any]) -> list[str]:
    """The packages the footer names for ``env``: ``normbench.env.footer_packages()`` (the
    providers' distributions from the registry, and the tools), then any other package the
    record holds that nothing here declares (an outside provider's, recorded where it was
    installed), in the record's order."""
    from normbench.env import footer_packages as declared, recorded_packages

    known = set(recorded_packages())
    extra = [k.split(".", 1)[1] for k in flatten(env) if k.startswith("packages.")]
    return [*declared(), *(p for p in extra if p not in known)]


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


def _md_stage(view: StageView) -> list[str]:
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
    extra = view.skipped_lines() + row_notes(view, long=True)
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
        view = StageView(cmp, stage)
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

    lines.append(f"<sub>{_md(options_line(cmp))} normbench {__version__}.</sub>")
    return "\n".join(lines) + "\n"
