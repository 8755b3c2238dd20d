"""Scale-out executors on the CPU: sharding, merging, worker deaths, Ctrl-C + resume, Ray in local mode.

Local workers are real processes on fake devices (``NORMBENCH_FAKE_GPUS=2``:
CPU workers labelled fake:0 / fake:1); Ray runs in local mode with a custom
``fake_gpu`` resource standing in for GPUs. The scheduler's bookkeeping is also
tested alone, with in-process fake slots.
"""

from __future__ import annotations

import _thread
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from normbench import store
from normbench.cli import app
from normbench.errors import NormbenchError
from normbench.executors import (
    COMPILE_S, FAKE_GPUS_ENV, RAY_RESOURCE_ENV, Device, WorkUnit, kernel_units, plan_order, resolve_devices,
    resolve_options, unit_cost, warm_modules,
)
from normbench.executors import pool
from normbench.executors.pool import Scheduler, Slot
from normbench.expand import Capabilities, Case, expand
from normbench.suite import Suite

runner = CliRunner()

# 12 points x 2 CPU providers (+ triton, SKIPPED on a CPU): each unit holds a point's 2 (or 4, with --repeat 2) cases.
SUITE = """\
name: shard
stages:
  - kind: kernel
    op: rms_norm
    providers: [torch_naive, torch_rms_norm, triton]
    sweep: {num_tokens: [1, 7, 33], hidden_size: [96, 256], residual: [false, true], dtype: [float32]}
    timing: {min_run_time_s: %s}
"""


def _suite(tmp: Path, min_run_time: float = 0.005) -> Path:
    f = tmp / "shard.yaml"
    f.write_text(SUITE % min_run_time)
    return f


def _run(args: list[str]) -> Any:
    res = runner.invoke(app, ["run", *args, "--no-progress"])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def _shape(record: store.RunRecord) -> list[tuple]:
    """What must match between runs of one suite: ids, statuses, params, seeds, metric names (not devices)."""
    return [(c.case_id, c.status, c.fingerprint, json.dumps(c.params, sort_keys=True), c.seed, sorted(c.metrics),
             c.reason if c.status == "SKIPPED" else None) for c in record.cases]


def _journal_records(results: Path) -> list[dict]:
    out = []
    for j in results.glob("*/cases.jsonl"):
        for line in j.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if store.JOURNAL_HEADER not in rec:  # the first line is the run, not a case
                out.append(rec)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); its state says it is gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def serial_record(tmp_path_factory) -> store.RunRecord:
    tmp = tmp_path_factory.mktemp("serial")
    res = _run([str(_suite(tmp)), "--results-dir", str(tmp / "runs")])
    assert res.exit_code == 0, res.output
    return store.load_run(store.resolve_run("latest", tmp / "runs"))


