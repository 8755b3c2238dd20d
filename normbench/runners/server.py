"""Process lifecycle for the end-to-end stages: the ``vllm serve`` server and client tools.

``ManagedProcess`` runs one command in its own session (``start_new_session=True``,
so its process group id is its pid and a terminal's Ctrl-C does not reach it:
normbench stops it explicitly), with stdout and stderr appended to a log
file. ``stop()`` sends SIGTERM to the whole group and to every descendant seen
while it ran (vLLM's EngineCore and workers; a child that called ``setsid``
leaves the group but not the list), waits ``grace_s``, then SIGKILLs what is
left and waits until nothing of it remains. On Linux the leader also gets
``PR_SET_PDEATHSIG=SIGTERM``, so it is told to stop if normbench itself dies
(SIGKILL included); and every live ``ManagedProcess`` is stopped at interpreter
exit.

``VllmServer`` builds ``vllm serve <model> --host 127.0.0.1 --port <port>
[--served-model-name N] [--compilation-config '<json>'] <server args>
<variant args>`` (the JSON is one argv element, never a shell string), checks
the port first, polls ``GET /health`` until it answers 200, and raises
``ServerError`` carrying the last 30 log lines when the server exits or does
not become healthy within ``startup_timeout_s``. Once healthy it reads the
engine's logged ``compilation_config`` and its fusion evidence
(``normbench.runners.vllm_config``). With ``cold_start`` each start gets
fresh, empty ``VLLM_CACHE_ROOT`` and ``TORCHINDUCTOR_CACHE_DIR`` folders
(removed when it stops), as ``vllm bench startup``'s cold phase.

``resolve_model`` / ``expand_env`` read ``${NAME}`` and ``${NAME:-default}``
from the environment in a suite's model path (and, via ``accuracy``, its data files).

``run_tool`` runs a client (guidellm, ``vllm bench ...``, lm-eval) as a
``ManagedProcess`` and waits for it, giving up early if the server it talks
to dies, or when ``timeout_s`` passes.

``sigterm_as_interrupt()`` turns SIGTERM into ``KeyboardInterrupt`` for its
duration (main thread only), so teardown runs for SIGTERM as for Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil

from normbench.runners import vllm_config

TAIL_LINES = 30

#: Options of ``vllm serve`` that take a value and belong to its HTTP frontend
#: (``vllm bench latency`` rejects them); normbench sets host and port itself.
SERVE_ONLY_OPTIONS = {
    "--host", "--port", "--served-model-name", "--api-key", "--uvicorn-log-level",
    "--root-path", "--ssl-keyfile", "--ssl-certfile", "--ssl-ca-certs", "--chat-template",
    "--response-role", "--allowed-origins", "--allowed-methods", "--allowed-headers",
    "--middleware", "--tool-call-parser", "--reasoning-parser", "--max-log-len",
}
SERVE_ONLY_FLAGS = {
    "--disable-log-requests", "--enable-log-requests", "--disable-uvicorn-access-log",
    "--enable-auto-tool-choice", "--disable-fastapi-docs", "--disable-frontend-multiprocessing",
    "--enable-prompt-tokens-details", "--enable-server-load-tracking",
}


class ServerError(RuntimeError):
    """The server could not be started, or died; ``log_tail`` holds its last log lines."""

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


def tail(path: Path, n: int = TAIL_LINES, start: int = 0) -> str:
    """The last ``n`` lines of ``path`` from byte ``start`` on ("" when unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(start, size - 256 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-n:])


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
    """

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
                 banner: str | None = None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as f:
            if banner:
                f.write(f"==== normbench: {banner}\n".encode())
            f.write(("==== normbench: $ " + " ".join(_quote(c) for c in self.cmd) + "\n").encode())
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


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


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
def tool_command(name: str) -> list[str]:
    """How to run a tool of this Python environment: ``vllm``, ``guidellm`` or ``lm_eval``.

    The console script next to ``sys.executable`` when there is one (so ``ps``
    shows ``vllm serve``), else ``python -m <module>``.
    """
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    module = {"vllm": "vllm.entrypoints.cli.main", "guidellm": "guidellm", "lm_eval": "lm_eval"}[name]
    return [sys.executable, "-m", module]


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: dict[str, str] | None = None) -> str:
    """``${NAME}`` and ``${NAME:-default}`` in ``text`` replaced from ``env`` (default ``os.environ``).

    Shell semantics: ``${NAME:-default}`` gives ``default`` when NAME is unset or
    empty. Nothing else is expanded (no ``$NAME``, no commands).

    Raises:
        NormbenchError: ``${NAME}`` without a default and NAME unset or empty.
    """
    from normbench.errors import NormbenchError

    source = os.environ if env is None else env

    def sub(m: re.Match) -> str:
        value = source.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise NormbenchError(f"{text}: the environment variable {m.group(1)} is not set "
                             f"(or write ${{{m.group(1)}:-default}})")

    return _ENV_REF.sub(sub, text)


def resolve_model(model: str) -> str:
    """A local model directory as an absolute path (tools run elsewhere); else the hub id as given.

    ``${NAME}`` / ``${NAME:-default}`` are expanded first (``expand_env``).
    """
    model = expand_env(model)
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def looks_local(model: str) -> bool:
    """Whether ``model`` (expanded) names a folder rather than a hub id: absolute, ``./``, ``../`` or ``~``."""
    return model.startswith(("/", "./", "../", "~"))


def strip_serve_only(args: list[str]) -> list[str]:
    """``args`` without the HTTP-frontend options of ``vllm serve`` (for ``vllm bench latency``)."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in SERVE_ONLY_OPTIONS:
            skip = "=" not in a
            continue
        if name in SERVE_ONLY_FLAGS:
            continue
        out.append(a)
    return out


