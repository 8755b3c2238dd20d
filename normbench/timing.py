"""The one place that times a callable.

GPU (``mode="auto"`` or ``"graph"``): the calls are captured into a CUDA graph that
cycles over ``len(fns)`` input sets (together at least twice the L2 size, so no
call reads a warm cache), and the graph is replayed; one sample = one replay's
CUDA-event time divided by the calls in it (``calls_per_replay``: a whole number
of rotations, lasting at least ``MIN_REPLAY_US``). Replays remove Python and
launch overhead, as in the serving engines that run these kernels under CUDA graphs.

GPU (``"events"``, and ``"auto"`` when capture fails or the rotation is shorter
than 2 x L2): each sample is one call between CUDA events, after an L2 flush
(writing a buffer of twice the L2 size), the method of ``triton.testing.do_bench``.
``TimingResult.fallback`` says why ``"auto"`` fell back.

The GPU paths reach the device only through a ``GpuBackend`` (``CudaBackend``
in production), so tests drive them with a fake device on the CPU.

CPU: ``torch.utils.benchmark.Timer.blocked_autorange``; one sample = the mean
call time of one block. Its clock is injectable (``timer=``) so tests can drive
the statistics with a fake clock.

All results are microseconds per call. ``summarize`` gives median, p20, p80,
min, max and n; nothing reports a single number. ``TimingResult.as_record()``
is what a case record keeps of how it was timed (``store.CaseTiming``).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import timeit
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Protocol, Sequence

#: A captured graph holds enough calls to last at least this long, so that
#: event resolution (~0.5 us) is small against a replay of 1-2 us kernels,
#: and at least one call per input set.
MIN_REPLAY_US = 200.0
#: The eager call time is floored at this (us) when sizing a replay: events resolve about this.
MIN_EAGER_US = 0.5
#: Most input sets to rotate over. ``input_sets_needed`` asks for ceil(2 x L2 / bytes per call), so
#: the rotation spans about 2 x L2 (100 MiB on an H100, 120 MiB on an H200) whatever the call's
#: size, and this cap binds only below 2 x L2 / 65536 bytes per call (1.6 kB on an H100; the
#: smallest bundled case, a 1 x 1024 quantization, moves 3 kB). A call it leaves short is timed with
#: events + L2 flush under ``"auto"`` and refused under ``"graph"`` (issue 14: no graph replay over
#: a rotation below 2 x L2). Until 2026-12 the cap was 2048: records before then replayed calls
#: under 50-60 kB over a partly warm L2 (their ``timing.bytes_rotated`` shows it).
MAX_INPUT_SETS = 65536
#: CPU: most calls in one timed block (``time_cpu`` with ``repetitions``).
MAX_CPU_CALLS_PER_BLOCK = 1 << 20
#: What ``l2_bytes`` assumes when the device reports no L2 size.
DEFAULT_L2_BYTES = 50 * 2**20
MODES = ("auto", "graph", "events")


@dataclass
class TimingResult:
    """Samples in microseconds per call, and how they were taken.

    Attributes:
        samples_us: one per replay (graph), call (events) or block (cpu); us per call.
        method: ``"cuda_graph"`` | ``"cuda_events"`` | ``"cpu"``.
        calls_per_sample: calls each sample averages over (graph: calls per replay).
        input_sets: input sets rotated over.
        bytes_per_call: the bytes one call moves (the op's model), when the caller gave it.
        bytes_rotated: ``input_sets * bytes_per_call``: the span of the rotation, an upper
            bound of the distinct bytes one rotation touches (None without ``bytes_per_call``).
        l2_bytes: the device's L2 size (GPU methods).
        fallback: why ``"auto"`` timed with events instead of a graph; None otherwise.
        notes: lines for the case's reason (the fallback among them).
    """

    samples_us: list[float]
    method: str  # "cuda_graph" | "cuda_events" | "cpu"
    calls_per_sample: int = 1
    input_sets: int = 1
    bytes_per_call: int | None = None
    bytes_rotated: int | None = None
    l2_bytes: int | None = None
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """How the case was timed, as its record's ``timing`` field (``normbench.store.CaseTiming``)."""
        return {
            "method": self.method,
            "calls_per_sample": self.calls_per_sample,
            "input_sets": self.input_sets,
            "bytes_per_call": self.bytes_per_call,
            "bytes_rotated": self.bytes_rotated,
            "l2_bytes": self.l2_bytes,
            "fallback": self.fallback,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """median, p20, p80, min, max, mean and n of ``samples`` (any unit)."""
    s = sorted(samples)
    if not s:
        return {"n": 0}
    return {
        "median": float(statistics.median(s)),
        "p20": percentile(s, 20),
        "p80": percentile(s, 80),
        "min": float(s[0]),
        "max": float(s[-1]),
        "mean": float(statistics.fmean(s)),
        "n": len(s),
    }


def input_sets_needed(bytes_per_call: int, rotate_bytes: int) -> int:
    """How many input sets make the rotation span ``rotate_bytes``: ``ceil(rotate_bytes / bytes_per_call)``,
    clamped to 1..MAX_INPUT_SETS (``time_cuda`` given ``bytes_per_call`` refuses a graph over a
    rotation the clamp left short)."""
    if bytes_per_call <= 0:
        return 1
    return max(1, min(MAX_INPUT_SETS, math.ceil(rotate_bytes / bytes_per_call)))


def time_cpu(
    fn: Callable[[], Any],
    min_run_time_s: float = 0.2,
    timer: Callable[[], float] = timeit.default_timer,
    warmup: int = 1,
    *,
    repetitions: int | None = None,
    bytes_per_call: int | None = None,
) -> TimingResult:
    """Time ``fn`` on the CPU with ``torch.utils.benchmark`` (samples: us per call, one per block).

    Args:
        fn: the call to time.
        min_run_time_s: the time budget (s) for all samples together.
        timer: the clock (tests pass a fake).
        warmup: calls before timing (the suite's ``timing.warmup``).
        repetitions: samples to keep (the suite's ``timing.repetitions``): the
            calls per block are sized so that ``repetitions`` blocks take about
            ``min_run_time_s`` (at least one call each), then exactly
            ``repetitions`` blocks are timed (one thread, like
            ``blocked_autorange``). None: ``blocked_autorange`` chooses the
            block count within ``min_run_time_s``.
        bytes_per_call: the op's bytes-moved model, only recorded: the CPU path
            times one input set, with no L2 rotation.

    Raises:
        ValueError: ``repetitions`` < 1 or ``warmup`` < 0.
    """
    from torch.utils import benchmark

    if warmup < 0 or (repetitions is not None and repetitions < 1):
        raise ValueError(f"time_cpu: warmup >= 0 and repetitions >= 1 (got {warmup}, {repetitions})")
    for _ in range(warmup):
        fn()
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=timer, num_threads=1)
    if repetitions is None:
        m = t.blocked_autorange(min_run_time=min_run_time_s)
        return TimingResult([x * 1e6 for x in m.times], "cpu", calls_per_sample=m.number_per_run,
                            bytes_per_call=bytes_per_call)
    import torch

    def block(n: int) -> float:
        t0 = timer()
        for _ in range(n):
            fn()
        return timer() - t0

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as blocked_autorange's Timer(num_threads=1)
    try:
        block_s = min_run_time_s / repetitions
        number = 1
        while True:  # calls per block: grow until one block lasts block_s
            took = block(number)
            if took >= block_s or number >= MAX_CPU_CALLS_PER_BLOCK:
                break
            grow = 10 if took <= 0 else max(2, min(10, math.ceil(block_s / took)))
            number = min(number * grow, MAX_CPU_CALLS_PER_BLOCK)
        samples = [block(number) / number * 1e6 for _ in range(repetitions)]
    finally:
        torch.set_num_threads(threads)
    return TimingResult(samples, "cpu", calls_per_sample=number, bytes_per_call=bytes_per_call)


def l2_bytes(device: Any = None) -> int:
    """L2 cache size of CUDA ``device`` in bytes (``cudaDeviceProp::l2CacheSize``; 50 MiB if torch reports 0)."""
    import torch

    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", DEFAULT_L2_BYTES) or DEFAULT_L2_BYTES)


def calls_per_replay(n_sets: int, eager_us: float) -> int:
    """Calls captured in one CUDA graph: a whole number of rotations over ``n_sets``
    input sets (every set equally often, at least once), lasting at least
    ``MIN_REPLAY_US`` at ``eager_us`` per call (floored at ``MIN_EAGER_US``)."""
    eager_us = max(float(eager_us), MIN_EAGER_US)
    calls = max(n_sets, math.ceil(MIN_REPLAY_US / eager_us))
    return math.ceil(calls / n_sets) * n_sets


# --------------------------------------------------------------------------- the GPU seam
class Event(Protocol):
    """A timing event on the device's stream (``torch.cuda.Event(enable_timing=True)``)."""

    def record(self) -> Any: ...

    def elapsed_time(self, end: Any) -> float:
        """Milliseconds from this event to ``end`` (both recorded and completed)."""
        ...


class Graph(Protocol):
    """A captured CUDA graph (``torch.cuda.CUDAGraph``)."""

    def replay(self) -> Any: ...


class GpuBackend(Protocol):
    """What the GPU timing paths need from a device: ``CudaBackend`` on a GPU,
    a fake in tests (``tests/unit/test_timing.py``), so that the replay
    arithmetic, the fallback and the L2 rotation are tested without one."""

    def l2_bytes(self) -> int:
        """The L2 cache size in bytes."""
        ...

    def synchronize(self) -> None:
        """Wait until all queued device work is done."""
        ...

    def event(self) -> Event:
        """A new timing event."""
        ...

    def side_stream(self) -> ContextManager[Any]:
        """Run the block on the stream graphs are captured on, ordered after the current stream's work."""
        ...

    def capture(self, body: Callable[[], Any]) -> Graph:
        """Capture ``body``'s device work into a graph (not run); raises when it cannot be captured."""
        ...

    def flush_buffer(self, nbytes: int) -> Any:
        """A device buffer of ``nbytes`` whose ``zero_()`` writes all of it (evicting L2)."""
        ...


class CudaBackend:
    """``GpuBackend`` on the current CUDA device, through ``torch.cuda``."""

    def __init__(self, device: Any = None) -> None:
        import torch

        self._torch = torch
        self._device = device
        self._stream = torch.cuda.Stream(device)

    def l2_bytes(self) -> int:
        return l2_bytes(self._device)

    def synchronize(self) -> None:
        self._torch.cuda.synchronize()

    def event(self) -> Event:
        return self._torch.cuda.Event(enable_timing=True)

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        cuda = self._torch.cuda
        self._stream.wait_stream(cuda.current_stream())
        with cuda.stream(self._stream):
            yield
        cuda.current_stream().wait_stream(self._stream)

    def capture(self, body: Callable[[], Any]) -> Graph:
        graph = self._torch.cuda.CUDAGraph()
        with self._torch.cuda.graph(graph, stream=self._stream):
            body()
        return graph

    def flush_buffer(self, nbytes: int) -> Any:
        return self._torch.empty(max(nbytes // 4, 1), dtype=self._torch.int32, device="cuda")


# --------------------------------------------------------------------------- GPU timing
def time_cuda(
    fns: Sequence[Callable[[], Any]],
    repetitions: int = 50,
    warmup: int = 10,
    mode: str = "auto",
    *,
    bytes_per_call: int | None = None,
    rotate_bytes: int | None = None,
    backend: GpuBackend | None = None,
) -> TimingResult:
    """Time calls on the current CUDA device; ``fns[i]`` runs the op on input set ``i``.

    Args:
        fns: one callable per input set (``len(fns)`` sets, rotated over).
        repetitions: samples to take (replays, or single calls with ``"events"``).
        warmup: calls before timing (at least 2 before a capture, 1 before events).
        mode: ``"auto"`` (graph, else events), ``"graph"`` or ``"events"``.
        bytes_per_call: the bytes one call moves (the op's model); with it the
            rotation is checked against ``rotate_bytes``: ``"graph"`` refuses a
            shorter rotation, ``"auto"`` times it with events + L2 flush and says
            why in ``fallback`` (the record's ``bytes_rotated`` and ``l2_bytes``
            show it too).
        rotate_bytes: the span the rotation must reach (default 2 x L2).
        backend: the device (default ``CudaBackend()``; tests pass a fake).

    Returns:
        ``TimingResult`` in microseconds per call; ``fallback`` says why an
        ``"auto"`` run was timed with events.

    Raises:
        RuntimeError: ``mode="graph"`` and the callable cannot be captured, or the
            rotation spans less than ``rotate_bytes``.
        ValueError: no ``fns``, or an unknown ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"timing mode {mode!r}: expected one of {', '.join(MODES)}")
    if not fns:
        raise ValueError("time_cuda needs at least one input set")
    b = backend if backend is not None else CudaBackend()
    l2 = b.l2_bytes()
    target = rotate_bytes if rotate_bytes is not None else 2 * l2
    rotated = len(fns) * bytes_per_call if bytes_per_call is not None else None

    def done(res: TimingResult) -> TimingResult:
        res.bytes_per_call, res.bytes_rotated, res.l2_bytes = bytes_per_call, rotated, l2
        return res

    if mode == "events":
        return done(_time_events(fns, repetitions, warmup, b))
    if rotated is not None and rotated < target:
        short = (f"{len(fns)} input sets x {bytes_per_call} B = {rotated} B rotated, less than the "
                 f"{target} B needed for cold-L2 replays")
        if mode == "graph":
            raise RuntimeError(f"CUDA graph timing refused: {short}")
        return done(_fallback(fns, repetitions, warmup, b, f"{short}; timed with events + L2 flush"))
    try:
        return done(_time_graph(fns, repetitions, warmup, b))
    except Exception as e:  # capture can fail for host syncs, allocations, ...
        if mode == "graph":
            raise RuntimeError(f"CUDA graph capture failed: {e}") from e
        b.synchronize()
        why = f"graph capture failed ({type(e).__name__}: {str(e)[:120]}); timed with events + L2 flush"
        return done(_fallback(fns, repetitions, warmup, b, why))


def _fallback(fns: Sequence[Callable[[], Any]], repetitions: int, warmup: int, b: GpuBackend, why: str) -> TimingResult:
    res = _time_events(fns, repetitions, warmup, b)
    res.fallback = why
    res.notes.append(why)
    return res


def _time_graph(fns: Sequence[Callable[[], Any]], repetitions: int, warmup: int, b: GpuBackend) -> TimingResult:
    n_sets = len(fns)
    with b.side_stream():
        for i in range(max(warmup, 2)):  # warm-up on the capture stream, as capture requires
            fns[i % n_sets]()
        start, end = b.event(), b.event()
        start.record()
        fns[0]()
        end.record()
    b.synchronize()
    eager_us = start.elapsed_time(end) * 1e3  # an upper bound: includes launch gaps
    calls = calls_per_replay(n_sets, eager_us)

    def body() -> None:
        for i in range(calls):
            fns[i % n_sets]()

    graph = b.capture(body)
    b.synchronize()
    for _ in range(3):
        graph.replay()
    starts = [b.event() for _ in range(repetitions)]
    ends = [b.event() for _ in range(repetitions)]
    for s, e in zip(starts, ends):
        s.record()
        graph.replay()
        e.record()
    b.synchronize()
    samples = [s.elapsed_time(e) * 1e3 / calls for s, e in zip(starts, ends)]
    del graph
    return TimingResult(samples, "cuda_graph", calls_per_sample=calls, input_sets=n_sets)


def _time_events(fns: Sequence[Callable[[], Any]], repetitions: int, warmup: int, b: GpuBackend) -> TimingResult:
    n_sets = len(fns)
    flush = b.flush_buffer(2 * b.l2_bytes())
    for i in range(max(warmup, 1)):
        fns[i % n_sets]()
    b.synchronize()
    starts = [b.event() for _ in range(repetitions)]
    ends = [b.event() for _ in range(repetitions)]
    for i in range(repetitions):
        flush.zero_()
        starts[i].record()
        fns[i % n_sets]()
        ends[i].record()
    b.synchronize()
    samples = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]
    return TimingResult(samples, "cuda_events", calls_per_sample=1, input_sets=n_sets)


# --------------------------------------------------------------------------- the rotation cross-check
#: The cross-check's probe: a device copy of this many bytes (twice that moved per call), a
#: working set inside the L2 of an H100 (50 MiB) or H200 (60 MiB), so that graph replays over a
#: rotation that failed to evict the L2 would read it warm and come out markedly faster.
CROSSCHECK_COPY_BYTES = 24 * 2**20
#: CUDA event timing resolution (us): added to the noise floor relative to the median.
EVENT_RESOLUTION_US = 0.5


def rotation_crosscheck(
    fns_for: Callable[[int], Sequence[Callable[[], Any]]],
    bytes_per_call: int,
    repetitions: int = 30,
    warmup: int = 5,
    backend: GpuBackend | None = None,
    overhead_fns: Sequence[Callable[[], Any]] | None = None,
) -> dict[str, Any]:
    """Times one probe both ways: graph replay over input sets spanning 2 x L2, and single calls
    between CUDA events after an L2 flush (cold by construction, ``triton.testing.do_bench``'s method).

    Agreement within the noise floor says the rotation keeps graph replays cold on this device
    (issue 14's "cold-L2 honesty"; triton #8384: no L2 flush under CUDA graphs). The noise floor is
    the larger relative p20-p80 spread of the two timings plus the event resolution relative to
    the graph median. Events time one call with its fixed event overhead (the gap between the
    start event and the kernel, measured on the H100 at about 3.4 us, 18% of an 19 us probe):
    ``overhead_fns``, a near-empty kernel timed the same way (events + flush), measures it, and
    the agreement is judged on the events median minus that overhead. A ratio well above 1
    (graph much faster than cold single calls) means warm replays.

    Args:
        fns_for: ``fns_for(n)`` gives ``n`` callables, one per input set, each running the probe.
        bytes_per_call: the bytes one call moves.
        repetitions, warmup: per method, as ``time_cuda``.
        backend: the device (default ``CudaBackend()``).
        overhead_fns: callables of a negligible kernel (one or more); None = no correction.

    Returns:
        ``{"graph_us", "events_us"`` (medians, us per call, events raw), ``"events_overhead_us"``
        (the negligible kernel's events median, 0 without ``overhead_fns``), ``"ratio"``
        ((events - overhead) / graph), ``"noise_floor"`` (relative), ``"agree"``,
        ``"input_sets"``, ``"calls_per_replay"``, ``"bytes_rotated"``, ``"l2_bytes"}``.
    """
    b = backend if backend is not None else CudaBackend()
    l2 = b.l2_bytes()
    n_sets = input_sets_needed(bytes_per_call, 2 * l2)
    fns = fns_for(n_sets)
    graph = time_cuda(fns, repetitions, warmup, "graph", bytes_per_call=bytes_per_call, backend=b)
    events = time_cuda(fns, repetitions, warmup, "events", bytes_per_call=bytes_per_call, backend=b)
    g, e = summarize(graph.samples_us), summarize(events.samples_us)

    def spread(s: dict[str, float]) -> float:
        return (s["p80"] - s["p20"]) / s["median"] if s["median"] > 0 else math.inf

    overhead = 0.0
    if overhead_fns:
        o = summarize(time_cuda(list(overhead_fns), repetitions, warmup, "events", backend=b).samples_us)
        overhead = o["median"]
    noise = max(spread(g), spread(e)) + EVENT_RESOLUTION_US / g["median"]
    ratio = (e["median"] - overhead) / g["median"]
    return {"graph_us": round(g["median"], 3), "events_us": round(e["median"], 3),
            "events_overhead_us": round(overhead, 3), "ratio": round(ratio, 4),
            "noise_floor": round(noise, 4), "agree": abs(ratio - 1.0) <= noise, "input_sets": n_sets,
            "calls_per_replay": graph.calls_per_sample, "bytes_rotated": n_sets * bytes_per_call, "l2_bytes": l2}


def cuda_rotation_crosscheck() -> dict[str, Any]:
    """``rotation_crosscheck`` on the current CUDA device with a ``CROSSCHECK_COPY_BYTES`` copy
    (``dst.copy_(src)``, float32); the result also names the probe. Run once per run, at the
    environment's measurement (``normbench.env.collect``)."""
    import torch

    n = CROSSCHECK_COPY_BYTES // 4

    def fns_for(n_sets: int) -> list[Callable[[], Any]]:
        pairs = [(torch.rand(n, device="cuda"), torch.empty(n, device="cuda")) for _ in range(n_sets)]
        return [(lambda s=s, d=d: d.copy_(s)) for s, d in pairs]

    tiny_src, tiny_dst = torch.rand(1, device="cuda"), torch.empty(1, device="cuda")
    res = rotation_crosscheck(fns_for, 2 * CROSSCHECK_COPY_BYTES, overhead_fns=[lambda: tiny_dst.copy_(tiny_src)])
    res["probe"] = (f"device copy_ of {CROSSCHECK_COPY_BYTES >> 20} MiB ({2 * CROSSCHECK_COPY_BYTES >> 20} MiB per call); "
                    "event overhead: a 1-element copy_")
    torch.cuda.empty_cache()
    return res
