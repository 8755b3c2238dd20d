"""Measurement conditions (issue 14, item 2) on the CPU, with a fake NVML: the values and decoded
throttle reasons a snapshot reads, the throttled flag (power/thermal yes; idle and clock settings
no), NVML absent, ``--lock-clocks`` (locked, refused, reset on an exception and on Ctrl-C), the
kernel runner putting the readings on its records, and compare's rule (throttled -> not comparable;
``--allow-throttled`` -> compared)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from normbench import compare as C
from normbench import conditions, store
from normbench.cli import app
from normbench.errors import NormbenchError
from normbench.report.compare_markdown import to_markdown
from normbench.report.compare_rich import render_rich
from normbench.store import CaseRecord, Metric, RunRecord, SuiteSnapshot

runner = CliRunner()

# NVML's error codes and reason bits (nvml.h), as the fake raises and reports them
NOT_SUPPORTED, NO_PERMISSION, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND = 3, 4, 12, 13
MESSAGES = {NOT_SUPPORTED: "Not Supported", NO_PERMISSION: "Insufficient Permissions",
            LIBRARY_NOT_FOUND: "NVML Shared Library Not Found", FUNCTION_NOT_FOUND: "Function Not Found"}
IDLE, APP_CLOCKS, SW_POWER_CAP, HW_SLOWDOWN, SYNC_BOOST = 0x1, 0x2, 0x4, 0x8, 0x10
SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE, DISPLAY = 0x20, 0x40, 0x80, 0x100


# --------------------------------------------------------------------------- a fake NVML
class FakeNVMLError(Exception):
    def __init__(self, value: int):
        self.value = value
        super().__init__(MESSAGES.get(value, f"NVML error {value}"))


@dataclass
class FakeGpu:
    """One GPU as the fake NVML reports it (mW, MHz, °C, reason bits), and what was done to it."""

    bus: str
    sm: int = 1980
    mem: int = 2619
    app_sm: int = 1755
    app_mem: int = 2619
    default_app_sm: int = 1755
    power_mw: int = 412_345
    limit_mw: int = 700_000
    temp: int = 47
    reasons: int = 0
    fail: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code it raises
    locked: tuple[int, int] | None = None
    resets: int = 0


def fake_nvml(gpus: list[FakeGpu], new_reasons: bool = True, init_error: int | None = None) -> types.ModuleType:
    """A ``pynvml`` stand-in over ``gpus`` (NVML index = list order; handles found by PCI bus id)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    by_bus = {g.bus: g for g in gpus}

    def api(name: str, fn: Any) -> None:
        def call(h: FakeGpu, *args: Any) -> Any:
            if name in h.fail:
                raise FakeNVMLError(h.fail[name])
            return fn(h, *args)
        setattr(m, name, call)

    def init() -> None:
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def by_pci(bus: str) -> FakeGpu:
        if bus not in by_bus:
            raise FakeNVMLError(6)  # NVML_ERROR_NOT_FOUND
        return by_bus[bus]

    m.nvmlInit = init
    m.nvmlDeviceGetHandleByPciBusId = by_pci
    api("nvmlDeviceGetClockInfo", lambda h, t: {1: h.sm, 2: h.mem, 0: h.sm}[t])
    api("nvmlDeviceGetApplicationsClock", lambda h, t: {0: h.app_sm, 2: h.app_mem}[t])
    api("nvmlDeviceGetClock", lambda h, t, i: {(0, 1): h.app_sm, (2, 1): h.app_mem, (0, 2): h.default_app_sm}[(t, i)])
    api("nvmlDeviceGetDefaultApplicationsClock", lambda h, t: h.default_app_sm)
    api("nvmlDeviceGetPowerUsage", lambda h: h.power_mw)
    api("nvmlDeviceGetEnforcedPowerLimit", lambda h: h.limit_mw)
    api("nvmlDeviceGetTemperature", lambda h, s: h.temp)
    api("nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: h.reasons)
    if new_reasons:
        api("nvmlDeviceGetCurrentClocksEventReasons", lambda h: h.reasons)

    def lock(h: FakeGpu, lo: int, hi: int) -> None:
        h.locked = (lo, hi)

    def reset(h: FakeGpu) -> None:
        h.locked = None
        h.resets += 1

    api("nvmlDeviceSetGpuLockedClocks", lock)
    api("nvmlDeviceResetGpuLockedClocks", reset)
    return m


BUS0, BUS1 = "00000000:3B:00.0", "00000000:18:00.0"


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch):
    """Install a fake NVML with two GPUs; CUDA device i is the GPU at ``BUSES[i]`` (here the reverse of
    NVML's order, as CUDA_VISIBLE_DEVICES or PCI ordering can make it)."""
    gpus = [FakeGpu(BUS1, sm=1410, temp=30), FakeGpu(BUS0)]
    buses = [BUS0, BUS1]

    def install(**kw: Any) -> types.ModuleType:
        mod = fake_nvml(gpus, **kw)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        conditions.forget()
        return mod

    install()
    monkeypatch.setattr(conditions, "_pci_bus_id", lambda i: buses[i])
    ns = types.SimpleNamespace(gpus=gpus, gpu=gpus[1], install=install)  # gpu: CUDA device 0
    yield ns
    conditions.forget()


