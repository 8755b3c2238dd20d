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

Reading also accepts a finished record stored compressed, as ``run.json.gz``
(gzip, RFC 1952) or ``run.json.xz`` (xz/LZMA2), in place of ``run.json``
(``scripts/compress_runs.sh`` makes them; ``run.json`` wins if a directory holds
both), and a results directory packed as a tarball (``.tar``, ``.tar.gz``/``.tgz``,
``.tar.xz``/``.txz``) of run directories: ``--results-dir runs.tar.xz`` or a run
path ``runs.tar.xz/<run id>``. Writing is always plain ``run.json``.
"""

from __future__ import annotations

import functools
import gzip
import json
import lzma
import os
import secrets
import tarfile
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from normbench.errors import NormbenchError, RunNotFoundError

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
JOURNAL_FILE = "cases.jsonl"
#: Names a run's record may have, in the order ``load_run`` looks for them.
RECORD_FILES = (RUN_FILE, RUN_FILE + ".gz", RUN_FILE + ".xz")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")

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
    #: End-to-end cases: what the serving engine actually did (effective compilation config,
    #: fusion patterns replaced per pass, compile time), or None with a note where unknowable;
    #: see ``normbench.runners.vllm_config.parse_fusion_evidence``.
    evidence: dict[str, Any] | None = None


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
    """Reopen a stored run for more cases (``--resume``).

    Raises:
        NormbenchError: the run is stored compressed or inside a tarball (resuming
            writes ``run.json`` in its directory: decompress it first).
    """
    check_writable(run_dir)
    record = load_run(run_dir)
    return RunWriter(record, run_dir)


def check_writable(run_dir: Path) -> None:
    """Refuse a run that ``--resume`` cannot extend in place.

    Raises:
        NormbenchError: its record is only compressed, or it lies inside a tarball.
    """
    run_dir = Path(run_dir)
    if _in_tarball(run_dir) is not None:
        raise NormbenchError(f"{run_dir}: a run inside a tarball cannot be resumed; extract it first")
    f = record_file(run_dir)
    if f is not None and f.name != RUN_FILE:
        raise NormbenchError(f"{f}: a compressed record cannot be resumed; decompress it first "
                             f"({'xz' if f.suffix == '.xz' else 'gzip'} -d {f})")


def record_file(run_dir: Path) -> Path | None:
    """The record file of a run directory (``run.json``, else ``.gz``, else ``.xz``), or None."""
    for name in RECORD_FILES:
        f = run_dir / name
        if f.is_file():
            return f
    return None


def _is_tarball(p: Path) -> bool:
    return p.name.endswith(TARBALL_SUFFIXES) and p.is_file()


def _in_tarball(p: Path) -> tuple[Path, str] | None:
    """``(tarball, member dir)`` when ``p`` names ``<tarball>/<dir>``, else None."""
    for parent in p.parents:
        if _is_tarball(parent):
            return parent, p.relative_to(parent).as_posix()
    return None


def _decompress(name: str, raw: bytes) -> bytes:
    """``raw`` as stored under file ``name``: gunzip ``.gz``, unxz ``.xz``, else as is.

    Raises:
        NormbenchError: damaged or truncated data.
    """
    try:
        if name.endswith(".gz"):
            return gzip.decompress(raw)
        if name.endswith(".xz"):
            return lzma.decompress(raw, format=lzma.FORMAT_XZ)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise NormbenchError(f"{name}: damaged or truncated compressed record ({_why(e)})") from None
    return raw


def _why(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _read_record_file(f: Path) -> bytes:
    try:
        raw = f.read_bytes()
    except OSError as e:
        raise NormbenchError(f"{f}: cannot read: {e.strerror or e}") from None
    return _decompress(str(f), raw)


@functools.lru_cache(maxsize=4)
def _tar_contents(path: str, mtime_ns: int, size: int) -> dict[str, dict[str, bytes]]:
    """Records and journals in a tarball: ``{run dir: {file name: bytes}}`` (cached per file version)."""
    runs: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                parts = [x for x in m.name.split("/") if x not in ("", ".")]
                if len(parts) < 2 or parts[-1] not in (*RECORD_FILES, JOURNAL_FILE):
                    continue
                data = tar.extractfile(m)
                if data is not None:
                    runs.setdefault("/".join(parts[:-1]), {})[parts[-1]] = data.read()
    except tarfile.ReadError:
        raise NormbenchError(f"{path}: not a tar archive, or a damaged or truncated one") from None
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise NormbenchError(f"{path}: damaged or truncated tarball ({_why(e)})") from None
    return {d: files for d, files in runs.items() if any(n in files for n in RECORD_FILES)}


def _tar_runs(tarball: Path) -> dict[str, dict[str, bytes]]:
    st = tarball.stat()
    return _tar_contents(str(tarball.resolve()), st.st_mtime_ns, st.st_size)


def load_run(path: str | Path) -> RunRecord:
    """Load a run, merging any journal left by a crash.

    ``path`` is a run directory, its record file (``run.json``, ``run.json.gz``
    or ``run.json.xz``), or ``<tarball>/<run dir>`` (see the module docstring).

    Raises:
        RunNotFoundError: no record there.
        NormbenchError: a record of a newer schema, unreadable JSON, or a damaged
            compressed file or tarball.
    """
    p = Path(path)
    run_dir = p.parent if p.name in RECORD_FILES else p
    journal_text: str | None = None
    packed = _in_tarball(run_dir)
    if packed is not None:
        tarball, member = packed
        files = _tar_runs(tarball).get(member)
        if not files:
            raise RunNotFoundError(f"{run_dir}: not a run (no {RUN_FILE} under {member}/ in {tarball})")
        name = p.name if p.name in files else next(n for n in RECORD_FILES if n in files)
        where = f"{tarball}:{member}/{name}"
        text = _decode(where, _decompress(where, files[name]))
        if JOURNAL_FILE in files:
            journal_text = files[JOURNAL_FILE].decode("utf-8", errors="replace")
        f: Path | str = where
    else:
        found = p if p.name in RECORD_FILES and p.is_file() else record_file(run_dir)
        if found is None:
            raise RunNotFoundError(f"{run_dir}: not a run (no {RUN_FILE}, {RUN_FILE}.gz or {RUN_FILE}.xz)")
        f = found
        text = _decode(str(f), _read_record_file(f))
        journal = run_dir / JOURNAL_FILE
        if journal.exists():
            journal_text = journal.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise NormbenchError(f"{f}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e
    if not isinstance(data, dict):
        raise NormbenchError(f"{f}: not a run record (a JSON {type(data).__name__}, not an object)")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise NormbenchError(
            f"{f}: schema_version {version!r} is newer than this normbench reads ({SCHEMA_VERSION}); upgrade normbench"
        )
    record = RunRecord.model_validate(data)
    if journal_text is not None:
        by_id = record.case_map()
        for line in journal_text.splitlines():
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


def _decode(where: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NormbenchError(f"{where}: not a UTF-8 text record ({e.reason} at byte {e.start})") from None


def list_runs(base: Path) -> list[Path]:
    """Run directories under ``base``, oldest first (by their UTC-stamped names' time).

    A directory counts when it holds any of ``RECORD_FILES``. ``base`` may be a
    tarball: then its runs are ``base/<run dir>`` paths that ``load_run`` reads.

    Raises:
        NormbenchError: ``base`` is a damaged tarball.
    """
    if _is_tarball(base):
        runs = [base / d for d in _tar_runs(base)]
    elif base.is_dir():
        runs = [d for d in base.iterdir() if record_file(d) is not None]
    else:
        return []
    return sorted(runs, key=lambda d: (_stamp(d.name), d.name))


def _stamp(run_id: str) -> str:
    parts = run_id.rsplit("-", 2)
    return parts[-2] if len(parts) == 3 else ""


def resolve_run(ref: str, base: Path) -> Path:
    """A run by path, exact id, unique id prefix, or ``latest``.

    A path is a run directory, its record file (``run.json``, ``run.json.gz``,
    ``run.json.xz``) or ``<tarball>/<run dir>``; ``base`` may be a tarball.

    Raises:
        RunNotFoundError: nothing matches, or a prefix matches several runs.
        NormbenchError: a damaged tarball.
    """
    p = Path(ref)
    if p.name in RECORD_FILES and p.is_file():
        return p.parent
    if record_file(p) is not None:
        return p
    packed = _in_tarball(p.parent if p.name in RECORD_FILES else p)
    if packed is not None and packed[1] in _tar_runs(packed[0]):
        return packed[0] / packed[1]
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
