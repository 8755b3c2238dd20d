"""``normbench list | validate | run | show | schema``.

Every check that can fail runs before a run directory exists, in this order:
options (``--name`` follows the suite name rule, ``--resume`` conflicts), the
results directory, the suite file (``normbench.suite``: type, size, YAML limits,
schema), the case count (``normbench.expand.check_size``, before expansion),
then the expanded plan (memory per case, rules that leave a stage empty,
``--filter`` names, the end-to-end preflight). ``validate`` and ``--dry-run``
run the same checks.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from normbench.cli import RESULTS_DIR_OPT, STATE, app, console, err_console
from normbench.errors import NormbenchError, SuiteError
from normbench.registry import did_you_mean

DEFAULT_SUITE = "smoke"

SUITES_DIR_OPT = typer.Option(
    None, "--suites-dir", help="An extra folder of suites, searched before ./suites and the bundled ones.",
    show_default=False,
)
MAX_CASES_OPT = typer.Option(  # 200,000 and --repeat's 1,000: normbench.expand.MAX_CASES / MAX_REPEAT (not imported here)
    200_000, "--max-cases", min=1,
    help="Refuse a plan of more cases than this (--repeat included), before expanding it.",
)


# --------------------------------------------------------------------------- suite lookup
def _isdir(p: Path) -> bool:
    return os.path.isdir(p)  # False, not OSError, for a name too long or a NUL byte


def suite_dirs(extra: Optional[Path]) -> list[Path]:
    """Where suites are found: --suites-dir, ./suites, then the suites bundled with normbench.

    Raises:
        NormbenchError: ``--suites-dir`` is given but is not a directory.
    """
    if extra is not None and not _isdir(extra):
        why = "not a directory" if os.path.lexists(extra) else "no such directory"
        raise NormbenchError(f"--suites-dir {extra}: {why}")
    dirs = [d for d in (extra, Path("suites")) if d is not None and _isdir(d)]
    try:
        bundled = Path(str(resources.files("normbench.suites")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return dirs
    if bundled.is_dir() and all(bundled.resolve() != d.resolve() for d in dirs):
        dirs.append(bundled)
    return dirs


def find_suite(ref: str, extra: Optional[Path]) -> Path:
    """A suite by path, or by name in the suite folders (``rmsnorm`` -> ``suites/rmsnorm.yaml``).

    Raises:
        NormbenchError: ``--suites-dir`` is not a directory.
        SuiteError: no suite of that name (did-you-mean).
    """
    dirs = suite_dirs(extra)  # checks --suites-dir even when ref is a path
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or os.path.lexists(ref) or "/" in ref:
        return p
    known: list[str] = []
    for d in dirs:
        for cand in (d / f"{ref}.yaml", d / f"{ref}.yml"):
            if os.path.lexists(cand):
                return cand
        known += [f.stem for f in sorted(d.glob("*.y*ml"))]
    shown = ref if len(ref) <= 60 else ref[:57] + "..."
    raise SuiteError(did_you_mean("suite", shown, sorted(set(known))))


# --------------------------------------------------------------------------- list
@app.command("list")
def list_suites(suites_dir: Optional[Path] = SUITES_DIR_OPT) -> None:
    """List the suites: name, description, stage kinds and case counts (before capability skips)."""
    from normbench.expand import sweep_size
    from normbench.suite import load_suite

    table = Table(header_style="bold", box=None, pad_edge=False)
    # name and count never cut; stages and description wrap when the terminal is narrow
    table.add_column("suite", no_wrap=True, style="bold", min_width=17)
    table.add_column("stages", min_width=6, overflow="fold")
    table.add_column("cases", justify="right", no_wrap=True, min_width=5)
    table.add_column("description", overflow="fold", max_width=72)
    seen: set[str] = set()
    problems: list[str] = []
    for d in suite_dirs(suites_dir):
        for f in sorted(d.glob("*.y*ml")):
            if f.stem in seen:
                continue
            seen.add(f.stem)
            try:
                s = load_suite(f).suite
            except NormbenchError as e:  # one row for a broken suite; the others are still listed
                problems.append(str(e).splitlines()[0])
                table.add_row(f.stem, "", "", Text(f"invalid: normbench validate {f}", style="red"))
                continue
            kinds = Counter(st.kind for st in s.stages)
            stages = ", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in kinds.items())
            table.add_row(s.name, stages, f"{sweep_size(s):,}", _first_sentence(s.description))
    console().print(table)
    for p in problems:
        err_console().print(Text(p, style="red"))


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    cut = text.find(": ")
    text = text[:cut] if 0 < cut < 100 else text
    return text if len(text) <= 100 else text[:99].rsplit(" ", 1)[0] + " …"  # the suite file has it whole


# --------------------------------------------------------------------------- validate
def _load(ref: str, suites_dir: Optional[Path]):
    from normbench.suite import load_suite

    return load_suite(find_suite(ref, suites_dir))


def _plan(loaded: Any, caps: Any, repeat: int, max_cases: int, filters: list[str]) -> list:
    """The run's cases, after every check that needs no run directory (``validate``, ``--dry-run`` and ``run``).

    Raises:
        SuiteError / NormbenchError: over ``max_cases``; a case too large for any
            device (one too large for this one is SKIPPED); a stage emptied by its rules; a ``--filter`` that names
            nothing; no case left; the end-to-end preflight (with ``file:line:col``).
    """
    from normbench.expand import apply_filters, check_filters, check_memory, check_rules, check_size, expand

    check_size(loaded, repeat, max_cases)
    cases = expand(loaded.suite, caps, repeat)
    check_rules(loaded, cases)
    if filters:
        check_filters(cases, filters)
        cases = apply_filters(cases, filters)
    if not cases:
        raise NormbenchError(f"no cases match the filters {filters}" if filters else "the suite has no cases")
    cases = check_memory(loaded, cases, caps)  # after the filters: they may leave a large case out
    _e2e_preflight(loaded, cases)
    return cases


def _e2e_preflight(loaded: Any, cases: list) -> bool:
    """The end-to-end runner's checks (vLLM's compilation-config fields, clients, model folder),
    for the end-to-end cases that run here; False when there are none.

    Raises:
        NormbenchError: the runner's message, each line that names a suite field
            prefixed with its ``file:line:col``.
    """
    runnable = [c for c in cases if c.kind != "kernel" and c.skip is None]
    if not runnable:
        return False
    from types import SimpleNamespace

    from normbench.runners import e2e
    from normbench.suite import locate

    try:
        e2e.preflight(runnable, SimpleNamespace(suite=loaded.suite, status=lambda line: None))
    except NormbenchError as e:
        lines = str(e).splitlines()
        for k, line in enumerate(lines):
            field, sep, _ = line.strip().partition(": ")
            where = locate(loaded, field) if sep and " " not in field else None
            if where:
                lines[k] = f"  {where}: {line.strip()}"
        raise NormbenchError("\n".join(lines)) from e
    return True


def _plan_table(cases: list, title: str) -> tuple[Table, list[str]]:
    """Per stage: cases to run, skipped, and skip reasons grouped."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for col, just in (("stage", "left"), ("kind", "left"), ("op / client", "left"), ("providers / variants", "left"),
                      ("points", "right"), ("run", "right"), ("skip", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    by_stage: dict[str, list] = defaultdict(list)
    for c in cases:
        by_stage[c.stage].append(c)
    reasons: Counter = Counter()
    for stage, cs in by_stage.items():
        who = sorted({c.provider or c.variant or "-" for c in cs}, key=lambda n: [x.provider or x.variant for x in cs].index(n))
        points = len({c.params for c in cs})
        run_n = sum(1 for c in cs if not c.skip)
        table.add_row(stage, cs[0].kind, cs[0].op or dict(cs[0].params).get("client", "") or cs[0].kind,
                      ", ".join(who), str(points), str(run_n), str(len(cs) - run_n))
        for c in cs:
            if c.skip:
                reasons[(stage, c.provider or c.variant or "-", c.skip)] += 1
    lines = [f"{stage} / {who}: SKIPPED x{n}: {why}" for (stage, who, why), n in sorted(reasons.items())]
    return table, lines


@app.command()
def validate(
    suite: str = typer.Argument(DEFAULT_SUITE, help="Suite file or name (see `normbench list`)."),
    suites_dir: Optional[Path] = SUITES_DIR_OPT,
    cases: bool = typer.Option(False, "--cases", help="List every case id."),
    repeat: int = typer.Option(1, "--repeat", min=1, max=1000, help="Expand with N repeats per kernel case."),
    max_cases: int = MAX_CASES_OPT,
) -> None:
    """Check a suite and show its cases and the reasons for every skip (no GPU needed).

    Runs every check `run` makes before it creates a run: the file, the schema, the
    case count, memory per case, rules, and the end-to-end preflight where vLLM is installed.
    """
    from normbench.expand import Capabilities

    loaded = _load(suite, suites_dir)
    caps = Capabilities.detect()
    expanded = _plan(loaded, caps, repeat, max_cases, [])
    _print_plan(loaded, expanded, caps, list_cases=cases)


def _print_plan(loaded: Any, cases: list, caps: Any, list_cases: bool) -> None:
    out = console()
    where = caps.gpu_name or "CPU (no CUDA GPU)"
    table, reasons = _plan_table(cases, f"{loaded.suite.name} ({loaded.path}) on {where}")
    out.print(table)
    for line in reasons:
        out.print(Text("  " + line, style="dim"))
    if list_cases:
        for c in cases:
            out.print(Text(c.case_id + (f"  [SKIPPED: {c.skip}]" if c.skip else ""), style="dim" if c.skip else ""))
    n_run = sum(1 for c in cases if not c.skip)
    out.print(f"{len(cases)} cases: {n_run} to run, {len(cases) - n_run} skipped")


# --------------------------------------------------------------------------- schema
@app.command()
def schema(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write to this file (a directory: suite.schema.json in it) instead of stdout.",
        show_default=False,
    ),
) -> None:
    """Print the JSON Schema of suite files, for editors that check YAML as you type.

    Start a suite with `# yaml-language-server: $schema=<path to the schema>`, as the bundled ones do
    (`suites/suite.schema.json`).
    """
    from normbench.suite import suite_json_schema

    text = suite_json_schema()
    if output is None:
        sys.stdout.write(text)
        return
    target = output / "suite.schema.json" if _isdir(output) else output
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        raise NormbenchError(f"{target}: cannot write: {e.strerror or e}") from None
    err_console().print(f"wrote {target}")


