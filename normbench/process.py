"""Generic process lifecycle: process groups, logs, health polling, ports and teardown.

Nothing here knows which program it runs: serving engines (``normbench.engines``)
say what command to launch and where it answers, runners say which client
tools to run; this module starts them, watches them and makes sure nothing
of them is left behind.

``ManagedProcess`` runs one command in its own session (``start_new_session=True``,
so its process group id is its pid and a terminal's Ctrl-C does not reach it:
normbench stops it explicitly), with stdout and stderr appended to a log
file. ``stop()`` sends SIGTERM to the whole group and to every descendant seen
while it ran (an engine's worker processes; a child that called ``setsid``
leaves the group but not the list), waits ``grace_s``, then SIGKILLs what is
left and waits until nothing of it remains. On Linux the leader also gets
``PR_SET_PDEATHSIG=SIGTERM``, so it is told to stop if normbench itself dies
(SIGKILL included); and every live ``ManagedProcess`` is stopped at interpreter
exit.

``wait_healthy`` polls a URL (an engine's health endpoint) until it answers
HTTP 200, raising ``ServerError`` with the log's last ``TAIL_LINES`` lines when
the process exits first or the time runs out. ``tail`` heads those lines with the log's
first Python exception line when it lies before them (``exception_lines``): a vLLM
engine's root cause sits far above the last 30 lines its front end prints while it
shuts down ("Engine core initialization failed. See root cause above").

``run_tool`` runs a client as a ``ManagedProcess`` and waits for it, giving up
early when the server it talks to dies, or when ``timeout_s`` passes.

``sigterm_as_interrupt()`` turns SIGTERM into ``KeyboardInterrupt`` for its
duration (main thread only), so teardown runs for SIGTERM as for Ctrl-C.

``free_port`` / ``free_ports`` / ``port_in_use`` pick and check TCP ports on
the loopback (or a given) interface.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import psutil

#: Log lines a failure message carries.
TAIL_LINES = 30
#: How ``tail`` names the first exception line of a log when the tail does not hold it.
FIRST_EXCEPTION = "--- first exception line in the log: "

#: A log line's prefix before the message: a multi-process prefix (``(EngineCore pid=12) ``)
#: and a logger's level, date and source (vLLM: ``ERROR 12-07 14:53:48 [core.py:1231] ``).
_LOG_PREFIX = re.compile(
    r"^(?:\([\w.-]+ pid=\d+\)\s*)?"
    r"(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d\s+\d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s*)?"
)
#: A Python exception line as a traceback ends: ``TypeError: ...``, ``torch.OutOfMemoryError: ...``.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception)(?::\s.*)?$")


def exception_lines(text: str) -> list[tuple[int, str]]:
    """(line index, exception line without its log prefix) of every Python exception line of
    ``text``, in order."""
    out = []
    for i, line in enumerate(text.splitlines()):
        msg = _LOG_PREFIX.sub("", line.strip(), count=1).strip()
        if _EXCEPTION_LINE.match(msg):
            out.append((i, msg))
    return out


class ServerError(RuntimeError):
    """A server could not be started, or died; ``log_tail`` holds its last log lines."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail

    def full(self) -> str:
        """The message with the log tail (what a FAILED case's ``reason`` says)."""
        return f"{self}\n--- last {TAIL_LINES} log lines ---\n{self.log_tail}" if self.log_tail else str(self)


# --------------------------------------------------------------------------- processes
_LIVE: set["ManagedProcess"] = set()
_LIVE_LOCK = threading.Lock()


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def reason_line(reason: str | None, width: int = 160) -> str:
    """A FAILED case's reason in one line: its first line, and where the rest holds a log tail
    with a Python traceback (``ServerError.full``), the error there: the log's
    first exception line when the tail names it (``tail``: a vLLM engine's
    root cause), else the tail's last one, so that a table says why a server died without
    opening its log (``show``, ``compare``)."""
    if not reason or not reason.strip():
        return ""
    first, *rest = reason.strip().splitlines()
    cause = next((ln[len(FIRST_EXCEPTION):].strip() for ln in rest if ln.startswith(FIRST_EXCEPTION)), None)
    if cause is None:
        found = exception_lines("\n".join(rest))
        cause = found[-1][1] if found else None
    if cause is None or cause in first:
        return first
    return f"{first}; error in its log: {cause[:width]}"