# --------------------------------------------------------------------------- values and reasons
def test_a_snapshot_reads_the_gpu_cuda_device_0_is_by_pci_bus_id(nvml) -> None:
    nvml.gpu.reasons = IDLE | SW_POWER_CAP
    snap, why = conditions.capture(0)
    assert why is None and snap is not None
    assert snap.pci_bus_id == BUS0 and snap.sm_clock_mhz == 1980 and snap.temperature_c == 47  # not NVML's GPU 0
    assert (snap.mem_clock_mhz, snap.app_sm_clock_mhz, snap.app_mem_clock_mhz) == (2619, 1755, 2619)
    assert snap.power_w == 412.3 and snap.power_limit_w == 700.0  # mW -> W
    assert snap.throttle_reasons == ("gpu_idle", "sw_power_cap") and snap.thermal_or_power_throttled
    rec = snap.as_record()
    assert rec["throttle_reasons"] == ["gpu_idle", "sw_power_cap"] and rec["thermal_or_power_throttled"] is True
    assert "unread" not in rec and set(rec) <= set(store.ClockSnapshot.__annotations__)
    other, _ = conditions.capture(1)
    assert other.pci_bus_id == BUS1 and other.sm_clock_mhz == 1410 and other.temperature_c == 30


def test_every_reason_bit_decodes_and_unknown_bits_are_kept() -> None:
    everything = conditions.decode_reasons(0x1FF)
    assert everything == ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
                          "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
                          "display_clock_setting")
    assert conditions.decode_reasons(0) == ()
    assert conditions.decode_reasons(0x800 | SW_THERMAL) == ("sw_thermal_slowdown", "0x800")


@pytest.mark.parametrize("mask, throttled", [
    (SW_POWER_CAP, True), (HW_SLOWDOWN, True), (SW_THERMAL, True), (HW_THERMAL, True), (HW_POWER_BRAKE, True),
    (IDLE | SW_POWER_CAP, True),
    (0, False), (IDLE, False), (APP_CLOCKS, False), (SYNC_BOOST, False), (DISPLAY, False),
    (IDLE | APP_CLOCKS | SYNC_BOOST | DISPLAY, False), (0x800, False),
])
def test_only_power_and_thermal_reasons_are_throttling(nvml, mask: int, throttled: bool) -> None:
    nvml.gpu.reasons = mask
    reader, _ = conditions.open_reader(0)
    sample = reader.sample()
    assert sample.thermal_or_power_throttled is throttled
    assert sample.as_record()["thermal_or_power_throttled"] is throttled
    assert reader.snapshot().thermal_or_power_throttled is throttled