# --------------------------------------------------------------------------- run
def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@app.command()
def run(
    suite: Optional[str] = typer.Argument(
        None, help="Suite file or name; default: the CPU-sized smoke suite (with --resume: the stored one).",
        show_default=False,
    ),
    filter: list[str] = typer.Option(
        [], "--filter", "-k",
        help="Keep matching cases; repeatable. `key=v1,v2` matches a param/op/provider/stage/variant "
        "(globs allowed), anything else is a glob on the case id.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the cases and skips; run nothing."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Run name used in the run id (default: the suite's): 1 to 100 of A-Z a-z 0-9 . _ -, "
        "starting with a letter or a digit.", show_default=False,
    ),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Complete an interrupted run (id, prefix, path or `latest`); its suite, filters and "
        "repeats are the stored ones. With a suite, `latest` is that suite's latest run.", show_default=False,
    ),
    repeat: Optional[int] = typer.Option(
        None, "--repeat", min=1, max=1000, help="Run each kernel case N times, interleaved (for noise); default 1.",
        show_default=False,
    ),
    max_cases: int = MAX_CASES_OPT,
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
    suites_dir: Optional[Path] = SUITES_DIR_OPT,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    gpus: Optional[str] = typer.Option(
        None, "--gpus", help="Shard kernel cases over this host's GPUs, one worker process each, and run end-to-end "
        "variants in parallel on disjoint GPU sets: `all`, a count, or indices (0,2,5; one index: 3,).",
        show_default=False,
    ),
    executor: Optional[str] = typer.Option(
        None, "--executor", help="serial, local (one worker per GPU here) or ray; default: serial, local with --gpus.",
        show_default=False,
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="With --executor ray: `auto` or ray://host:port (default: start a local Ray).",
        show_default=False,
    ),
    accelerator_type: Optional[str] = typer.Option(
        None, "--accelerator-type", help="With --executor ray: only nodes with this GPU type (Ray's accelerator_type, "
        "e.g. H100, A100, B200).", show_default=False,
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="With --resume: run the FAILED cases again too (a record is replaced when its "
        "case runs again).",
    ),
    lock_clocks: bool = typer.Option(
        False, "--lock-clocks", help="Lock the SM clock of the run's GPUs to their base clock (NVML; needs root) for "
        "the run and reset it afterwards; where that is not permitted, the refusal is recorded and the run goes on.",
    ),
    profile: Optional[str] = typer.Option(
        None, "--profile", help="After timing, profile the selected kernel cases that came out OK: `ncu` (Nsight "
        "Compute: DRAM throughput, achieved occupancy, registers per kernel) or `torch` (torch.profiler trace; no "
        "ncu needed). More than 50 cases need --filter. `show` and `compare` print the profiles.",
        show_default=False,
    ),
) -> None:
    """Run a suite: check every case for correctness, time it, store the run, print tables.

    Examples:

    * `normbench run` runs the smoke suite on whatever hardware is here.
    * `normbench run rmsnorm --filter provider=triton,liger --filter num_tokens=1024`
    * `normbench run suites/nvfp4.yaml --dry-run` shows the cases and every skip's reason.
    * `normbench run rmsnorm --repeat 3` then `normbench noise latest` for the noise floor.
    * `normbench run --resume latest` completes a run stopped by Ctrl-C or a crash
      (`--retry-failed`: and runs its FAILED cases again).
    * `normbench run rmsnorm --profile ncu --filter provider=triton,vllm --filter num_tokens=1024` adds
      Nsight Compute's view of each case (after timing; `--profile torch` needs no ncu).
    * `normbench run rmsnorm --gpus all` shards the sweep over this host's GPUs;
      `--executor ray [--ray-address auto]` over a Ray cluster. End-to-end
      variants then run in parallel, each on its own GPUs and port.
    * `normbench run rmsnorm --lock-clocks` (as root) times at the GPU's base clock.

    Exit code 1 when a case FAILED or was INCORRECT; finished cases survive Ctrl-C.
    """
    from normbench import store
    from normbench.executors import resolve_options
    from normbench.expand import check_size
    from normbench.suite import name_problem

    if retry_failed and not resume:
        raise NormbenchError("--retry-failed goes with --resume RUN")
    if resume:
        for flag, given, what in (("--filter", bool(filter), "filters"), ("--repeat", repeat is not None, "repeats"),
                                  ("--name", name is not None, "run id")):
            if given:
                raise NormbenchError(f"{flag} with --resume: a resumed run keeps the {what} it started with; "
                                     f"leave {flag} out, or start a new run")
    elif name is not None and name_problem(name):
        raise NormbenchError(f"--name: {name_problem(name)}")
    from normbench.profile import check_tool

    profile = check_tool(profile)  # --profile ncu without ncu: one line, before anything runs
    exec_options = resolve_options(executor, gpus, ray_address, accelerator_type)
    base = store.results_dir(results_dir)
    if not dry_run:
        _check_results_dir(base)
    run_dir = None
    if resume:
        run_dir, loaded, filter, repeat = _resumed(resume, suite, suites_dir, base)
    else:
        loaded = _load(suite or DEFAULT_SUITE, suites_dir)
        repeat = repeat or 1
    check_size(loaded, repeat, max_cases)  # before any worker starts
    clock_lock = _clock_lock(exec_options) if lock_clocks and not dry_run else None  # before workers measure
    prestarted = None
    if exec_options.executor == "local" and not dry_run and any(st.kind == "kernel" for st in loaded.suite.stages):
        from normbench.executors import local, warm_modules

        # The workers set their GPUs up and import the suite's providers while this process
        # imports torch, plans the cases and measures the machine.
        fake = all(d.fake for d in exec_options.devices)
        prestarted = local.prestart(exec_options.devices, base, warm_modules(loaded.suite, fake))
    try:
        _run(loaded, filter, repeat, dry_run, name, run_dir, retry_failed, base, progress, exec_options, prestarted,
             max_cases, clock_lock=clock_lock, profile=profile)
    finally:
        if clock_lock is not None:
            clock_lock.release()  # idempotent: _run resets it before the record is written; this covers errors
        if prestarted is not None:
            prestarted.close()


