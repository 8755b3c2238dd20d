"""The parent side of the parallel executors: hand units to workers, merge what comes back.

A ``Slot`` is one worker on one device (a local process, a Ray actor). Each
slot's own thread turns what its worker says into events on one queue;
``Scheduler.run`` (in the calling thread, the only one that calls
``ctx.record``) reads that queue:

* gives the next unit to every idle, ready worker (one unit per worker, so one
  timed case per device at a time);
* records each finished case as it arrives (``ctx.record``: journal + fsync);
* on a worker's death, records the case it was running as FAILED with the
  reason (exit code or signal, the last lines of its log), puts the unit's
  unstarted cases back at the head of the queue, and starts a fresh worker
  for that device. A device whose workers die twice in a row before getting
  ready is given up; when no device is left, the run stops with an error;
* stamps each worker's start-up on the records it makes (``device_info``):
  ``startup_s``, from spawning the worker to its ready answer (the slot's own
  thread notes both times), and ``startup_wait_s``, how much of that the run
  waited for: from when this scheduler had units to hand out (or the worker was
  spawned, if later) to its ready answer, 0 when it was ready before;
* on ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM turned into it by the CLI),
  stops every worker, records the cases that finished meanwhile, and re-raises:
  the run is kept as interrupted and ``--resume`` completes it.

A worker whose runner raises ``NormbenchError`` stops the run with that error
(as the serial executor would); any other runner exception fails the rest of
that unit's cases with the message, and the run goes on.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from typing import Any, Callable, Sequence

from normbench.errors import NormbenchError
from normbench.executors import WorkUnit
from normbench.store import CaseRecord

#: A device is given up after this many workers in a row died before getting ready.
MAX_START_FAILURES = 2
#: How long stopping waits for the workers to be gone (each slot kills its worker sooner).
STOP_WAIT_S = 15.0
#: A worker may take a unit it has compiled for ahead of the costliest one if it costs at least this share of it.
AFFINITY_COST_RATIO = 0.5
#: The clock start-up times are read from (seconds; tests replace it).
clock = time.monotonic
#: The ``device_info`` keys the scheduler adds to a worker's records.
STARTUP_KEYS = ("startup_s", "startup_wait_s")


class Slot:
    """One worker on one device, as the scheduler sees it.

    Subclasses implement ``start`` (begin starting the worker, setting
    ``spawned_at``; its thread then calls ``emit_ready(info)`` or emits
    ``("died", reason)``), ``submit`` (send one unit) and ``stop`` (end the
    worker; ``force`` when it may be mid-unit). Events go to ``self.events`` as
    ``(slot, kind, payload)``.
    """

    def __init__(self, key: int, label: str, events: "queue.Queue[tuple]"):
        self.key = key
        self.label = label
        self.events = events
        self.state = "starting"  # starting | idle | busy | stopping | dead
        self.info: dict[str, Any] = {}
        self.unit: WorkUnit | None = None
        self.recorded: set[str] = set()
        self.warm: set[Any] = set()  # the affinities of the units this worker ran
        self.spawned_at: float | None = None  # clock() when its worker was spawned
        self.ready_at: float | None = None  # clock() when its ready answer arrived

    def emit(self, kind: str, payload: Any = None) -> None:
        self.events.put((self, kind, payload))

    def emit_ready(self, info: dict[str, Any] | None) -> None:
        """The worker answered ready: note the time, add ``startup_s`` (seconds since ``spawned_at``), emit it."""
        self.ready_at = clock()
        info = dict(info or {})
        if self.spawned_at is not None:
            info["startup_s"] = round(max(0.0, self.ready_at - self.spawned_at), 3)
        self.emit("ready", info)

    def emit_worker_message(self, msg: tuple) -> str:
        """Turn one message of ``normbench.executors.worker``'s protocol into an event.

        ``("record", case_id, json)``, ``("ready", info)``, ``("status", line)``,
        ``("error", case_id, reason)`` or ``("done",)``; returns its kind.
        """
        kind = msg[0]
        if kind == "record":
            self.emit("record", (msg[1], CaseRecord.model_validate_json(msg[2])))
        elif kind == "ready":
            self.emit_ready(msg[1])
        elif kind == "status":
            self.emit(kind, msg[1])
        elif kind == "error":
            self.emit("error", (msg[1], msg[2]))
        elif kind == "done":
            self.emit("done")
        return kind

    def start(self) -> None:
        raise NotImplementedError

    def submit(self, unit: WorkUnit) -> None:
        raise NotImplementedError

    def stop(self, force: bool = False) -> None:
        raise NotImplementedError


class Scheduler:
    """Runs units on slots made by ``make_slot(key, events)``, one per device key.

    Args:
        ctx: the run's ``RunContext`` (``record`` and ``status`` are used here).
        keys: one per device (the local executor's ``Device``, a Ray slot index).
        make_slot: builds (without starting) a fresh slot for a device key.
        on_workers: told ``(busy, total)`` whenever that changes.
        start_together: hold the first unit until every first worker is ready (or
            dead). Only for fake devices: on a loaded CPU one worker could start
            seconds before the others and take a short sweep alone, which would
            make tests of the sharding depend on luck. Real GPUs start dispatching
            at once.
        events: the queue the slots report to (prestarted workers already do).
    """

    def __init__(self, ctx: Any, keys: Sequence[Any], make_slot: Callable[[Any, "queue.Queue[tuple]"], Slot],
                 on_workers: Callable[[int, int], None] | None = None, start_together: bool = False,
                 events: "queue.Queue[tuple] | None" = None):
        self.start_together = start_together
        self.ctx = ctx
        self.keys = list(keys)
        self.make_slot = make_slot
        self.on_workers = on_workers or (lambda busy, total: None)
        self.events: queue.Queue[tuple] = events if events is not None else queue.Queue()
        self.slots: dict[int, Slot] = {}  # position of the key -> its current slot
        self.start_failures: dict[int, int] = {}
        self.pending: deque[WorkUnit] = deque()
        self.cases_by_id: dict[str, Any] = {}
        self.last_death = ""
        self.started_at = clock()

    # ------------------------------------------------------------------ main loop
    def run(self, units: Sequence[WorkUnit]) -> None:
        """Run every unit; returns when every case has a record. Raises NormbenchError, KeyboardInterrupt."""
        self.pending.extend(units)
        for u in units:
            for c in u.cases:
                self.cases_by_id[c.case_id] = c
        self.started_at = clock()
        try:
            for pos in range(len(self.keys)):
                self._spawn(pos)
            self._report()
            while self.pending or any(s.state == "busy" for s in self.slots.values()):
                self._assign()
                try:
                    slot, kind, payload = self.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._handle(slot, kind, payload)
        except BaseException:
            self._shutdown(force=True)
            raise
        self._shutdown(force=False)

    def _spawn(self, pos: int) -> None:
        slot = self.make_slot(self.keys[pos], self.events)
        self.slots[pos] = slot
        slot.start()

    def _live(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.state in ("starting", "idle", "busy")]

    def _report(self) -> None:
        live = self._live()
        self.on_workers(sum(1 for s in live if s.state == "busy"), len(live))

    def _assign(self) -> None:
        if self.start_together:
            if any(s.state == "starting" for s in self.slots.values()):
                return
            self.start_together = False
        for slot in self.slots.values():
            if not self.pending:
                return
            if slot.state == "idle":
                unit = self._next_for(slot)
                slot.unit, slot.recorded, slot.state = unit, set(), "busy"
                slot.warm.add(unit.affinity)
                slot.submit(unit)
                self._report()

    def _next_for(self, slot: Slot) -> WorkUnit:
        """The costliest pending unit, or a unit this worker has compiled for whose cost is close to it.

        A worker that already ran a unit with the same ``affinity`` (the same
        kernels, another token count) has them compiled and loaded; giving it
        the unit saves the other worker that first-use cost. Only units at
        least ``AFFINITY_COST_RATIO`` of the head's cost are considered, so the
        largest units still go first and no worker is left with one at the end.
        """
        head = self.pending[0]
        for i, unit in enumerate(self.pending):
            if unit.cost < AFFINITY_COST_RATIO * head.cost:
                break
            if unit.affinity in slot.warm:
                del self.pending[i]
                return unit
        return self.pending.popleft()

    def _current(self, slot: Slot) -> bool:
        return any(s is slot for s in self.slots.values())

    def _handle(self, slot: Slot, kind: str, payload: Any) -> None:
        if not self._current(slot):
            return  # a late word from a replaced worker
        if kind == "ready":
            slot.info = dict(payload or {})
            if slot.ready_at is not None and "startup_s" in slot.info:
                since = max(self.started_at, slot.spawned_at if slot.spawned_at is not None else self.started_at)
                slot.info["startup_wait_s"] = round(max(0.0, slot.ready_at - since), 3)
            slot.state = "idle"
            self.start_failures[self._pos(slot)] = 0
            self._report()
        elif kind == "record":
            case_id, rec = payload
            case = self.cases_by_id.get(case_id)
            if case is None:
                return
            slot.recorded.add(case_id)
            self.ctx.record(case, _with_startup(rec, slot))
        elif kind == "status":
            self.ctx.status(f"[{slot.label}] {payload}")
        elif kind == "error":
            user_error, message = payload
            if user_error:
                raise NormbenchError(message)
            self._fail_rest(slot, f"worker on {slot.label}: the runner raised {message}", all_cases=True)
        elif kind == "done":
            if slot.state == "busy":
                slot.state, slot.unit = "idle", None
                self._report()
        elif kind == "died":
            self._died(slot, str(payload))

    def _pos(self, slot: Slot) -> int:
        return next(p for p, s in self.slots.items() if s is slot)

    def _fail_rest(self, slot: Slot, reason: str, all_cases: bool) -> None:
        """FAILED for the unit's in-flight case (or all its unrecorded cases); the rest go back to the queue."""
        from normbench.runners import base_record

        if slot.unit is None:
            return
        rest = [c for c in slot.unit.cases if c.case_id not in slot.recorded]
        victims, requeue = (rest, []) if all_cases else (rest[:1], rest[1:])
        for case in victims:
            rec = base_record(case, "FAILED", reason)
            rec.device = slot.info.get("name")
            rec.device_info = dict(slot.info)  # type: ignore[attr-defined]  (extra field)
            slot.recorded.add(case.case_id)
            self.ctx.record(case, rec)
        if requeue:
            self.pending.appendleft(WorkUnit(slot.unit.runner, tuple(requeue), slot.unit.cost))

    def _died(self, slot: Slot, reason: str) -> None:
        pos = self._pos(slot)
        was = slot.state
        slot.state = "dead"
        self.last_death = reason
        if was == "stopping":
            return
        if was == "busy":
            self._fail_rest(slot, reason, all_cases=False)
            slot.unit = None
        if was == "starting":
            self.start_failures[pos] = self.start_failures.get(pos, 0) + 1
        if self.start_failures.get(pos, 0) >= MAX_START_FAILURES:
            self.ctx.status(f"[{slot.label}] given up: {reason.splitlines()[0]}")
            self._report()
            if not self._live():
                raise NormbenchError(f"every worker died before it could run a case; the last: {reason}")
            return
        self.ctx.status(f"[{slot.label}] worker died; starting a fresh one")
        self._spawn(pos)
        self._report()

    def _shutdown(self, force: bool) -> None:
        """Stop every worker; with ``force`` (an interrupt) keep the records that arrive meanwhile."""
        for slot in self.slots.values():
            if slot.state in ("starting", "idle", "busy"):
                working = slot.state in ("busy", "starting")  # nothing to finish: no need to wait
                slot.state = "stopping"
                try:
                    slot.stop(force=force or working)
                except Exception:  # noqa: BLE001 - stopping must go on for the others
                    pass
        # Slots end by emitting "died" once their worker is gone (stop() escalates
        # to a kill by itself); records that arrive before that are finished cases.
        deadline = time.monotonic() + STOP_WAIT_S
        while any(s.state == "stopping" for s in self.slots.values()) and time.monotonic() < deadline:
            try:
                slot, kind, payload = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if not self._current(slot):
                continue
            if kind == "died":
                slot.state = "dead"
            elif kind == "record" and slot.unit is not None:
                case_id, rec = payload
                case = self.cases_by_id.get(case_id)
                if case is not None and case_id not in slot.recorded:
                    slot.recorded.add(case_id)
                    self.ctx.record(case, _with_startup(rec, slot))
        self.on_workers(0, len(self.slots))


def _with_startup(rec: CaseRecord, slot: Slot) -> CaseRecord:
    """``rec`` with its worker's start-up times (``STARTUP_KEYS`` of ``slot.info``) in its ``device_info``."""
    extra = {k: slot.info[k] for k in STARTUP_KEYS if k in slot.info}
    if extra and rec.device_info is not None:
        rec.device_info = {**rec.device_info, **extra}  # type: ignore[typeddict-item]
    return rec