def test_older_and_newer_nvml_names_are_both_read(nvml) -> None:
    nvml.gpu.reasons = HW_THERMAL
    nvml.install(new_reasons=False)  # a pynvml before 12.535: only ...ThrottleReasons
    reader, _ = conditions.open_reader(0)
    assert reader.sample().throttle_reasons == ("hw_thermal_slowdown",)
    nvml.install()  # the binding has the new name, the driver does not
    nvml.gpu.fail["nvmlDeviceGetCurrentClocksEventReasons"] = FUNCTION_NOT_FOUND
    nvml.gpu.fail["nvmlDeviceGetApplicationsClock"] = FUNCTION_NOT_FOUND  # deprecated: nvmlDeviceGetClock instead
    reader, _ = conditions.open_reader(0)
    snap = reader.snapshot()
    assert snap.throttle_reasons == ("hw_thermal_slowdown",) and snap.app_sm_clock_mhz == 1755
    assert snap.unread == {}


def test_a_field_the_gpu_does_not_report_is_left_out_and_named(nvml) -> None:
    nvml.gpu.fail["nvmlDeviceGetPowerUsage"] = NOT_SUPPORTED
    nvml.gpu.fail["nvmlDeviceGetCurrentClocksEventReasons"] = NOT_SUPPORTED  # a real refusal: no fallback
    snap, _ = conditions.capture(0)
    assert snap.power_w is None and snap.power_limit_w == 700.0 and snap.sm_clock_mhz == 1980
    assert snap.unread == {"power_w": "Not Supported", "throttle_reasons": "Not Supported"}
    rec = snap.as_record()
    assert "power_w" not in rec and "throttle_reasons" not in rec and "thermal_or_power_throttled" not in rec
    assert rec["unread"]["power_w"] == "Not Supported"
    sample = conditions.open_reader(0)[0].sample()
    assert sample.as_record() == {"sm_clock_mhz": 1980, "unread": {"throttle_reasons": "Not Supported"}}


def test_no_nvml_gives_none_with_the_reason(nvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    conditions.forget()
    snap, why = conditions.capture(0)
    assert snap is None and why == "pynvml not installed (pip install nvidia-ml-py)"
    nvml.install(init_error=LIBRARY_NOT_FOUND)  # installed, no driver (a CPU machine)
    snap, why = conditions.capture(0)
    assert snap is None and why == "NVML unavailable: NVML Shared Library Not Found"
    probe = conditions.stage_probe("cuda", 0)
    probe.start()
    assert probe.sample() is None
    assert probe.fields(first=True, last=True) == {"unavailable": why}
    assert probe.fields(first=False, last=True) == {}
    assert conditions.stage_probe("cpu").fields(first=True, last=True) == {}  # a CPU stage: nothing to say


def test_a_device_nvml_does_not_list_gives_the_reason(nvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conditions, "_pci_bus_id", lambda i: "00000000:99:00.0")
    monkeypatch.setattr(conditions, "_uuid", lambda i: None)
    snap, why = conditions.capture(0)
    assert snap is None and why.startswith("cuda:0 not found in NVML (PCI bus id 00000000:99:00.0:")


def test_the_pci_bus_id_comes_from_torch_device_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    props = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0, uuid="1234-abcd")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    assert conditions._pci_bus_id(0) == BUS0
    assert conditions._uuid(0) == "GPU-1234-abcd"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid="x"))
    assert conditions._pci_bus_id(0) is None  # an older torch: the UUID is tried next


def test_the_nvml_installed_here_never_raises() -> None:
    """Whatever this machine has (pynvml or not, a driver or not): a snapshot or a reason, never an exception."""
    import torch

    conditions.forget()
    snap, why = conditions.capture(0)
    conditions.forget()
    if torch.cuda.is_available():
        assert snap is not None and snap.sm_clock_mhz and why is None
    else:
        assert snap is None and isinstance(why, str) and why


