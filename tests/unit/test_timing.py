"""Timing statistics and the CPU timer driven by a fake clock."""

from __future__ import annotations

import math

from normbench.timing import input_sets_needed, percentile, summarize, time_cpu


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
    assert input_sets_needed(100, 100 * 2**20) == 2048  # capped
    assert input_sets_needed(0, 10) == 1