# --------------------------------------------------------------------------- options and planning
def test_resolve_devices_counts_indices_and_visible_mapping(monkeypatch) -> None:
    monkeypatch.delenv(FAKE_GPUS_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,GPU-abc")
    assert [d.visible for d in resolve_devices("all", count=3)] == ["4", "5", "GPU-abc"]
    assert [d.label for d in resolve_devices("2", count=3)] == ["cuda:0", "cuda:1"]
    assert [(d.index, d.visible) for d in resolve_devices("2,", count=3)] == [(2, "GPU-abc")]
    assert [d.index for d in resolve_devices("0, 2", count=3)] == [0, 2]
    for bad, msg in (("4", "has 3 GPU"), ("0,3", "no GPU 3"), ("1,1", "repeated"), ("x", "takes `all`")):
        with pytest.raises(NormbenchError, match=msg):
            resolve_devices(bad, count=3)
    with pytest.raises(NormbenchError, match="no CUDA GPU"):
        resolve_devices("all", count=0)
    monkeypatch.setenv(FAKE_GPUS_ENV, "2")
    fake = resolve_devices("all")
    assert [(d.label, d.visible, d.fake) for d in fake] == [("fake:0", "", True), ("fake:1", "", True)]


def test_resolve_options_defaults_and_errors(monkeypatch) -> None:
    monkeypatch.setenv(FAKE_GPUS_ENV, "2")
    assert resolve_options(None, None, None).executor == "serial"
    assert resolve_options(None, "all", None).executor == "local"
    with pytest.raises(NormbenchError, match="--executor must be one of"):
        resolve_options("dask", None, None)
    with pytest.raises(NormbenchError, match="drop `--executor serial`"):
        resolve_options("serial", "2", None)
    with pytest.raises(NormbenchError, match="needs `--executor ray`"):
        resolve_options(None, None, "auto")
    with pytest.raises(NormbenchError, match="--accelerator-type places Ray workers"):
        resolve_options(None, "all", None, "H100")
    assert [d.label for d in resolve_options(None, "all", None).devices] == ["fake:0", "fake:1"]


def test_ray_missing_is_a_clear_error_with_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec -> None, import -> ImportError
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--executor", "ray", "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "pip install 'normbench[ray]'" in res.output
    assert not (tmp_path / "r").exists()  # checked before a run directory is made


def _cases(points: int, providers: int, repeats: int = 1) -> list[Case]:
    out = []
    for n in range(points):
        params = (("num_tokens", 2 ** (n * 4)), ("hidden_size", 4096), ("dtype", "bfloat16"), ("eps", 1e-6),
                  ("residual", False))
        for r in range(repeats):
            for p in range(providers):
                out.append(Case("s", 0, "kernel", "rms_norm", f"p{p}", None, params, r))
    return out


def test_kernel_units_group_a_point_and_put_the_costliest_first() -> None:
    cases = _cases(points=4, providers=3, repeats=2)
    units = kernel_units(cases)
    assert len(units) == 4
    assert [len(u.cases) for u in units] == [6] * 4
    for u in units:
        assert len({c.params for c in u.cases}) == 1
        assert [c.case_id for c in u.cases] == [c.case_id for c in cases if c.params == u.cases[0].params]
    sizes = [u.cases[0].param_dict["num_tokens"] for u in units]
    assert sizes == sorted(sizes, reverse=True)


def test_a_worker_takes_a_unit_it_is_warm_for_unless_it_is_much_smaller() -> None:
    def unit(cost: float, affinity: str) -> WorkUnit:
        return WorkUnit("kernel", (), cost, affinity)

    sched = Scheduler(None, [], lambda k, e: None)
    slot = Slot(0, "fake:0", sched.events)
    slot.warm = {"h4096"}
    sched.pending.extend([unit(10, "h8192"), unit(8, "h4096"), unit(6, "h4096")])
    assert sched._next_for(slot).cost == 8  # warm, and at least half the head's cost
    assert sched._next_for(slot).cost == 6
    assert sched._next_for(slot).cost == 10  # nothing warm left: the costliest first
    sched.pending.extend([unit(9, "h8192"), unit(2, "h4096")])
    assert sched._next_for(slot).cost == 9  # the warm unit costs under half of the head's
    assert sched._next_for(slot).cost == 2
    units = kernel_units(_cases(points=2, providers=2) + [
        Case("s", 0, "kernel", "rms_norm", "p0", None, (("num_tokens", 4), ("hidden_size", 96)), 0)])
    assert len({u.affinity for u in units}) == 2  # the token count is not part of it


def _gpu_cases(providers: list[str], num_tokens: list[int], hidden_size: list[int], stage: str = "s") -> list[Case]:
    """The runnable cases of a bf16 rms_norm stage, expanded as on an SM90 GPU."""
    suite = Suite.model_validate({"name": "cost", "stages": [{
        "kind": "kernel", "name": stage, "op": "rms_norm", "providers": providers,
        "sweep": {"num_tokens": num_tokens, "hidden_size": hidden_size, "dtype": "bfloat16"}}]})
    return [c for c in expand(suite, Capabilities("cuda", (9, 0), "H100", {})) if not c.skip]


def _points(units: list[WorkUnit]) -> list[tuple[int, int]]:
    return [(u.cases[0].param_dict["num_tokens"], u.cases[0].param_dict["hidden_size"]) for u in units]


L2 = 50 * 2**20  # an H100's


def test_on_a_gpu_the_points_with_the_most_input_sets_go_first() -> None:
    """A few tokens need thousands of rotated input sets to span 2 x L2 (each cloned, captured and replayed):
    on a GPU those points are the long ones, the large points the short ones; on the CPU nothing rotates."""
    from normbench.ops import OPS
    from normbench.timing import input_sets_needed

    cases = _gpu_cases(["torch_naive", "torch_rms_norm"], [1, 4, 65536], [4096])
    # The H200 records this model comes from: 5.8 s, 2.6 s and 0.9 s a point
    assert _points(kernel_units(cases, L2)) == [(1, 4096), (4, 4096), (65536, 4096)]
    assert _points(kernel_units(cases)) == [(65536, 4096), (4, 4096), (1, 4096)]  # CPU workers: by bytes
    one = [c for c in cases if c.param_dict["num_tokens"] == 1 and c.provider == "torch_naive"]
    nbytes = OPS["rms_norm"].bytes_moved(one[0].param_dict)
    sets = input_sets_needed(nbytes, 2 * L2)
    assert sets > 1000
    assert unit_cost(one, L2) == pytest.approx(0.015 + 3e-4 * sets + 0.05 * nbytes / 2**30)


def test_compile_costs_go_to_every_point_or_to_the_first_of_a_configuration() -> None:
    """torch_compile compiles at every point; triton once per configuration (the point's params but the
    token count), which the costliest unit of the group carries, since it goes first."""
    cases = _gpu_cases(["torch_naive", "torch_compile", "triton"], [1, 16, 4096], [2880, 8192])
    units = kernel_units(cases, L2)
    assert [n for n, _ in _points(units)] == [1, 1, 16, 16, 4096, 4096]
    assert _points(units)[:2] == [(1, 2880), (1, 8192)]  # 2880 wide: smaller calls, more input sets
    for u in units:
        first = u.cases[0].param_dict["num_tokens"] == 1
        assert u.cost - unit_cost(u.cases, L2) == pytest.approx(COMPILE_S["config"] if first else 0.0)
        eager = [c for c in u.cases if c.provider == "torch_naive"]
        compiled = [c for c in u.cases if c.provider == "torch_compile"]
        assert unit_cost(compiled, L2) - unit_cost(eager, L2) == pytest.approx(COMPILE_S["shape"])
    # Between points that cost the same to time, the one that compiles goes first, wherever it was planned.
    plain = _gpu_cases(["torch_naive", "torch_rms_norm"], [256], [4096], stage="a")
    compiling = _gpu_cases(["torch_naive", "torch_compile"], [256], [4096], stage="b")
    assert [u.cases[0].stage for u in kernel_units(plain + compiling, L2)] == ["b", "a"]
    # A provider the registry does not know costs its cases and compiles nothing.
    assert unit_cost(_cases(points=1, providers=2), L2) == pytest.approx(2 * unit_cost(_cases(points=1, providers=1), L2))


def test_warm_modules_are_what_the_suites_providers_import(monkeypatch) -> None:
    from normbench.registry import PROVIDERS, ProviderEntry

    monkeypatch.setitem(PROVIDERS, "ghost", ProviderEntry("ghost", "nb_ghost:PROVIDER", ("rms_norm",),
                                                          imports=("nb_ghost_pkg_xyz",)))
    suite = Suite.model_validate({"name": "w", "stages": [
        {"kind": "kernel", "op": "rms_norm", "providers": ["torch_naive", "torch_compile", "triton", "ghost"],
         "sweep": {"num_tokens": [1], "hidden_size": [64]}},
        {"kind": "kernel", "name": "again", "op": "rms_norm", "providers": ["torch_rms_norm"],
         "sweep": {"num_tokens": [1], "hidden_size": [64]}}]})
    cpu = ["normbench.runners.kernel", "normbench.kernels.providers.torch_ops", "torch._dynamo",
           "torch._inductor.compile_fx"]
    assert warm_modules(suite, fake=True) == cpu  # triton needs CUDA; ghost is not installed
    assert warm_modules(suite, fake=False) == [*cpu, "normbench.kernels.providers.triton", "triton"]


def test_compile_caches_are_one_per_user_and_respect_the_users_own(monkeypatch, tmp_path: Path) -> None:
    from normbench.env import compile_cache_dirs, compile_cache_facts, compile_caches
    from normbench.executors.local import _worker_env

    assert compile_cache_dirs({"XDG_CACHE_HOME": "/c", "TRITON_CACHE_DIR": "/mine", "TORCHINDUCTOR_CACHE_DIR": ""}) == {
        "TRITON_CACHE_DIR": "/mine", "TORCHINDUCTOR_CACHE_DIR": "/c/normbench/inductor"}
    monkeypatch.setenv("HOME", str(tmp_path))
    dirs = compile_cache_dirs({})
    assert dirs == {"TRITON_CACHE_DIR": str(tmp_path / ".cache" / "normbench" / "triton"),
                    "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / ".cache" / "normbench" / "inductor")}
    assert compile_cache_facts(dirs) == {"compile_cache.triton": dirs["TRITON_CACHE_DIR"],
                                         "compile_cache.inductor": dirs["TORCHINDUCTOR_CACHE_DIR"]}
    assert not (tmp_path / ".cache").exists()  # nothing created: the compilers do that

    env = {"TRITON_CACHE_DIR": "/mine", "XDG_CACHE_HOME": "/c"}
    with pytest.raises(RuntimeError):
        with compile_caches(env) as used:
            assert env["TORCHINDUCTOR_CACHE_DIR"] == used["TORCHINDUCTOR_CACHE_DIR"] == "/c/normbench/inductor"
            raise RuntimeError
    assert env == {"TRITON_CACHE_DIR": "/mine", "XDG_CACHE_HOME": "/c"}  # restored, the user's value kept

    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    kernel = _worker_env(Device(0, "", "fake:0", fake=True), None, "kernel")
    assert kernel["TRITON_CACHE_DIR"] == str(tmp_path / "xdg" / "normbench" / "triton")
    lane = _worker_env(Device(0, "", "fake:0", fake=True), None, "e2e")
    assert "TRITON_CACHE_DIR" not in lane and "TORCHINDUCTOR_CACHE_DIR" not in lane  # vllm serve keeps its own


def test_serial_kernel_stages_compile_into_the_shared_caches(monkeypatch, tmp_path: Path) -> None:
    from normbench.executors import serial
    from normbench.runners import kernel

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    seen: list[tuple] = []
    monkeypatch.setattr(kernel, "run", lambda cases, ctx: seen.append(
        (len(cases), os.environ.get("TRITON_CACHE_DIR"), os.environ.get("TORCHINDUCTOR_CACHE_DIR"))))
    serial.run(_cases(points=2, providers=2), Ctx())
    assert seen == [(4, str(tmp_path / "mine"), str(tmp_path / "xdg" / "normbench" / "inductor"))]
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # only while the kernel stages ran


def test_e2e_units_gpu_sets_and_ports() -> None:
    from normbench.executors import e2e_units, gpu_sets, lane_ports
    from normbench.engines.vllm import engine_gpus
    from normbench.suite import Suite

    assert engine_gpus([]) == 1
    assert engine_gpus(["--tensor-parallel-size", "2", "-pp=2", "--max-num-seqs", "8"]) == 4
    assert engine_gpus(["-tp", "2", "--tensor-parallel-size=4"]) == 4  # the last one given
    with pytest.raises(NormbenchError, match="not a whole number"):
        engine_gpus(["-tp", "two"])
    suite = Suite.model_validate({
        "name": "v", "server": {"model": "m", "args": ["-tp", "2"]},
        "variants": {"a": {}, "b": {"args": ["--tensor-parallel-size", "1"]}},
        "stages": [{"kind": "latency", "name": "lat", "input_len": [512]}],
    })
    cases = [Case("lat", 0, "latency", None, None, v, (("input_len", 512),), r) for r in range(2) for v in ("a", "b")]
    units = {u.affinity: u for u in e2e_units(cases, suite)}
    assert {k: (u.gpus, [c.repeat for c in u.cases]) for k, u in units.items()} == {"a": (2, [0, 1]), "b": (1, [0, 1])}
    devices = [Device(i, str(i + 4), f"cuda:{i}") for i in range(5)]
    pairs = gpu_sets(devices, 2)
    assert [(d.index, d.visible, d.label) for d in pairs] == [(0, "4,5", "cuda:0,1"), (2, "6,7", "cuda:2,3")]
    assert gpu_sets(devices, 1) == devices and gpu_sets(devices[:1], 2) == []
    assert lane_ports(3, 8000) == [8000, 8001, 8002]
    free = lane_ports(4, None)
    assert len(set(free)) == 4 and all(1024 <= p <= 65535 for p in free)
    with pytest.raises(NormbenchError, match="up to 65536"):
        lane_ports(2, 65535)


def test_plan_order_puts_stored_cases_first_then_the_plan() -> None:
    cases = _cases(points=2, providers=2)

    class R:
        def __init__(self, cid: str) -> None:
            self.case_id = cid

    arrived = [R(cases[3].case_id), R("older"), R(cases[0].case_id), R(cases[2].case_id), R(cases[1].case_id)]
    assert [r.case_id for r in plan_order(arrived, cases)] == ["older"] + [c.case_id for c in cases]


# --------------------------------------------------------------------------- the scheduler alone
class FakeSlot(Slot):
    """Runs units in a thread; ``die_after`` kills it after that many records; ``die_at_start`` never gets ready."""

    log: list[tuple] = []
    plan: dict[int, list[str]] = {}  # device key -> what each successive worker does: "ok", "die_at_start", "die_after:N"

    def __init__(self, key: int, events: Any) -> None:
        super().__init__(key, f"fake:{key}", events)
        self.mode = FakeSlot.plan.get(key, ["ok"]).pop(0) if FakeSlot.plan.get(key) else "ok"
        self.lock = threading.Lock()

    def start(self) -> None:
        if self.mode == "die_at_start":
            self.emit("died", f"worker on {self.label} exited with code 3")
        else:
            self.emit("ready", {"label": self.label, "name": "fake", "index": self.key})

    def submit(self, unit: WorkUnit) -> None:
        threading.Thread(target=self._work, args=(unit,), daemon=True).start()

    def _work(self, unit: WorkUnit) -> None:
        from normbench.runners import base_record

        FakeSlot.log.append(("start", self.key, id(self)))
        for i, c in enumerate(unit.cases):
            if self.mode.startswith("die_after:") and i == int(self.mode.split(":")[1]):
                FakeSlot.log.append(("end", self.key, id(self)))
                self.emit("died", f"worker on {self.label} was killed by signal 9 (SIGKILL)")
                return
            time.sleep(0.001)
            rec = base_record(c, "OK")
            rec.device = "fake"
            rec.device_info = {"label": self.label, "index": self.key}
            self.emit("record", (c.case_id, rec))
        FakeSlot.log.append(("end", self.key, id(self)))
        self.emit("done")

    def stop(self, force: bool = False) -> None:
        self.emit("died", "stopped")


class Ctx:
    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []
        self.lines: list[str] = []

    def record(self, case: Case, rec: Any) -> None:
        assert threading.current_thread() is threading.main_thread()  # the single writer
        self.records.append((case.case_id, rec))

    def status(self, line: str) -> None:
        self.lines.append(line)


def _schedule(plan: dict[int, list[str]], units: list[WorkUnit], devices: int = 2) -> tuple[Ctx, list]:
    FakeSlot.plan = {k: list(v) for k, v in plan.items()}
    FakeSlot.log = []
    ctx = Ctx()
    busy: list[tuple[int, int]] = []
    Scheduler(ctx, list(range(devices)), FakeSlot, lambda b, t: busy.append((b, t))).run(units)
    return ctx, busy


def test_scheduler_records_every_case_once_one_unit_per_worker() -> None:
    cases = _cases(points=6, providers=3)
    ctx, busy = _schedule({}, kernel_units(cases))
    assert sorted(cid for cid, _ in ctx.records) == sorted(c.case_id for c in cases)
    running: dict[int, int] = {}
    for what, key, _ in FakeSlot.log:  # never two units at once on one device
        running[key] = running.get(key, 0) + (1 if what == "start" else -1)
        assert running[key] in (0, 1)
    assert {k for _, k, _ in FakeSlot.log} == {0, 1}
    assert max(b for b, _ in busy) == 2 and busy[-1] == (0, 2)


def test_scheduler_fails_the_in_flight_case_of_a_dead_worker_and_requeues_the_rest() -> None:
    cases = _cases(points=3, providers=4)
    units = kernel_units(cases)
    ctx, _ = _schedule({0: ["die_after:1", "ok"]}, units)
    ids = [cid for cid, _ in ctx.records]
    assert sorted(ids) == sorted(c.case_id for c in cases)  # each case exactly once
    failed = [(cid, r) for cid, r in ctx.records if r.status == "FAILED"]
    assert len(failed) == 1
    cid, rec = failed[0]
    assert "killed by signal 9 (SIGKILL)" in rec.reason
    assert rec.device_info["label"] == "fake:0"
    first_unit = next(u for u in units if cid in {c.case_id for c in u.cases})
    assert cid == first_unit.cases[1].case_id  # the case after the one it finished
    assert any("starting a fresh one" in line for line in ctx.lines)


def test_scheduler_gives_up_a_device_whose_workers_cannot_start() -> None:
    cases = _cases(points=4, providers=2)
    ctx, _ = _schedule({1: ["die_at_start", "die_at_start"]}, kernel_units(cases))
    assert sorted(cid for cid, _ in ctx.records) == sorted(c.case_id for c in cases)
    assert all(r.status == "OK" for _, r in ctx.records)
    assert any("given up" in line for line in ctx.lines)
    with pytest.raises(NormbenchError, match="every worker died before it could run a case.*exited with code 3"):
        _schedule({0: ["die_at_start"] * 2, 1: ["die_at_start"] * 2}, kernel_units(cases))


class StartupSlot(FakeSlot):
    """A FakeSlot whose worker answers ready at ``ready_time`` on the test's clock (``spawned_at``: preset for a
    worker started before the run, else the clock when the scheduler starts it)."""

    now = [0.0]

    def __init__(self, key: int, events: Any, ready_time: float, spawned_at: float | None = None) -> None:
        super().__init__(key, events)
        self.ready_time, self.spawned_at = ready_time, spawned_at

    def start(self) -> None:
        if self.ready_at is not None:  # started before the run, and ready already
            return
        if self.spawned_at is None:
            self.spawned_at = pool.clock()
        StartupSlot.now[0] = self.ready_time
        self.emit_ready({"label": self.label, "name": "fake", "index": self.key})


def test_scheduler_stamps_each_workers_startup_on_its_records(monkeypatch) -> None:
    now = StartupSlot.now
    monkeypatch.setattr(pool, "clock", lambda: now[0])
    FakeSlot.plan, FakeSlot.log = {}, []
    events: queue.Queue = queue.Queue()
    early = StartupSlot(0, events, ready_time=95.0, spawned_at=90.0)  # prestarted, ready before the run
    now[0] = 95.0
    early.start()
    late = StartupSlot(2, events, ready_time=103.0, spawned_at=90.0)  # prestarted, ready after the run began
    made = {0: early, 2: late}
    now[0] = 100.0  # the run has its units

    def make(key: int, ev: Any) -> Slot:
        return made.pop(key, None) or StartupSlot(key, ev, ready_time=107.0)  # spawned by the run at 100

    ctx = Ctx()
    Scheduler(ctx, [0, 1, 2], make, events=events).run(kernel_units(_cases(points=6, providers=2)))
    got = {r.device_info["label"]: (r.device_info["startup_s"], r.device_info["startup_wait_s"]) for _, r in ctx.records}
    assert got == {"fake:0": (5.0, 0.0), "fake:1": (7.0, 7.0), "fake:2": (13.0, 3.0)}


# --------------------------------------------------------------------------- local workers on fake devices
@pytest.fixture
def fake_gpus(monkeypatch) -> None:
    monkeypatch.setenv(FAKE_GPUS_ENV, "2")


def test_sharded_run_is_the_serial_record_but_for_devices(tmp_path: Path, fake_gpus, serial_record) -> None:
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(tmp_path / "runs"), "--gpus", "all"])
    assert res.exit_code == 0, res.output
    assert "workers busy" in res.output  # the one progress bar shows the workers
    record = store.load_run(store.resolve_run("latest", tmp_path / "runs"))
    assert record.status == "complete"
    assert _shape(record) == _shape(serial_record)  # same cases, same order, statuses, params, seeds, metrics
    ran = [c for c in record.cases if c.status == "OK"]
    assert {c.device_info["label"] for c in ran} == {"fake:0", "fake:1"}
    for c in ran:  # % of peak is taken against the worker's own device
        info = c.device_info
        assert info["name"] == "cpu" and c.device == "cpu"
        assert c.metrics["pct_peak"].value == pytest.approx(100 * c.metrics["gbps"].value / info["peak_bandwidth_gbps"],
                                                            rel=0.01)
    assert all(not hasattr(c, "device_info") or c.device_info is None for c in record.cases if c.status == "SKIPPED")
    assert sorted(p.name for p in (Path(record.path) / "logs" / "workers").iterdir()) == ["fake0.log", "fake1.log"]