# --------------------------------------------------------------------------- --lock-clocks
def test_lock_clocks_locks_to_the_base_clock_and_resets(nvml) -> None:
    nvml.gpu.default_app_sm = 1755
    lock = conditions.ClockLock([0]).acquire()
    assert nvml.gpu.locked == (1755, 1755) and nvml.gpus[0].locked is None  # cuda:0 only, by bus id
    assert lock.status == "locked" and "locked at 1755 MHz" in lock.message()
    assert lock.environment() == {"clocks.lock": "locked", "clocks.locked_sm_mhz": 1755}
    lock.release()
    lock.release()  # idempotent
    assert nvml.gpu.locked is None and nvml.gpu.resets == 1
    assert lock.environment()["clocks.lock_reset"] is True


def test_lock_clocks_is_reset_when_the_run_raises(nvml) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with conditions.ClockLock([0, 1]):
            assert nvml.gpu.locked == (1755, 1755) and nvml.gpus[0].locked == (1755, 1755)
            raise RuntimeError("boom")
    assert nvml.gpu.locked is None and nvml.gpus[0].locked is None and nvml.gpu.resets == 1


@pytest.mark.parametrize("code, words", [(NO_PERMISSION, "no permission"), (NOT_SUPPORTED, "does not support")])
def test_a_refused_lock_is_recorded_and_nothing_is_reset(nvml, code: int, words: str) -> None:
    nvml.gpu.fail["nvmlDeviceSetGpuLockedClocks"] = code
    lock = conditions.ClockLock([0]).acquire()
    assert lock.status == "refused" and words in lock.note and "not locked" in lock.message()
    lock.release()
    assert nvml.gpu.resets == 0
    env = lock.environment()
    assert env["clocks.lock"] == "refused" and words in env["clocks.lock_note"] and "clocks.lock_reset" not in env


def test_one_gpu_refusing_is_partly_locked(nvml) -> None:
    nvml.gpus[0].fail["nvmlDeviceSetGpuLockedClocks"] = NO_PERMISSION
    lock = conditions.ClockLock([0, 1]).acquire()
    assert lock.status == "partly locked" and "1 of 2 GPUs not locked" in lock.note
    lock.release()
    assert nvml.gpu.resets == 1 and nvml.gpus[0].resets == 0


def test_lock_clocks_without_nvml_is_recorded(nvml) -> None:
    nvml.install(init_error=LIBRARY_NOT_FOUND)
    lock = conditions.ClockLock([0]).acquire()
    assert lock.status == "unavailable" and "NVML Shared Library Not Found" in lock.note
    lock.release()
    assert lock.environment() == {"clocks.lock": "unavailable",
                                  "clocks.lock_note": "NVML unavailable: NVML Shared Library Not Found"}


SUITE = """\
name: cond
stages:
  - kind: kernel
    op: rms_norm
    providers: [torch_naive, torch_rms_norm]
    sweep: {num_tokens: [1, 7], hidden_size: [96], dtype: [float32]}
    timing: {min_run_time_s: 0.001}
"""


def _suite(tmp_path: Path) -> Path:
    f = tmp_path / "cond.yaml"
    f.write_text(SUITE)
    return f


def test_run_lock_clocks_records_the_lock_and_resets_it(nvml, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(runs), "--no-progress",
                              "--lock-clocks", "--filter", "num_tokens=1"])
    assert res.exit_code == 0, res.output
    assert "SM clock locked at 1755 MHz" in res.output
    assert nvml.gpu.locked is None and nvml.gpu.resets == 1
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.environment["clocks.lock"] == "locked" and record.environment["clocks.locked_sm_mhz"] == 1755
    assert record.environment["clocks.lock_reset"] is True
    res = runner.invoke(app, ["show", "latest", "--results-dir", str(runs)])
    assert res.exit_code == 0 and "clocks: SM locked at 1755 MHz (base clock, --lock-clocks); reset after the run" \
        in " ".join(res.output.split())


