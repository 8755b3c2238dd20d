"""``normbench compare | noise | export | plot``: reading stored runs.

Runs are named by id, unique id prefix, path, or ``latest`` (``store.resolve_run``)
in ``--results-dir`` (else ``$NORMBENCH_RESULTS_DIR``, else ``./runs``).

Every ``-o/--output`` takes a file, or a folder (one that exists, or a path
ending in ``/``) to write a default name inside (``compare-<run id>.md``,
``noise-<run id>.txt``, ``<run id>.csv``, ...); missing parent folders are
created, an existing file is replaced, and every format (rich too, rendered
120 columns wide without colour) is written to it.

Exit codes (``normbench.cli``): 0 ok; 1 ``compare --fail-on`` found a
significant regression beyond its threshold (or a case OK in the baseline is
INCORRECT/FAILED in the candidate); 2 bad input (unknown run, bad option,
``--strict`` across GPUs, a ``--fail-on`` that does not parse or names no metric).
None of these commands imports torch.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from normbench.cli import RESULTS_DIR_OPT, app, console, err_console
from normbench.errors import NormbenchError

COMPARE_FORMATS = ("rich", "markdown", "json", "csv")
#: File name extension per --format, for the default name of an output written into a folder.
EXTENSIONS = {"rich": "txt", "markdown": "md", "json": "json", "csv": "csv"}
#: Width of rich output written to a file (no terminal to measure).
FILE_WIDTH = 120


def _load(ref: str, results_dir: Optional[Path]):
    from normbench import store

    return store.load_run(store.resolve_run(ref, store.results_dir(results_dir)))


def parse_fraction(text: str, option: str, *, percent_default: bool) -> float:
    """``2%`` -> 0.02, ``0.02`` -> 0.02; ``95%`` -> 0.95.

    A bare number is a fraction; with ``percent_default`` a bare number of 1 or
    more is refused (``--min-effect 2`` is ambiguous: write 2% or 0.02).

    Raises:
        NormbenchError: not a number.
    """
    raw = text.strip()
    try:
        if raw.endswith("%"):
            return float(raw[:-1]) / 100.0
        value = float(raw)
    except ValueError:
        raise NormbenchError(f"{option} '{text}': expected a percentage such as 2% or a fraction such as 0.02") from None
    if percent_default and value >= 1.0:
        raise NormbenchError(f"{option} {text}: write {value:g}% or {value / 100:g}")
    return value


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    f = fmt.lower()
    if f == "md":
        f = "markdown"
    if f not in allowed:
        raise NormbenchError(f"--format '{fmt}': choose one of {', '.join(allowed)}")
    return f


def output_path(raw: str, default_name: str) -> Path:
    """Where ``-o raw`` writes: ``raw``, or ``raw/default_name`` when ``raw`` is a folder (one that
    exists, or a path ending in ``/``). Creates the missing parent folders.

    Raises:
        NormbenchError: a parent that cannot be created (a file stands in the way, no permission).
    """
    p = Path(raw).expanduser()
    if raw.endswith(("/", os.sep)) or p.is_dir():
        p = p / default_name
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NormbenchError(f"-o {raw}: cannot create the folder {p.parent}: {e.strerror or e}") from None
    return p


def _emit(text: str, output: Optional[str], default_name: str) -> None:
    """``text`` to stdout, or to the file ``-o output`` names (see ``output_path``).

    Raises:
        NormbenchError: the file cannot be written.
    """
    if output is None:
        typer.echo(text, nl=False)
        return
    path = output_path(output, default_name)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise NormbenchError(f"{path}: cannot write: {e.strerror or e}") from None
    err_console().print(f"wrote {path}", soft_wrap=True, highlight=False)


def _rich_text(render, *args) -> str:
    """What ``render(*args, console)`` prints, as plain text ``FILE_WIDTH`` columns wide."""
    buf = io.StringIO()
    render(*args, Console(file=buf, width=FILE_WIDTH, color_system=None, highlight=False))
    return buf.getvalue()


OUTPUT_HELP = "Write the report to this file (a folder: a default name inside it)."


# --------------------------------------------------------------------------- show
def show_run(run_ref: str, fmt: str, output: Optional[str], results_dir: Optional[Path]) -> None:
    """``normbench show`` (registered in ``normbench.cli.run``): a stored run's tables, rich or Markdown,
    to the terminal or to ``-o`` (a file, or a folder for ``<run id>.txt`` / ``.md``)."""
    from normbench.report.run_table import render_run, run_markdown

    fmt = _check_format(fmt, ("rich", "markdown"))
    record = _load(run_ref, results_dir)
    name = f"{record.run_id}.{EXTENSIONS[fmt]}"
    if fmt == "markdown":
        text = run_markdown(record)
        lines = conditions_lines(record)
        if lines:
            text += "\n**Measurement conditions** (NVML; before → after each stage):\n\n"
            text += "".join(f"- {'⚠ ' if warn else ''}{line}\n" for line, warn in lines)
        if output is not None:
            _emit(text, output, name)
        else:
            console().print(text, markup=False, highlight=False, soft_wrap=True)
    elif output is not None:
        _emit(_rich_text(lambda r, c: (render_run(r, c), print_conditions(r, c)), record), output, name)
    else:
        render_run(record, console())
        print_conditions(record, console())


def conditions_lines(record) -> list[tuple[str, bool]]:
    """The run's measurement conditions in words (``normbench.conditions.show_lines``), cases labelled
    as the tables label them, then the run's cold-L2 cross-check (``normbench.env.cold_l2_check``) and
    its parallel workers' start-up (``worker_startup_fact``); empty for a run that recorded none
    (a serial CPU run)."""
    from normbench.conditions import show_lines
    from normbench.report import varying_axes
    from normbench.report.run_table import cold_l2_fact, worker_startup_fact
    from normbench.report.labels import case_label

    varying = varying_axes(c.params for c in record.cases if c.kind == "kernel")

    def label(c) -> str:
        if "num_tokens" in c.params and "hidden_size" in c.params:
            return f"{c.provider} {case_label(c.params, varying)}"
        return c.case_id

    lines = show_lines(record, label)
    env = record.environment
    fact = cold_l2_fact(env)
    if fact is not None:
        lines.append((fact, env.get("cold_l2_check.agree") is not True))
    startup = worker_startup_fact(record)
    if startup is not None:
        lines.append((startup, False))
    return lines


def print_conditions(record, out: Console) -> None:
    """``conditions_lines`` under a run's tables (``show``, and the end of ``run``): warnings in yellow."""
    from rich.text import Text

    for line, warn in conditions_lines(record):
        out.print(Text(f"{'⚠ ' if warn else ''}{line}", style="yellow" if warn else "dim"))


