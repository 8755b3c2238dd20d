"""Writing runs: atomic files, the journal, ``RunWriter`` (see ``normbench.store``).

``create_run`` starts a run, ``resume_run`` reopens one (``--resume``), and the
``RunWriter`` they return appends each finished case to the journal
(``cases.jsonl``, fsynced) and folds it into ``run.json`` at ``finish``, holding
the run's lock (``normbench.store.lock``) throughout.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from normbench.errors import NormbenchError
from normbench.store.lock import RunLockedError, acquire_lock, lock_holder
from normbench.store.reader import _in_tarball, load_run, record_file
from normbench.store.schema import (
    JOURNAL_FILE, JOURNAL_HEADER, RUN_FILE, SCHEMA_VERSION, CaseRecord, NonFiniteError, RunRecord, SuiteSnapshot,
    non_finite, utc_now,
)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half.

    The file gets mode ``0666 & ~umask`` (0644 under umask 022), as ``open()``
    would create it; ``tempfile.mkstemp`` alone would leave it 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


def _journal_header(record: RunRecord) -> str:
    """The journal's first line: the record without its cases (enough to rebuild the run)."""
    head = record.model_dump(mode="json", exclude={"cases"})
    return json.dumps({JOURNAL_HEADER: SCHEMA_VERSION, "run": head}, separators=(",", ":"))



class RunWriter:
    """Appends finished cases to a run and folds them into ``run.json`` at the end.

    Holds the run's lock (``run.lock``) from construction to ``finish``; ``lock``
    is one already taken with ``acquire_lock`` (``resume_run``).

    Raises:
        RunLockedError: another process is writing the run.
    """

    def __init__(self, record: RunRecord, run_dir: Path, lock: Any = None):
        self.record = record
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock if lock is not None else acquire_lock(self.dir)
        (self.dir / "logs").mkdir(exist_ok=True)
        record.schema_version = SCHEMA_VERSION  # a resumed version-1 run is written as the current version
        record.status = "running"
        record.finished_at = None
        atomic_write_text(self.dir / RUN_FILE, _dump(record))
        # The journal restarts as header + the cases known now (a resumed run's, from the record
        # just written): it is a whole record by itself, and no line torn by an earlier crash stays.
        lines = [_journal_header(record), *(c.model_dump_json() for c in record.cases)]
        atomic_write_text(self.dir / JOURNAL_FILE, "\n".join(lines) + "\n")
        self._journal = open(self.dir / JOURNAL_FILE, "a", encoding="utf-8")

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    def add(self, case: CaseRecord) -> None:
        """Record a finished case durably (survives a crash right after return).

        Raises:
            NonFiniteError: a metric value, sample or spread of ``case`` is NaN or infinite
                (nothing is recorded).
        """
        bad = non_finite(case)
        if bad is not None:
            raise NonFiniteError(f"case {case.case_id}: {bad}: a non-finite measurement is not recorded")
        # Memory first: an interrupt between the two steps must not leave a case that is
        # in the journal but not in memory, since finish() folds memory and drops the journal.
        self.record.cases = [c for c in self.record.cases if c.case_id != case.case_id] + [case]
        self._journal.write(case.model_dump_json() + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def finish(self, status: Literal["complete", "interrupted"]) -> RunRecord:
        """Fold the journal into ``run.json`` atomically, drop the journal, release the lock."""
        self._journal.close()
        self.record.status = status
        self.record.finished_at = utc_now()
        atomic_write_text(self.dir / RUN_FILE, _dump(self.record))
        (self.dir / JOURNAL_FILE).unlink(missing_ok=True)
        self._lock.truncate(0)  # no pid of a process that is gone; the file stays (see acquire_lock)
        self._lock.close()
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
    """Reopen a stored run for more cases (``--resume``), holding its lock.

    A run whose ``run.json`` is lost is rebuilt from its journal first (``load_run``).

    Raises:
        NormbenchError: the run is stored compressed or inside a tarball (resuming
            writes ``run.json`` in its directory: decompress it first), or its record
            is damaged (``load_run``).
        RunLockedError: another process is writing it.
    """
    check_writable(run_dir)
    lock = acquire_lock(Path(run_dir))  # before reading: no writer can add cases this misses
    try:
        record = load_run(run_dir)
        return RunWriter(record, Path(run_dir), lock=lock)
    except BaseException:
        lock.close()
        raise


def check_writable(run_dir: Path) -> None:
    """Refuse a run that ``--resume`` cannot extend in place.

    Raises:
        NormbenchError: its record is only compressed, or it lies inside a tarball.
        RunLockedError: another process is writing it (the message names its pid).
    """
    run_dir = Path(run_dir)
    if _in_tarball(run_dir) is not None:
        raise NormbenchError(f"{run_dir}: a run inside a tarball cannot be resumed; extract it first")
    f = record_file(run_dir)
    if f is not None and f.name != RUN_FILE:
        raise NormbenchError(f"{f}: a compressed record cannot be resumed; decompress it first "
                             f"({'xz' if f.suffix == '.xz' else 'gzip'} -d {f})")
    holder = lock_holder(run_dir)
    if holder is not None:
        raise RunLockedError(f"{run_dir}: another normbench process ({holder}) is writing this run; "
                             "wait for it to end, or stop it, then try again")