def tail(path: Path, n: int = TAIL_LINES, start: int = 0) -> str:
    """The last ``n`` lines of ``path`` from byte ``start`` on (at most its last 256 KiB; ""
    when unreadable), headed by ``FIRST_EXCEPTION`` + the first exception line of that text
    when it lies above those ``n`` lines."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - 256 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = data.splitlines()
    last = "\n".join(lines[-n:])
    first = exception_lines(data)[:1]
    if first and first[0][0] < len(lines) - n:
        return f"{FIRST_EXCEPTION}{first[0][1]}\n{last}"
    return last


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return out


class ManagedProcess:
    """One command in its own session and process group, logging to ``log_path`` (appended).

    Attributes:
        pid / pgid: the leader's pid (= its group id).
        log_offset: byte offset of this run's output in ``log_path``.

    Raises:
        OSError: the command could not be launched (the log file is closed again).
    """

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
                 banner: str | None = None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as f:
            if banner:
                f.write(f"==== normbench: {banner}\n".encode())
            f.write(("==== normbench: $ " + " ".join(shlex.quote(c) for c in self.cmd) + "\n").encode())
            self.log_offset = f.tell()
        self._log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
                preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
            )
        except OSError:
            self._log.close()
            raise
        self.pid = self.pgid = self.proc.pid
        self._seen: dict[int, psutil.Process] = {}
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.remember_children()

    def remember_children(self) -> None:
        """Note the current descendants, so ``stop`` finds them even outside the group."""
        try:
            leader = psutil.Process(self.pid)
            for p in [leader, *leader.children(recursive=True)]:
                self._seen.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def poll(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def tail(self, n: int = TAIL_LINES) -> str:
        return tail(self.log_path, n, self.log_offset)

    def output(self) -> str:
        """This run's whole output so far."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this run still alive: the group's members and remembered descendants."""
        found = {p.pid: p for p in group_members(self.pgid)}
        for pid, p in self._seen.items():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    found.setdefault(pid, p)
            except psutil.Error:
                continue
        return list(found.values())

    def _signal_all(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for p in self.leftovers():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the group and known descendants; SIGKILL after ``grace_s``; wait until gone.

        Safe to call twice; Ctrl-C is ignored while it runs (it is bounded).
        """
        with _sigint_ignored():
            if self.alive() or self.leftovers():
                self.remember_children()
                self._signal_all(signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline:
                    self.proc.poll()
                    if not self.alive() and not self.leftovers():
                        break
                    time.sleep(0.2)
                for _ in range(50):  # SIGKILL until nothing is left (10 s at most)
                    left = self.leftovers()
                    self.proc.poll()
                    if not left and not self.alive():
                        break
                    self._signal_all(signal.SIGKILL)
                    time.sleep(0.2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self._log.close()
            with _LIVE_LOCK:
                _LIVE.discard(self)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for p in live:
        with contextlib.suppress(Exception):
            p.stop(grace_s=5)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise ``KeyboardInterrupt`` on SIGTERM while inside (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --------------------------------------------------------------------------- health
def http_ok(url: str, timeout: float) -> bool:
    """Whether ``GET url`` answers HTTP 200 within ``timeout`` seconds (any error: False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(process: ManagedProcess, url: str, t0: float, timeout_s: float, what: str,
                 timeout_setting: str | None = None, status: Callable[[str], None] = lambda s: None,
                 poll_s: float = 0.5) -> None:
    """Poll ``url`` until it answers 200, while ``process`` lives and ``timeout_s`` has not passed since ``t0``.

    Args:
        process: the server's process (its descendants are remembered at each poll).
        url: the health endpoint, e.g. ``http://127.0.0.1:8000/health``.
        t0: ``time.monotonic()`` at launch; ``timeout_s``: seconds allowed from then.
        what: the server as messages name it (``vllm serve``).
        timeout_setting: the suite field that sets ``timeout_s``, named in the timeout message.
        status: told ``waiting for <what> on port N (Ks)`` at each poll.

    Raises:
        ServerError: the process exited first, or ``timeout_s`` passed; with its log tail.
    """
    port = urllib.parse.urlsplit(url).port
    where = f"{timeout_setting}; log: {process.log_path}" if timeout_setting else f"log: {process.log_path}"
    while True:
        code = process.poll()
        if code is not None:
            raise ServerError(f"{what} exited with code {code} before becoming healthy (log: {process.log_path})",
                              process.tail())
        waited = time.monotonic() - t0
        if waited > timeout_s:
            raise ServerError(f"{what} did not become healthy within {timeout_s:g} s ({where})", process.tail())
        if http_ok(url, timeout=2.0):
            return
        status(f"waiting for {what} on port {port} ({waited:.0f}s)")
        process.remember_children()
        time.sleep(poll_s)


# --------------------------------------------------------------------------- ports
def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different ports that nothing listens on now (held open together while the OS picks them)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def port_in_use(port: int, host: str = "127.0.0.1") -> str | None:
    """Why ``port`` cannot be bound on ``host`` ("in use by pid 12 (python ...)"), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            owner = ""
            with contextlib.suppress(psutil.Error, OSError):
                for c in psutil.net_connections("inet"):
                    if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                        p = psutil.Process(c.pid)
                        owner = f" by pid {c.pid} ({' '.join(p.cmdline()[:3])[:80]})"
                        break
            return f"port {port} on {host} is already in use{owner} ({e.strerror})"
    return None


# --------------------------------------------------------------------------- executables
def tool_command(script: str, module: str) -> list[str]:
    """How to run a program of this Python environment.

    The console script ``script`` next to ``sys.executable`` when there is one
    (so ``ps`` shows e.g. ``vllm serve``), else ``python -m <module>``.
    """
    path = Path(sys.executable).parent / script
    if path.is_file() and os.access(path, os.X_OK):
        return [str(path)]
    return [sys.executable, "-m", module]


# --------------------------------------------------------------------------- client tools
class Watched(Protocol):
    """What ``run_tool`` watches besides its client: a server, alive or not."""

    def alive(self) -> bool: ...


@dataclass
class ToolResult:
    """How a client tool ended: ``returncode`` (None if stopped), why it was stopped, its log tail, seconds taken."""

    returncode: int | None
    stopped: str | None
    log_tail: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped is None


def run_tool(
    cmd: list[str], log_path: Path, env: dict[str, str], timeout_s: float,
    server: Watched | None = None, cwd: Path | None = None, banner: str | None = None,
) -> ToolResult:
    """Run a client to completion in its own process group.

    It is stopped early when ``server`` dies (``stopped="server died"``) or after
    ``timeout_s`` seconds (``stopped="timeout after N s"``); on Ctrl-C it is
    stopped and the ``KeyboardInterrupt`` propagates.

    Raises:
        OSError: the command could not be launched.
    """
    t0 = time.monotonic()
    proc = ManagedProcess(cmd, log_path, env=env, cwd=cwd, banner=banner)
    stopped = None
    try:
        while proc.poll() is None:
            if server is not None and not server.alive():
                stopped = "server died"
                break
            if time.monotonic() - t0 > timeout_s:
                stopped = f"timeout after {timeout_s:g} s"
                break
            time.sleep(0.25)
    finally:
        proc.stop(grace_s=10)
    return ToolResult(None if stopped else proc.poll(), stopped, proc.tail(), time.monotonic() - t0)