# --------------------------------------------------------------------------- compare
@app.command()
def compare(
    runs: list[str] = typer.Argument(
        ..., metavar="RUN...",
        help="The baseline run, then one or more candidate runs (id, unique prefix, path, or `latest`). "
             "With --variants: one run.",
    ),
    variants: bool = typer.Option(False, "--variants", help="Compare the variants of one run against its baseline variant."),
    baseline_variant: Optional[str] = typer.Option(
        None, "--baseline-variant", help="The variant the others are compared with (default: the suite's `baseline`)."
    ),
    fmt: str = typer.Option("rich", "--format", "-f", help="rich, markdown (for a pull request), json or csv."),
    min_effect: str = typer.Option("2%", "--min-effect", help="Smallest relative change that counts (2% or 0.02)."),
    confidence: str = typer.Option("0.95", "--confidence", help="Interval level and 1 - significance level."),
    strict: bool = typer.Option(False, "--strict", help="Refuse to compare runs measured on different GPUs."),
    allow_throttled: bool = typer.Option(
        False, "--allow-throttled",
        help="Compare kernel cases sampled while the GPU reported power or thermal throttling (NVML); by default "
             "they are listed as `throttled`, not compared.",
    ),
    fail_on: Optional[list[str]] = typer.Option(
        None, "--fail-on",
        help="Exit 1 on a significant regression beyond a threshold: `median:+5%` (every metric) or per metric, "
             "`time_us:+5%`, `output_throughput:-3%`. Repeatable. Never fails on noise.",
    ),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="PATH", help=OUTPUT_HELP),
    resamples: int = typer.Option(4000, "--resamples", help="Bootstrap resamples per row."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same intervals)."),
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
) -> None:
    """Compare runs (baseline first) or the variants of one run: deltas with verdicts.

    Every delta is **faster**, **slower** or **within noise**: a 95% bootstrap
    interval of the ratio of medians and a Mann-Whitney test on the stored
    samples, and at least --min-effect; gsm8k uses McNemar's test on the
    paired items. `--format markdown` pastes into a pull request as is.
    """
    from normbench import compare as cmpmod
    from normbench.report import compare_render, compare_rich

    fmt = _check_format(fmt, COMPARE_FORMATS)
    gates = cmpmod.parse_fail_on(fail_on)
    options = cmpmod.CompareOptions(
        confidence=parse_fraction(confidence, "--confidence", percent_default=False),
        min_effect=parse_fraction(min_effect, "--min-effect", percent_default=True),
        resamples=resamples, seed=seed, strict=strict, allow_throttled=allow_throttled,
    )
    records = [_load(r, results_dir) for r in runs]
    if variants or (len(records) == 1 and baseline_variant):
        if len(records) != 1:
            raise NormbenchError("--variants compares the variants of one run: give exactly one run")
        result = cmpmod.compare_variants(records[0], baseline_variant, options)
    elif len(records) == 1:
        if len(cmpmod.run_variants(records[0])) >= 2:
            result = cmpmod.compare_variants(records[0], None, options)
        else:
            raise NormbenchError(
                "compare needs a baseline run and a candidate run (`normbench compare <run-a> <run-b>`), "
                "or one run with variants and --variants"
            )
    else:
        if baseline_variant:
            raise NormbenchError("--baseline-variant applies to --variants (one run)")
        result = cmpmod.compare(records[0], records[1:], options)
        from normbench.profile.summary import attach_profiles

        attach_profiles(result, records[0], records[1:])  # cases run with --profile: shown beside their deltas

    default_name = (f"variants-{records[0].run_id}" if result.mode == "variants"
                    else f"compare-{records[-1].run_id}") + f".{EXTENSIONS[fmt]}"
    if fmt == "rich":
        if output is not None:
            _emit(_rich_text(compare_rich.render_rich, result), output, default_name)
        else:
            compare_rich.render_rich(result, console())
    else:
        text = compare_render.render(result, fmt, console())
        _emit(text or "", output, default_name)

    if gates:
        failures = cmpmod.check_gates(result, gates)
        err = err_console()
        if failures:
            for f in failures:
                r = f.row
                what = " ".join(x for x in (r.stage, r.provider or r.variant or "", _params_short(r.params)) if x)
                err.print(f"[bold red]regression[/] ({f.gate.text}): {what}: {f.why}", soft_wrap=True)
            raise typer.Exit(1)
        err.print(f"[green]--fail-on: no significant regression beyond {', '.join(g.text for g in gates)}[/]")
        throttled = len({(r.candidate, r.key) for r in result.rows if r.status == cmpmod.THROTTLED})
        if throttled:
            err.print(f"[yellow]--fail-on: {throttled} throttled case{'s' if throttled != 1 else ''} not gated "
                      "(no verdict; --allow-throttled compares them)[/]")