def option_value(args: list[str], name: str, *aliases: str) -> str | None:
    """The last value given to option ``name`` (or one of its ``aliases``) in ``args`` (``--x v`` or ``--x=v``)."""
    value = None
    for i, a in enumerate(args):
        for n in (name, *aliases):
            if a == n and i + 1 < len(args):
                value = args[i + 1]
            elif a.startswith(n + "="):
                value = a.split("=", 1)[1]
    return value


def engine_gpus(args: list[str]) -> int:
    """GPUs one vLLM engine started with ``args`` uses: tensor x pipeline x data parallel size.

    Reads ``--tensor-parallel-size``/``-tp``, ``--pipeline-parallel-size``/``-pp``
    and ``--data-parallel-size``/``-dp`` (each 1 when absent; the last given wins).

    Raises:
        NormbenchError: a size that is not a whole number >= 1.
    """
    from normbench.errors import NormbenchError

    total = 1
    for names in (("--tensor-parallel-size", "-tp"), ("--pipeline-parallel-size", "-pp"),
                  ("--data-parallel-size", "-dp")):
        value = option_value(args, *names)
        if value is None:
            continue
        if not value.isdigit() or int(value) < 1:
            raise NormbenchError(f"server args: {names[0]} {value!r} is not a whole number >= 1")
        total *= int(value)
    return total


