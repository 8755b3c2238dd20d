"""Run records on disk: versioned, never overwritten, crash-safe.

Layout of one run (``<results>/<suite>-<UTC timestamp>-<short id>/``)::

    run.json        the record: schema_version, suite snapshot, environment, cases
    cases.jsonl     journal while the run is in progress: a header line (the record
                    without its cases), then one finished case a line
    run.lock        advisory lock (``flock``) held by the process writing the run; holds its pid
    logs/           server logs and tools' raw outputs (end-to-end stages)

While a run is in progress every finished case is appended to ``cases.jsonl``
(one JSON object a line, flushed and fsynced), so a crash or Ctrl-C keeps it.
When the run ends (complete or interrupted) the journal is folded into
``run.json``, written atomically (temp file + ``os.replace``), and removed.
``load_run`` reads both, so a record whose process died mid-run is whole up to
its last finished case; ``normbench run --resume`` completes the rest. The
journal's header makes it a record by itself: a run whose ``run.json`` is lost
is rebuilt from the journal alone (``RunRecord.recovered_from``).

One process writes a run at a time: ``RunWriter`` holds an exclusive
``flock(2)`` on ``run.lock`` from its start to ``finish`` (the kernel drops it
when the process dies, so a crash leaves no stale lock). A second writer
(``--resume`` of the same run) is refused with the holder's pid, and readers
call a run whose record says "running" *running* while the lock is held and
*interrupted* otherwise.

Loading trusts nothing: the record is validated against the schema (``schema``) and
every problem is explained in one line naming the file, the case and the field
(``run.json: case 12 (rms_norm/...): status 'WEIRD' is not one of OK, INCORRECT,
FAILED, SKIPPED``); a record with an unknown ``schema_version``, an OK case
without metrics, or a non-finite (NaN/Inf) metric value or sample is refused
(``NormbenchError``, exit 2), never half used. Writing refuses non-finite
samples too (``NonFiniteError``), naming the case. Files are created with mode
``0666 & ~umask`` (0644 under the usual umask 022).

Schema versions. Version 2 (written now) declares every field a record
stores, each with its type and a docstring line (the models in ``schema``; their JSON
schema is ``RunRecord.model_json_schema()``), and refuses any other field, when a
record is built or a field set (``CaseRecord`` validates assignment) and when a
version-2 record is read (``run.json: case 0 (...): foo is not a field of record
schema version 2``). Kind-specific case fields (``timing``, ``server``, ``items``,
...) are written only where set. Version 1 (normbench before it) allowed any
extra field; reading one, a field version 2 does not declare (or a declared one
whose version-1 value does not fit its type) is kept in ``v1_extras`` under its
dotted path instead of being refused, and a resumed version-1 run is written
back as version 2 with them. Version 2 grows only by optional fields (the
compatible kind of change: e.g. ``conditions``, a kernel case's clocks and
throttle reasons): a record written before a field existed reads as it always
did; one that sets it is refused, naming the field, by a normbench older than it.

The results directory is ``--results-dir``, else ``$NORMBENCH_RESULTS_DIR``,
else ``./runs``.

Reading also accepts a finished record stored compressed, as ``run.json.gz``
(gzip, RFC 1952) or ``run.json.xz`` (xz/LZMA2), in place of ``run.json``
(``scripts/compress_runs.sh`` makes them; ``run.json`` wins if a directory holds
both), and a results directory packed as a tarball (``.tar``, ``.tar.gz``/``.tgz``,
``.tar.xz``/``.txz``) of run directories: ``--results-dir runs.tar.xz`` or a run
path ``runs.tar.xz/<run id>``. Writing is always plain ``run.json``.

Modules (this package re-exports their public names; import from ``normbench.store``):

    schema.py       the record: ``RunRecord``, ``CaseRecord``, ``Metric``, ``SuiteSnapshot`` and the
                    TypedDicts of kind-specific case fields; ``SCHEMA_VERSION``; a run's file names
                    (``RUN_FILE``, ``JOURNAL_FILE``, ``LOCK_FILE``, ``RECORD_FILES``, ...); ``utc_now``;
                    ``non_finite`` / ``NonFiniteError``
    lock.py         the write lock on ``run.lock``: ``acquire_lock``, ``lock_holder``, ``RunLockedError``
    writer.py       writing: ``atomic_write_text`` (umask-respecting), the journal, ``RunWriter``,
                    ``new_run_id``, ``create_run``, ``resume_run``, ``check_writable``
    reader.py       reading: ``results_dir``, ``record_file``, ``is_run_dir``, compressed records and
                    tarballs, ``max_record_bytes``, version-1 handling, ``load_run``, ``list_runs``,
                    ``resolve_run``
    diagnostics.py  ``explain``: a schema validation error as one line naming file, case and field

``lock`` and ``diagnostics`` import ``schema``; ``reader`` imports those three; ``writer`` imports
all four (it reads a run to resume it); no other module of this package imports ``writer``.
"""

from normbench.store.diagnostics import explain
from normbench.store.lock import RunLockedError, acquire_lock, lock_holder
from normbench.store.reader import (
    is_run_dir, list_runs, load_run, max_record_bytes, record_file, resolve_run, results_dir,
)
from normbench.store.schema import (
    JOURNAL_FILE, JOURNAL_HEADER, LOCK_FILE, RECORD_FILES, RUN_FILE, SCHEMA_VERSION, TARBALL_SUFFIXES, CaseConditions,
    CaseProfile, CaseRecord, CaseTiming, ClockSnapshot, DeviceInfo, ItemResult, Metric, NonFiniteError, ProfileKernel,
    RequestCounts, RunRecord, ServerInfo, Status, SuiteSnapshot, ToolInfo, non_finite, utc_now,
)
from normbench.store.writer import RunWriter, atomic_write_text, check_writable, create_run, new_run_id, resume_run

__all__ = [
    # schema
    "SCHEMA_VERSION", "RUN_FILE", "JOURNAL_FILE", "LOCK_FILE", "JOURNAL_HEADER", "RECORD_FILES", "TARBALL_SUFFIXES",
    "Status", "Metric", "CaseTiming", "ClockSnapshot", "CaseConditions", "DeviceInfo", "ServerInfo", "ToolInfo",
    "RequestCounts", "ItemResult", "ProfileKernel", "CaseProfile", "CaseRecord", "SuiteSnapshot", "RunRecord",
    "utc_now", "NonFiniteError", "non_finite",
    # lock
    "RunLockedError", "acquire_lock", "lock_holder",
    # writer
    "atomic_write_text", "RunWriter", "new_run_id", "create_run", "resume_run", "check_writable",
    # reader
    "results_dir", "record_file", "is_run_dir", "max_record_bytes", "load_run", "list_runs", "resolve_run",
    # diagnostics
    "explain",
]
