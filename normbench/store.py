"""Run records on disk: versioned, never overwritten, crash-safe.

Layout of one run (``<results>/<suite>-<UTC timestamp>-<short id>/``)::

    run.json        the record: schema_version, suite snapshot, environment, cases
    cases.jsonl     journal of finished cases while the run is in progress
    logs/           server logs and tools' raw outputs (end-to-end stages)

While a run is in progress every finished case is appended to ``cases.jsonl``
(one JSON object a line, flushed and fsynced), so a crash or Ctrl-C keeps it.
When the run ends (complete or interrupted) the journal is folded into
``run.json``, written atomically (temp file + ``os.replace``), and removed.
``load_run`` reads both, so a record whose process died mid-run is whole up to
its last finished case; ``normbench run --resume`` completes the rest.

The results directory is ``--results-dir``, else ``$NORMBENCH_RESULTS_DIR``,
else ``./runs``.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from normbench.errors import NormbenchError, RunNotFoundError

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
JOURNAL_FILE = "cases.jsonl"

Status = Literal["OK", "INCORRECT", "SKIPPED", "FAILED"]


class Metric(BaseModel):
    """One measured quantity of a case.

    Attributes:
        value: the summary (the median of ``samples`` when there are samples).
        unit: e.g. ``"us"``, ``"GB/s"``, ``"%"``, ``"req/s"``, ``"ms"``.
        higher_is_better: the direction compare uses.
        samples: every raw sample (kernel: one per timed replay; end to end:
            one per repeat). Empty for derived metrics.
        derived_from: for a metric that is a monotone function of another
            (GB/s of time), that metric's name; compare judges its verdict there.
        spread: e.g. ``{"p20": .., "p80": ..}`` of the samples.
    """

    model_config = ConfigDict(extra="allow")
    value: float | None
    unit: str
    higher_is_better: bool
    samples: list[float] = []
    derived_from: str | None = None
    spread: dict[str, float] = {}


class CaseRecord(BaseModel):
    """One case's outcome.

    ``fingerprint`` identifies what was measured (stage, op, provider, variant,
    params) and matches across runs; ``case_id`` adds the repeat index.
    """

    model_config = ConfigDict(extra="allow")
    case_id: str
    fingerprint: str
    stage: str
    kind: str
    op: str | None = None
    provider: str | None = None
    variant: str | None = None
    params: dict[str, Any] = {}
    repeat: int = 0
    status: Status
    reason: str | None = None
    seed: int | None = None
    metrics: dict[str, Metric] = {}
    correctness: dict[str, float] = {}
    device: str | None = None
    artifacts: dict[str, str] = {}
    started_at: str | None = None
    duration_s: float | None = None


class SuiteSnapshot(BaseModel):
    name: str
    path: str
    sha256: str
    spec: dict[str, Any]


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION
    run_id: str
    name: str
    created_at: str
    finished_at: str | None = None
    status: Literal["running", "complete", "interrupted"] = "running"
    command: list[str] = []
    options: dict[str, Any] = {}  # run options needed to resume: filters, repeat
    planned: int = 0
    suite: SuiteSnapshot
    environment: dict[str, Any] = {}
    cases: list[CaseRecord] = Field(default_factory=list)
    path: str | None = Field(default=None, exclude=True)  # where it was loaded from

    def case_map(self) -> dict[str, CaseRecord]:
        return {c.case_id: c for c in self.cases}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def results_dir(option: str | Path | None = None) -> Path:
    """``--results-dir``, else ``$NORMBENCH_RESULTS_DIR``, else ``./runs``."""
    return Path(option or os.environ.get("NORMBENCH_RESULTS_DIR") or "runs")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump(record: RunRecord) -> str:
    return record.model_dump_json(indent=1)


class RunWriter:
    """Appends finished cases to a run and folds them into ``run.json`` at the end."""

    def __init__(self, record: RunRecord, run_dir: Path):
        self.record = record
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        record.status = "running"
        record.finished_at = None
        atomic_write_text(self.dir / RUN_FILE, _dump(record))
        self._journal = open(self.dir / JOURNAL_FILE, "a", encoding="utf-8")

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    def add(self, case: CaseRecord) -> None:
        """Record a finished case durably (survives a crash right after return)."""
        # Memory first: an interrupt between the two steps must not leave a case that is
        # in the journal but not in memory, since finish() folds memory and drops the journal.
        self.record.cases = [c for c in self.record.cases if c.case_id != case.case_id] + [case]
        self._journal.write(case.model_dump_json() + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def finish(self, status: Literal["complete", "interrupted"]) -> RunRecord:
        """Fold the journal into ``run.json`` atomically, then drop the journal."""
        self._journal.close()
        self.record.status = status
        self.record.finished_at = utc_now()
        atomic_write_text(self.dir / RUN_FILE, _dump(self.record))
        (self.dir / JOURNAL_FILE).unlink(missing_ok=True)
        return self.record


def new_run_id(name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{secrets.token_hex(3)}"


def create_run(
    base: Path, name: str, suite: SuiteSnapshot, environment: dict[str, Any], command: list[str], planned: int,
    options: dict[str, Any] | None = None,
) -> RunWriter:
    run_id = new_run_id(name)
    record = RunRecord(
        run_id=run_id, name=name, created_at=utc_now(), command=command, planned=planned,
        suite=suite, environment=environment, options=options or {},
    )
    return RunWriter(record, base / run_id)


def resume_run(run_dir: Path) -> RunWriter:
    """Reopen a stored run for more cases (``--resume``)."""
    record = load_run(run_dir)
    return RunWriter(record, run_dir)


def load_run(path: str | Path) -> RunRecord:
    """Load a run directory (or its run.json), merging any journal left by a crash.

    Raises:
        RunNotFoundError: no run.json there.
        NormbenchError: a record of a newer schema, or unreadable JSON.
    """
    p = Path(path)
    run_dir = p.parent if p.name == RUN_FILE else p
    f = run_dir / RUN_FILE
    if not f.exists():
        raise RunNotFoundError(f"{run_dir}: not a run (no {RUN_FILE})")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise NormbenchError(f"{f}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise NormbenchError(
            f"{f}: schema_version {version!r} is newer than this normbench reads ({SCHEMA_VERSION}); upgrade normbench"
        )
    record = RunRecord.model_validate(data)
    journal = run_dir / JOURNAL_FILE
    if journal.exists():
        by_id = record.case_map()
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                case = CaseRecord.model_validate_json(line)
            except ValueError:
                continue  # a line torn by a crash mid-write: that case never finished
            by_id[case.case_id] = case
        record.cases = list(by_id.values())
        if record.status == "running":
            record.status = "interrupted"
    record.path = str(run_dir)
    return record


def list_runs(base: Path) -> list[Path]:
    """Run directories under ``base``, oldest first (by their UTC-stamped names' time)."""
    if not base.is_dir():
        return []
    runs = [d for d in base.iterdir() if (d / RUN_FILE).is_file()]
    return sorted(runs, key=lambda d: (_stamp(d.name), d.name))


def _stamp(run_id: str) -> str:
    parts = run_id.rsplit("-", 2)
    return parts[-2] if len(parts) == 3 else ""


def resolve_run(ref: str, base: Path) -> Path:
    """A run by path, exact id, unique id prefix, or ``latest``.

    Raises:
        RunNotFoundError: nothing matches, or a prefix matches several runs.
    """
    p = Path(ref)
    if (p / RUN_FILE).is_file() or (p.name == RUN_FILE and p.is_file()):
        return p if p.name != RUN_FILE else p.parent
    runs = list_runs(base)
    if ref == "latest":
        if not runs:
            raise RunNotFoundError(f"no runs in {base}/ yet: run `normbench run` first")
        return runs[-1]
    exact = [r for r in runs if r.name == ref]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(m.name for m in matches[:5])
        raise RunNotFoundError(f"'{ref}' matches {len(matches)} runs ({names}{', ...' if len(matches) > 5 else ''}); give more of the id")
    known = ", ".join(r.name for r in runs[-5:]) or "none"
    raise RunNotFoundError(f"no run '{ref}' in {base}/ (latest: {known})")