def test_run_lock_clocks_refused_goes_on(nvml, tmp_path: Path) -> None:
    nvml.gpu.fail["nvmlDeviceSetGpuLockedClocks"] = NO_PERMISSION
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(runs), "--no-progress",
                              "--lock-clocks", "--filter", "num_tokens=1"])
    assert res.exit_code == 0, res.output
    assert "--lock-clocks: not locked (refused: no permission" in " ".join(res.output.split())
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.status == "complete" and {c.status for c in record.cases} == {"OK"}
    assert record.environment["clocks.lock"] == "refused" and "no permission" in record.environment["clocks.lock_note"]
    res = runner.invoke(app, ["show", "latest", "--results-dir", str(runs)])
    assert "not locked, --lock-clocks refused: no permission" in " ".join(res.output.split())


def test_run_lock_clocks_is_reset_on_ctrl_c(nvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from normbench.cli import run as cli_run

    def interrupted(*a: Any, **k: Any) -> None:
        assert nvml.gpu.locked == (1755, 1755)  # locked while the cases run
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_run, "_execute", interrupted)
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(runs), "--no-progress",
                              "--lock-clocks"])
    assert res.exit_code == 130, res.output
    assert nvml.gpu.locked is None and nvml.gpu.resets == 1
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.status == "interrupted" and record.environment["clocks.lock_reset"] is True


def test_run_without_lock_clocks_touches_no_clock(nvml, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(runs), "--no-progress",
                              "--filter", "num_tokens=1"])
    assert res.exit_code == 0, res.output
    assert nvml.gpu.locked is None and nvml.gpu.resets == 0
    record = store.load_run(store.resolve_run("latest", runs))
    assert not any(k.startswith("clocks.") for k in record.environment)
    assert all(c.conditions is None for c in record.cases)  # a CPU stage reads no GPU


