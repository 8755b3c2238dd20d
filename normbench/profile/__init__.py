"""Profile evidence on demand: ``normbench run SUITE --profile ncu|torch [--filter ...]``.

Profiling is a separate pass after the timed one, over the run's selected kernel
cases that came out OK (the plan after ``--filter``; never inside a timed region):

* ``ncu`` (``normbench.profile.ncu``): each case in a child process under Nsight
  Compute (``--set basic``, ``--clock-control none``), one call of its callable
  profiled after a warm-up; stored per kernel: DRAM throughput (% of peak), achieved
  occupancy, registers per thread, duration and name; the ``.ncu-rep`` report, the raw
  CSV and the log are the case's artifacts;
* ``torch`` (``normbench.profile.torch``): ``torch.profiler`` around ``TORCH_LAUNCHES``
  calls in this process; the Chrome trace (``.json.gz``) is the artifact, kernel names and
  times (per call) come from ``key_averages()``. Needs no ncu, and runs on a CPU (its "kernels" are then
  the ``aten::`` ops).

Each profile is stored on its case record (``CaseRecord.profile``, schema
``normbench.store.CaseProfile``; files under ``<run>/profile/``, named in
``CaseRecord.artifacts``). A case whose profiling fails keeps its timing, with the
profile's ``error`` saying why. ``normbench show`` and ``compare`` print the profiles
beside the times and deltas (``normbench.report.run_table``,
``normbench.profile.render``).

Checks, before anything runs (``check_tool``, ``check_plan``): ``--profile ncu`` needs
ncu (``$NORMBENCH_NCU`` or ``PATH``); a plan of more than ``MAX_UNFILTERED`` runnable
kernel cases needs a ``--filter``, since each case costs seconds under ncu.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from normbench.errors import NormbenchError

#: ``--profile`` values.
TOOLS = ("ncu", "torch")
#: More runnable kernel cases than this need a ``--filter`` to be profiled.
MAX_UNFILTERED = 50
#: Calls profiled per case with ``--profile torch`` (times are per call: several smooth a CPU's noise);
#: ncu profiles one (``normbench.profile.case.LAUNCHES``).
TORCH_LAUNCHES = 5
#: The message when ncu is missing (one line, before the run starts).
NO_NCU = "--profile ncu needs Nsight Compute's ncu on PATH; --profile torch works without it"


def check_tool(tool: str | None) -> str | None:
    """``tool`` if it can profile here, None when no profiling was asked for.

    Raises:
        NormbenchError: not ``ncu`` or ``torch``; ``ncu`` and no ncu executable is found
            (``NO_NCU``; ``$NORMBENCH_NCU`` may name one off ``PATH``).
    """
    if tool is None:
        return None
    if tool not in TOOLS:
        raise NormbenchError(f"--profile {tool!r}: choose {' or '.join(TOOLS)}")
    if tool == "ncu":
        from normbench.profile.ncu import find_ncu

        if find_ncu() is None:
            raise NormbenchError(NO_NCU)
    return tool


def selected(cases: Sequence[Any]) -> list[Any]:
    """The cases a profile pass considers: kernel cases that are not skipped by expansion."""
    return [c for c in cases if c.kind == "kernel" and c.skip is None]


def check_plan(tool: str | None, cases: Sequence[Any], filters: Sequence[str]) -> None:
    """Refuse to profile a large plan that no ``--filter`` narrowed.

    Raises:
        NormbenchError: ``tool`` given, no ``filters``, and more than ``MAX_UNFILTERED``
            runnable kernel cases.
    """
    if tool is None or filters:
        return
    n = len(selected(cases))
    if n > MAX_UNFILTERED:
        raise NormbenchError(
            f"--profile {tool} would profile {n:,} kernel cases, and each costs seconds (ncu replays every kernel): "
            f"select at most {MAX_UNFILTERED} with --filter, e.g. --filter provider=triton --filter num_tokens=1024"
        )


def targets(cases: Sequence[Any], record: Any) -> list[tuple[Any, Any]]:
    """(case, its record) for the ``selected`` cases whose record is OK, in plan order: one per
    fingerprint (the first OK repeat; a profile does not need ``--repeat``), none for a
    fingerprint that has a profile already (a resumed run's)."""
    recs = record.case_map()
    have = {r.fingerprint for r in record.cases if r.profile}
    out = []
    for c in selected(cases):
        rec = recs.get(c.case_id)
        if rec is not None and rec.status == "OK" and c.fingerprint not in have:
            have.add(c.fingerprint)
            out.append((c, rec))
    return out


def stem_of(case: Any) -> str:
    """A file name for the case's profile files: stage, provider and shape, and a hash of its id
    (unique in the run): ``rms_norm.triton.33x4096.1a2b3c4d``."""
    p = case.param_dict
    shape = f"{p.get('num_tokens', '')}x{p.get('hidden_size', '')}"
    head = ".".join(str(x) for x in (case.stage, case.provider, shape) if x)
    head = re.sub(r"[^A-Za-z0-9._-]+", "_", head)[:80]
    return f"{head}.{hashlib.sha1(case.case_id.encode()).hexdigest()[:8]}"


def profile_one(tool: str, case: Any, rec: Any, run_dir: Path, device: str | None = None
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """Profile one case: its ``CaseProfile`` and artifacts (paths relative to ``run_dir``).

    A failure is a profile with ``error`` (and the artifacts it left), never an exception,
    except ``KeyboardInterrupt``.
    """
    from normbench.profile.case import LAUNCHES, CaseSpec

    t0 = time.perf_counter()
    artifacts: dict[str, str] = {}
    try:
        spec = CaseSpec.of(case, rec.seed, launches=TORCH_LAUNCHES if tool == "torch" else LAUNCHES)
        if tool == "ncu":
            from normbench.profile import ncu

            return ncu.profile_case(spec, run_dir, stem_of(case), device=device)
        from normbench.profile import torch as torch_profile

        return torch_profile.profile_case(spec, run_dir, stem_of(case))
    except Exception as e:  # a profiler's failure is this case's profile error, not the run's end
        artifacts = dict(getattr(e, "artifacts", {}) or {})
        error = str(e) if isinstance(e, NormbenchError) else f"{type(e).__name__}: {e}"
        return ({"tool": tool, "error": error[:2000], "kernels": [],
                 "duration_s": round(time.perf_counter() - t0, 3)}, artifacts)


def run_pass(tool: str, cases: Sequence[Any], writer: Any, device: str | None = None,
             status: Callable[[str], None] = lambda s: None,
             done: Callable[[Any, Any], None] = lambda case, rec: None) -> int:
    """Profile the run's OK selected cases that have no profile yet (``targets``) and record each.

    Every profiled case is written to the run at once (``writer.add``: journaled, so Ctrl-C
    keeps it), with its profile and artifacts; the record's cases keep the plan's order.

    Args:
        tool: ``ncu`` or ``torch``.
        cases: the run's plan (``normbench.expand.Case``s, filters applied).
        writer: the run's ``normbench.store.RunWriter``.
        device: the GPU's name, recorded with ncu profiles.
        status: told what is being profiled (``profiling (ncu) 3/12: triton 33x4096 ...``).
        done: called with each (case, record) once recorded.

    Returns:
        How many cases were profiled (failures included).
    """
    from normbench.executors import plan_order
    from normbench.report.labels import case_label

    todo = targets(cases, writer.record)
    try:
        for i, (case, rec) in enumerate(todo, 1):
            axes = [k for k in ("dtype", "residual", "quant_dtype", "group_size") if k in case.param_dict]
            status(f"profiling ({tool}) {i}/{len(todo)}: {case.provider} {case_label(case.param_dict, axes)}")
            profile, artifacts = profile_one(tool, case, rec, writer.dir, device)
            rec.profile = profile
            if artifacts:
                rec.artifacts = {**rec.artifacts, **artifacts}
            writer.add(rec)
            done(case, rec)
    finally:
        writer.record.cases = plan_order(writer.record.cases, list(cases))
    return len(todo)
