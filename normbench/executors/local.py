"""The local executor: one worker process per GPU of this host (``--gpus``).

Each worker is ``python -m normbench.executors.worker`` started with
``CUDA_VISIBLE_DEVICES`` set to its one GPU (so it sees it as ``cuda:0``), in a
session of its own (a terminal's Ctrl-C reaches only the parent, which stops
the workers itself; killing the worker's process group also ends what it
started, e.g. compiler subprocesses). It talks to the parent over two pipes
(``normbench.executors.worker``); its stdout and stderr go to
``logs/workers/<label>.log`` in the run directory, which a FAILED case's reason
quotes when the worker dies.

Kernel workers can be started before the run exists (``prestart``, which the
CLI calls as soon as it has loaded the suite and knows the devices): a worker
sets up its device (torch import, CUDA context, copy bandwidth) and imports
what the suite's providers need (``normbench.executors.warm_modules``:
compilers, FlashInfer, Liger, quack, ...) while the parent imports torch,
expands and checks the plan, measures the machine and creates the run; ``run``
then adopts them, sends each its ``init`` and moves its log into the run
directory. The parent notes when it spawned each worker and when its ready
answer came (``startup_s`` in the records' ``device_info``,
``normbench.executors.pool``).

Kernel workers share one compile cache per user (``normbench.env.compile_cache_dirs``:
``TRITON_CACHE_DIR`` and ``TORCHINDUCTOR_CACHE_DIR``, the user's values when set),
so what one worker compiled the others load instead of compiling again on the
next run. End-to-end lanes get no such variables: the ``vllm serve`` they start
keeps its own caches (and ``server.cold_start`` its fresh ones).

End-to-end lanes (``role="e2e"``) are workers on a GPU set (a ``Device`` whose
``visible`` lists several GPUs), each owning one ``vllm serve`` port.

Fake devices (``NORMBENCH_FAKE_GPUS=N``) are CPU workers with CUDA hidden,
labelled ``fake:K``, each with ``OMP_NUM_THREADS`` set to its share of the
cores so that N of them do not oversubscribe the CPU.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import site
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from normbench.executors import Device, WorkUnit, warm_modules
from normbench.executors import pool
from normbench.executors.pool import Scheduler, Slot
from normbench.executors.worker import read_frame, write_frame

#: After asking a worker to stop (or SIGTERM), seconds before its process group is SIGKILLed.
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 20


class Prestarted:
    """Kernel workers started ahead of their run (``prestart``); ``run`` adopts them.

    ``close()`` stops those not adopted (call it in a ``finally``: a run that
    ends before it executes anything must not leave workers behind).
    """

    def __init__(self, devices: Sequence[Device], log_dir: Path, warm: Sequence[str] | None = None):
        self.events: queue.Queue[tuple] = queue.Queue()
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        threads = _threads_per_worker(devices)
        self.slots: dict[int, LocalSlot] = {}
        for d in devices:
            slot = LocalSlot(d, "kernel", log_dir / f"{os.getpid()}-{d.label.replace(':', '')}.log", self.events, threads,
                             warm=warm)
            slot.spawn()
            self.slots[d.index] = slot

    def take(self, device: Device) -> "LocalSlot | None":
        return self.slots.pop(device.index, None)

    def close(self) -> None:
        for slot in self.slots.values():
            slot.stop(force=True)
            slot.log_path.unlink(missing_ok=True)  # a worker that never joined a run: nothing to keep
        self.slots.clear()
        try:
            self.log_dir.rmdir()  # only when empty: every log was adopted
        except OSError:
            pass


def prestart(devices: Sequence[Device], results_dir: Path, warm: Sequence[str] | None = None) -> Prestarted:
    """Start one kernel worker per device now; their logs wait in ``<results_dir>/.workers/``.

    ``warm``: the modules each imports before it answers ready (``normbench.executors.warm_modules``
    of the suite); None: the compilers' (``normbench.executors.worker.DEFAULT_WARM``).
    """
    return Prestarted(devices, Path(results_dir) / ".workers", warm)


def run(units: Sequence[WorkUnit], ctx: Any, devices: Sequence[Device],
        on_workers: Callable[[int, int], None] | None = None, role: str = "kernel",
        ports: dict[int, int] | None = None, prestarted: Prestarted | None = None) -> None:
    """Run ``units`` on one worker per device; every record goes to ``ctx.record`` here.

    Args:
        role: ``kernel`` or ``e2e`` (``normbench.executors.worker.WorkerCore``).
        ports: device index -> the ``vllm serve`` port of that end-to-end lane.
        prestarted: kernel workers started by ``prestart``, adopted here.

    Raises:
        NormbenchError: a runner's user error, or every worker died before it could run.
        KeyboardInterrupt: after the workers were stopped (the run is resumable).
    """
    init = {
        "suite": ctx.suite, "environment": dict(ctx.environment), "run_dir": str(ctx.run_dir),
        "debug": bool(ctx.debug), "extra": dict(ctx.extra),
    }
    logs = Path(ctx.run_dir) / "logs" / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    threads = _threads_per_worker(devices)
    ports = ports or {}
    warm = warm_modules(ctx.suite, all(d.fake for d in devices)) if role == "kernel" else None

    def make_slot(device: Device, events: Any) -> Slot:
        log = logs / f"{device.label.replace(':', '').replace(',', '+')}.log"
        slot = prestarted.take(device) if prestarted is not None and role == "kernel" else None
        if slot is None:
            slot = LocalSlot(device, role, log, events, threads, warm=warm)
        else:
            slot.adopt_log(log)
        slot.init = {**init, "port": ports.get(device.index)}
        return slot

    events = prestarted.events if prestarted is not None and role == "kernel" else None
    Scheduler(ctx, devices, make_slot, on_workers, start_together=all(d.fake for d in devices),
              events=events).run(units)


def _threads_per_worker(devices: Sequence[Device]) -> int | None:
    if not devices or not all(d.fake for d in devices):
        return None
    return max(1, (os.cpu_count() or 1) // len(devices))


def _worker_env(device: Device, threads: int | None, role: str = "kernel") -> dict[str, str]:
    """The environment of a worker on ``device``: this process's, pinned to the device; a kernel
    worker's with the shared compile caches (``normbench.env.compile_cache_dirs``)."""
    import normbench
    from normbench.env import compile_cache_dirs

    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = device.visible
    if role == "kernel":
        env.update(compile_cache_dirs(env))
    # The worker must import the same normbench as this process: a source tree run
    # without installing needs its root on the path. Never put a site-packages
    # folder there (it would come before the standard library).
    root = Path(normbench.__file__).resolve().parent.parent
    sites = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in sites:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def describe_exit(code: int | None, label: str, pid: int | None) -> str:
    """``worker on cuda:1 (pid 42) was killed by signal 9 (SIGKILL)`` / ``... exited with code 3``."""
    who = f"worker on {label}" + (f" (pid {pid})" if pid else "")
    if code is None:
        return f"{who} is gone"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"{who} was killed by signal {-code} ({name})"
    return f"{who} exited with code {code}"