def test_workers_set_up_and_import_the_providers_while_the_parent_plans(tmp_path: Path, fake_gpus,
                                                                         monkeypatch) -> None:
    """The workers are spawned before the parent plans, and can be ready before it finishes: planning here waits
    for their ready answers, so the run then waits for no worker (startup_wait_s 0), and each worker imported the
    suite's providers before it joined the run. Kernel workers compile into the shared caches: the user's
    TRITON_CACHE_DIR, kept as it was, and Inductor's under XDG_CACHE_HOME; the run records where."""
    from normbench.cli import run as run_cli
    from normbench.executors import local

    mine = tmp_path / "my-triton-cache"
    mine.mkdir()
    (mine / "kept").write_text("a kernel")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(mine))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    started: list[Any] = []
    real_prestart, real_plan = local.prestart, run_cli._plan

    def prestart(devices, results_dir, warm=None):
        started.append(real_prestart(devices, results_dir, warm))
        return started[-1]

    seen: dict[str, Any] = {}

    def plan(*args, **kwargs):
        assert started, "planning began before the workers were started"
        slots = list(started[0].slots.values())
        deadline = time.monotonic() + 120
        while any(s.ready_at is None for s in slots) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["logs"] = {s.label: s.log_path.read_text() for s in slots}
        seen["env"] = {s.label: Path(f"/proc/{s.proc.pid}/environ").read_bytes().split(b"\0") for s in slots}
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(local, "prestart", prestart)
    monkeypatch.setattr(run_cli, "_plan", plan)
    runs = tmp_path / "runs"
    res = _run([str(_suite(tmp_path)), "--results-dir", str(runs), "--gpus", "all"])
    assert res.exit_code == 0, res.output
    assert sorted(seen["logs"]) == ["fake:0", "fake:1"]
    for label, log in seen["logs"].items():
        assert "normbench.kernels.providers.torch_ops" in log and f"{label} pid" in log and " ready: " in log
        assert "joined run" not in log  # set up before the run existed
        env = seen["env"][label]
        assert f"TRITON_CACHE_DIR={mine}".encode() in env
        assert f"TORCHINDUCTOR_CACHE_DIR={tmp_path / 'xdg' / 'normbench' / 'inductor'}".encode() in env
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.environment["compile_cache.triton"] == str(mine)
    assert record.environment["compile_cache.inductor"] == str(tmp_path / "xdg" / "normbench" / "inductor")
    assert (mine / "kept").read_text() == "a kernel"
    startup = {}
    for c in record.cases:
        if c.status == "OK":
            startup.setdefault(c.device_info["label"], set()).add((c.device_info["startup_s"],
                                                                   c.device_info["startup_wait_s"]))
    assert sorted(startup) == ["fake:0", "fake:1"]
    for label, values in startup.items():
        assert len(values) == 1  # one worker per device, the same on each of its records
        (s, wait), = values
        assert s > 0 and wait == 0.0
    shown = runner.invoke(app, ["show", "latest", "--results-dir", str(runs)])
    assert shown.exit_code == 0, shown.output
    line = " ".join(shown.output.split())
    assert "worker start-up, spawn to ready: fake:0 " in line and "fake:1 " in line
    assert line.count("(run waited 0.0 s)") == 2


