"""One serving engine's server for the end-to-end stages, and what the runners share about model paths.

``Server`` runs one variant's server with whichever engine the suite's
``server.engine`` names (``normbench.engines``: the engine says what to launch,
where it answers, what its log means) on top of ``normbench.process`` (process
group, log file, health polling, ports, teardown). It picks a free port unless
one is given, checks the port first, launches ``engine.serve_command(...)``,
polls ``engine.health_path`` until it answers 200, and raises ``ServerError``
carrying the last 30 log lines when the server exits or does not become
healthy within ``startup_timeout_s``. Once healthy it reads the engine's
logged effective configuration and its evidence (``engine.read_start``). With
``cold_start`` each start gets the engine's fresh, empty compile caches
(``engine.cold_start_env``, in a temporary folder removed when it stops), as
``vllm bench startup``'s cold phase.

``resolve_model`` / ``expand_env`` read ``${NAME}`` and ``${NAME:-default}``
from the environment in a suite's model path (and, via ``accuracy``, its data files).

``tool_command`` finds the client tools (``vllm`` for ``vllm bench ...``,
``guidellm``, ``lm_eval``); ``run_tool`` (``normbench.process``) runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normbench.engines import DEFAULT_ENGINE, Engine, get_engine
from normbench.engines.vllm import CLI_MODULE as VLLM_CLI_MODULE
from normbench.errors import NormbenchError
from normbench.process import (  # re-exported (__all__): the runners' and tests' one import point
    TAIL_LINES,
    ManagedProcess,
    ServerError,
    ToolResult,
    free_port,
    free_ports,
    group_members,
    port_in_use,
    run_tool,
    sigterm_as_interrupt,
    tail,
    wait_healthy,
)
from normbench.process import tool_command as _tool_command

__all__ = [
    "Server", "VllmServer", "CLIENT_MODULES", "tool_command", "expand_env", "resolve_model", "looks_local",
    "load_json",
    # normbench.process, re-exported
    "TAIL_LINES", "ManagedProcess", "ServerError", "ToolResult", "free_port", "free_ports", "group_members",
    "port_in_use", "run_tool", "sigterm_as_interrupt", "tail", "wait_healthy",
]

#: Client tools: console script -> the module ``python -m`` runs when there is no script.
CLIENT_MODULES = {"vllm": VLLM_CLI_MODULE, "guidellm": "guidellm", "lm_eval": "lm_eval"}


def tool_command(name: str) -> list[str]:
    """How to run a client tool of this Python environment: ``vllm``, ``guidellm`` or ``lm_eval``.

    The console script next to ``sys.executable`` when there is one, else
    ``python -m <module>`` (``CLIENT_MODULES``).
    """
    return _tool_command(name, CLIENT_MODULES[name])


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: dict[str, str] | None = None) -> str:
    """``${NAME}`` and ``${NAME:-default}`` in ``text`` replaced from ``env`` (default ``os.environ``).

    Shell semantics: ``${NAME:-default}`` gives ``default`` when NAME is unset or
    empty. Nothing else is expanded (no ``$NAME``, no commands).

    Raises:
        NormbenchError: ``${NAME}`` without a default and NAME unset or empty.
    """
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


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- the server
def _default_engine() -> Engine:
    return get_engine(DEFAULT_ENGINE)


@dataclass
class Server:
    """One engine server for one variant (shared by its startup, throughput and accuracy cases).

    Attributes:
        model: what the engine serves (``resolve_model`` applied).
        name: the served model name clients send.
        compilation_config: the variant's settings for the engine ({} = none given).
        args: server args then variant args (a port there overrides ``port``).
        env: the full environment of the server (``engine.server_env`` applied).
        log_path: ``<run>/logs/<variant>-server.log`` (appended across repeats).
        startup_timeout_s: how long the health endpoint may take (s).
        port: None = a free port; ignored when ``args`` set the engine's port.
        grace_s: seconds between SIGTERM and SIGKILL at ``stop``.
        cold_start: start with the engine's fresh, empty compile caches (a
            temporary folder removed by ``stop``).
        evidence: after ``start``, what the engine logged about its compilation
            (``engine.read_start``), with ``source`` (the log) added; None when
            the engine reports nothing of the kind.
        engine: the serving engine (default: vLLM).
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
    engine: Engine = field(default_factory=_default_engine)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return self.engine.serve_command(self.model, self.host, self.port, self.name, self.compilation_config,
                                         self.args)

    def start(self, banner: str = "", status=lambda s: None) -> None:
        """Launch and wait for the engine's health endpoint.

        Raises:
            ServerError: a bad port in ``args``, port taken, launch failure, exit
                before healthy, or ``startup_timeout_s`` passed (the process
                group is stopped first).
        """
        what = self.engine.display
        try:
            given_port = self.engine.given_port(self.args)
        except NormbenchError as e:
            raise ServerError(f"cannot start {what}: {e}") from e
        given_host = self.engine.given_host(self.args)
        if given_host:
            self.host = "127.0.0.1" if given_host in ("0.0.0.0", "::", "") else given_host
        if given_port is not None:
            self.port = given_port
        elif self.port is None:
            self.port = free_port(self.host)
        taken = port_in_use(self.port, self.host)
        if taken:
            raise ServerError(f"cannot start the server: {taken}")
        env = dict(self.env)
        if self.cold_start:
            self._cold_dir = tempfile.mkdtemp(prefix="normbench-cold-")
            env.update(self.engine.cold_start_env(self._cold_dir) or {})
        t0 = time.monotonic()
        try:
            self.process = ManagedProcess(self.command(), self.log_path, env=env, banner=banner)
        except OSError as e:
            self._remove_cold_dir()
            raise ServerError(f"cannot launch {what}: {e}") from e
        try:
            wait_healthy(self.process, self.base_url + self.engine.health_path, t0, self.startup_timeout_s, what,
                         timeout_setting="server.startup_timeout_s", status=status)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self.process.remember_children()
        self._read_effective_config()

    def _read_effective_config(self) -> None:
        assert self.process is not None
        text = self.process.output()
        marker = self.engine.start_marker
        for _ in range(10 if marker else 0):  # the line is written before health answers; flush races aside
            if marker in text:
                break
            time.sleep(0.2)
            text = self.process.output()
        facts = self.engine.read_start(text)
        self.evidence = None if facts.evidence is None else {"source": str(self.log_path), **facts.evidence}
        if facts.effective_config is None:
            self.config_note = "no engine config line found in the server log; requested values not verified"
            return
        self.effective_config = facts.effective_config

    def mismatches(self) -> list[str]:
        """Requested settings the engine's logged config contradicts."""
        if not self.compilation_config or self.effective_config is None:
            return []
        return self.engine.mismatches(self.compilation_config, self.effective_config)

    def check_alive(self) -> None:
        """Raise ``ServerError`` if the server exited."""
        if self.process is None:
            raise ServerError("the server is not running")
        code = self.process.poll()
        if code is not None:
            raise ServerError(f"{self.engine.display} died (exit code {code}; log: {self.log_path})",
                              self.process.tail())
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


#: The name the vLLM-only server had; a ``Server`` whose engine defaults to vLLM.
VllmServer = Server
