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
    FAKE_GPUS_ENV, RAY_RESOURCE_ENV, Device, WorkUnit, kernel_units, plan_order, resolve_devices, resolve_options,
)
from normbench.executors.pool import Scheduler, Slot
from normbench.expand import Case

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

    def spy(devices, results_dir):
        pre = real(devices, results_dir)
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
