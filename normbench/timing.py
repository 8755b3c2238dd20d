"""The one place that times a callable.

GPU (``mode="auto"`` or ``"graph"``): the calls are captured into a CUDA graph that
cycles over ``len(fns)`` input sets (together larger than L2, so no call reads a
warm cache), and the graph is replayed; one sample = one replay's CUDA-event
time divided by the calls in it. Replays remove Python and launch overhead, as
in the serving engines that run these kernels under CUDA graphs.

GPU (``"events"``, and ``"auto"`` when capture fails): each sample is one call
between CUDA events, after an L2 flush (writing a buffer of twice the L2 size),
the method of ``triton.testing.do_bench``.

CPU: ``torch.utils.benchmark.Timer.blocked_autorange``; one sample = the mean
call time of one block. Its clock is injectable (``timer=``) so tests can drive
the statistics with a fake clock.

All results are microseconds per call. ``summarize`` gives median, p20, p80,
min, max and n; nothing reports a single number.
"""

from __future__ import annotations

import math
import statistics
import timeit
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

#: A captured graph holds enough calls to last at least this long, so that
#: event resolution (~0.5 us) is small against a replay of 1-2 us kernels,
#: and at least one call per input set.
MIN_REPLAY_US = 200.0
#: Most input sets to rotate over (a 1-token case would otherwise need thousands).
MAX_INPUT_SETS = 2048


@dataclass
class TimingResult:
    """Samples in microseconds per call, and how they were taken."""

    samples_us: list[float]
    method: str  # "cuda_graph" | "cuda_events" | "cpu"
    calls_per_sample: int = 1
    input_sets: int = 1
    notes: list[str] = field(default_factory=list)


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
    """How many input sets make the rotation span ``rotate_bytes`` (1..MAX_INPUT_SETS)."""
    if bytes_per_call <= 0:
        return 1
    return max(1, min(MAX_INPUT_SETS, math.ceil(rotate_bytes / bytes_per_call)))


def time_cpu(
    fn: Callable[[], Any],
    min_run_time_s: float = 0.2,
    timer: Callable[[], float] = timeit.default_timer,
    warmup: int = 1,
) -> TimingResult:
    """Time ``fn`` on the CPU with ``torch.utils.benchmark`` (samples: us per call, one per block)."""
    from torch.utils import benchmark

    for _ in range(warmup):
        fn()
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=timer, num_threads=1)
    m = t.blocked_autorange(min_run_time=min_run_time_s)
    return TimingResult([x * 1e6 for x in m.times], "cpu", calls_per_sample=m.number_per_run)


def l2_bytes(device: Any = None) -> int:
    import torch

    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)


def time_cuda(
    fns: Sequence[Callable[[], Any]],
    repetitions: int = 50,
    warmup: int = 10,
    mode: str = "auto",
) -> TimingResult:
    """Time calls on the current CUDA device; ``fns[i]`` runs the op on input set ``i``.

    Raises:
        RuntimeError: ``mode="graph"`` and the callable cannot be captured.
    """
    import torch

    if mode in ("auto", "graph"):
        try:
            return _time_graph(fns, repetitions, warmup)
        except Exception as e:  # capture can fail for host syncs, allocations, ...
            if mode == "graph":
                raise RuntimeError(f"CUDA graph capture failed: {e}") from e
            torch.cuda.synchronize()
            res = _time_events(fns, repetitions, warmup)
            res.notes.append(f"graph capture failed ({type(e).__name__}: {str(e)[:120]}); timed with events + L2 flush")
            return res
    return _time_events(fns, repetitions, warmup)


def _time_graph(fns: Sequence[Callable[[], Any]], repetitions: int, warmup: int) -> TimingResult:
    import torch

    n_sets = len(fns)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(max(warmup, 2)):  # warm-up on a side stream, as capture requires
            fns[i % n_sets]()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fns[0]()
        end.record()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    eager_us = max(start.elapsed_time(end) * 1e3, 0.5)  # an upper bound: includes launch gaps
    calls = max(n_sets, math.ceil(MIN_REPLAY_US / eager_us))
    calls = math.ceil(calls / n_sets) * n_sets  # every set equally often
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(calls):
            fns[i % n_sets]()
    torch.cuda.synchronize()
    for _ in range(3):
        graph.replay()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
    for s, e in zip(starts, ends):
        s.record()
        graph.replay()
        e.record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) * 1e3 / calls for s, e in zip(starts, ends)]
    del graph
    return TimingResult(samples, "cuda_graph", calls_per_sample=calls, input_sets=n_sets)


def _time_events(fns: Sequence[Callable[[], Any]], repetitions: int, warmup: int) -> TimingResult:
    import torch

    n_sets = len(fns)
    flush = torch.empty(2 * l2_bytes() // 4, dtype=torch.int32, device="cuda")
    for i in range(max(warmup, 1)):
        fns[i % n_sets]()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
    for i in range(repetitions):
        flush.zero_()
        starts[i].record()
        fns[i % n_sets]()
        ends[i].record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]
    return TimingResult(samples, "cuda_events", calls_per_sample=1, input_sets=n_sets)