@pytest.mark.slow
def test_a_killed_worker_fails_its_case_and_the_others_go_on(tmp_path: Path, fake_gpus) -> None:
    runs = tmp_path / "runs"
    killed: dict[str, Any] = {}

    def killer() -> None:  # kill the worker that just finished the first case of a 4-case point
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for r in _journal_records(runs):
                if r["provider"] == "torch_naive" and r["repeat"] == 0 and r["status"] == "OK":
                    killed.update(pid=r["device_info"]["pid"], label=r["device_info"]["label"], after=r["case_id"])
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = _run([str(_suite(tmp_path, 0.05)), "--results-dir", str(runs), "--gpus", "2", "--repeat", "2"])
    t.join()
    assert killed, "no worker was killed"
    assert res.exit_code == 1, res.output  # a FAILED case
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.status == "complete" and len(record.cases) == record.planned == 72
    failed = [c for c in record.cases if c.status == "FAILED"]
    assert len(failed) == 1, [c.reason for c in failed]
    f = failed[0]
    assert f"worker on {killed['label']} (pid {killed['pid']}) was killed by signal 9 (SIGKILL)" in f.reason
    assert f.device_info["pid"] == killed["pid"]
    assert f.params == next(c.params for c in record.cases if c.case_id == killed["after"])  # the same point
    assert sum(1 for c in record.cases if c.status == "OK") == 72 - 24 - 1
    # resume has nothing left to do: every case has a status
    res = _run(["--resume", "latest", "--results-dir", str(runs), "--gpus", "2"])
    assert "0 to go" in res.output
    assert store.load_run(store.resolve_run("latest", runs)).status == "complete"
    # --retry-failed runs the FAILED case again; its new record replaces the old one
    res = _run(["--resume", "latest", "--results-dir", str(runs), "--gpus", "2", "--retry-failed"])
    assert res.exit_code == 0, res.output
    assert "1 to go (1 FAILED to run again)" in " ".join(res.output.split())
    again = store.load_run(store.resolve_run("latest", runs))
    assert again.status == "complete" and len(again.cases) == 72
    redone = next(c for c in again.cases if c.case_id == f.case_id)
    assert redone.status == "OK" and redone.device_info["pid"] != killed["pid"]
    assert [c.case_id for c in again.cases] == [c.case_id for c in record.cases]  # same order as before