def _clock_lock(exec_options: Any) -> Any:
    """``--lock-clocks``: lock the SM clock of the GPUs this host runs on (``normbench.conditions.ClockLock``:
    serial, device 0; ``--gpus``: those GPUs), printing what was done or why not. Never raises."""
    from normbench.conditions import ClockLock

    devices = [d.index for d in exec_options.devices if not d.fake]
    if exec_options.executor == "ray":
        lock = ClockLock(unavailable="not with --executor ray (its workers' GPUs may be on other hosts)")
    elif exec_options.executor == "local" and not devices:
        lock = ClockLock(unavailable="no CUDA GPU among --gpus")
    else:
        lock = ClockLock(devices or (0,))
    lock.acquire()
    err_console().print(Text(lock.message(), style="green" if lock.status == "locked" else "yellow"))
    return lock


def _check_results_dir(base: Path) -> None:
    """Refuse a results directory that runs cannot be created in (before anything is measured).

    Raises:
        NormbenchError: it is a file or a tarball, or its nearest existing folder is not writable.
    """
    from normbench import store

    shown = f"results directory {base}"
    try:
        root = base.resolve()
    except (OSError, ValueError, RuntimeError) as e:
        raise NormbenchError(f"{shown}: cannot resolve it: {e}") from None
    try:
        os.stat(root)
    except FileNotFoundError:
        pass  # created with the first run
    except OSError as e:  # a name too long, a loop of links, no permission, ...
        raise NormbenchError(f"{shown}: cannot use it: {e.strerror}") from None
    if os.path.lexists(root) and not _isdir(root):
        tarball = base.name.endswith(store.TARBALL_SUFFIXES)
        packed = " (a tarball of runs is read-only: extract it first)" if tarball else ""
        raise NormbenchError(f"{shown}: not a directory{packed}")
    existing = root
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not _isdir(existing):
        raise NormbenchError(f"{shown}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NormbenchError(f"{shown}: {existing} is not writable")


def _run_parent_check(base: Path, run_name: str) -> None:
    """A run directory ``<base>/<run_name>-<stamp>-<id>`` must lie directly inside ``base``, resolved.

    Raises:
        NormbenchError: the name breaks the name rule, or the directory would resolve elsewhere.
    """
    from normbench.suite import name_problem

    problem = name_problem(run_name)
    if problem:
        raise NormbenchError(f"run name: {problem}")
    root = base.resolve()
    target = (root / f"{run_name}-00000000T000000Z-000000").resolve()
    if target.parent != root:
        raise NormbenchError(f"run name {run_name!r}: its run directory would be {target}, outside {root}")


def _resumed(ref: str, suite_ref: Optional[str], suites_dir: Optional[Path], base: Path) -> tuple:
    """``(run_dir, loaded suite, filters, repeat)`` of the run ``--resume ref`` names.

    With a suite argument, ``latest`` is that suite's latest run, and any run
    must be of that suite, from the same file contents (a resumed run keeps
    the suite it started with).

    Raises:
        NormbenchError / RunNotFoundError: no such run; the run is of another
            suite, or the suite file changed since; the stored suite no longer
            validates; the record cannot be extended in place.
    """
    from normbench import store
    from normbench.suite import LoadedSuite, read_regular_file, validate_spec

    given = _load(suite_ref, suites_dir) if suite_ref is not None else None
    if given is not None and ref == "latest":
        run_dir = _latest_of(given.suite.name, base)
    else:
        try:
            run_dir = store.resolve_run(ref, base)
        except (OSError, ValueError) as e:  # a name too long, a NUL byte: no such run
            shown = ref if len(ref) <= 60 else ref[:57] + "..."
            raise NormbenchError(f"--resume {shown}: no such run ({getattr(e, 'strerror', None) or e})") from None
    store.check_writable(run_dir)  # before any worker starts
    previous = store.load_run(run_dir)
    stored = previous.suite
    if given is not None:
        if given.suite.name != stored.name:
            raise NormbenchError(
                f"--resume {ref}: run {previous.run_id} is of suite '{stored.name}' ({stored.path}), not "
                f"'{given.suite.name}' ({given.path}); leave the suite out to resume that run")
        if given.sha256 != stored.sha256:
            raise NormbenchError(
                f"--resume {ref}: {given.path} changed since run {previous.run_id} started (sha256 "
                f"{given.sha256[:12]}, stored {stored.sha256[:12]}); a resumed run keeps the suite it started "
                "with: leave the suite out to resume it, or start a new run")
    try:
        suite = validate_spec(stored.spec)
    except SuiteError as e:
        raise NormbenchError(f"{run_dir}: the suite stored in run {previous.run_id} does not validate with this "
                             f"normbench (start a new run): {str(e).splitlines()[0]}") from None
    text = None
    try:  # the file it came from, unchanged: positions for later messages
        raw = read_regular_file(stored.path)
        if hashlib.sha256(raw).hexdigest() == stored.sha256:
            text = raw.decode("utf-8")
    except (NormbenchError, UnicodeDecodeError):
        pass
    loaded = LoadedSuite(suite=suite, path=stored.path, sha256=stored.sha256, text=text)
    return run_dir, loaded, list(previous.options.get("filters", [])), int(previous.options.get("repeat", 1))


def _latest_of(suite_name: str, base: Path) -> Path:
    """The latest run of suite ``suite_name`` in ``base`` (records that cannot be read are passed over).

    Raises:
        RunNotFoundError: no run of that suite.
    """
    from normbench import store
    from normbench.errors import RunNotFoundError

    runs = store.list_runs(base)
    for d in reversed(runs):
        try:
            if store.load_run(d).suite.name == suite_name:
                return d
        except (NormbenchError, ValueError, TypeError, AttributeError, KeyError):
            continue
    latest = runs[-1].name if runs else "none"
    raise RunNotFoundError(f"--resume latest: no run of suite '{suite_name}' in {base}/ (latest run: {latest}); "
                           "leave the suite out to resume the latest run of any suite")


def _run(loaded: Any, filter: list[str], repeat: int, dry_run: bool, name: Optional[str], resume_dir: Optional[Path],
         retry_failed: bool, base: Path, progress: bool, exec_options: Any, prestarted: Any,
         max_cases: int = 200_000, clock_lock: Any = None, profile: Optional[str] = None) -> None:
    """``run`` once the suite is loaded (and any workers are starting): every remaining check, then the run.

    ``clock_lock``: the ``--lock-clocks`` lock (``normbench.conditions.ClockLock``), recorded in the run's
    environment (``clocks.*``) and reset before the record is written. ``profile``: ``--profile``'s tool, whose
    pass (``normbench.profile``) follows the timed cases."""
    from normbench import store
    from normbench.expand import Capabilities

    caps = Capabilities.detect()
    cases = _plan(loaded, caps, repeat, max_cases, filter)
    from normbench.profile import check_plan

    check_plan(profile, cases, filter)  # more than 50 cases to profile and no --filter: refused
    if dry_run:
        _print_plan(loaded, cases, caps, list_cases=True)
        return
    if resume_dir is None:
        _run_parent_check(base, name or loaded.suite.name)

    from normbench import env as envmod
    from normbench.report.run_table import render_run

    out = console()
    if resume_dir is not None:
        writer = store.resume_run(resume_dir)
        stored = writer.record.case_map()
        done = {k for k, r in stored.items() if not (retry_failed and r.status == "FAILED")}
        pending = [c for c in cases if c.case_id not in done]
        again = len(stored) - len(done)
        out.print(f"resuming {writer.record.run_id}: {len(done)} cases stored, {len(pending)} to go"
                  + (f" ({again} FAILED to run again)" if again else ""))
    else:
        out.print(f"measuring the environment ({caps.gpu_name or 'CPU'}) ...")
        # Parallel workers measure their own GPU's copy bandwidth; measuring here too would
        # run at the same time as a worker's on the same GPU.
        environment = envmod.collect(caps.device, measure_bandwidth=exec_options.executor == "serial")
        if any(c.kind == "kernel" for c in cases):  # where its kernel cases' compilers cache (every executor)
            environment.update(envmod.compile_cache_facts(envmod.compile_cache_dirs()))
        snapshot = store.SuiteSnapshot(
            name=loaded.suite.name, path=loaded.path, sha256=loaded.sha256, spec=loaded.suite.model_dump(mode="json")
        )
        writer = store.create_run(base, name or loaded.suite.name, snapshot, environment, ["normbench", *sys.argv[1:]],
                                  planned=len(cases), options={"filters": list(filter), "repeat": repeat})
        pending = cases
    out.print(f"run {writer.record.run_id} -> {writer.dir}")
    if clock_lock is not None:
        writer.record.environment.update(clock_lock.environment())

    previous_handler = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    status = "interrupted"
    try:
        _execute(pending, loaded.suite, caps, writer, progress, exec_options, prestarted, order=cases)
        if profile:
            with envmod.compile_caches():  # the caches the timed cases compiled into
                _profile_pass(profile, cases, writer, caps)
        status = "complete"
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if clock_lock is not None:
            clock_lock.release()
            writer.record.environment.update(clock_lock.environment())
        record = writer.finish(status)  # type: ignore[arg-type]
    render_run(record, out)
    from normbench.cli.analysis import print_conditions

    print_conditions(record, out)
    if status == "interrupted":
        err_console().print(
            f"interrupted: {len(record.cases)} cases kept in {writer.dir}; "
            f"complete it with `normbench run --resume {record.run_id}`"
        )
        raise typer.Exit(130)
    if any(c.status in ("FAILED", "INCORRECT") for c in record.cases):
        raise typer.Exit(1)


def _execute(cases: list, suite: Any, caps: Any, writer: Any, show_progress: bool, options: Any = None,
             prestarted: Any = None, order: list | None = None) -> None:
    """Hand the cases to the chosen executor (``normbench.executors``), with one progress bar for the run.

    The record lists its cases in ``order`` (the run's whole plan; default ``cases``), as a serial run would.
    """
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from normbench.executors import execute, plan_order
    from normbench.runners import RunContext

    progress = Progress(
        SpinnerColumn(), TextColumn("{task.fields[stage]}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[workers]}"),
        TextColumn("{task.description}", markup=False), console=err_console(), disable=not show_progress, transient=False,
    )
    with progress:
        task = progress.add_task("", total=len(cases), stage="", workers="")

        def record(case: Any, rec: Any) -> None:
            writer.add(rec)
            progress.update(task, advance=1, stage=case.stage)
            if rec.status in ("FAILED", "INCORRECT"):
                progress.console.print(Text(f"{rec.status}: {case.case_id}: {(rec.reason or '').splitlines()[0][:200]}", style="red"))

        def status(line: str) -> None:
            progress.update(task, description=line[:80])

        def workers(busy: int, total: int) -> None:
            progress.update(task, workers=f"{busy}/{total} workers busy" if total else "")

        ctx = RunContext(suite=suite, caps=caps, environment=writer.record.environment, run_dir=writer.dir,
                         record=record, status=status, debug=STATE["debug"],
                         extra={"preflight_done": True})  # _plan ran the end-to-end preflight
        try:
            execute(cases, ctx, options, on_workers=workers, prestarted=prestarted)
        finally:  # parallel workers record as they finish: list the cases as a serial run would
            writer.record.cases = plan_order(writer.record.cases, order or cases)
            _device_bandwidth_summary(writer.record)


def _profile_pass(tool: str, cases: list, writer: Any, caps: Any) -> None:
    """``--profile``: profile the run's OK selected kernel cases after timing (``normbench.profile.run_pass``),
    a status line per case and a line per failure on stderr."""
    from normbench.profile import run_pass

    err = err_console()

    def status(line: str) -> None:
        err.print(Text(line, style="dim"), soft_wrap=True)

    def done(case: Any, rec: Any) -> None:
        why = (rec.profile or {}).get("error")
        if why:
            err.print(Text(f"profile failed: {case.case_id}: {why.splitlines()[0][:200]}", style="yellow"),
                      soft_wrap=True)

    if run_pass(tool, cases, writer, caps.gpu_name, status, done) == 0:
        err.print(Text(f"--profile {tool}: nothing to profile (no selected kernel case is OK, or all have a profile)",
                       style="yellow"))


def _device_bandwidth_summary(record: Any) -> None:
    """A parallel run's environment gets the median of its devices' copy bandwidths (each case keeps its own)."""
    env = record.environment
    if "peak_bandwidth_gbps" in env:
        return
    per_device = {}
    for c in record.cases:
        info = getattr(c, "device_info", None) or {}
        if info.get("peak_bandwidth_gbps"):
            per_device[(info.get("host"), info.get("label"))] = info["peak_bandwidth_gbps"]
    if per_device:
        values = sorted(per_device.values())
        env["peak_bandwidth_gbps"] = values[len(values) // 2]
        env["peak_bandwidth_method"] = (f"median over {len(values)} devices, each measured by its worker "
                                        "(the cases' device_info.peak_bandwidth_gbps)")


# --------------------------------------------------------------------------- show
@app.command()
def show(
    run_ref: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, path, or `latest`."),
    fmt: str = typer.Option("rich", "--format", "-f", help="rich or markdown."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", metavar="PATH",
        help="Write to this file (a folder: <run id>.txt or .md inside it) instead of the terminal.",
    ),
    results_dir: Optional[Path] = RESULTS_DIR_OPT,
) -> None:
    """Re-render a stored run's tables (`--format markdown` for a report or a pull request)."""
    from normbench.cli.analysis import show_run

    show_run(run_ref, fmt, output, results_dir)
