"""Reading runs: finding, decompressing, validating and loading records (see ``normbench.store``).

``load_run`` reads a run (plain, ``.gz``/``.xz`` or in a tarball, merging its
journal or rebuilding the run from it) and refuses anything untrustworthy, in one
line (``normbench.store.diagnostics``); ``list_runs`` and ``resolve_run`` find runs
in a results directory (``results_dir``). Version 1 records are read by setting
aside what version 2 refuses (``_validate``); sizes are capped by ``max_record_bytes``.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import lzma
import os
import stat
import tarfile
import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from normbench.errors import NormbenchError, RunNotFoundError
from normbench.store.diagnostics import _case_label, _field, _show, explain
from normbench.store.lock import lock_holder
from normbench.store.schema import (
    JOURNAL_FILE, JOURNAL_HEADER, RECORD_FILES, RUN_FILE, SCHEMA_VERSION, TARBALL_SUFFIXES, CaseRecord, Metric,
    RunRecord, non_finite,
)


def results_dir(option: str | Path | None = None) -> Path:
    """``--results-dir``, else ``$NORMBENCH_RESULTS_DIR``, else ``./runs``."""
    return Path(option or os.environ.get("NORMBENCH_RESULTS_DIR") or "runs")


def record_file(run_dir: Path) -> Path | None:
    """The record file of a run directory (``run.json``, else ``.gz``, else ``.xz``), or None."""
    for name in RECORD_FILES:
        f = run_dir / name
        if f.is_file():
            return f
    return None


def is_run_dir(d: Path) -> bool:
    """A directory with a record file, or with a journal only (a run whose ``run.json`` was lost)."""
    return record_file(d) is not None or (d / JOURNAL_FILE).is_file()


def _is_tarball(p: Path) -> bool:
    return p.name.endswith(TARBALL_SUFFIXES) and p.is_file()


def _in_tarball(p: Path) -> tuple[Path, str] | None:
    """``(tarball, member dir)`` when ``p`` names ``<tarball>/<dir>``, else None."""
    for parent in p.parents:
        if _is_tarball(parent):
            return parent, p.relative_to(parent).as_posix()
    return None


def max_record_bytes() -> int:
    """The largest record or journal ``load_run`` reads, in bytes once decompressed:
    ``$NORMBENCH_MAX_RECORD_MB`` MiB (default 512).

    Raises:
        NormbenchError: the variable is not a positive integer.
    """
    raw = os.environ.get("NORMBENCH_MAX_RECORD_MB", "512")
    try:
        mb = int(raw)
    except ValueError:
        mb = 0
    if mb <= 0:
        raise NormbenchError(f"NORMBENCH_MAX_RECORD_MB={raw!r}: expected a positive number of MiB")
    return mb * 2**20


def _too_big(where: str, limit: int) -> NormbenchError:
    return NormbenchError(f"{where}: larger than {limit // 2**20} MiB, more than any run record this normbench "
                          "writes (raise $NORMBENCH_MAX_RECORD_MB to read it)")


def _decompress(name: str, raw: bytes) -> bytes:
    """``raw`` as stored under file ``name``: gunzip ``.gz``, unxz ``.xz``, else as is.

    Raises:
        NormbenchError: damaged or truncated data, or more than ``max_record_bytes()`` once decompressed.
    """
    limit = max_record_bytes()
    try:
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                out = g.read(limit + 1)
        elif name.endswith(".xz"):
            with lzma.LZMAFile(io.BytesIO(raw), format=lzma.FORMAT_XZ) as x:
                out = x.read(limit + 1)
        else:
            out = raw
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise NormbenchError(f"{name}: damaged or truncated compressed record ({_why(e)})") from None
    if len(out) > limit:
        raise _too_big(name, limit)
    return out


def _why(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _read_bytes(f: Path) -> bytes:
    """A record or journal file's bytes (regular files only, at most ``max_record_bytes()``)."""
    limit = max_record_bytes()
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NormbenchError(f"{f}: not a regular file")
            raw = fh.read(limit + 1)
    except OSError as e:
        raise NormbenchError(f"{f}: cannot read: {e.strerror or e}") from None
    if len(raw) > limit:
        raise _too_big(str(f), limit)
    return raw


def _read_record_file(f: Path) -> bytes:
    return _decompress(str(f), _read_bytes(f))


