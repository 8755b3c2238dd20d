"""Executors: who runs a run's cases, and where.

``execute(cases, ctx, options)`` is the one way cases are dispatched (the CLI's
``run`` calls it). It records the cases that expansion marked ``skip``, then
hands the rest to the chosen executor:

* ``serial`` (the default): this process, one kernel stage after another, then
  the end-to-end cases (``normbench.executors.serial``);
* ``local`` (``--gpus all|N|0,2,5``): one worker process per GPU of this host,
  pinned with ``CUDA_VISIBLE_DEVICES`` (``normbench.executors.local``);
* ``ray`` (``--executor ray``): one Ray actor per GPU of a Ray cluster
  (``normbench.executors.ray_executor``).

End-to-end cases (``local`` and ``ray``) run in lanes, after the kernel cases:
one variant per lane at a time, each lane a worker on a disjoint GPU set sized
by the GPU count the serving engine reads from the variant's args
(``normbench.engines``: ``Engine.gpus``; executors never parse an engine's
flags), with its own server port and the variant's own server log
(``run_e2e_lanes``).

The parallel executors share ``normbench.executors.pool``: work units are kernel
sweep points (all providers and repeats of one point together, since the kernel
runner builds a point's inputs and float64 reference once), handed out
costliest first (``unit_cost``: on a GPU the points with the most rotated input
sets, i.e. the fewest tokens, plus what their providers compile), a worker runs
one unit at a time (so never two timed cases on one GPU), results stream back to
this process, which alone calls ``ctx.record`` (the run's single writer, crash
safe as in a serial run). Each worker imports what the suite's providers need
before it answers ready (``warm_modules``) and measures its own device's copy
bandwidth once; its records' ``pct_peak`` uses it, and every record carries
``device_info: {"index", "label", "name", "host", "pid", "peak_bandwidth_gbps",
"startup_s", "startup_wait_s"}`` (end-to-end lanes: ``port`` instead of the
bandwidth; the start-up times: ``normbench.executors.pool``). Kernel cases, in
workers and in the serial executor alike, compile into one cache per user
(``normbench.env.compile_cache_dirs``), recorded in the run's environment.

Nothing here imports torch or ray at module import time: ``normbench list``
and the worker start-up stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from normbench.errors import NormbenchError
from normbench.expand import Case, KernelSettings

EXECUTORS = ("serial", "local", "ray")

#: ``NORMBENCH_FAKE_GPUS=N`` makes the local executor see N fake GPUs: CPU
#: workers labelled ``fake:0`` .. ``fake:N-1`` with CUDA hidden. A test seam:
#: the sharding, streaming, merging and crash handling are the real ones.
FAKE_GPUS_ENV = "NORMBENCH_FAKE_GPUS"
#: The Ray resource one worker requests: ``GPU`` (``num_gpus=1``) unless this
#: names a custom resource standing in for GPUs (tests: ``fake_gpu``, whose
#: workers run on the CPU with CUDA hidden).
RAY_RESOURCE_ENV = "NORMBENCH_RAY_GPU_RESOURCE"

RAY_INSTALL_HINT = "pip install 'normbench[ray]'"


@dataclass(frozen=True)
class Device:
    """One GPU a local worker is pinned to.

    Attributes:
        index: the index in this process's view (``--gpus 0,2`` -> 0 and 2).
        visible: the value for the worker's ``CUDA_VISIBLE_DEVICES`` (the entry
            of this process's ``CUDA_VISIBLE_DEVICES`` when that is set, so a
            UUID stays a UUID); ``""`` for a fake device (CUDA hidden).
        label: ``cuda:2`` or ``fake:0``.
        fake: a CPU worker standing in for a GPU (``NORMBENCH_FAKE_GPUS``).
    """

    index: int
    visible: str
    label: str
    fake: bool = False


@dataclass(frozen=True)
class WorkUnit:
    """Cases one worker runs in one go, with one runner (``RUNNERS`` key).

    Kernel units hold the cases of one sweep point, in expansion order (the
    kernel runner measures them in that order, so the first case of a unit not
    yet recorded is the one in flight). ``affinity`` is what units that share
    compiled kernels have in common (the point's params but the token count):
    the scheduler prefers to give such units to a worker that ran one already.
    ``gpus`` is how many GPUs the unit needs (end-to-end: the variant's
    parallel size).
    """

    runner: str
    cases: tuple[Case, ...]
    cost: float = 1.0
    affinity: Any = None
    gpus: int = 1

    @property
    def label(self) -> str:
        c = self.cases[0]
        p = c.param_dict
        if c.kind == "kernel" and "num_tokens" in p:
            return f"{c.op} {p['num_tokens']}x{p.get('hidden_size', '?')}"
        return c.case_id


@dataclass
class ExecOptions:
    """How to dispatch: the CLI's ``--executor``, ``--gpus``, ``--ray-address`` and ``--accelerator-type``.

    ``ray_resource`` defaults to ``$NORMBENCH_RAY_GPU_RESOURCE`` or ``GPU``.
    ``devices``: the local executor's GPUs (``resolve_devices(gpus)``).
    """

    executor: str = "serial"
    gpus: str | None = None
    ray_address: str | None = None
    accelerator_type: str | None = None
    ray_resource: str = field(default_factory=lambda: os.environ.get(RAY_RESOURCE_ENV) or "GPU")
    devices: list[Device] = field(default_factory=list)


def resolve_options(executor: str | None, gpus: str | None, ray_address: str | None,
                    accelerator_type: str | None = None) -> ExecOptions:
    """Check the CLI's executor options before a run starts (no run directory is made on error).

    ``--executor`` defaults to ``local`` when ``--gpus`` is given, else ``serial``.

    Raises:
        NormbenchError: an unknown executor; ``--gpus`` with ``serial``; a list of
            indices with ``ray`` (Ray places workers, ``--gpus N`` caps their
            number); ``--ray-address`` or ``--accelerator-type`` without ``ray``;
            ray not installed (with the install command); a ``--gpus`` value
            this host cannot satisfy.
    """
    name = executor or ("local" if gpus else "serial")
    if name not in EXECUTORS:
        raise NormbenchError(f"--executor must be one of {', '.join(EXECUTORS)}, not {name!r}")
    if name == "serial" and gpus:
        raise NormbenchError("--gpus shards cases over worker processes: drop `--executor serial` (local is the default "
                             "with --gpus) or use `--executor ray`")
    if ray_address and name != "ray":
        raise NormbenchError("--ray-address needs `--executor ray`")
    if accelerator_type and name != "ray":
        raise NormbenchError("--accelerator-type places Ray workers: it needs `--executor ray` (with --gpus, every "
                             "worker is on this host)")
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise NormbenchError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}")
        if gpus and gpus != "all" and not gpus.strip().isdigit():
            raise NormbenchError(f"--gpus with --executor ray takes `all` or a count (Ray places the workers), not {gpus!r}")
    devices = resolve_devices(gpus or "all") if name == "local" else []
    return ExecOptions(executor=name, gpus=gpus, ray_address=ray_address, accelerator_type=accelerator_type,
                       devices=devices)


def resolve_devices(spec: str, count: int | None = None) -> list[Device]:
    """The GPUs ``--gpus`` names on this host.

    ``spec``: ``all``; a count ``N`` (the first N GPUs); or indices ``0,2,5`` (a
    single index needs a trailing comma: ``3,``). Indices are in this process's
    view: with ``CUDA_VISIBLE_DEVICES=4,5`` set, ``--gpus 1,`` is physical GPU 5.
    With ``NORMBENCH_FAKE_GPUS=N`` set, the host has N fake devices instead.

    Raises:
        NormbenchError: bad syntax, an index or count beyond the GPUs here, a
            repeated index, or no CUDA GPU at all.
    """
    fake = os.environ.get(FAKE_GPUS_ENV)
    if count is None:
        if fake:
            try:
                count = int(fake)
            except ValueError:
                raise NormbenchError(f"{FAKE_GPUS_ENV} must be a number, not {fake!r}") from None
        else:
            count = _cuda_device_count()
    if count <= 0:
        raise NormbenchError("--gpus: no CUDA GPU is visible here (torch.cuda.device_count() is 0)")
    text = spec.strip().lower()
    if text == "all":
        picked = list(range(count))
    elif text.isdigit():
        n = int(text)
        if not 1 <= n <= count:
            raise NormbenchError(f"--gpus {spec}: this host has {count} GPU(s); give 1..{count}, `all`, or indices like 0,2,")
        picked = list(range(n))
    else:
        try:
            picked = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise NormbenchError(f"--gpus takes `all`, a count, or indices like 0,2,5; not {spec!r}") from None
        if not picked:
            raise NormbenchError(f"--gpus takes `all`, a count, or indices like 0,2,5; not {spec!r}")
        bad = [i for i in picked if not 0 <= i < count]
        if bad:
            raise NormbenchError(f"--gpus {spec}: no GPU {bad[0]} here (indices 0..{count - 1})")
        if len(set(picked)) != len(picked):
            raise NormbenchError(f"--gpus {spec}: an index is repeated")
    if fake:
        return [Device(i, "", f"fake:{i}", fake=True) for i in picked]
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return [Device(i, visible[i] if i < len(visible) else str(i), f"cuda:{i}") for i in picked]


def _cuda_device_count() -> int:
    """GPUs this process may use, without importing torch when ``nvidia-smi`` can tell.

    The CLI asks before anything else (so workers can start while the parent
    imports torch): ``nvidia-smi -L``'s count, limited by ``CUDA_VISIBLE_DEVICES``
    when set; torch's count when ``nvidia-smi`` is missing or fails.
    """
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None:
            count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                count = min(count, len([v for v in visible.split(",") if v.strip()]))
            return count
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


#: ``unit_cost``'s model, in seconds: a least-squares fit to the case durations of
#: ``suites/rmsnorm.yaml`` (7 providers, 2 to 65536 tokens) on an H200 with warm compile caches
#: (``docs/results/h200x2/session2``; building a point's inputs and reference took ~0.03 s a point,
#: left out). A case's fixed part (correctness check, capture, warm-up) ...
CASE_S = 0.015
#: ... per input set its timer rotates over (clone, capture, replays: 0.12-0.17 ms for a one-kernel
#: provider, 0.9 ms for the eager ``torch_naive``, 0.31 ms on average) ...
SET_S = 3e-4
#: ... per GiB its call moves ...
GIB_S = 0.05
#: ... and what compiling costs with cold caches (``ProviderEntry.compiles``): ``torch_compile`` at
#: every point (34.7 s cold against 14.4 s warm over 72 points), a JIT provider at the first point
#: of each configuration (``triton``: 7.5 s against 4.3 s over 8 configurations).
COMPILE_S = {"shape": 0.3, "config": 0.4}


def unit_cost(cases: Sequence[Case], l2_bytes: int = 0, first_of_config: bool = False) -> float:
    """Estimated seconds a worker spends on one kernel unit (one sweep point's cases); for ordering only.

    Per case: ``CASE_S``, plus ``SET_S`` per input set the GPU timer rotates over
    (``normbench.timing.input_sets_needed`` of the call's bytes and the stage's
    ``timing.rotate_bytes``, else 2 x ``l2_bytes``: thousands for a few tokens, one for a
    large point, so on a GPU the smallest points cost most), plus ``GIB_S`` per GiB the call
    moves (``normbench.ops``' model); on the CPU (``l2_bytes`` 0: no rotation) the stage's
    ``timing.min_run_time_s`` instead of the sets. Plus, once per provider of the unit, its
    compile cost ``COMPILE_S[compiles]`` (``ProviderEntry.compiles``): ``"shape"`` always,
    ``"config"`` only when ``first_of_config`` (the unit that compiles its configuration's
    kernels). A provider the registry does not know compiles nothing. Never raises for an op
    or provider it cannot model (those parts cost nothing).
    """
    from normbench.ops import OPS
    from normbench.registry import PROVIDERS
    from normbench.timing import input_sets_needed

    total = 0.0
    compiling: set[tuple[str, str]] = set()  # (compiles, provider): once per unit
    for c in cases:
        settings = c.settings if isinstance(c.settings, KernelSettings) else KernelSettings()
        try:
            nbytes = OPS[c.op].bytes_moved(c.param_dict) if c.op in OPS else 0
        except Exception:  # noqa: BLE001 - a cost guess must never stop a run
            nbytes = 0
        if l2_bytes > 0:
            total += CASE_S + SET_S * input_sets_needed(nbytes, settings.rotate_bytes or 2 * l2_bytes)
        else:
            total += CASE_S + settings.min_run_time_s
        total += GIB_S * nbytes / 2**30
        ref = c.provider_ref
        for name in ref.parts if ref is not None else ():
            try:
                kind = PROVIDERS[name].compiles
            except KeyError:
                kind = None
            if kind == "shape" or (kind == "config" and first_of_config):
                compiling.add((kind, name))
    return total + sum(COMPILE_S[kind] for kind, _ in compiling)


def kernel_units(cases: Sequence[Case], l2_bytes: int = 0) -> list[WorkUnit]:
    """Kernel cases -> one unit per sweep point, the costliest first (``unit_cost``).

    ``l2_bytes``: the L2 size of the GPUs the units will run on (0: CPU workers). Units
    that share compiled kernels have the same ``affinity`` (the point's params but the
    token count); the costliest unit of each such group carries the group's per-configuration
    compile cost, since it goes first. Costliest-first (longest processing time first) keeps
    the long points off the end of the run, where one GPU would work while the others idle;
    equal costs keep expansion order.
    """
    groups: dict[tuple, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.shape_key(), []).append(c)
    units = []
    for group in groups.values():
        c = group[0]
        affinity = (c.stage, c.op, tuple((k, v) for k, v in c.params if k != "num_tokens"))
        units.append(WorkUnit("kernel", tuple(group), unit_cost(group, l2_bytes), affinity))
    first: dict[Any, int] = {}
    for i, u in enumerate(units):
        if u.affinity not in first or u.cost > units[first[u.affinity]].cost:
            first[u.affinity] = i
    for i in first.values():
        u = units[i]
        units[i] = WorkUnit(u.runner, u.cases, unit_cost(u.cases, l2_bytes, first_of_config=True), u.affinity)
    return sorted(units, key=lambda u: -u.cost)


def l2_for_units(environment: dict[str, Any], fake: bool) -> int:
    """The L2 size (bytes) ``kernel_units`` assumes: 0 for fake devices (CPU workers), else the
    run's ``gpu.l2_mib`` (the parent's first GPU), else ``normbench.timing.DEFAULT_L2_BYTES``."""
    from normbench.timing import DEFAULT_L2_BYTES

    if fake:
        return 0
    mib = environment.get("gpu.l2_mib")
    return int(mib * 2**20) if isinstance(mib, (int, float)) and mib > 0 else DEFAULT_L2_BYTES


def warm_modules(suite: Any, fake: bool) -> list[str]:
    """What a kernel worker imports before it says it is ready: the modules the suite's providers need.

    For every provider of the suite's kernel stages (both parts of an unfused one) whose
    packages are installed (``ProviderEntry.missing_package``), and that can run on the
    workers' devices (``fake``: CPU workers, so not one that ``needs_cuda``): its module
    (``target``), its ``imports`` (FlashInfer, Liger, quack, ``vllm._custom_ops``), and for a
    provider that compiles per shape, Dynamo and Inductor. First ``normbench.runners.kernel``.
    Nothing is compiled and no case touched, so timings are unaffected; a worker started while
    the parent plans (``normbench.executors.local.prestart``) pays these imports then, instead
    of in its first unit.
    """
    from normbench.registry import PROVIDERS
    from normbench.suite import ProviderRef

    out = ["normbench.runners.kernel"]
    for stage in getattr(suite, "stages", ()):
        if stage.kind != "kernel":
            continue
        for choice in stage.providers:
            for name in ProviderRef.of(choice).parts:
                try:
                    entry = PROVIDERS[name]
                except KeyError:
                    continue
                if entry.missing_package() or (fake and entry.needs_cuda):
                    continue
                out += [entry.module, *entry.imports]
                if entry.compiles == "shape":
                    out += ["torch._dynamo", "torch._inductor.compile_fx"]
    return list(dict.fromkeys(out))


def split(cases: Sequence[Case]) -> tuple[list[Case], list[Case]]:
    """Runnable cases -> (kernel cases, end-to-end cases)."""
    kernel = [c for c in cases if c.kind == "kernel"]
    return kernel, [c for c in cases if c.kind != "kernel"]


def execute(cases: list[Case], ctx: Any, options: ExecOptions | None = None,
            on_workers: Callable[[int, int], None] | None = None, prestarted: Any = None) -> None:
    """Run ``cases`` (skips included) with the executor ``options`` names.

    Skipped cases are recorded first, as SKIPPED with their reason. With
    ``local`` or ``ray``, kernel cases are sharded over the workers (adopting
    ``prestarted`` local workers, ``normbench.executors.local.prestart``), then
    the end-to-end cases run in lanes: one per variant at a time, each on a
    disjoint GPU set of the variant's parallel size with its own port
    (``run_e2e_lanes``).

    ``on_workers(busy, total)`` is told how many workers are busy, for the
    progress bar. Raises what the runners raise (``NormbenchError``,
    ``KeyboardInterrupt``).
    """
    from normbench.runners import base_record

    options = options or ExecOptions()
    runnable = []
    for c in cases:
        if c.skip:
            ctx.record(c, base_record(c, "SKIPPED", c.skip))
        else:
            runnable.append(c)
    if options.executor == "serial":
        from normbench.executors import serial

        serial.run(runnable, ctx)
        return
    kernel, e2e = split(runnable)
    if kernel:
        if options.executor == "local":
            from normbench.executors import local

            devices = options.devices or resolve_devices(options.gpus or "all")
            units = kernel_units(kernel, l2_for_units(ctx.environment, all(d.fake for d in devices)))
            local.run(units, ctx, devices, on_workers, prestarted=prestarted)
        else:
            from normbench.executors import ray_executor

            units = kernel_units(kernel, l2_for_units(ctx.environment, options.ray_resource != "GPU"))
            ray_executor.run(units, ctx, options, on_workers)
    if prestarted is not None:
        prestarted.close()  # a suite without kernel cases left them unused
    if e2e:
        run_e2e_lanes(e2e, ctx, options, on_workers)


# --------------------------------------------------------------------------- end-to-end lanes
def e2e_units(cases: Sequence[Case], suite: Any) -> list[WorkUnit]:
    """End-to-end cases -> one unit per variant (all its stages and repeats, in expansion order).

    ``gpus`` is what the variant's engine uses, as the suite's serving engine
    reads it from ``server.args`` then the variant's ``args``
    (``normbench.engines.Engine.gpus``; vLLM: tensor x pipeline x data parallel size).

    Raises:
        NormbenchError: the engine cannot read a GPU count from the args.
    """
    from normbench.engines import engine_for
    from normbench.suite import Variant

    engine = engine_for(suite.server)
    groups: dict[str | None, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.variant, []).append(c)
    server_args = list(suite.server.args) if suite.server is not None else []
    units = []
    for name, group in groups.items():
        variant = suite.variants.get(name or "default", Variant())
        units.append(WorkUnit("e2e", tuple(group), float(len(group)), name, engine.gpus([*server_args, *variant.args])))
    return units


def gpu_sets(devices: Sequence[Device], size: int) -> list[Device]:
    """Disjoint sets of ``size`` consecutive devices, each as one ``Device`` (``visible`` lists them all).

    ``[cuda:0..cuda:3]``, size 2 -> ``cuda:0,1`` and ``cuda:2,3``; devices left
    over (3 GPUs, size 2) are not used. Its ``index`` is its first device's.
    """
    if size == 1:
        return list(devices)
    sets = []
    for i in range(0, len(devices) - size + 1, size):
        group = devices[i:i + size]
        fake = group[0].fake
        label = ("fake:" if fake else "cuda:") + ",".join(str(d.index) for d in group)
        sets.append(Device(group[0].index, "" if fake else ",".join(d.visible for d in group), label, fake))
    return sets


def lane_ports(count: int, base: int | None) -> list[int]:
    """One server port per lane, all different.

    ``base, base+1, ...`` when the suite sets ``server.port``; otherwise
    ``normbench.process.free_ports`` (all different).

    Raises:
        NormbenchError: ``base + count - 1`` is beyond 65535.
    """
    if base is not None:
        if base + count - 1 > 65535:
            raise NormbenchError(f"server.port {base}: {count} parallel variants need ports up to {base + count - 1}")
        return [base + k for k in range(count)]
    from normbench.process import free_ports

    return free_ports(count)


def run_e2e_lanes(cases: list[Case], ctx: Any, options: ExecOptions,
                  on_workers: Callable[[int, int], None] | None = None) -> None:
    """End-to-end variants in parallel, on disjoint GPU sets, one server port per lane.

    The checks of the end-to-end runner run once, here, before any worker
    starts. Variants are grouped by the GPUs they need (largest first); each
    group runs on as many disjoint GPU sets as fit (``gpu_sets``), a variant
    per lane at a time, each lane with its own port (``lane_ports``) and the
    variant's own server log. A variant needing more GPUs than ``--gpus``
    gives is recorded SKIPPED with the reason.

    Raises:
        NormbenchError: the end-to-end checks failed; a port set in
            ``server.args`` or a variant's ``args`` (``Engine.given_port``) while
            several lanes run (they would collide: set ``server.port``, lane k
            uses it + k).
    """
    from normbench.engines import engine_for
    from normbench.runners import base_record
    from normbench.runners import e2e as e2e_runner

    e2e_runner.preflight(cases, ctx)
    ctx.extra["preflight_done"] = True
    units = e2e_units(cases, ctx.suite)
    spec = ctx.suite.server
    engine = engine_for(spec)
    devices = options.devices or (resolve_devices(options.gpus or "all") if options.executor == "local" else [])
    for size in sorted({u.gpus for u in units}, reverse=True):
        group = [u for u in units if u.gpus == size]
        if options.executor == "local":
            lanes = gpu_sets(devices, size)[:len(group)]
            if not lanes:
                for u in group:
                    why = (f"variant {u.affinity or 'default'} needs {size} GPUs ({engine.gpu_count_source}); "
                           f"--gpus gives {len(devices)}")
                    for c in u.cases:
                        ctx.record(c, base_record(c, "SKIPPED", why))
                continue
        else:
            lanes = list(range(len(group)))  # Ray places them; at most this many
        if len(lanes) > 1:
            for u in group:
                variant = ctx.suite.variants.get(u.affinity or "default")
                if engine.given_port([*spec.args, *(variant.args if variant else [])]) is not None:
                    raise NormbenchError(
                        f"variant {u.affinity or 'default'}: `{engine.port_flag}` in the server args would make the "
                        "parallel variants' servers collide; set `server.port` instead (lane k serves on it + k)")
        ports = lane_ports(len(lanes), spec.port)
        if options.executor == "local":
            from normbench.executors import local

            local.run(group, ctx, lanes, on_workers, role="e2e", ports={d.index: p for d, p in zip(lanes, ports)})
        else:
            from normbench.executors import ray_executor

            ray_executor.run(group, ctx, options, on_workers, role="e2e", ports=ports)


def plan_order(stored: Sequence[Any], planned: Sequence[Case]) -> list[Any]:
    """Record cases in the order a serial run stores them: earlier ones, then ``planned``'s order.

    Parallel executors record cases as they finish; sorting them back makes a
    sharded run's ``run.json`` list cases exactly as a serial run of the same
    suite would.
    """
    order = {c.case_id: i for i, c in enumerate(planned)}
    return sorted(stored, key=lambda r: order.get(r.case_id, -1))
