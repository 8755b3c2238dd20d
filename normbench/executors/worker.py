"""The worker side of the parallel executors: one device, one unit at a time.

``WorkerCore`` is what a local worker process and a Ray actor both hold: it
measures its device's copy bandwidth once (``normbench.env``), then runs work
units with their runner, tagging each record with ``device_info`` and sending
it to ``send`` as it finishes. Messages sent (tuples):

* ``("record", case_id, CaseRecord JSON)`` per finished case;
* ``("status", line)`` what the runner is doing;
* ``("error", is_user_error, message)`` the runner raised outside its per-case
  handling (``is_user_error``: a ``NormbenchError``, which stops the run);
* ``("done",)`` the unit is over.

``python -m normbench.executors.worker READ_FD WRITE_FD DEVICE_JSON`` is a
local worker: framed pickles (8-byte big-endian length, then the pickle) on two
pipes from and to the parent. It sets up its device first (``DEVICE_JSON``:
``label``, ``index``, ``fake``, ``role``, and ``warm``, the modules to import
before answering), logs how long each step took, answers ``("ready", device_info)``,
then reads its run's ``init`` dict and runs each ``WorkUnit`` it reads until it
reads ``None``. Setting up before the run is known lets the parent start its
workers while it loads the suite and measures the environment (``prestart`` in
``normbench.executors.local``). Its stdout and stderr go to a log file the
parent chose. It ignores SIGINT (the parent owns Ctrl-C and stops workers
itself) and dies on SIGTERM.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any, BinaryIO, Callable, Sequence

_HEADER = struct.Struct(">Q")
#: What a kernel worker on a GPU imports before answering ready when its parent names nothing
#: (``normbench.executors.warm_modules`` names the suite's needs).
DEFAULT_WARM = ("torch._dynamo", "torch._inductor.compile_fx", "triton", "normbench.runners.kernel")


def write_frame(f: BinaryIO, obj: Any) -> None:
    """Write one framed pickle (the parent and the worker share this format)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_HEADER.pack(len(data)) + data)
    f.flush()


def read_frame(f: BinaryIO) -> Any:
    """Read one framed pickle. Raises ``EOFError`` when the other side closed the pipe."""
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    n = _HEADER.unpack(head)[0]
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