# --------------------------------------------------------------------------- the kernel runner
def test_the_kernel_runner_records_the_stage_and_every_timed_case(nvml, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's CPU path with a probe over the fake GPU: what a GPU stage records."""
    readings: list[str] = []
    real_sample = conditions.Reader.sample

    def sample(self):  # throttled while the torch_rms_norm cases are timed (the second provider of each point)
        readings.append("sample")
        nvml.gpu.reasons = SW_POWER_CAP if len(readings) % 2 == 0 else IDLE
        return real_sample(self)

    monkeypatch.setattr(conditions.Reader, "sample", sample)
    monkeypatch.setattr(conditions, "stage_probe", lambda device, index=0: conditions.StageProbe(
        *conditions.open_reader(0)))
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(runs), "--no-progress"])
    assert res.exit_code == 0, res.output
    record = store.load_run(store.resolve_run("latest", runs))
    cases = record.cases
    assert [c.provider for c in cases] == ["torch_naive", "torch_rms_norm"] * 2 and len(readings) == 4
    first, last = cases[0].conditions, cases[-1].conditions
    assert first["stage_before"]["pci_bus_id"] == BUS0 and first["stage_before"]["sm_clock_mhz"] == 1980
    assert "stage_after" not in first and "stage_before" not in last
    assert last["stage_after"]["power_w"] == 412.3 and last["stage_after"]["at"] >= first["stage_before"]["at"]
    assert all("stage_before" not in c.conditions and "stage_after" not in c.conditions for c in cases[1:-1])
    flags = [(c.provider, c.conditions["thermal_or_power_throttled"]) for c in cases]
    assert flags == [("torch_naive", False), ("torch_rms_norm", True)] * 2
    assert cases[1].conditions["throttle_reasons"] == ["sw_power_cap"] and cases[1].conditions["sm_clock_mhz"] == 1980
    # show: one line per stage (before -> after), and the throttled cases named
    res = runner.invoke(app, ["show", "latest", "--results-dir", str(runs)], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "rms_norm: SM 1980 MHz, 412/700 W, 47 °C → SM 1980 MHz, 412/700 W, 47 °C, sw_power_cap" in text
    assert "rms_norm: 2 of 4 timed cases throttled (sw_power_cap): torch_rms_norm 1x96, torch_rms_norm 7x96" in text
    md = runner.invoke(app, ["show", "latest", "--results-dir", str(runs), "--format", "markdown"]).output
    assert "**Measurement conditions**" in md and "- ⚠ rms_norm: 2 of 4 timed cases throttled" in md


# --------------------------------------------------------------------------- records
def test_conditions_round_trip_through_a_stored_run(tmp_path: Path) -> None:
    snap = conditions.Snapshot(at="2026-01-01T00:00:00.000Z", pci_bus_id=BUS0, sm_clock_mhz=1755, power_w=300.5,
                               power_limit_w=700.0, temperature_c=50, reasons_mask=APP_CLOCKS,
                               unread={"mem_clock_mhz": "Not Supported"})
    sample = conditions.CaseSample(HW_SLOWDOWN, 1605)
    cond = {**sample.as_record(), "stage_before": snap.as_record(), "stage_after": snap.as_record()}
    assert set(cond) <= set(store.CaseConditions.__annotations__)
    w = store.create_run(tmp_path, "n", SuiteSnapshot(name="n", path="p", sha256="0", spec={}), {}, ["nb"], 1)
    w.add(_case(0, [1.0, 1.1], conditions=cond))
    w.finish("complete")
    back = store.load_run(w.dir).cases[0]
    assert back.conditions == cond and back.conditions["thermal_or_power_throttled"] is True
    assert back.conditions["stage_before"]["throttle_reasons"] == ["applications_clocks_setting"]
    assert back.conditions["stage_before"]["thermal_or_power_throttled"] is False


def test_a_damaged_conditions_field_is_refused(tmp_path: Path) -> None:
    w = store.create_run(tmp_path, "n", SuiteSnapshot(name="n", path="p", sha256="0", spec={}), {}, ["nb"], 1)
    w.add(_case(0, [1.0], conditions={"sm_clock_mhz": 1755}))
    w.finish("complete")
    data = json.loads((w.dir / store.RUN_FILE).read_text())
    data["cases"][0]["conditions"]["stage_before"] = {"at": "t", "sm_clock": 1}
    (w.dir / store.RUN_FILE).write_text(json.dumps(data))
    with pytest.raises(NormbenchError, match=r"case 0 \(.*\): conditions\.stage_before\.sm_clock is not a field"):
        store.load_run(w.dir)


# --------------------------------------------------------------------------- compare
FP = "s/rms_norm/triton/-/num_tokens=1,hidden_size=8"


def _case(repeat: int, samples: list[float], throttled: bool | None = None, reasons: list[str] | None = None,
          **kw: Any) -> CaseRecord:
    if throttled is not None:
        kw["conditions"] = {"throttle_reasons": reasons if reasons is not None else (["sw_power_cap"] if throttled
                                                                                     else []),
                            "thermal_or_power_throttled": throttled, "sm_clock_mhz": 1500 if throttled else 1980}
    return CaseRecord(case_id=f"{FP}#{repeat}", fingerprint=FP, stage="s", kind="kernel", op="rms_norm",
                      provider="triton", params={"num_tokens": 1, "hidden_size": 8}, repeat=repeat, status="OK",
                      metrics={"time_us": Metric(value=sorted(samples)[len(samples) // 2], unit="us",
                                                 higher_is_better=False, samples=samples),
                               "gbps": Metric(value=1.0 / samples[0], unit="GB/s", higher_is_better=True,
                                              derived_from="time_us")}, **kw)


def _run(run_id: str, cases: list[CaseRecord], env: dict | None = None) -> RunRecord:
    return RunRecord(run_id=run_id, name="t", created_at="2026-01-01T00:00:00Z", suite=SuiteSnapshot(
        name="t", path="t.yaml", sha256="0", spec={}), environment=env or {}, cases=cases)


BASE = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00, 1.01, 0.99, 1.00]
SLOW = [x * 1.5 for x in BASE]


def test_a_throttled_case_is_not_comparable() -> None:
    a = _run("a", [_case(0, BASE, throttled=False)])
    b = _run("b", [_case(0, SLOW, throttled=True)])
    cmp = C.compare(a, [b])
    assert len(cmp.rows) == 1  # one row for the case, not one per metric
    row = cmp.rows[0]
    assert row.status == C.THROTTLED and row.verdict is None and not row.compared
    assert row.base_value == pytest.approx(1.0) and row.cand_value == pytest.approx(1.5) and row.delta_pct is None
    assert row.status_text(short=True) == "throttled (cand)"
    assert row.status_text() == "not comparable: throttled in candidate"
    assert row.reason == "candidate: throttled (sw_power_cap)"
    s = cmp.summary("b", "s")
    assert (s.counts, s.compared, s.not_compared, s.throttled) == ({}, 0, 0, 1)
    assert "1 throttled, not compared (--allow-throttled)" in s.line()
    assert C.check_gates(cmp, C.parse_fail_on("time_us:+5%")) == []  # 50% slower, but throttled: no verdict


def test_allow_throttled_compares_it_with_a_note() -> None:
    a = _run("a", [_case(0, BASE, throttled=False)])
    b = _run("b", [_case(0, SLOW, throttled=True)])
    cmp = C.compare(a, [b], C.CompareOptions(allow_throttled=True))
    rows = {r.metric: r for r in cmp.rows}
    t = rows["time_us"]
    assert t.compared and t.verdict == "slower" and t.delta_pct == pytest.approx(50, abs=1)
    assert "compared though throttled (--allow-throttled): candidate: throttled (sw_power_cap)" in t.note
    assert rows["gbps"].verdict == "slower"
    assert cmp.summary("b", "s").throttled == 0
    assert len(C.check_gates(cmp, C.parse_fail_on("time_us:+5%"))) == 1


def test_idle_or_clock_settings_are_not_throttling_and_old_records_compare() -> None:
    a = _run("a", [_case(0, BASE, throttled=False, reasons=["gpu_idle", "applications_clocks_setting"])])
    b = _run("b", [_case(0, SLOW, throttled=False, reasons=["applications_clocks_setting"])])
    row = next(r for r in C.compare(a, [b]).rows if r.metric == "time_us")
    assert row.compared and row.verdict == "slower"
    old = _run("old", [_case(0, SLOW)])  # a record from before conditions existed
    row = next(r for r in C.compare(a, [old]).rows if r.metric == "time_us")
    assert row.compared and row.verdict == "slower" and row.note is None


def test_one_throttled_repeat_makes_the_case_throttled_on_that_side() -> None:
    a = _run("a", [_case(i, BASE, throttled=(i == 2), reasons=["hw_thermal_slowdown"] if i == 2 else [])
                   for i in range(3)])
    b = _run("b", [_case(i, BASE, throttled=False) for i in range(3)])
    row = C.compare(a, [b]).rows[0]
    assert row.status == C.THROTTLED and row.extra["throttled"] == "baseline"
    assert row.reason == "baseline: 1 of 3 repeats throttled (hw_thermal_slowdown)"
    assert row.status_text(short=True) == "throttled (base)"
    both = C.compare(a, [a]).rows[0]
    assert both.extra["throttled"] == "both" and both.status_text(short=True) == "throttled (both)"


def test_a_status_beats_throttling() -> None:
    """OK (throttled) in the baseline, INCORRECT in the candidate: the status row, and the gate still fails it."""
    a = _run("a", [_case(0, BASE, throttled=True)])
    bad = CaseRecord(case_id=f"{FP}#0", fingerprint=FP, stage="s", kind="kernel", op="rms_norm", provider="triton",
                     params={"num_tokens": 1, "hidden_size": 8}, status="INCORRECT", reason="wrong")
    cmp = C.compare(a, [_run("b", [bad])])
    assert cmp.rows[0].status == C.NOT_OK and len(C.check_gates(cmp, C.parse_fail_on("median:+5%"))) == 1


def _rich(cmp: C.Comparison, width: int) -> str:
    buf = StringIO()
    render_rich(cmp, Console(file=buf, width=width, color_system=None, highlight=False))
    return buf.getvalue()


def test_throttled_rows_render_at_80_columns_and_in_markdown() -> None:
    a = _run("base-20260101T000000Z-aaaaaa", [_case(0, BASE, throttled=False)], env={"clocks.lock": "locked",
                                                                                     "clocks.locked_sm_mhz": 1755})
    b = _run("cand-20260101T000000Z-bbbbbb", [_case(0, SLOW, throttled=True)])
    cmp = C.compare(a, [b])
    text = _rich(cmp, 80)
    assert all(cell_len(line) <= 80 for line in text.splitlines()), text
    assert "throttled (cand)" in text and "…" not in text
    assert "triton 1x8: throttled, not compared" not in text  # the short notes under a rich table
    assert "triton 1x8: candidate: throttled (sw_power_cap)" in " ".join(text.split())
    assert "1 throttled, not compared" in text
    md = to_markdown(cmp)
    assert "_not comparable: throttled in candidate_" in md
    assert "- triton 1x8: throttled, not compared: candidate: throttled (sw_power_cap)" in md
    assert "Throttled: NVML reported power or thermal throttling" in md
    assert "SM clock locked at 1755 MHz" in md  # the baseline's environment line


def test_the_environment_section_shows_differing_conditions() -> None:
    base_cond = {"stage_before": {"at": "1", "sm_clock_mhz": 345, "power_limit_w": 700.0}}
    a = _run("a", [_case(0, BASE, throttled=False),
                   _case(1, BASE, conditions={**base_cond, "sm_clock_mhz": 1980, "throttle_reasons": [],
                                              "thermal_or_power_throttled": False})],
             env={"clocks.lock": "locked", "clocks.locked_sm_mhz": 1755})
    b = _run("b", [_case(0, SLOW, throttled=True), _case(1, SLOW, throttled=False)])
    summary = conditions.run_summary(a)
    assert summary == {"conditions.sm_clock_mhz": 1980, "conditions.throttled_cases": 0,
                       "conditions.power_limit_w": 700.0}
    diffs = {d.key: (d.baseline, d.candidates["b"]) for d in C.compare(a, [b]).env_diffs}
    assert diffs["clocks.lock"] == ("locked", None) and diffs["clocks.locked_sm_mhz"] == (1755, None)
    assert diffs["conditions.throttled_cases"] == (0, 1) and diffs["conditions.sm_clock_mhz"] == (1980, 1740)
    keys = list(diffs)
    assert keys.index("clocks.lock") < keys.index("conditions.sm_clock_mhz")
    assert conditions.run_summary(_run("cpu", [_case(0, BASE)])) == {}  # nothing recorded: no rows


def test_compare_cli_allow_throttled(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for rid, samples, thr in (("t-20260101T000000Z-aaaaaa", BASE, False), ("t-20260102T000000Z-bbbbbb", SLOW, True)):
        w = store.RunWriter(_run(rid, []), runs / rid)
        w.add(_case(0, samples, throttled=thr))
        w.finish("complete")
    args = ["compare", "t-20260101T000000Z-aaaaaa", "t-20260102T000000Z-bbbbbb", "--results-dir", str(runs)]
    res = runner.invoke(app, [*args, "-f", "json", "--fail-on", "time_us:+5%"])
    assert res.exit_code == 0, res.output
    assert "1 throttled case not gated" in res.output
    data = json.loads(res.output[: res.output.rindex("}") + 1])
    assert [r["status"] for r in data["rows"]] == [C.THROTTLED]
    res = runner.invoke(app, [*args, "-f", "json", "--fail-on", "time_us:+5%", "--allow-throttled"])
    assert res.exit_code == 1 and "regression" in res.output