def test_retry_failed_needs_resume(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--retry-failed", "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--retry-failed goes with --resume" in res.output
    assert not (tmp_path / "r").exists()


def test_prestarted_workers_not_adopted_are_stopped_and_leave_nothing(tmp_path: Path, fake_gpus) -> None:
    from normbench.executors import local

    pre = local.prestart(resolve_devices("all"), tmp_path)
    slots = list(pre.slots.values())
    ready = set()
    deadline = time.monotonic() + 120
    while len(ready) < 2 and time.monotonic() < deadline:  # they set their devices up before any run exists
        slot, kind, payload = pre.events.get(timeout=120)
        assert kind == "ready", payload
        ready.add(payload["label"])
    assert ready == {"fake:0", "fake:1"}
    pids = [s.proc.pid for s in slots]
    pre.close()
    for s in slots:
        s.proc.wait(timeout=30)
    assert not any(_alive(p) for p in pids)
    assert not (tmp_path / ".workers").exists()


def test_a_bad_suite_stops_the_prestarted_workers(tmp_path: Path, fake_gpus, monkeypatch) -> None:
    from normbench.executors import local

    started: list[Any] = []
    real = local.prestart

    def spy(devices, results_dir, warm=None):
        pre = real(devices, results_dir, warm)
        started.extend(s.proc for s in pre.slots.values())
        return pre

    monkeypatch.setattr(local, "prestart", spy)
    res = _run([str(_suite(tmp_path)), "--results-dir", str(tmp_path / "r"), "--gpus", "all",
                "--filter", "provider=nothing_matches"])
    assert res.exit_code == 2 and "--filter provider=nothing_matches: unknown provider 'nothing_matches'" in res.output
    assert len(started) == 2
    for proc in started:
        assert proc.wait(timeout=30) is not None


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_resume_with_gpus_completes(tmp_path: Path, fake_gpus, serial_record) -> None:
    runs = tmp_path / "runs"
    suite = _suite(tmp_path)
    env = {**os.environ, FAKE_GPUS_ENV: "2", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "normbench.cli", "run", str(suite), "--results-dir", str(runs),
                             "--gpus", "all", "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(r["status"] == "OK" for r in _journal_records(runs)) < 2:
        time.sleep(0.01)
    pids = {r["device_info"]["pid"] for r in _journal_records(runs) if r.get("device_info")}
    proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the parent
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "--resume" in out
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.status == "interrupted" and 12 + 1 <= len(record.cases) < 36
    time.sleep(0.2)
    assert pids and not any(_alive(p) for p in pids), "workers outlived the parent"

    res = _run(["--resume", "latest", "--results-dir", str(runs), "--gpus", "all"])
    assert res.exit_code == 0, res.output
    final = store.load_run(store.resolve_run("latest", runs))
    assert final.status == "complete"
    assert sorted(_shape(final)) == sorted(_shape(serial_record))


# --------------------------------------------------------------------------- Ray in local mode
def _ray():
    try:
        import ray as _ray
    except ImportError:
        pytest.skip("ray is not installed: pip install 'normbench[ray]' (CI installs it with the test extra)")
    return _ray


@pytest.fixture(scope="module")
def ray_local():
    r = _ray()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    r.init(num_cpus=2, resources={"fake_gpu": 2, "accelerator_type:FAKE100": 1}, include_dashboard=False,
           log_to_driver=False, configure_logging=False)
    yield r
    r.shutdown()


@pytest.fixture
def ray_fake_gpu(ray_local, monkeypatch):
    monkeypatch.setenv(RAY_RESOURCE_ENV, "fake_gpu")
    return ray_local


@pytest.mark.slow  # ~6 s: ~2 s, plus starting Ray for the module
def test_ray_run_is_the_serial_record_but_for_devices(tmp_path: Path, ray_fake_gpu, serial_record) -> None:
    res = _run([str(_suite(tmp_path)), "--results-dir", str(tmp_path / "runs"), "--executor", "ray"])
    assert res.exit_code == 0, res.output
    record = store.load_run(store.resolve_run("latest", tmp_path / "runs"))
    assert record.status == "complete"
    assert _shape(record) == _shape(serial_record)
    ran = [c for c in record.cases if c.status == "OK"]
    assert {c.device_info["label"] for c in ran} == {"fake_gpu:0", "fake_gpu:1"}
    for c in ran:
        assert c.metrics["pct_peak"].value == pytest.approx(
            100 * c.metrics["gbps"].value / c.device_info["peak_bandwidth_gbps"], rel=0.01)


def test_ray_accelerator_type_counts_only_that_gpu_type(ray_fake_gpu) -> None:
    from normbench.executors.ray_executor import available

    assert available(ray_fake_gpu, "fake_gpu") == 2
    assert available(ray_fake_gpu, "fake_gpu", "FAKE100") == 2
    with pytest.raises(NormbenchError, match="no node of the Ray cluster has that GPU type.*types there: FAKE100"):
        available(ray_fake_gpu, "fake_gpu", "H100")


def test_ray_run_on_one_accelerator_type(tmp_path: Path, ray_fake_gpu, serial_record) -> None:
    res = _run([str(_suite(tmp_path)), "--results-dir", str(tmp_path / "runs"), "--executor", "ray",
                "--accelerator-type", "FAKE100"])
    assert res.exit_code == 0, res.output
    record = store.load_run(store.resolve_run("latest", tmp_path / "runs"))
    assert _shape(record) == _shape(serial_record)


@pytest.mark.slow
def test_ray_killed_worker_then_interrupt_and_resume(tmp_path: Path, ray_fake_gpu, serial_record) -> None:
    runs = tmp_path / "runs"
    killed: dict[str, Any] = {}

    def chaos() -> None:  # kill one actor's process mid-point, later Ctrl-C the run
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            recs = _journal_records(runs)
            if not killed:
                for r in recs:
                    if r["provider"] == "torch_naive" and r["repeat"] == 0 and r["status"] == "OK":
                        killed.update(pid=r["device_info"]["pid"], label=r["device_info"]["label"])
                        os.kill(killed["pid"], signal.SIGKILL)
                        break
            elif sum(1 for r in recs if r["status"] != "SKIPPED") >= 12:
                _thread.interrupt_main()  # Ctrl-C in the parent
                return
            time.sleep(0.005)

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    res = _run([str(_suite(tmp_path, 0.05)), "--results-dir", str(runs), "--executor", "ray", "--repeat", "2"])
    t.join()
    assert killed, "no actor was killed"
    assert res.exit_code == 130, res.output
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.status == "interrupted"
    failed = [c for c in record.cases if c.status == "FAILED"]
    assert len(failed) == 1 and "Ray worker on" in failed[0].reason and failed[0].device_info["pid"] == killed["pid"]
    assert len(record.cases) < 72

    res = _run(["--resume", "latest", "--results-dir", str(runs), "--executor", "ray"])
    assert res.exit_code == 1, res.output  # the killed case stays FAILED
    final = store.load_run(store.resolve_run("latest", runs))
    assert final.status == "complete" and len(final.cases) == final.planned == 72
    assert [c.status for c in final.cases].count("FAILED") == 1
    assert sum(1 for c in final.cases if c.status == "OK") == 72 - 24 - 1
