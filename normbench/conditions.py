"""Measurement conditions: the GPU's clocks, power, temperature and throttle reasons, from NVML.

A kernel's time depends on the clock it ran at. Boost clocks move with power and
temperature, and a GPU that hits its power cap or a thermal limit slows down in the
middle of a sweep, so a "slower" between two runs can be the GPU's, not the code's.
This module reads what the driver reports, through NVIDIA's NVML bindings
(``pynvml``, the ``nvidia-ml-py`` distribution; imported lazily, so nothing else
needs it), and writes it on the run's records:

* **per kernel stage**, before and after it: ``Snapshot`` (SM and memory clocks,
  the applications clocks, power draw and the enforced power limit, temperature,
  the throttle reasons). A stage is one call of the kernel runner: a whole stage in
  a serial run, one sweep point in a parallel worker (the process that ran the
  cases reads its own GPU). The first case such a call records carries
  ``conditions.stage_before``, the last ``conditions.stage_after``;
* **per timed case**, right after its samples: ``CaseSample`` (the throttle
  reasons and the SM clock: two NVML calls). A case sampled while the GPU reported
  thermal or power throttling is flagged ``thermal_or_power_throttled``;
  ``normbench compare`` does not compare it unless ``--allow-throttled``
  (``normbench.compare``). This is a point sample at the end of the samples, not
  an integral over them: a throttle that began and ended within the samples is
  not seen;
* **per run**, with ``normbench run --lock-clocks``: ``ClockLock`` locks the SM
  clock of the run's GPUs to their base clock and resets it afterwards; its
  outcome, a refusal included, is in the run's environment (``clocks.*``).

Throttle reasons are NVML's clocks-event reasons (``nvmlDeviceGetCurrentClocksEventReasons``;
before NVML 12.535 ``nvmlDeviceGetCurrentClocksThrottleReasons``, same bits), decoded
to names (``REASON_BITS``). Only the power and thermal ones count as throttling
(``THROTTLING``): ``gpu_idle``, ``applications_clocks_setting``, ``sync_boost`` and
``display_clock_setting`` say why the clock is where it is, not that the GPU was
held back mid-measurement. The per-run and per-stage readers work on NVIDIA
datacenter and consumer GPUs alike; a field a board does not report is left out and
named in ``unread``.

Nothing here raises into a run: where NVML is missing (no ``pynvml``, no driver, a
CPU machine) or fails, readers are None with the reason, and a read that fails
leaves its field out. The functions that read records (``run_summary``,
``show_lines``) are pure: ``compare`` and ``show`` use them without NVML or torch.

Sources: NVML API reference, "Device Queries" (``nvmlDeviceGetClockInfo``,
``nvmlDeviceGetApplicationsClock``, ``nvmlDeviceGetPowerUsage`` [mW],
``nvmlDeviceGetEnforcedPowerLimit`` [mW], ``nvmlDeviceGetTemperature`` [°C],
"ClocksEventReasons" bit masks) and "Device Commands" (``nvmlDeviceSetGpuLockedClocks``,
``nvmlDeviceResetGpuLockedClocks``); the same bits ``nvidia-smi -q -d PERFORMANCE`` prints.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

#: NVML's clocks-event (throttle) reason bits and their names in records, in bit order.
REASON_BITS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
#: The reasons that mean the GPU was held back by power or heat: a case sampled under one is
#: "throttled". ``hw_slowdown`` is the hardware's slowdown for temperature or power-supply events
#: (NVML: "HW Slowdown ... temperature being too high, External Power Brake Assertion, power
#: draw too high"); the others say so in their names.
THROTTLING = frozenset({"sw_power_cap", "hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
                        "sw_thermal_slowdown"})

#: pynvml constants used here (their values are NVML's ABI; the fake NVML of the tests has them too).
_CLOCK_GRAPHICS, _CLOCK_SM, _CLOCK_MEM = 0, 1, 2
_CLOCK_ID_APP_CLOCK_TARGET, _CLOCK_ID_APP_CLOCK_DEFAULT = 1, 2
_TEMPERATURE_GPU = 0
_ERROR_NOT_SUPPORTED, _ERROR_NO_PERMISSION, _ERROR_FUNCTION_NOT_FOUND = 3, 4, 13

INSTALL_HINT = "pip install nvidia-ml-py"


def decode_reasons(mask: int) -> tuple[str, ...]:
    """NVML's clocks-event reason bit mask -> names, in bit order (``REASON_BITS``); a bit this
    normbench does not name is kept as ``0x...``. ``0`` (no reason: running at the target clock) -> ``()``."""
    names = [name for bit, name in REASON_BITS if mask & bit]
    unknown = mask & ~sum(bit for bit, _ in REASON_BITS)
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(f"0x{bit:x}")
            unknown &= ~bit
        bit <<= 1
    return tuple(names)


def is_throttling(reasons: Iterable[str]) -> bool:
    """Whether ``reasons`` (names) include a power or thermal one (``THROTTLING``)."""
    return any(r in THROTTLING for r in reasons)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- what is read
class _ThrottleReasons:
    """``reasons_mask`` (NVML's clocks-event reason bits, None: not read) in words, for the
    readings that carry one (``Snapshot``, ``CaseSample``)."""

    reasons_mask: int | None

    @property
    def throttle_reasons(self) -> tuple[str, ...]:
        """The reasons decoded (``decode_reasons``); empty when none or not read."""
        return decode_reasons(self.reasons_mask) if self.reasons_mask is not None else ()

    @property
    def thermal_or_power_throttled(self) -> bool:
        """Power or thermal throttling reported (``THROTTLING``); idle and clock settings are not."""
        return is_throttling(self.throttle_reasons)

    def reason_fields(self) -> dict[str, Any]:
        """``throttle_reasons`` and ``thermal_or_power_throttled`` for a record (none when not read)."""
        if self.reasons_mask is None:
            return {}
        return {"throttle_reasons": list(self.throttle_reasons),
                "thermal_or_power_throttled": self.thermal_or_power_throttled}


@dataclass(frozen=True)
class Snapshot(_ThrottleReasons):
    """The GPU's state at one moment (before or after a kernel stage).

    Attributes:
        at: UTC time of the reading (ISO 8601, milliseconds).
        pci_bus_id: the GPU read, as NVML names it (``00000000:18:00.0``).
        sm_clock_mhz / mem_clock_mhz: current SM and memory clocks (MHz).
        app_sm_clock_mhz / app_mem_clock_mhz: the applications clocks, the target the
            driver runs work at when nothing holds it back (MHz; graphics and memory).
        power_w: power draw (W; NVML reports mW).
        power_limit_w: the enforced power limit (W).
        temperature_c: GPU core temperature (°C).
        reasons_mask: NVML's clocks-event reason bits (None: not read).
        unread: field -> NVML's error, for each field this GPU or driver did not report.
    """

    at: str
    pci_bus_id: str | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    app_sm_clock_mhz: int | None = None
    app_mem_clock_mhz: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temperature_c: int | None = None
    reasons_mask: int | None = None
    unread: dict[str, str] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The record form (``normbench.store.ClockSnapshot``): fields not read are left out."""
        out: dict[str, Any] = {"at": self.at}
        for name in ("pci_bus_id", "sm_clock_mhz", "mem_clock_mhz", "app_sm_clock_mhz", "app_mem_clock_mhz",
                     "power_w", "power_limit_w", "temperature_c"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.reason_fields())
        if self.unread:
            out["unread"] = dict(self.unread)
        return out


@dataclass(frozen=True)
class CaseSample(_ThrottleReasons):
    """What is read right after a case's timed samples: the throttle reasons and the SM clock.

    Attributes:
        reasons_mask: NVML's clocks-event reason bits (None: not read).
        sm_clock_mhz: the SM clock (MHz; None: not read).
        unread: field -> NVML's error, for what could not be read.
    """

    reasons_mask: int | None = None
    sm_clock_mhz: int | None = None
    unread: dict[str, str] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The case's ``conditions`` fields (``normbench.store.CaseConditions``) this sample fills."""
        out: dict[str, Any] = {}
        out.update(self.reason_fields())
        if self.sm_clock_mhz is not None:
            out["sm_clock_mhz"] = self.sm_clock_mhz
        if self.unread:
            out["unread"] = dict(self.unread)
        return out


# --------------------------------------------------------------------------- NVML
class Unavailable(Exception):
    """NVML cannot be used here; the message says why (for records, never raised out of this module)."""


def _nvml_module() -> Any:
    """``pynvml``, imported now.

    Raises:
        Unavailable: not installed (with the install hint).
    """
    try:
        import pynvml
    except ImportError:
        raise Unavailable(f"pynvml not installed ({INSTALL_HINT})") from None
    return pynvml


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _code(e: BaseException) -> int | None:
    value = getattr(e, "value", None)
    return value if isinstance(value, int) else None


def _missing(e: BaseException) -> bool:
    """The binding or the driver lacks the function (an old pynvml, an old driver)."""
    return isinstance(e, AttributeError) or _code(e) == _ERROR_FUNCTION_NOT_FOUND


def _pci_bus_id(torch_index: int) -> str | None:
    """The PCI bus id of CUDA device ``torch_index`` as NVML writes it (``00000000:18:00.0``), from torch's
    device properties (``pci_domain_id``, ``pci_bus_id``, ``pci_device_id``); None when torch lacks them.

    CUDA device indices follow ``CUDA_VISIBLE_DEVICES`` and CUDA's ordering, NVML's do not: the bus id
    names the same GPU in both.
    """
    import torch

    props = torch.cuda.get_device_properties(torch_index)
    try:
        return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    except AttributeError:
        return None


def _uuid(torch_index: int) -> str | None:
    """``GPU-<uuid>`` of CUDA device ``torch_index`` (torch's device properties), or None."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(torch_index), "uuid", None)
    if not uuid:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


class Reader:
    """NVML reads of one GPU (``open_reader`` makes one). Reads never raise: a field that
    fails is left out and its error kept in ``unread``."""

    def __init__(self, nvml: Any, handle: Any, pci_bus_id: str | None):
        self.nvml = nvml
        self.handle = handle
        self.pci_bus_id = pci_bus_id

    def _read(self, unread: dict[str, str], name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - NVMLError subclasses, a missing function, a lost GPU
            unread[name] = _why(e)
            return None

    def reasons_mask(self) -> int:
        """NVML's current clocks-event reasons (``nvmlDeviceGetCurrentClocksEventReasons``, or the older
        ``nvmlDeviceGetCurrentClocksThrottleReasons`` where the binding or the driver lacks the new name).

        Raises:
            Exception: what NVML raised (the callers keep it in ``unread``).
        """
        nv = self.nvml
        fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is not None:
            try:
                return int(fn(self.handle))
            except Exception as e:  # noqa: BLE001
                if not _missing(e):
                    raise
        return int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(self.handle))

    def app_clock(self, clock_type: int) -> int:
        """The applications clock (MHz) of ``clock_type`` (``nvmlDeviceGetApplicationsClock``, deprecated in
        NVML 13; else ``nvmlDeviceGetClock(..., NVML_CLOCK_ID_APP_CLOCK_TARGET)``).

        Raises:
            Exception: what NVML raised.
        """
        nv = self.nvml
        try:
            return int(nv.nvmlDeviceGetApplicationsClock(self.handle, clock_type))
        except Exception as e:  # noqa: BLE001
            if not _missing(e):
                raise
        return int(nv.nvmlDeviceGetClock(self.handle, clock_type, _CLOCK_ID_APP_CLOCK_TARGET))

    def base_clock(self) -> int:
        """The SM base clock (MHz) ``--lock-clocks`` locks to: the default applications clock of the graphics
        domain (``nvmlDeviceGetDefaultApplicationsClock(GRAPHICS)``, else ``nvmlDeviceGetClock(GRAPHICS,
        APP_CLOCK_DEFAULT)``). It is the clock the board is specified to sustain (1755 MHz on an H100 SXM,
        against a 1980 MHz boost), so a locked run is not held back by its power or thermal limits.

        Raises:
            Exception: what NVML raised.
        """
        nv = self.nvml
        try:
            return int(nv.nvmlDeviceGetDefaultApplicationsClock(self.handle, _CLOCK_GRAPHICS))
        except Exception as e:  # noqa: BLE001
            if not _missing(e):
                raise
        return int(nv.nvmlDeviceGetClock(self.handle, _CLOCK_GRAPHICS, _CLOCK_ID_APP_CLOCK_DEFAULT))

    def snapshot(self) -> Snapshot:
        """Every field of ``Snapshot``, now (about ten NVML calls)."""
        nv, h = self.nvml, self.handle
        unread: dict[str, str] = {}
        read = self._read
        power_mw = read(unread, "power_w", lambda: nv.nvmlDeviceGetPowerUsage(h))
        limit_mw = read(unread, "power_limit_w", lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
        return Snapshot(
            at=utc_now(),
            pci_bus_id=self.pci_bus_id,
            sm_clock_mhz=read(unread, "sm_clock_mhz", lambda: int(nv.nvmlDeviceGetClockInfo(h, _CLOCK_SM))),
            mem_clock_mhz=read(unread, "mem_clock_mhz", lambda: int(nv.nvmlDeviceGetClockInfo(h, _CLOCK_MEM))),
            app_sm_clock_mhz=read(unread, "app_sm_clock_mhz", lambda: self.app_clock(_CLOCK_GRAPHICS)),
            app_mem_clock_mhz=read(unread, "app_mem_clock_mhz", lambda: self.app_clock(_CLOCK_MEM)),
            power_w=None if power_mw is None else round(power_mw / 1000.0, 1),
            power_limit_w=None if limit_mw is None else round(limit_mw / 1000.0, 1),
            temperature_c=read(unread, "temperature_c", lambda: int(nv.nvmlDeviceGetTemperature(h, _TEMPERATURE_GPU))),
            reasons_mask=read(unread, "throttle_reasons", self.reasons_mask),
            unread=unread,
        )

    def sample(self) -> CaseSample:
        """The throttle reasons and the SM clock, now (two NVML calls: what a case keeps)."""
        unread: dict[str, str] = {}
        mask = self._read(unread, "throttle_reasons", self.reasons_mask)
        sm = self._read(unread, "sm_clock_mhz", lambda: int(self.nvml.nvmlDeviceGetClockInfo(self.handle, _CLOCK_SM)))
        return CaseSample(mask, sm, unread)


def _open(torch_index: int, pci_bus_id: str | None) -> Reader:
    """A ``Reader`` of CUDA device ``torch_index`` (or of the GPU at ``pci_bus_id``).

    Raises:
        Unavailable: no pynvml, NVML does not start (no driver), or the device cannot be found in NVML.
    """
    nv = _nvml_module()
    try:
        nv.nvmlInit()
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"NVML unavailable: {_why(e)}") from None
    tried = []
    bus = pci_bus_id
    if bus is None:
        try:
            bus = _pci_bus_id(torch_index)
        except Exception as e:  # noqa: BLE001 - no CUDA torch, a bad index
            tried.append(f"device properties: {_why(e)}")
    if bus is not None:
        try:
            return Reader(nv, nv.nvmlDeviceGetHandleByPciBusId(bus), bus)
        except Exception as e:  # noqa: BLE001
            tried.append(f"PCI bus id {bus}: {_why(e)}")
    if pci_bus_id is None:
        try:
            uuid = _uuid(torch_index)
            if uuid:
                handle = nv.nvmlDeviceGetHandleByUUID(uuid)
                return Reader(nv, handle, _bus_of(nv, handle))
        except Exception as e:  # noqa: BLE001
            tried.append(f"UUID: {_why(e)}")
    raise Unavailable(f"cuda:{torch_index} not found in NVML ({'; '.join(tried) or 'no PCI bus id or UUID'})")


def _bus_of(nv: Any, handle: Any) -> str | None:
    try:
        bus = nv.nvmlDeviceGetPciInfo(handle).busId
        return bus.decode() if isinstance(bus, bytes) else str(bus)
    except Exception:  # noqa: BLE001
        return None


_READERS: dict[tuple[int, str | None], tuple[Reader | None, str | None]] = {}
_READERS_LOCK = threading.Lock()


def open_reader(torch_index: int = 0, pci_bus_id: str | None = None) -> tuple[Reader | None, str | None]:
    """``(reader, None)`` for CUDA device ``torch_index`` (this process's numbering, mapped to NVML's by
    PCI bus id, else by UUID), or ``(None, why)``. Never raises.

    NVML is started once per process and stays started (``nvmlInit`` is reference counted and cheap to
    keep; a worker runs many units); the answer, a refusal included, is kept per device (``forget``).
    """
    key = (torch_index, pci_bus_id)
    with _READERS_LOCK:
        if key not in _READERS:
            try:
                _READERS[key] = (_open(torch_index, pci_bus_id), None)
            except Unavailable as e:
                _READERS[key] = (None, str(e))
            except Exception as e:  # noqa: BLE001 - never into a run
                _READERS[key] = (None, f"NVML unavailable: {_why(e)}")
        return _READERS[key]


def forget() -> None:
    """Drop the readers ``open_reader`` keeps (tests; a process whose driver state changed)."""
    with _READERS_LOCK:
        _READERS.clear()


def capture(torch_index: int = 0) -> tuple[Snapshot | None, str | None]:
    """``(snapshot, None)`` of CUDA device ``torch_index`` now, or ``(None, why)`` where NVML cannot be
    read (a CPU machine, no driver, no pynvml). Never raises."""
    reader, why = open_reader(torch_index)
    if reader is None:
        return None, why
    return reader.snapshot(), None


# --------------------------------------------------------------------------- per kernel stage
class StageProbe:
    """What the kernel runner records of its stage's conditions (``stage_probe`` makes one).

    ``start()`` reads the state before the stage; ``sample()`` after each case's timed samples;
    ``fields(first, last)`` gives what a recorded case adds to its ``conditions``: the stage's
    ``stage_before`` on the first case, a fresh ``stage_after`` on the last, and where NVML cannot
    be read, ``unavailable`` (on the first case only). A probe without a reader and without a
    reason (a CPU stage: no GPU to read) adds nothing.
    """

    def __init__(self, reader: Reader | None, why: str | None = None):
        self.reader = reader
        self.why = why
        self.before: Snapshot | None = None

    def start(self) -> None:
        if self.reader is not None:
            self.before = self.reader.snapshot()

    def sample(self) -> CaseSample | None:
        return self.reader.sample() if self.reader is not None else None

    def fields(self, first: bool, last: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if first and self.before is not None:
            out["stage_before"] = self.before.as_record()
        if first and self.reader is None and self.why:
            out["unavailable"] = self.why
        if last and self.reader is not None:
            out["stage_after"] = self.reader.snapshot().as_record()
        return out


def stage_probe(device_type: str, torch_index: int = 0) -> StageProbe:
    """The probe for a kernel stage on ``device_type`` (``cuda``: NVML of ``cuda:torch_index``; else none)."""
    if device_type != "cuda":
        return StageProbe(None)
    return StageProbe(*open_reader(torch_index))


# --------------------------------------------------------------------------- --lock-clocks
def _lock_refusal(e: BaseException) -> tuple[str, str]:
    """``(status, note)`` for a failed ``nvmlDeviceSetGpuLockedClocks``."""
    code = _code(e)
    if code == _ERROR_NO_PERMISSION:
        return "refused", f"no permission ({_why(e)}): locking clocks needs root or the driver's admin setting"
    if code == _ERROR_NOT_SUPPORTED:
        return "refused", f"this GPU does not support locked clocks ({_why(e)})"
    return "failed", _why(e)


class ClockLock:
    """``normbench run --lock-clocks``: the SM clock of the run's GPUs locked to their base clock
    (``Reader.base_clock``: the default applications clock) for the run, then reset.

    ``acquire()`` locks each device (``nvmlDeviceSetGpuLockedClocks(handle, base, base)``) and never
    raises: where NVML says no (``NVML_ERROR_NO_PERMISSION``: not root; ``NVML_ERROR_NOT_SUPPORTED``)
    or cannot be read, the refusal is recorded and the run goes on unlocked. ``release()`` resets
    every device it locked (``nvmlDeviceResetGpuLockedClocks``); it is idempotent, so a ``finally``
    and an outer ``finally`` may both call it. Resetting returns the GPU to the driver's default
    (unlocked): a lock someone set before the run is not restored (NVML has no call that reads it).

    ``environment()`` is what the run's environment records (flat keys):

    * ``clocks.lock``: ``locked``, ``partly locked``, ``refused``, ``unavailable`` or ``failed``;
    * ``clocks.locked_sm_mhz``: the clock locked to (MHz; a list when the GPUs differ);
    * ``clocks.lock_note``: why not (or why not everywhere);
    * ``clocks.lock_reset``: after ``release()``, ``true``, or the error of a reset that failed.

    Args:
        torch_indices: the CUDA devices (this process's numbering) the run measures on.
        pci_bus_ids: the same devices by bus id, instead (tests, a caller that knows them).
    """

    def __init__(self, torch_indices: Sequence[int] = (0,), pci_bus_ids: Sequence[str] | None = None,
                 unavailable: str | None = None):
        self.targets: list[tuple[int, str | None]] = (
            [(i, b) for i, b in enumerate(pci_bus_ids)] if pci_bus_ids is not None
            else [(i, None) for i in torch_indices])
        self.unavailable = unavailable
        self.locked: list[tuple[Reader, int]] = []
        self.status = "unavailable"
        self.note: str | None = unavailable
        self.reset: bool | str | None = None
        self._released = False

    def acquire(self) -> "ClockLock":
        if self.unavailable is not None:
            return self
        failures: list[tuple[str, str]] = []
        for index, bus in self.targets:
            reader, why = open_reader(index, bus)
            if reader is None:
                failures.append(("unavailable", why or "NVML unavailable"))
                continue
            try:
                base = reader.base_clock()
                reader.nvml.nvmlDeviceSetGpuLockedClocks(reader.handle, base, base)
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on unlocked
                failures.append(_lock_refusal(e))
                continue
            self.locked.append((reader, base))
        if self.locked and not failures:
            self.status, self.note = "locked", None
        elif self.locked:
            self.status = "partly locked"
            self.note = f"{len(failures)} of {len(self.targets)} GPUs not locked: {failures[0][1]}"
        else:
            self.status, self.note = failures[0] if failures else ("unavailable", "no GPU to lock")
        return self

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        errors = []
        for reader, _ in self.locked:
            try:
                reader.nvml.nvmlDeviceResetGpuLockedClocks(reader.handle)
            except Exception as e:  # noqa: BLE001 - reported in the record and on the terminal
                errors.append(f"{reader.pci_bus_id or 'GPU'}: {_why(e)}")
        if self.locked:
            self.reset = True if not errors else "; ".join(errors)

    def __enter__(self) -> "ClockLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def clocks(self) -> list[int]:
        """The clocks locked to (MHz), one per locked GPU."""
        return [base for _, base in self.locked]

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {"clocks.lock": self.status}
        clocks = sorted(set(self.clocks))
        if clocks:
            env["clocks.locked_sm_mhz"] = clocks[0] if len(clocks) == 1 else clocks
        if self.note:
            env["clocks.lock_note"] = self.note
        if self.reset is not None:
            env["clocks.lock_reset"] = self.reset
        return env

    def message(self) -> str:
        """One line for the terminal: what was locked, or why the run goes on unlocked."""
        if self.status == "locked":
            return f"--lock-clocks: SM clock locked at {_mhz_list(self.clocks)} MHz (base clock) for this run"
        if self.status == "partly locked":
            return f"--lock-clocks: SM clock locked at {_mhz_list(self.clocks)} MHz on some GPUs only: {self.note}"
        return f"--lock-clocks: not locked ({self.status}: {self.note}); the run goes on with the GPU's own clocks"


def _mhz_list(clocks: Sequence[int]) -> str:
    return "/".join(str(c) for c in sorted(set(clocks)))


# --------------------------------------------------------------------------- reading records (pure)
def case_throttled(case: Any) -> bool:
    """Whether a case record was sampled under power or thermal throttling (its ``conditions``)."""
    cond = getattr(case, "conditions", None) or {}
    return bool(cond.get("thermal_or_power_throttled"))


def case_throttle_reasons(case: Any) -> list[str]:
    """The power and thermal reasons (``THROTTLING``) sampled after a case's samples, in bit order."""
    cond = getattr(case, "conditions", None) or {}
    return [r for r in cond.get("throttle_reasons") or [] if r in THROTTLING]


def _where(case: Any) -> str:
    """The device a case ran on in a parallel run (its worker's label: ``cuda:1``, ``ray:3``); "" in a serial run."""
    info = getattr(case, "device_info", None) or {}
    return str(info.get("label") or "")


@dataclass
class StageConditions:
    """The conditions of one stage on one device, gathered from its cases' records.

    Attributes:
        stage, where: the stage's name; the device (a worker's ``device_info.label``, "" in a serial run).
        before / after: the earliest ``stage_before`` and the latest ``stage_after`` (record form).
        timed: cases that carry a per-case sample; throttled: those flagged; reasons: their
            power/thermal reasons; clocks: their SM clocks (MHz).
        unavailable: why NVML could not be read, where it could not.
    """

    stage: str
    where: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    timed: int = 0
    throttled: list[Any] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    clocks: list[int] = field(default_factory=list)
    unavailable: str | None = None


def stage_conditions(cases: Iterable[Any]) -> list[StageConditions]:
    """Per (stage, device), in order of appearance: the stage's snapshots and its cases' samples."""
    out: dict[tuple[str, str], StageConditions] = {}
    for c in cases:
        cond = getattr(c, "conditions", None)
        if not cond:
            continue
        key = (c.stage, _where(c))
        s = out.setdefault(key, StageConditions(*key))
        before, after = cond.get("stage_before"), cond.get("stage_after")
        if before and (s.before is None or before.get("at", "") < s.before.get("at", "")):
            s.before = before
        if after and (s.after is None or after.get("at", "") > s.after.get("at", "")):
            s.after = after
        if "thermal_or_power_throttled" in cond:
            s.timed += 1
            if cond["thermal_or_power_throttled"]:
                s.throttled.append(c)
                s.reasons += [r for r in case_throttle_reasons(c) if r not in s.reasons]
        if cond.get("sm_clock_mhz") is not None:
            s.clocks.append(int(cond["sm_clock_mhz"]))
        if cond.get("unavailable") and not s.unavailable:
            s.unavailable = cond["unavailable"]
    return list(out.values())


def run_summary(record: Any) -> dict[str, Any]:
    """A run's conditions as flat environment-like keys, for ``compare``'s environment differences:

    * ``conditions.sm_clock_mhz``: the median SM clock its timed cases were sampled at (MHz);
    * ``conditions.throttled_cases``: cases sampled under power or thermal throttling;
    * ``conditions.power_limit_w``: the enforced power limit(s) its stages read (W).

    Empty for a run that recorded no conditions (a CPU run, records before this field).
    """
    stages = stage_conditions(record.cases)
    if not stages:
        return {}
    out: dict[str, Any] = {}
    clocks = [x for s in stages for x in s.clocks]
    if clocks:
        out["conditions.sm_clock_mhz"] = int(statistics.median(clocks))
    if any(s.timed for s in stages):
        out["conditions.throttled_cases"] = sum(len(s.throttled) for s in stages)
    limits = sorted({snap["power_limit_w"] for s in stages for snap in (s.before, s.after)
                     if snap and snap.get("power_limit_w") is not None})
    if limits:
        out["conditions.power_limit_w"] = limits[0] if len(limits) == 1 else "/".join(f"{x:g}" for x in limits)
    return out


def lock_line(environment: dict[str, Any]) -> str | None:
    """The run's ``--lock-clocks`` outcome in words (None: the run did not ask for it)."""
    status = environment.get("clocks.lock")
    if status is None:
        return None
    clocks = environment.get("clocks.locked_sm_mhz")
    mhz = "/".join(str(c) for c in clocks) if isinstance(clocks, list) else str(clocks)
    reset = environment.get("clocks.lock_reset")
    after = "" if reset is None else ("; reset after the run" if reset is True else f"; reset FAILED: {reset}")
    if status == "locked":
        return f"clocks: SM locked at {mhz} MHz (base clock, --lock-clocks){after}"
    note = environment.get("clocks.lock_note") or ""
    if status == "partly locked":
        return f"clocks: SM locked at {mhz} MHz on some GPUs only ({note}){after}"
    return f"clocks: not locked, --lock-clocks {status}: {note}"


def _snap_text(snap: dict[str, Any] | None) -> str:
    if not snap:
        return "-"
    parts = []
    if snap.get("sm_clock_mhz") is not None:
        parts.append(f"SM {snap['sm_clock_mhz']} MHz")
    if snap.get("power_w") is not None:
        limit = f"/{snap['power_limit_w']:.0f}" if snap.get("power_limit_w") is not None else ""
        parts.append(f"{snap['power_w']:.0f}{limit} W")
    if snap.get("temperature_c") is not None:
        parts.append(f"{snap['temperature_c']} °C")
    parts += snap.get("throttle_reasons") or []
    return ", ".join(parts) or "-"


def show_lines(record: Any, case_label: Any = None, limit: int = 4) -> list[tuple[str, bool]]:
    """What ``normbench show`` says of a run's conditions: ``(line, warn)`` pairs, empty when the run
    recorded none. The lock line, one line per stage (and device) with the state before → after
    (``SM 1980 MHz, 412/700 W, 47 °C, sw_power_cap``: SM clock, power draw / limit, temperature, the
    throttle reasons), and for a stage with throttled cases a warning
    line naming up to ``limit`` of them (``case_label(case)`` labels one; default its case id)."""
    lines: list[tuple[str, bool]] = []
    lock = lock_line(record.environment)
    if lock:
        lines.append((lock, record.environment.get("clocks.lock") != "locked"))
    stages = stage_conditions(record.cases)
    unavailable = list(dict.fromkeys(s.unavailable for s in stages if s.unavailable))
    for why in unavailable:
        lines.append((f"conditions: not recorded ({why})", False))
    label = case_label or (lambda c: c.case_id)
    for s in stages:
        if s.before is None and s.after is None and not s.timed:
            continue
        head = f"{s.stage}{' ' + s.where if s.where else ''}"
        lines.append((f"{head}: {_snap_text(s.before)} → {_snap_text(s.after)}", False))
        if s.throttled:
            shown = ", ".join(label(c) for c in s.throttled[:limit])
            more = f", +{len(s.throttled) - limit} more" if len(s.throttled) > limit else ""
            lines.append((f"{head}: {len(s.throttled)} of {s.timed} timed cases throttled "
                          f"({', '.join(s.reasons)}): {shown}{more}", True))
    return lines
