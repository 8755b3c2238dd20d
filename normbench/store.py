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

Loading trusts nothing: the record is validated against the schema below and
every problem is explained in one line naming the file, the case and the field
(``run.json: case 12 (rms_norm/...): status 'WEIRD' is not one of OK, INCORRECT,
FAILED, SKIPPED``); a record with an unknown ``schema_version``, an OK case
without metrics, or a non-finite (NaN/Inf) metric value or sample is refused
(``NormbenchError``, exit 2), never half used. Writing refuses non-finite
samples too (``NonFiniteError``), naming the case. Files are created with mode
``0666 & ~umask`` (0644 under the usual umask 022).

Schema versions. Version 2 (written now) declares every field a record
stores, each with its type and a docstring line (the models below; their JSON
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
"""

from __future__ import annotations

import errno
import fcntl
import functools
import gzip
import io
import json
import lzma
import math
import os
import re
import secrets
import stat
import tarfile
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer
from typing_extensions import NotRequired, TypedDict

from normbench.errors import NormbenchError, RunNotFoundError

#: The record format this normbench writes; it reads every version from 1 up to it (see ``_parse_record``).
SCHEMA_VERSION = 2
RUN_FILE = "run.json"
JOURNAL_FILE = "cases.jsonl"
LOCK_FILE = "run.lock"
#: Key of the journal's first line, ``{"normbench_journal": 1, "run": {record without cases}}``.
JOURNAL_HEADER = "normbench_journal"
#: Names a run's record may have, in the order ``load_run`` looks for them.
RECORD_FILES = (RUN_FILE, RUN_FILE + ".gz", RUN_FILE + ".xz")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")

Status = Literal["OK", "INCORRECT", "FAILED", "SKIPPED"]

#: Every model below: unknown fields refused (version 2 declares all it stores; reading a
#: version-1 record moves them into ``v1_extras`` instead, see ``_parse_record``), fields
#: described by the docstring under them (``use_attribute_docstrings``: the JSON schema's
#: descriptions).
_STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _omit_empty(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without the ``names`` whose value is None or empty: kind-specific fields are
    written only where they apply, as version 1 wrote them."""
    for name in names:
        if name in data and data[name] in (None, {}, []):
            del data[name]
    return data


class Metric(BaseModel):
    """One measured quantity of a case."""

    model_config = _STRICT
    value: float | None
    """The summary: the median of ``samples`` when there are samples."""
    unit: str
    """e.g. ``"us"``, ``"GB/s"``, ``"%"``, ``"req/s"``, ``"ms"``, ``"fraction"``."""
    higher_is_better: bool
    """The direction compare uses."""
    samples: list[float] = []
    """Every raw sample (kernel: one per timed replay; end to end: one per repeat); empty for derived metrics."""
    derived_from: str | None = None
    """For a monotone function of another metric (GB/s of time), that metric's name; compare judges it there."""
    spread: dict[str, float] = {}
    """Order statistics of the samples, e.g. ``{"p20": .., "p80": .., "min": .., "max": ..}``."""
    stderr: float | None = None
    """Accuracy: lm-eval's standard error of ``value`` (None where lm-eval reports "N/A")."""
    n: int | None = None
    """Accuracy: documents evaluated."""
    filter: str | None = None
    """Accuracy: the lm-eval filter the value is under (``strict-match``, ``flexible-extract``)."""

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _omit_empty(handler(self), ("stderr", "n", "filter"))


class CaseTiming(TypedDict):
    """Kernel cases: how the samples were taken (``normbench.timing.TimingResult.as_record``)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    method: Literal["cuda_graph", "cuda_events", "cpu"]
    """``cuda_graph``: graph replays over rotated inputs; ``cuda_events``: one call after an L2 flush; ``cpu``."""
    calls_per_sample: int
    """Calls each sample averages over (graph: calls per replay; cpu: calls per block)."""
    input_sets: int
    """Input sets rotated over."""
    bytes_per_call: NotRequired[int | None]
    """The bytes one call moves (the op's bytes-moved model)."""
    bytes_rotated: NotRequired[int | None]
    """``input_sets * bytes_per_call``: the span of the rotation (GPU; at least 2 x L2 for ``cuda_graph``)."""
    l2_bytes: NotRequired[int | None]
    """The device's L2 size in bytes (GPU)."""
    fallback: NotRequired[str | None]
    """Why ``mode: auto`` timed with events instead of a graph (capture failed, rotation short of 2 x L2)."""


class ClockSnapshot(TypedDict, total=False):
    """Kernel stages: the GPU's state at one moment, from NVML (``normbench.conditions.Snapshot``).
    A field the GPU or driver does not report is left out and named in ``unread``."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    at: str
    """UTC time of the reading (ISO 8601, milliseconds)."""
    pci_bus_id: str
    """The GPU read, by its PCI bus id as NVML writes it (``00000000:18:00.0``)."""
    sm_clock_mhz: int
    """Current SM clock (MHz)."""
    mem_clock_mhz: int
    """Current memory clock (MHz)."""
    app_sm_clock_mhz: int
    """Applications clock of the graphics domain (MHz): the target work runs at when nothing holds it back."""
    app_mem_clock_mhz: int
    """Applications clock of the memory (MHz)."""
    power_w: float
    """Power draw (W)."""
    power_limit_w: float
    """The enforced power limit (W)."""
    temperature_c: int
    """GPU core temperature (°C)."""
    throttle_reasons: list[str]
    """NVML's clocks-event (throttle) reasons, decoded (``normbench.conditions.REASON_BITS``); empty: none."""
    thermal_or_power_throttled: bool
    """A power or thermal reason is among them (``gpu_idle`` and clock settings are not throttling)."""
    unread: dict[str, str]
    """Field -> NVML's error, for each field that could not be read."""


class CaseConditions(TypedDict, total=False):
    """Kernel cases on a GPU: the measurement conditions (``normbench.conditions``): a sample taken right after
    the case's timed samples, and on the first and last case of a kernel stage, the stage's state before and
    after it."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    throttle_reasons: list[str]
    """Throttle reasons NVML reported right after the timed samples (decoded; empty: none)."""
    thermal_or_power_throttled: bool
    """Power or thermal throttling was reported then: ``compare`` does not compare the case unless
    ``--allow-throttled``."""
    sm_clock_mhz: int
    """The SM clock right after the timed samples (MHz)."""
    unread: dict[str, str]
    """Field -> NVML's error, for what the sample could not read."""
    stage_before: ClockSnapshot
    """First case of a kernel stage (a parallel worker's unit): the GPU before the stage."""
    stage_after: ClockSnapshot
    """Last case of a kernel stage (a parallel worker's unit): the GPU after the stage."""
    unavailable: str
    """First case of a kernel stage on a GPU whose NVML could not be read: why (no pynvml, no driver)."""


class DeviceInfo(TypedDict, total=False):
    """Parallel executors: the worker that ran the case (``normbench.executors.worker``)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    index: int | None
    """The worker's device index (None: unknown)."""
    label: str
    """The worker's device label, e.g. ``cuda:1`` or ``host:cuda:0,1``."""
    name: str
    """The device's model name (``cpu`` off CUDA)."""
    host: str
    """The host the worker ran on."""
    pid: int
    """The worker process's pid."""
    peak_bandwidth_gbps: float
    """Kernel workers: the copy bandwidth measured on the worker's device (GB/s)."""
    port: int
    """End-to-end lanes: the lane's server port."""
    startup_s: float
    """Seconds from the parent spawning the worker to its ready answer (torch, CUDA context, copy bandwidth, the
    providers' imports); absent in records before it."""
    startup_wait_s: float
    """Seconds of ``startup_s`` the run waited for: from when the parent had units to hand out (or spawned the
    worker, if later) to its ready answer; 0 when the worker was ready first."""


class ServerInfo(TypedDict, total=False):
    """End-to-end cases: the server that served the case."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    url: str
    """Its base URL."""
    pid: int | None
    """Its process id (None: it never started)."""
    startup_s: float | None
    """Launch to first healthy answer, in seconds (None: not healthy)."""
    command: list[str]
    """The command line it was launched with."""
    cold_start: bool
    """Started on fresh, empty compile caches."""


class ToolInfo(TypedDict):
    """End-to-end cases: the client tool that measured the case."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: str
    """e.g. ``guidellm``, ``vllm bench serve``, ``lm_eval``, ``vllm bench latency``."""
    version: str | None
    """Its installed version (None: unknown)."""


class RequestCounts(TypedDict, total=False):
    """Throughput cases: how the client's requests ended."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    completed: int
    """Requests that completed."""
    failed: int
    """Requests that failed."""
    incomplete: int
    """guidellm: requests still running when it stopped."""


class ItemResult(TypedDict, total=False):
    """Accuracy cases: one document's results, for paired tests (McNemar) between variants or runs."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    doc_id: int
    """lm-eval's document id."""
    strict: Literal[0, 1]
    """Exact match under the ``strict-match`` filter."""
    flexible: Literal[0, 1]
    """Exact match under the ``flexible-extract`` filter."""


class ProfileKernel(TypedDict, total=False):
    """Profiled kernel cases: one kernel the case's callable launched (``normbench.profile``)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: str
    """The kernel's name as the profiler reported it (ncu: demangled; torch on a CPU: the aten op)."""
    time_us: float | None
    """Its duration in us: ncu ``gpu__time_duration.sum`` of one launch; torch: its self time per profiled call."""
    calls: int
    """torch: how often it ran per profiled call of the case's callable (ncu: one row per launch)."""
    dram_pct: float | None
    """ncu: ``dram__throughput.avg.pct_of_peak_sustained_elapsed``, % of the DRAM peak."""
    occupancy_pct: float | None
    """ncu: achieved occupancy, ``sm__warps_active.avg.pct_of_peak_sustained_active`` (%)."""
    registers: int | None
    """ncu: ``launch__registers_per_thread``."""
    block: str | None
    """ncu: the launch's block size, as ncu prints it (``(256, 1, 1)``)."""
    grid: str | None
    """ncu: the launch's grid size."""


class CaseProfile(TypedDict, total=False):
    """Kernel cases run with ``--profile``: what the profiler saw, taken after timing (``normbench.profile``)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    tool: Literal["ncu", "torch"]
    """``ncu`` (Nsight Compute) or ``torch`` (``torch.profiler``)."""
    tool_version: str | None
    """The profiler's version (ncu's ``--version`` line; torch's version)."""
    device: str | None
    """The device profiled (its model name, or ``cpu``)."""
    warmup: int
    """Calls of the case's callable before the profiled ones (compilation, autotuning), not profiled."""
    launches: int
    """Calls of the case's callable profiled."""
    settings: dict[str, Any]
    """How it was profiled: ncu's ``clock_control``, ``set``, ``metrics``, ``range``; torch's ``activities``."""
    command: list[str]
    """ncu: the command line that profiled it."""
    kernels: list[ProfileKernel]
    """Every kernel profiled, in launch order (ncu) or by time, most first (torch)."""
    error: str | None
    """Why profiling failed (then ``kernels`` is empty); the case's timing stands."""
    duration_s: float | None
    """Wall time of the profiling, in seconds."""


#: Case fields written only where they apply (absent when None or empty).
_CASE_OPTIONAL = (
    "timing", "conditions", "device_info", "requested_config", "effective_config", "config_note", "server", "tool",
    "attempts", "requests", "items", "task", "latencies_ms", "profile", "v1_extras",
)


class CaseRecord(BaseModel):
    """One case's outcome.

    ``fingerprint`` identifies what was measured (stage, op, provider, variant,
    params) and matches across runs; ``case_id`` adds the repeat index. Fields
    are checked when set (``validate_assignment``), unknown ones refused.
    """

    model_config = ConfigDict(**_STRICT, validate_assignment=True)
    case_id: str
    """``fingerprint`` plus ``#<repeat>``: unique within a run."""
    fingerprint: str
    """What was measured (stage/op-or-kind/provider/variant/params): matches across runs."""
    stage: str
    """The suite stage's name."""
    kind: str
    """The stage kind: ``kernel``, ``startup``, ``throughput``, ``accuracy``, ``latency``."""
    op: str | None = None
    """Kernel cases: the op measured."""
    provider: str | None = None
    """Kernel cases: the provider (implementation) measured."""
    variant: str | None = None
    """End-to-end cases: the suite variant served."""
    params: dict[str, Any] = {}
    """The case's sweep point (kernel: shape, dtype, ...; end to end: client settings)."""
    repeat: int = 0
    """Repeat index (0-based)."""
    status: Status
    """``OK`` (measured), ``INCORRECT`` (outside tolerance, not timed), ``FAILED`` or ``SKIPPED``."""
    reason: str | None = None
    """Why it is not OK, or notes on an OK case (e.g. a timing fallback)."""
    seed: int | None = None
    """Kernel cases: the seed of its random inputs."""
    metrics: dict[str, Metric] = {}
    """Measured quantities by name (an OK case has at least one)."""
    correctness: dict[str, float] = {}
    """Kernel cases: errors against the float64 reference (may be inf for an INCORRECT case)."""
    device: str | None = None
    """The device's model name."""
    artifacts: dict[str, str] = {}
    """Files the case left, by role (``server_log``, ``client_log``, ``raw``, ``samples``), relative to the run."""
    started_at: str | None = None
    """UTC start time (ISO 8601)."""
    duration_s: float | None = None
    """Wall time of the case, in seconds."""
    evidence: dict[str, Any] | None = None
    """End-to-end cases: what the engine did (effective compilation config, fusion patterns replaced per pass,
    compile time), None with a note where unknowable; see ``normbench.engines.vllm.parse_fusion_evidence``."""
    timing: CaseTiming | None = None
    """Kernel cases: how the samples were taken."""
    conditions: CaseConditions | None = None
    """Kernel cases on a GPU: clocks, power, temperature and throttle reasons around the samples and the stage
    (``normbench.conditions``); absent in records before it, and on a CPU."""
    device_info: DeviceInfo | None = None
    """Cases run by a parallel executor: the worker that ran it."""
    requested_config: dict[str, Any] | None = None
    """End-to-end cases: the variant's ``compilation_config``."""
    effective_config: dict[str, Any] | None = None
    """End-to-end cases: the ``compilation_config`` the engine logged (enums by name); None when not verified."""
    config_note: str | None = None
    """End-to-end cases: why ``effective_config`` was not verified."""
    server: ServerInfo | None = None
    """Throughput, accuracy and startup cases: the server that served it."""
    tool: ToolInfo | None = None
    """End-to-end cases: the client tool that measured it."""
    attempts: int | None = None
    """Throughput cases: client runs it took (a hung client is tried again)."""
    requests: RequestCounts | None = None
    """Throughput cases: how the client's requests ended."""
    items: list[ItemResult] | None = None
    """Accuracy cases: per-document results, sorted by ``doc_id``."""
    task: str | None = None
    """Accuracy cases: the lm-eval task run."""
    latencies_ms: list[float] | None = None
    """Latency cases: every timed iteration, in ms."""
    profile: CaseProfile | None = None
    """Kernel cases run with ``--profile ncu|torch``: the profiler's view of its kernels (``normbench.profile``);
    its files (ncu report, trace) are in ``artifacts``."""
    v1_extras: dict[str, Any] = {}
    """Read from a version-1 record: its fields this schema does not declare, or whose values do not fit it, by
    dotted path (kept, not used). Never set by a run."""

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _omit_empty(handler(self), _CASE_OPTIONAL)


class SuiteSnapshot(BaseModel):
    """The suite a run ran, as it was."""

    model_config = _STRICT
    name: str
    """The suite's name."""
    path: str
    """The suite file it was read from."""
    sha256: str
    """sha256 of that file's bytes."""
    spec: dict[str, Any]
    """The validated suite, as JSON."""


class RunRecord(BaseModel):
    """One run: what ran, where, and every case's outcome (``run.json``)."""

    model_config = _STRICT
    schema_version: int = SCHEMA_VERSION
    """The record format's version: this normbench writes ``SCHEMA_VERSION`` and reads 1 to it."""
    run_id: str
    """``<name>-<UTC timestamp>-<6 hex>``: the run directory's name."""
    name: str
    """The suite's name."""
    created_at: str
    """UTC time the run started (ISO 8601)."""
    finished_at: str | None = None
    """UTC time it last ended (None while running)."""
    status: Literal["running", "complete", "interrupted"] = "running"
    """``running`` while its writer holds the lock, ``complete``, or ``interrupted`` (resumable)."""
    command: list[str] = []
    """The command line that started it."""
    options: dict[str, Any] = {}
    """Run options needed to resume it: filters, repeat."""
    planned: int = 0
    """Cases planned."""
    suite: SuiteSnapshot
    """The suite, as run."""
    environment: dict[str, Any] = {}
    """Host, GPU, driver, CUDA, package versions, git commit, measured copy bandwidth (``normbench.env``)."""
    cases: list[CaseRecord] = Field(default_factory=list)
    """Every finished case."""
    v1_extras: dict[str, Any] = {}
    """Read from a version-1 record: its top-level fields this schema does not declare, by dotted path."""
    path: str | None = Field(default=None, exclude=True)
    """Where it was loaded from (not stored)."""
    recovered_from: str | None = Field(default=None, exclude=True)
    """Set when ``run.json`` was missing and the record was rebuilt from this journal file (not stored)."""

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> dict[str, Any]:
        return _omit_empty(handler(self), ("v1_extras",))

    def case_map(self) -> dict[str, CaseRecord]:
        return {c.case_id: c for c in self.cases}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def results_dir(option: str | Path | None = None) -> Path:
    """``--results-dir``, else ``$NORMBENCH_RESULTS_DIR``, else ``./runs``."""
    return Path(option or os.environ.get("NORMBENCH_RESULTS_DIR") or "runs")


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


# --------------------------------------------------------------------------- non-finite values
class NonFiniteError(NormbenchError):
    """A case whose metric value, sample or spread is NaN or infinite: not a measurement."""


def non_finite(case: CaseRecord | dict[str, Any]) -> str | None:
    """The first non-finite number among ``case``'s metrics, as ``metrics.time_us.samples[3] is nan``; else None.

    ``case`` is a ``CaseRecord`` or its JSON form. Checks each metric's
    ``value``, ``samples`` and ``spread`` (correctness errors may be inf: an
    INCORRECT case's error can be unbounded).
    """
    metrics = case.metrics if isinstance(case, CaseRecord) else (case.get("metrics") or {})
    for name, m in (metrics.items() if isinstance(metrics, dict) else ()):
        if isinstance(m, Metric):
            value, samples, spread = m.value, m.samples, m.spread
        elif isinstance(m, dict):
            value, samples, spread = m.get("value"), m.get("samples") or [], m.get("spread") or {}
        else:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return f"metrics.{name}.value is {value}"
        for i, x in enumerate(samples if isinstance(samples, list) else ()):
            if isinstance(x, float) and not math.isfinite(x):
                return f"metrics.{name}.samples[{i}] is {x}"
        for k, x in (spread.items() if isinstance(spread, dict) else ()):
            if isinstance(x, float) and not math.isfinite(x):
                return f"metrics.{name}.spread.{k} is {x}"
    return None


# --------------------------------------------------------------------------- lock
class RunLockedError(NormbenchError):
    """Another process is writing the run (it holds ``run.lock``)."""


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def _try_lock(f: Any, run_dir: Path, exclusive: bool = True) -> bool:
    """``flock`` ``f`` without waiting: True if taken, False if another open file holds it."""
    try:
        fcntl.flock(f.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise NormbenchError(f"{run_dir / LOCK_FILE}: cannot lock: {e.strerror or e}") from None


def acquire_lock(run_dir: Path) -> Any:
    """Take ``run_dir``'s write lock for this process and write its pid into the lock file.

    Returns the open lock file: the lock lasts until it is closed (or the process ends).
    The file is never removed: removing it would let two processes lock two different
    files of the same name.

    Raises:
        RunLockedError: another process holds it (message names its pid).
        NormbenchError: the lock file cannot be created (a read-only run directory).
    """
    lock = Path(run_dir) / LOCK_FILE
    try:
        f = open(lock, "a+", encoding="utf-8")
    except OSError as e:
        raise NormbenchError(f"{run_dir}: cannot write this run here ({lock}: {e.strerror or e})") from None
    if not _try_lock(f, Path(run_dir)):
        f.close()
        raise RunLockedError(
            f"{run_dir}: another normbench process ({_holder(lock)}) is writing this run; "
            "wait for it to end, or stop it, then try again"
        )
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def lock_holder(run_dir: str | Path) -> str | None:
    """``"pid N"`` when a process holds ``run_dir``'s write lock, else None (runs in tarballs: None)."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        f = open(lock, "r", encoding="utf-8")
    except OSError:
        return None
    with f:
        if _try_lock(f, Path(run_dir), exclusive=False):
            return None  # closing the file drops the shared lock just taken
    return _holder(lock)


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


# --------------------------------------------------------------------------- explaining damage
_NOUNS = {
    "list_type": "a list", "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
    "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false",
}


def _show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return f"the number {_show(v)}"
    if isinstance(v, str):
        return f"the string {_show(v)}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _field(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _case_label(index: int | None, case: Any) -> str:
    cid = case.get("case_id") if isinstance(case, dict) else getattr(case, "case_id", None)
    label = f"case {index}" if index is not None else "case"
    if isinstance(cid, str) and cid:
        label += f" ({cid if len(cid) <= 60 else cid[:59] + '…'})"
    return label


def _problem(e: Any, field: str) -> str:
    t, inp = e["type"], e.get("input")
    if t == "missing":
        return f"{field} is missing"
    if t == "extra_forbidden":
        return f"{field} is not a field of record schema version {SCHEMA_VERSION}"
    if t == "literal_error":
        choices = re.findall(r"'([^']*)'", (e.get("ctx") or {}).get("expected", ""))
        return f"{field} {_show(inp)} is not one of {', '.join(choices)}"
    if t in _NOUNS:
        return f"{field} is {_kind(inp)}, not {_NOUNS[t]}"
    return f"{field}: {' '.join(str(e.get('msg', t)).split())} (got {_kind(inp)})"


def explain(where: str, err: ValidationError, data: Any, case: str | None = None) -> str:
    """One line naming the file, the case and the field of ``err``'s first problem, and how many more.

    ``data`` is the JSON that failed (a record, or with ``case`` a journal line's
    case, ``case`` then being its label).
    """
    errors = err.errors()
    first = errors[0]
    loc = list(first["loc"])
    head = case
    if head is None and len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = data.get("cases") if isinstance(data, dict) else None
        head = _case_label(loc[1], cases[loc[1]] if isinstance(cases, list) and loc[1] < len(cases) else None)
        loc = loc[2:]
    field_name = _field(loc) if loc else ("the case" if head else "the record")
    text = f"{where}: " + (f"{head}: " if head else "") + _problem(first, field_name)
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


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
    or ``run.json.xz``), or ``<tarball>/<run dir>`` (see the module docstring).
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