class WorkerCore:
    """A device's worker: sets its device up once, then runs units and tags their records.

    ``device`` keys: ``label`` (``cuda:1``, ``cuda:0,1`` for an end-to-end GPU
    set, ``fake:0``, ``ray:3``), ``index`` (the device index recorded), ``fake``
    (run on the CPU with CUDA hidden), ``role``: ``kernel`` (measure the copy
    bandwidth, warm the compilers) or ``e2e`` (touch no GPU: the ``vllm serve``
    it starts needs the memory). A fake worker must be built before torch is
    imported in its process (it hides CUDA through ``CUDA_VISIBLE_DEVICES``).

    ``configure(init)`` then gives it the run: ``suite`` (Suite),
    ``environment`` (the run's fingerprint), ``run_dir``, ``debug``, ``extra``
    (the parent's ``RunContext.extra``), and for end-to-end lanes ``port``
    (the ``vllm serve`` port this lane owns).
    """

    def __init__(self, device: dict[str, Any], send: Callable[[tuple], None]):
        t0 = time.perf_counter()
        if device.get("fake"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        from normbench import env as envmod
        from normbench.expand import Capabilities

        self.role = device.get("role", "kernel")
        if self.role == "kernel":  # before anything compiles (a Ray actor's parent sets nothing)
            os.environ.update(envmod.compile_cache_dirs())
        caps = Capabilities.detect()
        if device.get("fake"):
            caps = Capabilities("cpu", None, None, caps.missing)
        self.caps = caps
        self.send = send
        self.bandwidth: dict[str, Any] = {}
        t1 = time.perf_counter()
        steps = [f"torch import + device query {t1 - t0:.2f} s"]
        if self.role == "kernel":
            self.bandwidth = envmod.measure_copy_bandwidth(caps.device)
            t2 = time.perf_counter()
            steps.append(f"CUDA context + copy bandwidth {t2 - t1:.2f} s" if caps.device == "cuda"
                         else f"copy bandwidth {t2 - t1:.2f} s")
            default = () if device.get("fake") else DEFAULT_WARM
            took = warm_up(device.get("warm", default))
            if took:
                steps.append(f"imports {sum(took.values()):.2f} s (" +
                             ", ".join(f"{m} {s:.2f}" for m, s in took.items()) + ")")
        self.setup_log = "set-up: " + "; ".join(steps)
        self.device_info: dict[str, Any] = {
            "index": device.get("index"),
            "label": device["label"],
            "name": caps.gpu_name or "cpu",
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        if self.bandwidth:
            self.device_info["peak_bandwidth_gbps"] = round(self.bandwidth["peak_bandwidth_gbps"], 1)
        self.init: dict[str, Any] | None = None

    def configure(self, init: dict[str, Any]) -> None:
        """Take the run's ``init`` (see the class docstring)."""
        self.init = init
        if init.get("port") is not None:
            self.device_info["port"] = init["port"]

    def run_unit(self, unit: Any) -> None:
        """Run one ``WorkUnit``; every outcome goes to ``send`` (never raises, but for KeyboardInterrupt)."""
        from pathlib import Path

        from normbench.errors import NormbenchError
        from normbench.registry import load
        from normbench.runners import RUNNERS, RunContext

        init = self.init
        assert init is not None, "configure() before run_unit()"

        def record(case: Any, rec: Any) -> None:
            rec.device_info = dict(self.device_info)  # type: ignore[attr-defined]  (extra field)
            self.send(("record", case.case_id, rec.model_dump_json()))

        extra = dict(init.get("extra") or {})
        if init.get("port") is not None:
            extra["port"] = init["port"]
        ctx = RunContext(suite=init["suite"], caps=self.caps, environment={**init["environment"], **self.bandwidth},
                         run_dir=Path(init["run_dir"]), record=record, status=lambda line: self.send(("status", line)),
                         debug=bool(init.get("debug")), extra=extra)
        try:
            load(RUNNERS[unit.runner])(list(unit.cases), ctx)
        except NormbenchError as e:
            self.send(("error", True, str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the unit's cases
            self.send(("error", False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"))
        self.send(("done",))


def warm_up(modules: Sequence[str]) -> dict[str, float]:
    """Import ``modules`` (what the worker's cases will: compilers, providers, peers' packages) now.

    Only imports: nothing is compiled and no case is touched, so timings are
    unaffected; a worker started ahead of its run (``prestart``) pays these
    seconds while the parent plans instead of in its first unit. Returns each
    module's import time in seconds (those already imported take ~0); one that
    fails to import is passed over (the case that needs it reports the error).
    """
    import importlib

    took: dict[str, float] = {}
    for name in modules:
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a warm-up; the case that needs it reports the real error
            continue
        took[name] = time.perf_counter() - t
    return took


def main(argv: list[str]) -> int:
    """A local worker process (see the module docstring). Exit code 0 when told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import json

    rfd, wfd, device = int(argv[0]), int(argv[1]), json.loads(argv[2])
    inbox = os.fdopen(rfd, "rb")
    outbox = os.fdopen(wfd, "wb")

    def send(msg: tuple) -> None:
        write_frame(outbox, msg)

    core = WorkerCore(device, send)
    print(core.setup_log, flush=True)
    print(f"normbench worker {device['label']} pid {os.getpid()} ready: {core.device_info}", flush=True)
    send(("ready", core.device_info))
    try:
        init = read_frame(inbox)
    except EOFError:  # the parent is gone, or stopped before the run began
        return 0
    if init is None:
        return 0
    core.configure(init)
    print(f"joined run {init.get('run_dir')}", flush=True)
    while True:
        try:
            unit = read_frame(inbox)
        except EOFError:  # the parent is gone
            return 0
        if unit is None:
            return 0
        print(f"unit: {unit.label} ({len(unit.cases)} cases)", flush=True)
        core.run_unit(unit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
