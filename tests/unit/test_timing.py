"""Timing: statistics, the CPU timer driven by a fake clock, and the GPU paths (CUDA-graph
replay over rotated inputs, the events + L2-flush fallback) driven by a fake device."""

from __future__ import annotations

import contextlib
import math
from collections import Counter, OrderedDict
from types import SimpleNamespace
from typing import Any

import pytest

from normbench import timing
from normbench.timing import (
    MIN_REPLAY_US,
    CudaBackend,
    GpuBackend,
    calls_per_replay,
    input_sets_needed,
    l2_bytes,
    percentile,
    summarize,
    time_cpu,
    time_cuda,
)


class FakeClock:
    """A clock that only moves when the timed function says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cpu_timer_reports_per_call_microseconds_from_the_clock() -> None:
    clock = FakeClock()
    durations = iter([5e-6, 7e-6] * 1_000_000)

    def fn() -> None:
        clock.now += next(durations)

    res = time_cpu(fn, min_run_time_s=0.01, timer=clock, warmup=0)
    assert res.method == "cpu"
    assert res.samples_us, "blocked_autorange returned no samples"
    # every block alternates 5 and 7 us calls: its mean per call is 6 us (+-1 for an odd block size)
    assert all(5.0 - 1e-9 <= s <= 7.0 + 1e-9 for s in res.samples_us)
    assert math.isclose(summarize(res.samples_us)["median"], 6.0, rel_tol=0.2)


def test_summary_median_and_spread() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median": 3.0, "p20": 1.8, "p80": 4.2, "min": 1.0, "max": 5.0, "mean": 3.0, "n": 5}
    assert summarize([]) == {"n": 0}
    assert percentile([2.0], 20) == 2.0


def test_input_sets_cover_the_rotation_bytes() -> None:
    assert input_sets_needed(16 * 2**20, 100 * 2**20) == 7
    assert input_sets_needed(2**31, 100 * 2**20) == 1
    assert input_sets_needed(100, 100 * 2**20) == timing.MAX_INPUT_SETS == 65536  # capped
    assert input_sets_needed(0, 10) == 1


# --------------------------------------------------------------------------- the GPU paths, on a fake device
class FakeEvent:
    def __init__(self, gpu: "FakeGpu") -> None:
        self.gpu, self.t_us = gpu, None

    def record(self) -> None:
        assert self.gpu.capturing is None, "an event recorded inside a capture"
        self.t_us = self.gpu.clock_us

    def elapsed_time(self, end: "FakeEvent") -> float:
        assert self.t_us is not None and end.t_us is not None, "elapsed_time of an event never recorded"
        return (end.t_us - self.t_us) / 1e3  # ms, as torch.cuda.Event


class FakeGraph:
    def __init__(self, gpu: "FakeGpu", calls: list[tuple[int, int]]) -> None:
        self.gpu, self.calls = gpu, calls

    def replay(self) -> None:
        self.gpu.clock_us += self.gpu.replay_launch_us
        self.gpu.replays += 1
        self.gpu.replay_hits.append(0)
        for set_id, nbytes in self.calls:
            self.gpu.run(set_id, nbytes, in_replay=True)


class FakeFlush:
    def __init__(self, gpu: "FakeGpu", nbytes: int) -> None:
        self.gpu, self.nbytes = gpu, nbytes

    def zero_(self) -> None:
        self.gpu.touch(("flush",), self.nbytes)
        self.gpu.clock_us += 1000.0  # a flush is slow; it lies outside the timed events


class FakeGpu:
    """A device with a clock (us), an LRU L2 of ``l2`` bytes and CUDA-graph capture.

    A call on input set ``s`` reads its ``nbytes``: ``cold_us`` when they are not in L2,
    ``warm_us`` when they are. Eagerly every call also pays ``gap_us`` of launch gap
    (the device idles waiting for the host); a replay pays ``replay_launch_us`` once.
    """

    def __init__(self, l2: int, cold_us: float = 10.0, warm_us: float = 2.0, gap_us: float = 5.0,
                 replay_launch_us: float = 8.0) -> None:
        self.l2, self.cold_us, self.warm_us = l2, cold_us, warm_us
        self.gap_us, self.replay_launch_us = gap_us, replay_launch_us
        self.clock_us = 0.0
        self.cache: OrderedDict = OrderedDict()
        self.capturing: list | None = None
        self.replays = 0
        self.replay_hits: list[int] = []  # per replay (the first 3 are untimed warm-up)
        self.calls_per_set: Counter = Counter()
        self.flush_sizes: list[int] = []
        self.syncs = 0

    # -- what the tests build their callables from
    def fns(self, n_sets: int, nbytes: int, capturable: bool = True) -> list:
        def call(set_id: int) -> None:
            if self.capturing is not None:
                if not capturable:
                    raise RuntimeError("operation not permitted when stream is capturing")
                self.capturing.append((set_id, nbytes))
            else:
                self.clock_us += self.gap_us
                self.run(set_id, nbytes)
        return [(lambda s=s: call(s)) for s in range(n_sets)]

    def touch(self, key: Any, nbytes: int) -> bool:
        """Read ``nbytes`` under ``key`` through the LRU L2; True on a hit."""
        hit = key in self.cache
        if hit:
            self.cache.move_to_end(key)
        else:
            self.cache[key] = nbytes
            while sum(self.cache.values()) > self.l2:
                self.cache.popitem(last=False)
        return hit

    def run(self, set_id: int, nbytes: int, in_replay: bool = False) -> None:
        hit = self.touch(set_id, nbytes)
        self.clock_us += self.warm_us if hit else self.cold_us
        if in_replay:
            self.calls_per_set[set_id] += 1
            if hit:
                self.replay_hits[-1] += 1

    def timed_replay_hits(self) -> int:
        """L2 hits in the timed replays (``_time_graph`` replays 3 times before timing)."""
        return sum(self.replay_hits[3:])

    # -- GpuBackend
    def l2_bytes(self) -> int:
        return self.l2

    def synchronize(self) -> None:
        self.syncs += 1

    def event(self) -> FakeEvent:
        return FakeEvent(self)

    def side_stream(self):
        return contextlib.nullcontext()

    def capture(self, body) -> FakeGraph:
        self.capturing = []
        try:
            body()
            return FakeGraph(self, self.capturing)
        finally:
            self.capturing = None

    def flush_buffer(self, nbytes: int) -> FakeFlush:
        self.flush_sizes.append(nbytes)
        return FakeFlush(self, nbytes)


L2 = 1 << 20


def test_the_fake_and_cuda_backends_implement_the_whole_seam() -> None:
    wanted = {n for n in vars(GpuBackend) if not n.startswith("_")}
    assert wanted == {"l2_bytes", "synchronize", "event", "side_stream", "capture", "flush_buffer"}
    for backend in (CudaBackend, FakeGpu):
        assert all(callable(getattr(backend, n, None)) for n in wanted), backend


def test_calls_per_replay_is_whole_rotations_lasting_the_minimum_replay() -> None:
    assert calls_per_replay(1, 1.0) == 200  # 200 us of 1 us calls
    assert calls_per_replay(7, 1.0) == 203  # rounded up to whole rotations of 7 sets
    assert calls_per_replay(7, 0.0) == 406  # eager time floored at 0.5 us: 400 calls, then 58 x 7
    assert calls_per_replay(5000, 1.0) == 5000  # every set once, though 200 calls would do
    assert calls_per_replay(3, 300.0) == 3  # a long call: one rotation
    for n_sets, eager in [(1, 0.3), (13, 2.5), (64, 0.7), (999, 0.01)]:
        calls = calls_per_replay(n_sets, eager)
        assert calls % n_sets == 0 and calls >= n_sets
        assert calls * max(eager, 0.5) >= MIN_REPLAY_US
        assert (calls - n_sets) * max(eager, 0.5) < MIN_REPLAY_US or calls == n_sets  # no rotation more than needed


def test_a_graph_sample_is_the_replay_time_over_the_calls_in_it() -> None:
    gpu = FakeGpu(L2)
    nbytes = 300_000
    n_sets = input_sets_needed(nbytes, 2 * L2)
    assert n_sets == 7  # ceil(2 MiB / 300 kB)
    res = time_cuda(gpu.fns(n_sets, nbytes), repetitions=5, warmup=3, bytes_per_call=nbytes, backend=gpu)
    # eager: warm-up on sets 0-2, then set 0 again (warm): 5 us gap + 2 us = 7 us -> ceil(200/7) = 29 calls,
    # rounded up to 5 rotations of 7 sets
    assert res.method == "cuda_graph" and res.calls_per_sample == 35 and res.input_sets == 7
    assert gpu.calls_per_set == {s: 35 // 7 * (5 + 3) for s in range(7)}  # 3 untimed replays + 5 timed
    # one replay: 8 us launch + 35 cold calls of 10 us; per call: 358 / 35
    assert res.samples_us == [pytest.approx(358 / 35)] * 5
    assert gpu.timed_replay_hits() == 0
    assert res.fallback is None and res.notes == []
    assert (res.bytes_per_call, res.bytes_rotated, res.l2_bytes) == (nbytes, 7 * nbytes, L2)


@pytest.mark.parametrize("nbytes", [4_096, 33_333, 300_000, L2 // 2, L2, 3 * L2])
def test_every_graph_replay_rotates_over_at_least_2x_l2_and_reads_cold(nbytes: int) -> None:
    """Fails if a case timed with a graph rotates over less than 2 x L2: the LRU fake then hits."""
    gpu = FakeGpu(L2)
    n_sets = input_sets_needed(nbytes, 2 * L2)
    res = time_cuda(gpu.fns(n_sets, nbytes), repetitions=4, warmup=2, bytes_per_call=nbytes, backend=gpu)
    assert res.method == "cuda_graph"
    assert res.bytes_rotated == n_sets * nbytes >= 2 * L2
    assert gpu.replays == 3 + 4 and gpu.timed_replay_hits() == 0
    per_call = (gpu.replay_launch_us + res.calls_per_sample * gpu.cold_us) / res.calls_per_sample
    assert res.samples_us == [pytest.approx(per_call)] * 4


def test_the_fake_l2_tells_a_warm_rotation_from_a_cold_one() -> None:
    """Why the test above can fail: a rotation inside L2 replays warm, 5x faster here."""
    gpu = FakeGpu(L2)
    nbytes = 100_000
    n_sets = input_sets_needed(nbytes, L2 // 2)  # 6 sets: 600 kB, inside the 1 MiB L2
    res = time_cuda(gpu.fns(n_sets, nbytes), repetitions=3, warmup=2, bytes_per_call=nbytes,
                    rotate_bytes=L2 // 2, backend=gpu)  # a suite's explicit rotate_bytes is honoured
    assert res.method == "cuda_graph" and res.bytes_rotated == 600_000
    assert gpu.replays == 3 + 3 and gpu.timed_replay_hits() == 3 * res.calls_per_sample  # all warm
    assert res.samples_us == [pytest.approx((8 + res.calls_per_sample * 2.0) / res.calls_per_sample)] * 3


def test_a_rotation_clamped_short_of_2x_l2_is_refused_in_graph_mode(monkeypatch) -> None:
    monkeypatch.setattr(timing, "MAX_INPUT_SETS", 16)
    nbytes = 1_000
    n_sets = input_sets_needed(nbytes, 2 * L2)
    assert n_sets == 16  # clamped: 16 kB rotated, not 2 MiB
    gpu = FakeGpu(L2)
    with pytest.raises(RuntimeError, match=r"graph timing refused: 16 input sets x 1000 B = 16000 B rotated, "
                                           r"less than the 2097152 B"):
        time_cuda(gpu.fns(n_sets, nbytes), repetitions=3, warmup=2, mode="graph", bytes_per_call=nbytes,
                  backend=gpu)
    assert gpu.replays == 0


def test_a_callable_that_cannot_be_captured_is_timed_with_events_and_flushes() -> None:
    gpu = FakeGpu(L2)
    nbytes = 300_000
    fns = gpu.fns(7, nbytes, capturable=False)
    res = time_cuda(fns, repetitions=4, warmup=2, bytes_per_call=nbytes, backend=gpu)
    assert res.method == "cuda_events" and res.calls_per_sample == 1 and res.input_sets == 7
    assert res.fallback == ("graph capture failed (RuntimeError: operation not permitted when stream is "
                            "capturing); timed with events + L2 flush")
    assert res.notes == [res.fallback]
    assert gpu.flush_sizes == [2 * L2]
    # every sample is one call after a 2 x L2 flush: cold, with its launch gap
    assert res.samples_us == [pytest.approx(15.0)] * 4
    rec = res.as_record()
    assert rec == {"method": "cuda_events", "calls_per_sample": 1, "input_sets": 7, "bytes_per_call": nbytes,
                   "bytes_rotated": 7 * nbytes, "l2_bytes": L2, "fallback": res.fallback}
    with pytest.raises(RuntimeError, match="CUDA graph capture failed: operation not permitted"):
        time_cuda(fns, repetitions=4, warmup=2, mode="graph", backend=gpu)


def test_events_mode_flushes_l2_before_every_call_even_on_one_input_set() -> None:
    gpu = FakeGpu(L2)
    res = time_cuda(gpu.fns(1, 1_000), repetitions=6, warmup=3, mode="events", backend=gpu)
    assert res.method == "cuda_events" and res.fallback is None and gpu.replays == 0
    assert res.samples_us == [pytest.approx(15.0)] * 6  # never the 7 us a warm L2 would give
    assert (res.bytes_per_call, res.bytes_rotated) == (None, None)  # not given: not recorded


def test_time_cuda_refuses_a_bad_mode_or_no_inputs() -> None:
    gpu = FakeGpu(L2)
    with pytest.raises(ValueError, match="timing mode 'cold'"):
        time_cuda(gpu.fns(1, 10), mode="cold", backend=gpu)
    with pytest.raises(ValueError, match="at least one input set"):
        time_cuda([], backend=gpu)


def test_l2_size_comes_from_the_device_properties(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: SimpleNamespace(L2_cache_size=60 * 2**20))
    assert l2_bytes() == 60 * 2**20
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: SimpleNamespace(L2_cache_size=0))
    assert l2_bytes() == 50 * 2**20


def test_a_call_too_small_for_the_cap_is_timed_with_events_and_flushes() -> None:
    """Below 2 x L2 / MAX_INPUT_SETS bytes a call cannot rotate over 2 x L2: "auto" times it
    with events + L2 flush (never a graph over a warm L2) and says why; "graph" refuses."""
    gpu = FakeGpu(L2)
    nbytes = 2 * L2 // timing.MAX_INPUT_SETS - 1
    n_sets = input_sets_needed(nbytes, 2 * L2)
    assert n_sets == timing.MAX_INPUT_SETS and n_sets * nbytes < 2 * L2
    res = time_cuda(gpu.fns(n_sets, nbytes), repetitions=3, warmup=1, bytes_per_call=nbytes, backend=gpu)
    assert res.method == "cuda_events" and gpu.replays == 0 and gpu.flush_sizes == [2 * L2]
    assert res.fallback is not None and res.fallback.endswith("timed with events + L2 flush")
    assert f"{n_sets} input sets x {nbytes} B" in res.fallback
    assert res.bytes_rotated == n_sets * nbytes and res.l2_bytes == L2
    assert res.samples_us == [pytest.approx(15.0)] * 3  # cold calls with their launch gap
    with pytest.raises(RuntimeError, match="CUDA graph timing refused"):
        time_cuda(gpu.fns(n_sets, nbytes), repetitions=3, warmup=1, mode="graph", bytes_per_call=nbytes, backend=gpu)


def test_cpu_timing_records_its_method_and_bytes() -> None:
    clock = FakeClock()

    def fn() -> None:
        clock.now += 1e-6

    res = time_cpu(fn, min_run_time_s=0.001, timer=clock, warmup=0, bytes_per_call=4096)
    rec = res.as_record()
    assert rec["method"] == "cpu" and rec["input_sets"] == 1 and rec["bytes_per_call"] == 4096
    assert rec["calls_per_sample"] == res.calls_per_sample >= 1
    assert rec["bytes_rotated"] is None and rec["l2_bytes"] is None and rec["fallback"] is None


# --------------------------------------------------------------------------- the real device (deselected without CUDA)
@pytest.mark.gpu
def test_cuda_backend_times_rotated_copies_with_a_cold_graph() -> None:
    """On a GPU: ``python3 -m pytest -m gpu tests/unit/test_timing.py``."""
    import torch

    l2 = l2_bytes()
    nbytes = 1 << 20  # a 512 KiB float32 copy reads 512 KiB and writes 512 KiB
    n_sets = input_sets_needed(nbytes, 2 * l2)
    src = [torch.randn(nbytes // 8, device="cuda") for _ in range(n_sets)]
    dst = [torch.empty_like(s) for s in src]
    fns = [(lambda a=a, b=b: b.copy_(a)) for a, b in zip(src, dst)]
    res = time_cuda(fns, repetitions=10, warmup=3, bytes_per_call=nbytes)
    assert res.method == "cuda_graph" and res.fallback is None
    assert res.input_sets == n_sets and res.bytes_rotated >= 2 * l2 and res.l2_bytes == l2
    assert res.calls_per_sample % n_sets == 0
    assert len(res.samples_us) == 10 and all(0.0 < s < 1e4 for s in res.samples_us)
    assert all(torch.equal(a, b) for a, b in zip(src, dst))


@pytest.mark.gpu
def test_cuda_backend_falls_back_to_events_when_a_call_syncs_the_host() -> None:
    import torch

    xs = [torch.randn(4096, device="cuda") for _ in range(2)]
    fns = [(lambda x=x: x.sum().item()) for x in xs]  # .item() cannot be captured
    res = time_cuda(fns, repetitions=5, warmup=2)
    assert res.method == "cuda_events" and res.calls_per_sample == 1
    assert res.fallback is not None and res.fallback.startswith("graph capture failed (")
    assert len(res.samples_us) == 5 and all(s > 0.0 for s in res.samples_us)
    with pytest.raises(RuntimeError, match="CUDA graph capture failed"):
        time_cuda(fns, repetitions=5, warmup=2, mode="graph")


@pytest.mark.parametrize("l2", [50 * 2**20, 60 * 2**20], ids=["H100-50MiB", "H200-60MiB"])
def test_every_bundled_kernel_case_rotates_over_2x_l2_in_graph_mode(l2: int) -> None:
    """Issue 14's working-set rule on the real plans: for every kernel case of every bundled suite,
    the input sets the runner makes (``input_sets_needed`` of the op's bytes model) span at least
    2 x L2, so no case is replayed from a graph over a warm L2. Fails when a suite gains a case
    too small for ``MAX_INPUT_SETS`` (it would then be timed with events instead)."""
    from pathlib import Path

    from normbench.expand import Capabilities, expand
    from normbench.ops import OPS
    from normbench.suite import load_suite

    suites = sorted(Path(__file__).resolve().parents[2].joinpath("suites").glob("*.yaml"))
    assert len(suites) >= 8
    checked, smallest = 0, None
    for path in suites:
        for case in expand(load_suite(path).suite, Capabilities("cpu")):
            if case.kind != "kernel":
                continue
            nbytes = OPS[case.op].bytes_moved(case.param_dict)
            n_sets = input_sets_needed(nbytes, 2 * l2)
            assert n_sets * nbytes >= 2 * l2, (path.name, case.case_id, nbytes, n_sets)
            checked += 1
            smallest = nbytes if smallest is None else min(smallest, nbytes)
    assert checked > 1000 and smallest is not None and smallest < 2 * l2 // 2048  # the old cap's blind spot


def test_the_rotation_crosscheck_takes_the_event_overhead_out_before_judging() -> None:
    """Eager calls pay a fixed gap the graph does not (the H100's events + flush read 3.4 us over the
    replay of a 19 us copy): uncorrected that is a false DISAGREE, less a negligible kernel's events
    median it agrees; the raw events median stays in the result."""
    from normbench.timing import rotation_crosscheck

    gpu = FakeGpu(L2, gap_us=3.0)

    def negligible() -> None:
        gpu.clock_us += gpu.gap_us  # the launch gap alone: no bytes, no L2 traffic

    raw = rotation_crosscheck(lambda n: gpu.fns(n, 300_000), 300_000, repetitions=5, warmup=2, backend=gpu)
    assert raw["events_us"] == pytest.approx(13.0) and raw["events_overhead_us"] == 0.0 and raw["agree"] is False
    res = rotation_crosscheck(lambda n: gpu.fns(n, 300_000), 300_000, repetitions=5, warmup=2, backend=gpu,
                              overhead_fns=[negligible])
    assert res["events_us"] == pytest.approx(13.0) and res["events_overhead_us"] == pytest.approx(3.0)
    assert res["ratio"] == pytest.approx(10.0 / res["graph_us"], rel=1e-3) and res["agree"] is True


class _UnderreportingL2(FakeGpu):
    """A device whose reported L2 is a quarter of its real one: a 2 x L2 rotation then stays in cache."""

    def l2_bytes(self) -> int:
        return self.l2 // 4


def test_the_rotation_crosscheck_agrees_when_graph_replays_read_cold() -> None:
    from normbench.timing import rotation_crosscheck

    gpu = FakeGpu(L2, gap_us=0.0)  # the flush hides the launch gap, as on a GPU
    res = rotation_crosscheck(lambda n: gpu.fns(n, 300_000), 300_000, repetitions=5, warmup=2, backend=gpu)
    assert res["input_sets"] == 7 and res["bytes_rotated"] == 2_100_000 >= 2 * L2 and res["l2_bytes"] == L2
    calls = res["calls_per_replay"]
    assert calls % 7 == 0  # whole rotations
    assert res["events_us"] == pytest.approx(10.0) and res["graph_us"] == pytest.approx((8 + calls * 10) / calls, rel=1e-3)
    # no spread in the fake: the noise floor is the event resolution over the graph median
    assert res["noise_floor"] == pytest.approx(0.5 / res["graph_us"], rel=1e-3)
    assert res["ratio"] == pytest.approx(10.0 / res["graph_us"], rel=1e-3) and res["agree"] is True


def test_the_rotation_crosscheck_catches_warm_graph_replays() -> None:
    from normbench.timing import rotation_crosscheck

    gpu = _UnderreportingL2(L2, gap_us=0.0)
    res = rotation_crosscheck(lambda n: gpu.fns(n, 100_000), 100_000, repetitions=5, warmup=2, backend=gpu)
    assert res["bytes_rotated"] < L2  # what the device said was 2 x L2 fits in the real cache
    assert res["graph_us"] < 3.0 < 9.0 < res["events_us"]  # replays hit L2; events are flushed
    assert res["ratio"] > 3 and res["agree"] is False