def _params_short(params: dict) -> str:
    """A regressed case for ``--fail-on``'s message, in the tables' words (``report.labels``):
    ``16x4096 bf16 -residual``, or ``input_len=512`` for an end-to-end point."""
    from normbench.report.labels import case_label, e2e_label

    if "num_tokens" in params and "hidden_size" in params:
        return case_label(params, [k for k in ("dtype", "residual", "quant_dtype", "group_size") if k in params])
    return e2e_label(params, [k for k in ("input_len",) if k in params])


# --------------------------------------------------------------------------- noise
@app.command()
def noise(
    run_ref: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, path, or `latest`."),
    fmt: str = typer.Option("rich", "--format", "-f", help="rich or json."),
    confidence: str = typer.Option("0.95", "--confidence", help="Interval level of the A/A intervals."),
    top: int = typer.Option(0, "--top", help="Show only the N noisiest cases (0: all)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="PATH", help=OUTPUT_HELP),
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
) -> None:
    """A/A noise floor of a run: the spread between repeats of identical cases.

    Run a suite with `normbench run --repeat N` (kernel cases) or `repeats:`
    (end-to-end stages) first; the summary says the smallest effect this
    machine resolves, the --min-effect to compare its runs with.
    """
    import json

    from normbench import compare as cmpmod
    from normbench.report import compare_rich

    fmt = _check_format(fmt, ("rich", "json"))
    record = _load(run_ref, results_dir)
    report = cmpmod.noise(record, parse_fraction(confidence, "--confidence", percent_default=False))
    default_name = f"noise-{record.run_id}.{EXTENSIONS[fmt]}"
    if fmt == "json":
        _emit(json.dumps(report.to_dict(), indent=2) + "\n", output, default_name)
        return
    if output is not None:
        _emit(_rich_text(lambda c: compare_rich.render_noise(report, c, top or None)), output, default_name)
    else:
        compare_rich.render_noise(report, console(), top or None)


# --------------------------------------------------------------------------- export
@app.command()
def export(
    run_ref: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, path, or `latest`."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or json."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", metavar="PATH",
        help="Write to this file (a folder: <run id>.csv or .json inside it; default: stdout).",
    ),
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
) -> None:
    """A run as flat rows, one per case and metric, params as columns (for pandas)."""
    from normbench.report import export as exp

    fmt = _check_format(fmt, ("csv", "json"))
    record = _load(run_ref, results_dir)
    _emit(exp.to_csv(record) if fmt == "csv" else exp.to_json(record), output, f"{record.run_id}.{fmt}")