@functools.lru_cache(maxsize=4)
def _tar_contents(path: str, mtime_ns: int, size: int) -> dict[str, dict[str, bytes]]:
    """Records and journals in a tarball: ``{run dir: {file name: bytes}}`` (cached per file version)."""
    runs: dict[str, dict[str, bytes]] = {}
    limit = max_record_bytes()
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                parts = [x for x in m.name.split("/") if x not in ("", ".")]
                if len(parts) < 2 or parts[-1] not in (*RECORD_FILES, JOURNAL_FILE):
                    continue
                if m.size > limit:
                    raise _too_big(f"{path}:{m.name}", limit)
                data = tar.extractfile(m)
                if data is not None:
                    runs.setdefault("/".join(parts[:-1]), {})[parts[-1]] = data.read()
    except tarfile.ReadError:
        raise NormbenchError(f"{path}: not a tar archive, or a damaged or truncated one") from None
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise NormbenchError(f"{path}: damaged or truncated tarball ({_why(e)})") from None
    return {d: files for d, files in runs.items() if any(n in files for n in (*RECORD_FILES, JOURNAL_FILE))}


def _tar_runs(tarball: Path) -> dict[str, dict[str, bytes]]:
    st = tarball.stat()
    return _tar_contents(str(tarball.resolve()), st.st_mtime_ns, st.st_size)


_READS = f"1 to {SCHEMA_VERSION}"

#: Fields version 2 declares that version 1 stored as free-form extras: a version-1 value that
#: does not fit its version-2 type is kept in ``v1_extras`` rather than refused.
_V2_CASE_FIELDS = frozenset(CaseRecord.model_fields) - {
    "case_id", "fingerprint", "stage", "kind", "op", "provider", "variant", "params", "repeat", "status", "reason",
    "seed", "metrics", "correctness", "device", "artifacts", "started_at", "duration_s", "evidence"}
_V2_METRIC_FIELDS = frozenset(Metric.model_fields) - {
    "value", "unit", "higher_is_better", "samples", "derived_from", "spread"}


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    return _field(list(loc))


def _v1_tolerable(err: Any, rel: tuple[Any, ...], at_case: bool) -> tuple[Any, ...] | None:
    """The part of ``rel`` (an error's location inside a case, or inside the record when not
    ``at_case``) to move into ``v1_extras`` when reading version 1, or None for real damage.

    Version 1 allowed any extra field on records, cases and metrics: such a field, or one that
    version 2 declares but whose version-1 value does not fit, is kept aside, not refused.
    """
    if not rel:
        return None
    unknown = err["type"] == "extra_forbidden"
    if at_case:
        if rel[0] in _V2_CASE_FIELDS:
            return rel[:1]
        if rel[0] == "metrics" and len(rel) >= 3 and (rel[2] in _V2_METRIC_FIELDS or (unknown and len(rel) == 3)):
            return rel[:3]
        return rel[:1] if unknown and len(rel) == 1 else None
    return rel if unknown and all(isinstance(k, str) for k in rel) else None


def _set_aside(holder: dict[str, Any], rel: tuple[Any, ...]) -> bool:
    """Move ``holder``'s value at ``rel`` into ``holder["v1_extras"]`` under its dotted path."""
    obj: Any = holder
    for k in rel[:-1]:
        if not isinstance(obj, dict) or k not in obj:
            return False
        obj = obj[k]
    if not isinstance(obj, dict) or rel[-1] not in obj:
        return False
    extras = holder.get("v1_extras")
    if not isinstance(extras, dict):
        extras = holder["v1_extras"] = {}
    extras[_dotted(rel)] = obj.pop(rel[-1])
    return True


