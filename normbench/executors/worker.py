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

``python -m normbench.executors.worker READ_FD WRITE_FD`` is a local worker:
framed pickles (8-byte big-endian length, then the pickle) on two pipes from
and to the parent. It reads its ``init`` dict, answers ``("ready",
device_info)``, then runs each ``WorkUnit`` it reads until it reads ``None``.
Its stdout and stderr go to a log file the parent chose. It ignores SIGINT (the
parent owns Ctrl-C and stops workers itself) and dies on SIGTERM.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from typing import Any, BinaryIO, Callable

_HEADER = struct.Struct(">Q")


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
    """A device's worker: measures its peak bandwidth once, runs units, tags records.

    ``init`` keys: ``suite`` (Suite), ``environment`` (the run's fingerprint),
    ``run_dir``, ``debug``, ``label`` (``cuda:1``, ``fake:0``, ``ray:GPU3``),
    ``index`` (the device index recorded), ``fake`` (run on the CPU with CUDA
    hidden). A fake worker must be built before torch is imported in its
    process (it hides CUDA through ``CUDA_VISIBLE_DEVICES``).
    """

    def __init__(self, init: dict[str, Any], send: Callable[[tuple], None]):
        if init.get("fake"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        from pathlib import Path

        from normbench import env as envmod
        from normbench.expand import Capabilities

        caps = Capabilities.detect()
        if init.get("fake"):
            caps = Capabilities("cpu", None, None, caps.missing)
        self.caps = caps
        self.send = send
        self.suite = init["suite"]
        self.run_dir = Path(init["run_dir"])
        self.debug = bool(init.get("debug"))
        bandwidth = envmod.measure_copy_bandwidth(caps.device)
        self.environment = {**init["environment"], **bandwidth}
        self.device_info = {
            "index": init.get("index"),
            "label": init["label"],
            "name": caps.gpu_name or "cpu",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "peak_bandwidth_gbps": round(bandwidth["peak_bandwidth_gbps"], 1),
        }

    def run_unit(self, unit: Any) -> None:
        """Run one ``WorkUnit``; every outcome goes to ``send`` (never raises, but for KeyboardInterrupt)."""
        from normbench.errors import NormbenchError
        from normbench.registry import load
        from normbench.runners import RUNNERS, RunContext

        def record(case: Any, rec: Any) -> None:
            rec.device_info = dict(self.device_info)  # type: ignore[attr-defined]  (extra field)
            self.send(("record", case.case_id, rec.model_dump_json()))

        ctx = RunContext(suite=self.suite, caps=self.caps, environment=self.environment, run_dir=self.run_dir,
                         record=record, status=lambda line: self.send(("status", line)), debug=self.debug)
        try:
            load(RUNNERS[unit.runner])(list(unit.cases), ctx)
        except NormbenchError as e:
            self.send(("error", True, str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the unit's cases
            self.send(("error", False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"))
        self.send(("done",))


def main(argv: list[str]) -> int:
    """A local worker process (see the module docstring). Exit code 0 when told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    rfd, wfd = int(argv[0]), int(argv[1])
    inbox = os.fdopen(rfd, "rb")
    outbox = os.fdopen(wfd, "wb")

    def send(msg: tuple) -> None:
        write_frame(outbox, msg)

    init = read_frame(inbox)
    core = WorkerCore(init, send)
    print(f"normbench worker {init['label']} pid {os.getpid()}: {core.device_info}", flush=True)
    send(("ready", core.device_info))
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