class LocalSlot(Slot):
    """A worker process pinned to one device (or one GPU set).

    ``spawn()`` starts the process (it sets its device up at once, then imports
    ``warm``); ``start()`` spawns it if needed and sends ``init``, the run it works for.
    """

    def __init__(self, device: Device, role: str, log_path: Path, events: Any, threads: int | None,
                 warm: Sequence[str] | None = None):
        super().__init__(device.index, device.label, events)
        self.device = device
        self.role = role
        self.spec: dict[str, Any] = {"label": device.label, "index": device.index, "fake": device.fake, "role": role}
        if warm is not None:
            self.spec["warm"] = list(warm)
        self.init: dict[str, Any] = {}
        self.log_path = log_path
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self._outbox: Any = None
        self._lock = threading.Lock()

    def adopt_log(self, path: Path) -> None:
        """Move the worker's log (it keeps writing to the same file) to ``path``."""
        try:
            os.replace(self.log_path, path)
            self.log_path = path
        except OSError:
            pass  # another file system: the log stays where it is, and reasons quote it there

    def start(self) -> None:
        if self.proc is None:
            self.spawn()
        self._send(self.init)

    def spawn(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.spawned_at = pool.clock()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "normbench.executors.worker", str(to_worker_r), str(from_worker_w),
                 json.dumps(self.spec)],
                pass_fds=(to_worker_r, from_worker_w), env=_worker_env(self.device, self.threads, self.role),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
            os.close(to_worker_r)
            os.close(from_worker_w)
        self._outbox = os.fdopen(to_worker_w, "wb")
        inbox = os.fdopen(from_worker_r, "rb")
        reader = threading.Thread(target=self._read, args=(inbox,), daemon=True, name=f"normbench-{self.label}-read")
        reader.start()
        threading.Thread(target=self._watch, args=(reader,), daemon=True, name=f"normbench-{self.label}-wait").start()

    def _send(self, obj: Any) -> None:
        with self._lock:
            try:
                write_frame(self._outbox, obj)
            except (BrokenPipeError, OSError, ValueError):
                pass  # the worker is gone: its watcher reports why

    def _read(self, inbox: Any) -> None:

        with inbox:
            while True:
                try:
                    msg = read_frame(inbox)
                except (EOFError, OSError):
                    return
                except Exception:  # noqa: BLE001 - a torn frame from a dying worker
                    return
                self.emit_worker_message(msg)

    def _watch(self, reader: threading.Thread) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        _killpg(self.proc.pid, signal.SIGKILL)  # what it left behind (compiler workers, ...)
        # Everything the worker wrote before it ended is read before its death is told.
        reader.join(timeout=5.0)
        reason = describe_exit(code, self.label, self.proc.pid)
        tail = _tail(self.log_path, LOG_TAIL_LINES)
        if tail:
            reason += f"; log: {self.log_path}\n--- last {LOG_TAIL_LINES} log lines ---\n{tail}"
        try:
            self._outbox.close()
        except OSError:
            pass
        self.emit("died", reason)

    def submit(self, unit: WorkUnit) -> None:
        self._send(unit)

    def stop(self, force: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if force:
            _killpg(self.proc.pid, signal.SIGTERM)
        else:
            self._send(None)
        proc = self.proc

        def escalate() -> None:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)

        threading.Thread(target=escalate, daemon=True, name=f"normbench-{self.label}-stop").start()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])