# --------------------------------------------------------------------------- plot
@app.command()
def plot(
    run_ref: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, path, or `latest`."),
    vs: Optional[str] = typer.Option(None, "--vs", help="A second run to overlay (dashed lines, hatched bars)."),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", metavar="PATH",
        help="Folder for the PNGs (default: <run>/plots), or a .png file name (several figures: <name>-<figure>.png).",
    ),
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
) -> None:
    """PNG plots: kernel time and GB/s against num_tokens per provider; end-to-end bars per variant."""
    from normbench.report.plot import write_plots

    record = _load(run_ref, results_dir)
    other = _load(vs, results_dir) if vs else None
    if out is None and record.path and not Path(record.path).is_dir():
        raise NormbenchError(f"{record.path} is inside a tarball: give --out FOLDER for the plots")
    if out is None:
        paths = write_plots(record, Path(record.path or ".") / "plots", other)
    else:
        target = Path(out).expanduser()
        as_file = target.suffix.lower() == ".png" and not out.endswith(("/", os.sep)) and not target.is_dir()
        if not as_file and target.exists() and not target.is_dir():
            raise NormbenchError(f"--out {out}: a file that is not a .png; give a folder for the PNGs or a .png file name")
        try:
            paths = write_plots(record, target, other, single_file=as_file)
        except OSError as e:
            raise NormbenchError(f"--out {out}: cannot write the plots: {e.strerror or e}") from None
    c = console()
    for p in paths:
        c.print(str(p), soft_wrap=True)


# --------------------------------------------------------------------------- standing
@app.command()
def standing(
    run_refs: list[str] = typer.Argument(..., metavar="RUN...", help="Run ids, prefixes, paths, or `latest`."),
    ours: str = typer.Option("triton", "--provider", "-p", help="The provider to place against the others."),
    tolerance: str = typer.Option("3%", "--within", help="How much slower than the fastest peer still counts."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", metavar="PATH", help="Write the Markdown table to this file (a folder: standing.md inside it)."
    ),
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
) -> None:
    """Where a provider stands against the fastest other one, per op and num_tokens band.

    Counts, over every kernel sweep point of the given runs, where PROVIDER is the
    fastest and where it is within --within of the fastest other provider, with the
    worst point and the peer that beat it; ops and bands with a miss come first.
    Example: normbench standing rmsnorm-2026... rmsnorm_quant-2026... -o standing.md
    """
    from normbench.report import standing as st

    within = parse_fraction(tolerance, "--within", percent_default=True)
    records = [_load(ref, results_dir) for ref in run_refs]
    rows = st.standing(records, ours, within)
    if not rows:
        raise NormbenchError(f"no kernel sweep point has both '{ours}' and another provider OK in these runs")
    _emit(st.to_markdown(rows, ours, within), output, "standing.md")