# --------------------------------------------------------------------------- the server
@dataclass
class VllmServer:
    """One ``vllm serve`` for one variant (shared by its throughput and accuracy cases).

    Attributes:
        model: what ``vllm serve`` gets (``resolve_model`` applied).
        name: the served model name clients send.
        compilation_config: the variant's ``--compilation-config`` ({} = none given).
        args: server args then variant args (a ``--port`` there overrides ``port``).
        env: the full environment of the server.
        log_path: ``<run>/logs/<variant>-server.log`` (appended across repeats).
        startup_timeout_s: how long ``/health`` may take.
        port: None = a free port; ignored when ``args`` carries ``--port``.
        cold_start: run with fresh, empty ``VLLM_CACHE_ROOT`` and
            ``TORCHINDUCTOR_CACHE_DIR`` (a temporary folder removed by ``stop``).
        evidence: after ``start``, what the engine logged about its compilation
            (``vllm_config.parse_fusion_evidence``), with ``source`` (the log) added.
    """

    model: str
    name: str
    compilation_config: dict[str, Any]
    args: list[str]
    env: dict[str, str]
    log_path: Path
    startup_timeout_s: float = 900.0
    port: int | None = None
    host: str = "127.0.0.1"
    grace_s: float = 30.0
    process: ManagedProcess | None = None
    startup_s: float | None = None
    effective_config: dict[str, Any] | None = None
    config_note: str | None = None
    cold_start: bool = False
    evidence: dict[str, Any] | None = None
    _cold_dir: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [*tool_command("vllm"), "serve", self.model]
        if option_value(self.args, "--host") is None:
            cmd += ["--host", self.host]
        if option_value(self.args, "--port") is None:
            cmd += ["--port", str(self.port)]
        if option_value(self.args, "--served-model-name") is None:
            cmd += ["--served-model-name", self.name]
        if self.compilation_config:
            cmd += ["--compilation-config", vllm_config.compilation_config_arg(self.compilation_config)]
        return cmd + list(self.args)

    def start(self, banner: str = "", status=lambda s: None) -> None:
        """Launch and wait for ``/health``.

        Raises:
            ServerError: port taken, launch failure, exit before healthy, or
                ``startup_timeout_s`` passed (the process group is stopped first).
        """
        given_port = option_value(self.args, "--port")
        given_host = option_value(self.args, "--host")
        if given_host:
            self.host = "127.0.0.1" if given_host in ("0.0.0.0", "::", "") else given_host
        if given_port is not None:
            self.port = int(given_port)
        elif self.port is None:
            self.port = free_port(self.host)
        taken = port_in_use(self.port, self.host)
        if taken:
            raise ServerError(f"cannot start the server: {taken}")
        env = dict(self.env)
        if self.cold_start:
            self._cold_dir = tempfile.mkdtemp(prefix="normbench-cold-")
            env["VLLM_CACHE_ROOT"] = os.path.join(self._cold_dir, "vllm")
            env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(self._cold_dir, "inductor")
        t0 = time.monotonic()
        try:
            self.process = ManagedProcess(self.command(), self.log_path, env=env, banner=banner)
        except OSError as e:
            self._remove_cold_dir()
            raise ServerError(f"cannot launch vllm serve: {e}") from e
        try:
            self._wait_healthy(t0, status)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self.process.remember_children()
        self._read_effective_config()

    def _wait_healthy(self, t0: float, status) -> None:
        assert self.process is not None
        url = f"{self.base_url}/health"
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerError(
                    f"vllm serve exited with code {code} before becoming healthy (log: {self.log_path})",
                    self.process.tail(),
                )
            waited = time.monotonic() - t0
            if waited > self.startup_timeout_s:
                raise ServerError(
                    f"vllm serve did not become healthy within {self.startup_timeout_s:g} s "
                    f"(server.startup_timeout_s; log: {self.log_path})",
                    self.process.tail(),
                )
            if _get_ok(url, timeout=2.0):
                return
            status(f"waiting for vllm serve on port {self.port} ({waited:.0f}s)")
            self.process.remember_children()
            time.sleep(0.5)

    def _read_effective_config(self) -> None:
        assert self.process is not None
        text = ""
        for _ in range(10):  # the engine line is written before /health answers; flush races aside
            text = self.process.output()
            if "with config: " in text:
                break
            time.sleep(0.2)
        eff = vllm_config.parse_engine_config(text)
        self.evidence = {"source": str(self.log_path), **vllm_config.parse_fusion_evidence(text, eff)}
        if eff is None:
            self.config_note = "no engine config line found in the server log; requested values not verified"
            return
        self.effective_config = eff

    def mismatches(self) -> list[str]:
        """Requested compilation-config values the engine's logged config contradicts."""
        if not self.compilation_config or self.effective_config is None:
            return []
        return vllm_config.config_mismatches(self.compilation_config, self.effective_config)

    def check_alive(self) -> None:
        """Raise ``ServerError`` if the server exited (or stopped answering ``/health``)."""
        if self.process is None:
            raise ServerError("the server is not running")
        code = self.process.poll()
        if code is not None:
            raise ServerError(f"vllm serve died (exit code {code}; log: {self.log_path})", self.process.tail())
        self.process.remember_children()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(self.grace_s)
        self._remove_cold_dir()

    def _remove_cold_dir(self) -> None:
        if self._cold_dir is not None:
            shutil.rmtree(self._cold_dir, ignore_errors=True)
            self._cold_dir = None

    def info(self) -> dict[str, Any]:
        """What the case record keeps about the server."""
        out = {
            "url": self.base_url,
            "pid": self.process.pid if self.process else None,
            "startup_s": round(self.startup_s, 2) if self.startup_s is not None else None,
            "command": self.command(),
        }
        if self.cold_start:
            out["cold_start"] = True
        return out


def _get_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --------------------------------------------------------------------------- client tools
@dataclass
class ToolResult:
    """How a client tool ended: ``returncode`` (None if stopped), why it was stopped, its log tail."""

    returncode: int | None
    stopped: str | None
    log_tail: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped is None


def run_tool(
    cmd: list[str], log_path: Path, env: dict[str, str], timeout_s: float,
    server: VllmServer | None = None, cwd: Path | None = None, banner: str | None = None,
) -> ToolResult:
    """Run a client to completion in its own process group.

    It is stopped early when ``server`` dies (``stopped="server died"``) or after
    ``timeout_s`` (``stopped="timeout"``); on Ctrl-C it is stopped and the
    ``KeyboardInterrupt`` propagates.
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


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
