"""``--profile torch``: ``torch.profiler`` around one kernel case, in this process; works without ncu and on a CPU.

The case's callable is built and warmed up as for ncu (``normbench.profile.case``), then
its ``launches`` calls run inside ``torch.profiler.profile`` with the CPU activity, plus
CUDA on a GPU. Stored per case:

* the Chrome trace (``profile/<stem>.trace.json.gz``, gzip; open it in Perfetto or
  ``chrome://tracing``), as the case's ``torch_trace`` artifact;
* from ``key_averages()``, one ``ProfileKernel`` per kernel: on a GPU the CUDA kernels
  (and memcpy/memset) with their device self time, on a CPU the ``aten::`` ops with a
  non-zero CPU self time (the CPU's units of work); times are per profiled call, largest
  first. DRAM throughput, occupancy and registers are ncu's: None here.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path
from typing import Any

from normbench.profile.case import CaseSpec, prepare, run_profiled


def _attr(evt: Any, *names: str) -> float:
    """The first of ``names`` that ``evt`` has (torch renamed ``cuda_*`` to ``device_*``), else 0."""
    for n in names:
        v = getattr(evt, n, None)
        if isinstance(v, (int, float)):
            return float(v)
    return 0.0


def kernel_rows(events: Any, cuda: bool, launches: int) -> list[dict[str, Any]]:
    """``ProfileKernel`` records from ``profiler.key_averages()`` (see the module docstring).

    Args:
        events: the averaged events (each with ``key``, ``count``, ``device_type`` and self times in us).
        cuda: keep the CUDA kernels (GPU profile) rather than the CPU ops.
        launches: profiled calls of the case's callable: times and counts are per call.
    """
    rows = []
    for evt in events:
        name = str(getattr(evt, "key", ""))
        if not name or name.startswith("["):  # [memory] and other profiler bookkeeping
            continue
        device_type = str(getattr(evt, "device_type", ""))
        if cuda:
            t = _attr(evt, "self_device_time_total", "self_cuda_time_total")
            is_kernel = device_type.endswith("CUDA") or (t > 0 and _attr(evt, "self_cpu_time_total") == 0)
            if not is_kernel or t <= 0:
                continue
        else:
            t = _attr(evt, "self_cpu_time_total")
            if not device_type.endswith("CPU") or t <= 0:
                continue
        count = int(getattr(evt, "count", 1) or 1)
        rows.append({"name": name, "time_us": round(t / launches, 3), "calls": max(1, round(count / launches))})
    return sorted(rows, key=lambda r: -r["time_us"])


def profile_case(spec: CaseSpec, run_dir: Path, stem: str, *, device: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Profile one case with ``torch.profiler``: its ``CaseProfile`` and artifacts (``torch_trace``,
    relative to ``run_dir``).

    Args:
        spec: the case.
        run_dir: the run's directory; the trace goes to ``run_dir/profile/<stem>.trace.json.gz``.
        stem: the trace's name.
        device: ``cuda`` or ``cpu`` (default: CUDA when there is a GPU).

    Raises:
        NormbenchError: the provider cannot run the case here.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    prep = prepare(spec, device)
    cuda = prep.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    run_profiled(prep, spec, prof.start, prof.stop)
    out = run_dir / "profile"
    out.mkdir(parents=True, exist_ok=True)
    rel = f"profile/{stem}.trace.json.gz"
    plain = out / f"{stem}.trace.json"
    prof.export_chrome_trace(str(plain))
    with open(plain, "rb") as src, gzip.open(run_dir / rel, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()
    kernels = kernel_rows(prof.key_averages(), cuda, spec.launches)
    profile_record = {
        "tool": "torch", "tool_version": torch.__version__,
        "device": torch.cuda.get_device_name(prep.device) if cuda else "cpu",
        "warmup": spec.warmup, "launches": spec.launches,
        "settings": {"activities": ["cpu", "cuda"] if cuda else ["cpu"]},
        "kernels": kernels, "duration_s": round(time.perf_counter() - t0, 3),
    }
    return profile_record, {"torch_trace": rel}