def _validate(model: type[BaseModel], data: dict[str, Any], version: int, at_case: bool = False) -> Any:
    """``model.model_validate(data)``; for a version-1 ``data`` (mutated), first setting aside what
    version 1 allowed and version 2 refuses (``_v1_tolerable``).

    Raises:
        ValidationError: real damage (about ``data`` as left).
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        if version != 1:
            raise
        moved = False
        for e in err.errors():
            loc = tuple(e["loc"])
            if at_case:
                holder, rel = data, _v1_tolerable(e, loc, True)
            elif len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
                cases = data.get("cases")
                holder = cases[loc[1]] if isinstance(cases, list) and loc[1] < len(cases) else None
                rel = _v1_tolerable(e, loc[2:], True) if isinstance(holder, dict) else None
            else:
                holder, rel = data, _v1_tolerable(e, loc, False)
            if rel is not None and isinstance(holder, dict):
                moved = _set_aside(holder, rel) or moved
        if not moved:
            raise
    return model.model_validate(data)


def _check_version(data: dict[str, Any], where: str) -> None:
    if "schema_version" not in data:
        raise NormbenchError(f"{where}: no schema_version: not a normbench run record, or a damaged one")
    v = data["schema_version"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise NormbenchError(f"{where}: schema_version {_show(v)} is not a version this normbench reads ({_READS})")
    if v > SCHEMA_VERSION:
        raise NormbenchError(
            f"{where}: schema_version {v} is newer than this normbench reads ({_READS}); upgrade normbench"
        )


def _check_case(case: CaseRecord, where: str, label: str) -> None:
    """Refuse what validates but cannot be a measurement: non-finite numbers, an OK case without metrics."""
    bad = non_finite(case)
    if bad is not None:
        raise NormbenchError(f"{where}: {label}: {bad}: non-finite values are not measurements")
    if case.status == "OK" and not case.metrics:
        raise NormbenchError(f"{where}: {label}: status OK but metrics is empty (a measured case has at least one)")


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise NormbenchError(f"{where}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise NormbenchError(f"{where}: nested too deeply to be a run record") from None


def _parse_record(text: str, where: str) -> RunRecord:
    data = _parse_json(text, where)
    if not isinstance(data, dict):
        raise NormbenchError(f"{where}: not a run record (a JSON {type(data).__name__}, not an object)")
    _check_version(data, where)
    try:
        record = _validate(RunRecord, data, data["schema_version"])
    except ValidationError as err:
        raise NormbenchError(explain(where, err, data)) from None
    for i, c in enumerate(record.cases):
        _check_case(c, where, _case_label(i, c))
    return record


def _parse_journal(raw: bytes, where: str, version: int = 1) -> tuple[dict[str, Any] | None, list[CaseRecord]]:
    """The journal's header (the record without cases; None in journals of older normbench) and its cases.

    Cases are read as schema ``version`` (that of the record the journal belongs to),
    unless the header names another. Only an unterminated last line may be torn
    (a crash mid-write); any other line that is not a valid case is damage.

    Raises:
        NormbenchError: a damaged line (``file:line: ...``).
    """
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    header: dict[str, Any] | None = None
    cases: list[CaseRecord] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        torn = n == len(lines)  # no newline after it
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            if torn:
                continue
            raise NormbenchError(f"{where}:{n}: damaged journal line: not valid JSON ({_why(e)})") from None
        if not isinstance(obj, dict):
            if torn:
                continue
            raise NormbenchError(f"{where}:{n}: damaged journal line: a JSON {type(obj).__name__}, not a case")
        if JOURNAL_HEADER in obj:
            if n != 1 or not isinstance(obj.get("run"), dict):
                raise NormbenchError(f"{where}:{n}: damaged journal: a run header that is not its whole first line")
            header = obj["run"]
            v = header.get("schema_version")
            if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= SCHEMA_VERSION:
                version = v
            continue
        label = _case_label(None, obj)
        try:
            case = _validate(CaseRecord, obj, version, at_case=True)
        except ValidationError as err:
            if torn:
                continue
            raise NormbenchError(explain(f"{where}:{n}", err, obj, case=label)) from None
        _check_case(case, f"{where}:{n}", label)
        cases.append(case)
    return header, cases


def load_run(path: str | Path) -> RunRecord:
    """Load a run, merging any journal left by a crash; rebuild it from the journal if ``run.json`` is lost.

    ``path`` is a run directory, its record file (``run.json``, ``run.json.gz``
    or ``run.json.xz``), or ``<tarball>/<run dir>`` (see ``normbench.store``).
    A record that says "running" is ``running`` while its writer holds the lock,
    else ``interrupted``.

    Raises:
        RunNotFoundError: neither a record nor a journal there (the message names the missing file).
        NormbenchError: anything that makes the record untrustworthy, in one line naming
            the file (and case and field): unreadable, not UTF-8, not JSON, not an object,
            no or an unknown ``schema_version``, a field that fails the schema, an OK case
            without metrics, a non-finite metric, a damaged journal line (all but a torn
            last one), a damaged compressed file or tarball, or a file larger than
            ``max_record_bytes()``.
    """
    p = Path(path)
    run_dir = p.parent if p.name in RECORD_FILES else p
    text: str | None = None
    where = ""
    journal_raw: bytes | None = None
    journal_where = ""
    holder: str | None = None
    packed = _in_tarball(run_dir)
    if packed is not None:
        tarball, member = packed
        files = _tar_runs(tarball).get(member)
        if not files:
            raise RunNotFoundError(f"{run_dir}: not a run (no {RUN_FILE} under {member}/ in {tarball})")
        name = p.name if p.name in files else next((n for n in RECORD_FILES if n in files), None)
        if name is not None:
            where = f"{tarball}:{member}/{name}"
            text = _decode(where, _decompress(where, files[name]))
        journal_raw = files.get(JOURNAL_FILE)
        journal_where = f"{tarball}:{member}/{JOURNAL_FILE}"
    else:
        found = p if p.name in RECORD_FILES and p.is_file() else record_file(run_dir)
        journal = run_dir / JOURNAL_FILE
        journal_where = str(journal)
        if found is not None:
            where = str(found)
            text = _decode(where, _read_record_file(found))
        if journal.is_file():
            journal_raw = _read_bytes(journal)
        if found is None and journal_raw is None:
            raise RunNotFoundError(_not_a_run(run_dir))
        holder = lock_holder(run_dir)

    if text is not None:
        record = _parse_record(text, where)
        if journal_raw is not None:
            _, extra = _parse_journal(journal_raw, journal_where, record.schema_version)
            _merge(record, extra)
    else:
        assert journal_raw is not None
        header, extra = _parse_journal(journal_raw, journal_where)
        if header is None:
            n = len(extra)
            what = (f"its {n} finished case{'s lack' if n != 1 else ' lacks'} the run's suite and "
                    "environment (a journal without a header line, as older normbench wrote)") if extra else "it is empty"
            raise NormbenchError(f"{run_dir}: no {RUN_FILE}, and the journal {JOURNAL_FILE} cannot rebuild the run: {what}")
        head_where = f"{journal_where}:1"
        _check_version(header, head_where)
        try:
            record = _validate(RunRecord, {**header, "cases": []}, header["schema_version"])
        except ValidationError as err:
            raise NormbenchError(explain(head_where, err, header)) from None
        _merge(record, extra)
        record.recovered_from = journal_where
        record.status = "running"  # a journal outlives its run only until finish(): the run never ended
    if record.status == "running" and holder is None:
        record.status = "interrupted"  # its writer is gone (a run being written holds the lock)
    record.path = str(run_dir)
    return record


def _merge(record: RunRecord, cases: list[CaseRecord]) -> None:
    if not cases:
        return
    by_id = record.case_map()
    for case in cases:
        by_id[case.case_id] = case
    record.cases = list(by_id.values())


def _not_a_run(run_dir: Path) -> str:
    if not run_dir.exists():
        return f"{run_dir}: no such run directory"
    if not run_dir.is_dir():
        return f"{run_dir}: not a run directory (a run is a folder holding {RUN_FILE})"
    return (f"{run_dir}: not a run: no {RUN_FILE}, {RUN_FILE}.gz or {RUN_FILE}.xz in it (nor a journal "
            f"{JOURNAL_FILE} to rebuild one from)")


def _decode(where: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NormbenchError(f"{where}: not a UTF-8 text record ({e.reason} at byte {e.start})") from None


def list_runs(base: Path) -> list[Path]:
    """Run directories under ``base``, oldest first (by their UTC-stamped names' time).

    A directory counts when it holds any of ``RECORD_FILES``, or a journal only
    (``load_run`` rebuilds it). ``base`` may be a tarball: then its runs are
    ``base/<run dir>`` paths that ``load_run`` reads.

    Raises:
        NormbenchError: ``base`` is a damaged tarball.
    """
    if _is_tarball(base):
        runs = [base / d for d in _tar_runs(base)]
    elif base.is_dir():
        runs = [d for d in base.iterdir() if d.is_dir() and is_run_dir(d)]
    else:
        return []
    return sorted(runs, key=lambda d: (_stamp(d.name), d.name))


def _stamp(run_id: str) -> str:
    parts = run_id.rsplit("-", 2)
    return parts[-2] if len(parts) == 3 else ""


def resolve_run(ref: str, base: Path) -> Path:
    """A run by path, exact id, unique id prefix, or ``latest`` (``_resolve_run``; a reference
    the file system refuses, e.g. a name too long for it, is a ``RunNotFoundError`` too).

    Raises:
        RunNotFoundError / NormbenchError: as ``_resolve_run``.
    """
    try:
        return _resolve_run(ref, base)
    except OSError as e:
        shown = ref if len(ref) <= 80 else ref[:77] + "..."
        raise RunNotFoundError(f"no run '{shown}': {e.strerror or e}") from None


def _resolve_run(ref: str, base: Path) -> Path:
    """A run by path, exact id, unique id prefix, or ``latest``.

    A path is a run directory, its record file (``run.json``, ``run.json.gz``,
    ``run.json.xz``) or ``<tarball>/<run dir>``; ``base`` may be a tarball.

    Raises:
        RunNotFoundError: nothing matches (a folder that is not a run: the message names
            the missing ``run.json``), or a prefix matches several runs.
        NormbenchError: a damaged tarball.
    """
    p = Path(ref)
    if p.name in RECORD_FILES and p.is_file():
        return p.parent
    if p.name == JOURNAL_FILE and p.is_file():
        return p.parent
    if p.is_dir() and is_run_dir(p):
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
    if p.is_dir():
        raise RunNotFoundError(_not_a_run(p))
    if p.name in RECORD_FILES and p.parent.is_dir():
        raise RunNotFoundError(f"{p}: no such file")
    known = ", ".join(r.name for r in runs[-5:]) or "none"
    raise RunNotFoundError(f"no run '{ref}' in {base}/ (latest: {known})")
