"""The run record's schema and a run's on-disk names (see ``normbench.store``).

The pydantic models and TypedDicts of a record (``RunRecord`` > ``CaseRecord`` >
``Metric``, ...), ``SCHEMA_VERSION``, the names of a run's files, ``utc_now`` (the
records' timestamps), and the rule that a measurement is finite (``non_finite``).
Reading (``normbench.store.reader``) and writing (``normbench.store.writer``) both
build on it; it touches no file.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer
from typing_extensions import NotRequired, TypedDict

from normbench.errors import NormbenchError

#: The record format this normbench writes; it reads every version from 1 up to it (see ``reader._parse_record``).
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
#: version-1 record moves them into ``v1_extras`` instead, see ``reader._parse_record``), fields
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
