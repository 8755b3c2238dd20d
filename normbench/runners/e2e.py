"""The end-to-end runner: every end-to-end case of a suite (startup, throughput, accuracy, latency, ...).

``run(cases, ctx)`` receives all end-to-end cases (expansion order; cases
already marked ``skip`` are ignored) and:

1. **Checks before any server starts** (``NormbenchError``, exit code 2): the
   suite's serving engine (``server.engine``, ``normbench.engines``; vLLM by
   default) is installed, and its own checks (``Engine.preflight``): for vLLM,
   every variant's ``compilation_config`` uses fields the installed vLLM knows
   (naming the field it expects, e.g. ``fuse_norm_quant`` vs the older
   ``enable_fusion``), and the parallel sizes in the args are whole numbers;
   vLLM's CLI when a ``vllm bench`` client runs; guidellm >= 0.7 when a stage
   uses it; lm-eval and the accuracy ``data_files``.
2. **Per repeat**, in the variant order expansion gives that repeat (A B, then
   B A, ...): starts ONE server per variant (``normbench.runners.server.Server``
   with the engine; with ``server.cold_start`` on fresh, empty compile caches), records that
   start (``startup`` cases), runs that variant's cases of serving kinds
   (throughput, accuracy) in stage order against it, stops it. Then that
   repeat's cases of kinds whose client starts its own engine (latency: ``vllm
   bench latency``, no server) run, in expansion order.
3. Runs every case the same way (``run_case``): its kind
   (``normbench.stages.<kind>``, an ``E2EKind``) says only what is its own, the
   client's ``command``, its ``outputs`` and how to ``parse`` them; the client's
   process, log, timeout and retries, the artifacts, the engine's start
   (evidence, config check), the error paths and the record are this module's.
4. Hands each finished ``CaseRecord`` to ``ctx.record`` at once.

Run by a parallel executor's end-to-end lane (``normbench.executors.run_e2e_lanes``)
it gets one variant's cases, on the lane's GPUs, and serves on the lane's
port, ``ctx.extra["port"]`` (the checks of step 1 ran once in the parent:
``ctx.extra["preflight_done"]``).

Failures stay local: a server that does not start (port taken, bad argument,
no ``/health`` within ``server.startup_timeout_s``) or whose logged engine
config contradicts the variant's ``compilation_config`` makes that variant's
cases of that repeat FAILED, with the reason and the last 30 server log lines;
a server that dies mid-stage fails the running case and the variant's
remaining ones; a client that fails fails its case. Other variants still run.
Ctrl-C and SIGTERM stop the running client and server (their whole process
groups: SIGTERM, then SIGKILL after the grace period) and re-raise
``KeyboardInterrupt``; the case in flight is not recorded.

Record fields (``CaseRecord``, which declares each):

* ``metrics``: see the kinds' client modules (``normbench.runners.throughput``,
  ``latency``, ``accuracy``) and ``normbench.stages.startup``; one sample per
  metric (this repeat).
* ``artifacts``: paths relative to the run directory: ``server_log``
  (``logs/<variant>-server.log``), ``client_log``, and the kind's outputs:
  ``raw`` (the tool's JSON), ``samples`` (lm-eval's per-document JSONL).
* ``effective_config``: the ``compilation_config`` the engine logged (enums by
  name), or None with ``config_note`` saying why it was not verified.
* ``evidence``: what the engine that served (or, for latency, ran) the case did,
  from its log (``Engine.read_start``; vLLM: ``normbench.engines.vllm.parse_fusion_evidence``): ``platform``,
  ``compilation_mode``, ``compilation_config`` (mode, backend, custom_ops,
  pass_config, cudagraph_mode), ``enabled_fusions``, ``fuse_norm_quant``,
  ``compile`` (compiled / cache), ``cache_dir``, ``passes`` (pass -> runs),
  ``fusion`` (pattern-matcher pass -> patterns replaced; None when unknowable,
  ``note`` saying why, e.g. ``"no fusion pass on this platform"`` on vLLM's CPU
  platform: never a made-up zero), ``torch_compile_s``, ``engine_init_s`` and
  ``source`` (the log, relative to the run). ``server.log_passes`` makes the
  passes' debug lines reach the log.
* ``startup`` cases: metrics ``server_startup_s`` (launch to ``/health`` 200, s)
  and ``torch_compile_s`` (vLLM's own compile time, s, when logged), both lower
  is better, one sample per repeat.
* ``requested_config``: the variant's ``compilation_config``.
* ``server``: url, pid, startup_s, command (throughput / accuracy).
* ``tool``: ``{"name": .., "version": ..}``.
* ``requests``: ``{"completed": n, "failed": m}`` (throughput); ``attempts``:
  client runs it took, for kinds that try a client again (``Command.retries``;
  guidellm is tried again once when it hangs past its timeout, see
  ``normbench.runners.throughput.GUIDELLM_RETRIES``).
* ``items``: accuracy only: ``[{"doc_id": 0, "strict": 0|1, "flexible": 0|1}, ...]``
  sorted by ``doc_id``: the per-document gsm8k results (exact match under
  lm-eval's strict-match and flexible-extract filters), for paired tests
  (McNemar) between variants or runs.
* ``latencies_ms``: latency only: every timed iteration (ms).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from normbench.engines import engine_for, jsonable
from normbench.engines import vllm as vllm_engine
from normbench.errors import NormbenchError
from normbench.expand import Case, E2ESettings
from normbench.runners import RunContext, Stopwatch, base_record
from normbench.runners.server import (
    Server,
    ServerError,
    ToolResult,
    expand_env,
    looks_local,
    port_in_use,
    resolve_model,
    run_tool,
    sigterm_as_interrupt,
)
from normbench.stages import kind_of
from normbench.stages.e2e import Command, slug
from normbench.store import CaseRecord, utc_now
from normbench.suite import Variant

#: A client whose kind gives no timeout (``Command.timeout_s``) is stopped after this long (s).
CLIENT_TIMEOUT_S = 4 * 3600.0


def _tool_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


class _Env:
    """Everything the cases of one run share: the engine, resolved model, environments, tool versions."""

    def __init__(self, ctx: RunContext):
        spec = ctx.suite.server
        assert spec is not None  # the suite validator requires a server for e2e stages
        self.ctx = ctx
        self.spec = spec
        self.engine = engine_for(spec)
        self.model = resolve_model(spec.model)
        self.served_name = spec.served_model_name or expand_env(spec.model)
        self.client_env = {**os.environ, **spec.env}
        self.logs = ctx.logs_dir
        self.logs.mkdir(parents=True, exist_ok=True)
        self.logging_config: Path | None = None
        if spec.log_passes:
            self.logging_config = self.engine.prepare_logging(self.logs, self.client_env)
        self.versions = {
            "vllm": vllm_engine.vllm_version(),  # the `vllm bench` clients
            "guidellm": _tool_version("guidellm"),
            "lm_eval": _tool_version("lm_eval"),
            self.engine.name: self.engine.version(),
        }
        self.device = ctx.caps.gpu_name or ctx.caps.device

    def variant(self, name: str | None) -> Variant:
        return self.ctx.suite.variants.get(name or "default", Variant())

    def tool_version(self, tool: str) -> str | None:
        """The version of the distribution ``tool``'s first word names (looked up once), else the engine's."""
        dist = tool.split()[0]
        if dist not in self.versions:
            self.versions[dist] = _tool_version(dist)
        return self.versions[dist] or self.versions.get(self.engine.name)

    def server_env(self, variant: Variant) -> dict[str, str]:
        """The environment of a variant's engines (the server and the offline latency tool).

        ``Engine.server_env`` adds what ``server.log_passes`` needs (vLLM:
        ``VLLM_LOGGING_CONFIG_PATH`` at the run's pass-logging config, unless the
        environment already sets a logging config, ``VLLM_LOGGING_LEVEL=DEBUG``
        or ``VLLM_CONFIGURE_LOGGING=0``).
        """
        return self.engine.server_env({**os.environ, **self.spec.env, **variant.env}, self.logging_config)

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.ctx.run_dir))
        except ValueError:
            return str(path)


def client_of(case: Case) -> Any:
    """The validated stage model an end-to-end case carries (``Case.settings.client``).

    Raises:
        NormbenchError: the case carries none (cases from ``normbench.expand`` always do).
    """
    if not isinstance(case.settings, E2ESettings):
        raise NormbenchError(f"end-to-end case {case.case_id} carries no E2ESettings (expand() fills them)")
    return case.settings.client


# --------------------------------------------------------------------------- preflight
def preflight(cases: list[Case], ctx: RunContext) -> None:
    """Everything that can be wrong before a server starts.

    Raises:
        NormbenchError: the suite's engine is not installed; what the engine's
            own checks refuse (``Engine.preflight``; vLLM: a compilation_config
            field the installed vLLM does not know, a parallel size that is not
            a whole number); a ``vllm bench serve`` client without vLLM;
            guidellm missing or < 0.7; lm-eval or a ``data_files`` file missing;
            a ``${NAME}`` in ``server.model`` that is unset, or a local model
            folder that does not exist. All problems at once, one per line.
    """
    spec = ctx.suite.server
    if spec is None:
        raise NormbenchError("end-to-end stages need a suite-level 'server'")
    engine = engine_for(spec)
    if not engine.installed():
        raise NormbenchError(f"end-to-end stages need {engine.install_hint}")
    problems: list[str] = []
    try:
        model = expand_env(spec.model)
        if looks_local(model) and not Path(model).expanduser().is_dir():
            problems.append(f"server.model: no such folder {model} (normbench make-model writes one)")
    except NormbenchError as e:
        problems.append(f"server.model: {e}")
    variants = {v: ctx.suite.variants.get(v, Variant()) for v in sorted({c.variant or "default" for c in cases})}
    stages = {c.stage: client_of(c) for c in cases}
    offline = any(not kind_of(st.kind).serves for st in stages.values())  # engines started by the client itself
    problems += engine.preflight(spec, variants, offline, ctx.status)
    for name, st in stages.items():
        for line in kind_of(st.kind).preflight(name, st):
            if line not in problems:  # a tool missing for two stages is said once
                problems.append(line)
    if problems:
        raise NormbenchError("cannot run the end-to-end stages:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------- plan
def plan(cases: list[Case]) -> list[tuple[str, int, str | None, list[Case]]]:
    """Steps in run order: ``("server", repeat, variant, cases)`` and ``("offline", repeat, variant, [case])``.

    Per repeat: one server step per variant, in the order that repeat's first
    server stage lists them (expansion interleaves A B / B A), holding the
    variant's cases of kinds that serve (startup, throughput, accuracy) in stage
    order; then the repeat's cases of kinds that start their own engine (latency),
    one step each, in expansion order.
    """
    steps: list[tuple[str, int, str | None, list[Case]]] = []
    for r in sorted({c.repeat for c in cases}):
        served = [c for c in cases if c.repeat == r and kind_of(c.kind).serves]
        order: list[str | None] = []
        for c in served:
            if c.variant not in order:
                order.append(c.variant)
        for v in order:
            steps.append(("server", r, v, [c for c in served if c.variant == v]))
        for c in cases:
            if c.repeat == r and not kind_of(c.kind).serves:
                steps.append(("offline", r, c.variant, [c]))
    return steps


# --------------------------------------------------------------------------- run
def run(cases: list[Case], ctx: RunContext) -> None:
    """Run all end-to-end cases (see the module docstring). Re-raises ``KeyboardInterrupt``."""
    cases = [c for c in cases if c.skip is None and kind_of(c.kind).runner == "e2e"]
    if not cases:
        return
    if not ctx.extra.get("preflight_done"):
        preflight(cases, ctx)
    _release_gpu_memory()
    env = _Env(ctx)
    with sigterm_as_interrupt():
        for step, r, variant, group in plan(cases):
            if step == "server":
                _run_server_step(env, r, variant, group)
            else:
                c = group[0]
                v = env.variant(c.variant)
                _record(env, c, _guard(env, c, lambda c=c, v=v: run_case(env, c, None, v)))


def _release_gpu_memory() -> None:
    """Give back what this process's kernel stages cached on the GPU: the server needs it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _record(env: _Env, case: Case, rec: CaseRecord) -> None:
    env.ctx.record(case, rec)


def _guard(env: _Env, case: Case, fn) -> CaseRecord:
    """Run ``fn``; a kind's refusal (``NormbenchError``) or a bug fails this case only (``run_case`` keeps the rest)."""
    started = utc_now()
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except NormbenchError as e:
        return base_record(case, "FAILED", str(e), started_at=started, device=env.device)
    except Exception as e:  # noqa: BLE001 - one case's bug must not lose the other variants
        tb = traceback.format_exc(limit=6)
        return base_record(case, "FAILED", f"internal error: {type(e).__name__}: {e}\n{tb}", started_at=started,
                           device=env.device)


def _port(env: _Env) -> int | None:
    """The lane's port (``ctx.extra["port"]``, parallel variants), else ``server.port`` (None: a free one).

    A lane port the parent chose as a hint (the suite set none) that is taken
    on this node by now gives way to a free one.
    """
    port = env.ctx.extra.get("port")
    if port is None:
        return env.spec.port
    if env.spec.port is None and port_in_use(port):
        return None
    return port


def _run_server_step(env: _Env, repeat: int, variant_name: str | None, group: list[Case]) -> None:
    variant = env.variant(variant_name)
    vname = variant_name or "default"
    log = env.logs / f"{slug(vname)}-server.log"
    server = Server(
        model=env.model,
        name=env.served_name,
        compilation_config=dict(variant.compilation_config),
        args=[*env.spec.args, *variant.args],
        env=env.server_env(variant),
        log_path=log,
        startup_timeout_s=env.spec.startup_timeout_s,
        port=_port(env),
        cold_start=env.spec.cold_start,
        engine=env.engine,
    )
    group = sorted(group, key=lambda c: kind_of(c.kind).server_order)  # a start is recorded before anything else

    def base_art() -> dict[str, str]:
        return {"server_log": env.rel(log)} if log.exists() else {}

    try:
        env.ctx.status(f"{vname}: starting {env.engine.display} (repeat {repeat})")
        started = utc_now()
        try:
            server.start(banner=f"variant {vname}, repeat {repeat}", status=env.ctx.status)
        except ServerError as e:
            reason = f"variant {vname}: {e.full()}"
            extra = {"server": server.info()} if server.process is not None else {}
            for c in group:
                _record(env, c, base_record(c, "FAILED", reason, started_at=started, artifacts=base_art(),
                                            device=env.device, requested_config=variant.compilation_config, **extra))
            return
        wrong = server.mismatches()
        if wrong:
            reason = (f"variant {vname}: the engine's logged compilation_config does not carry the requested values: "
                      + "; ".join(wrong))
            for c in group:
                _record(env, c, base_record(
                    c, "FAILED", reason, started_at=started, artifacts=base_art(), device=env.device,
                    requested_config=variant.compilation_config,
                    effective_config=jsonable(server.effective_config), server=server.info(),
                    evidence=_evidence(env, server.evidence)))
            return
        dead: str | None = None
        for c in group:
            if dead is None:
                try:
                    server.check_alive()
                except ServerError as e:
                    dead = f"variant {vname}: {e.full()}"
            if dead is not None:
                _record(env, c, base_record(c, "FAILED", dead, artifacts=base_art(), device=env.device,
                                            server=server.info()))
                continue
            env.ctx.status(f"{vname}: {c.stage} ({c.kind}, repeat {repeat})")
            rec = _guard(env, c, lambda c=c: run_case(env, c, server, variant))
            _record(env, c, rec)
            if not server.alive():
                code = server.process.poll() if server.process else None
                dead = (f"variant {vname}: {env.engine.display} died (exit code {code}) during stage {c.stage}; "
                        f"log: {env.rel(log)}\n--- last 30 log lines ---\n{server.process.tail() if server.process else ''}")
    finally:
        env.ctx.status(f"{vname}: stopping {env.engine.display}")
        server.stop()


def _common(env: _Env, server: Server | None, variant: Variant, tool: str) -> dict[str, Any]:
    """Fields every end-to-end record of ``variant`` gets; ``tool``'s version is its first word's, else the engine's."""
    out: dict[str, Any] = {
        "device": env.device,
        "requested_config": variant.compilation_config,
        "tool": {"name": tool, "version": env.tool_version(tool)},
    }
    if server is not None:
        out["effective_config"] = jsonable(server.effective_config)
        if server.config_note:
            out["config_note"] = server.config_note
        out["server"] = server.info()
        out["evidence"] = _evidence(env, getattr(server, "evidence", None))
    return out


def _evidence(env: _Env, evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """``evidence`` with its ``source`` log relative to the run directory."""
    if evidence is None:
        return None
    out = dict(evidence)
    if out.get("source"):
        out["source"] = env.rel(Path(out["source"]))
    return out


# --------------------------------------------------------------------------- one case, any kind
@dataclass
class CaseRun:
    """One end-to-end case as its kind's hooks (``normbench.stages.e2e``) see it.

    Attributes:
        env: what the run's cases share (engine, model, environments, versions, logs).
        case: the case (``case.param_dict``: its point; ``stage``: its validated stage model).
        variant: the suite variant it runs under.
        server: the variant's running server, or None for a kind that does not serve
            (its client starts the engine itself).
    """

    env: _Env
    case: Case
    variant: Variant
    server: Server | None

    @property
    def stage(self) -> Any:
        """The validated stage model (``ThroughputStage``, ...: the client's settings)."""
        return client_of(self.case)

    @property
    def variant_name(self) -> str:
        return self.case.variant or "default"

    @property
    def model(self) -> str:
        """What the engine serves: a local folder (absolute) or a hub id; clients use it as the tokenizer."""
        return self.env.model

    @property
    def engine(self) -> Any:
        """The suite's serving engine (``normbench.engines.Engine``)."""
        return self.env.engine

    @property
    def server_args(self) -> list[str]:
        """The suite's ``server.args`` (a variant's own are ``variant.args``)."""
        return list(self.env.spec.args)

    @property
    def versions(self) -> dict[str, str | None]:
        """Installed versions of the clients and the engine, by distribution name."""
        return self.env.versions

    @property
    def logs(self) -> Path:
        """The run's ``logs/`` folder."""
        return self.env.logs

    def file(self, suffix: str) -> Path:
        """``logs/<kind.file_stem(case)>-<suffix>``: where this case's files go."""
        return self.env.logs / f"{kind_of(self.case.kind).file_stem(self.case)}-{suffix}"

    def engine_env(self) -> dict[str, str]:
        """The environment of this variant's engines (``_Env.server_env``), for a client that runs one."""
        return self.env.server_env(self.variant)


def run_case(env: _Env, case: Case, server: Server | None, variant: Variant) -> CaseRecord:
    """Run one end-to-end case of any kind and build its record.

    The kind (``kind_of(case.kind)``) gives its ``command``, ``outputs`` and
    ``parse``; everything else is here: the client runs in its own process group,
    logged under a ``case <id>`` banner, stopped at its timeout or when the
    server dies, tried again when it timed out and the kind allows
    (``Command.retries``); a client that starts its own engine (a kind that does
    not serve) has that engine's start read from its part of the log and checked
    against the variant; the artifacts (``server_log``, ``client_log``, the
    outputs) and the fields every end-to-end record has (``_common``) are
    attached on every path.

    A case FAILs, with the reason, when: the client exits non-zero, times out or
    loses its server (``_tool_failure``, with both logs' last lines); an offline
    engine's logged config contradicts the variant; an output is missing or
    unreadable, or ``Parsed.failure`` (each with ``; log: <client log>``).

    Raises:
        NormbenchError: the kind's ``command`` refuses (``_guard`` records it FAILED).
        KeyboardInterrupt: Ctrl-C or SIGTERM (the client is stopped first).
    """
    kind = kind_of(case.kind)
    run = CaseRun(env, case, variant, server)
    started, watch = utc_now(), Stopwatch()
    cmd = kind.command(run)
    art = {"server_log": env.rel(server.log_path)} if server is not None else {}
    fields = _common(env, server, variant, cmd.tool if cmd is not None else env.engine.display)

    def record(status: str, reason: str | None = None, **more: Any) -> CaseRecord:
        return base_record(case, status, reason, started_at=started, artifacts=art,
                           **{"duration_s": watch.elapsed(), **fields, **more})

    log_note = ""
    effective = None
    if cmd is not None:
        res, attempts = _run_client(env, run, cmd)
        art["client_log"] = env.rel(cmd.log)
        log_note = f"; log: {art['client_log']}"
        if cmd.retries is not None:
            fields["attempts"] = attempts
        if not kind.serves:
            effective = _read_offline_start(env, case, cmd.log, fields)
        art.update({role: env.rel(path) for role, path in cmd.outputs.items() if path.exists()})
        if not res.ok:
            return record("FAILED", _tool_failure(env, cmd.tool, res, art["client_log"], server))
        wrong = env.engine.mismatches(variant.compilation_config, effective) if effective else []
        if wrong:
            return record("FAILED", "the engine's logged compilation_config does not carry the requested values: "
                          + "; ".join(wrong))
    try:
        outputs = kind.outputs(run, cmd) if cmd is not None else {}
        art.update({role: env.rel(path) for role, path in outputs.items()})
        parsed = kind.parse(run, outputs)
    except NormbenchError as e:
        return record("FAILED", f"{e}{log_note}")
    if parsed.failure is not None:
        return record("FAILED", parsed.failure + log_note, **parsed.fields)
    return record("OK", metrics=parsed.metrics, **parsed.fields)


def _run_client(env: _Env, run: CaseRun, cmd: Command) -> tuple[ToolResult, int]:
    """Run ``cmd`` to its end: (how the last attempt ended, attempts)."""
    timeout = cmd.timeout_s if cmd.timeout_s is not None else CLIENT_TIMEOUT_S
    client_env = dict(cmd.env) if cmd.env is not None else env.client_env
    if cmd.status:
        env.ctx.status(cmd.status)
    attempts = 0
    while True:
        attempts += 1
        for path in cmd.outputs.values():
            path.unlink(missing_ok=True)
        res = run_tool(cmd.argv, cmd.log, client_env, timeout, server=run.server,
                       banner=f"case {run.case.case_id}" + (f" (attempt {attempts})" if attempts > 1 else ""))
        timed_out = res.stopped is not None and res.stopped.startswith("timeout")
        if not timed_out or attempts > (cmd.retries or 0) or (run.server is not None and not run.server.alive()):
            return res, attempts
        env.ctx.status(f"{run.variant_name}: {cmd.tool} timed out after {timeout:g} s; trying again")


def _read_offline_start(env: _Env, case: Case, log: Path, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The start of the engine a client ran itself, from the case's part of its log, into ``fields``.

    Sets ``effective_config``, ``evidence`` (``source``: the client log) and, when the
    log has no config line, ``config_note``; returns the engine's effective config as
    it logged it (None: not found).
    """
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    marker = f"==== normbench: case {case.case_id}"
    text = text[text.rfind(marker):] if marker in text else text
    effective, evidence = env.engine.read_start(text)
    fields["effective_config"] = jsonable(effective)
    fields["evidence"] = None if evidence is None else {"source": env.rel(log), **evidence}
    if effective is None:
        fields["config_note"] = "no engine config line found in the log; requested values not verified"
    return effective


def _tool_failure(env: _Env, what: str, res: ToolResult, client_log: str, server: Server | None) -> str:
    if res.stopped == "server died" or (server is not None and not server.alive()):
        code = server.process.poll() if server and server.process else None
        msg = (f"{env.engine.display} died (exit code {code}) while {what} ran; "
               f"log: {server.log_path if server else '?'}\n"
               f"--- last 30 log lines ---\n{server.process.tail() if server and server.process else ''}")
        return msg + f"\n--- {what} (log: {client_log}) ---\n{res.log_tail}"
    why = res.stopped or f"exit code {res.returncode}"
    return f"{what} failed ({why}); log: {client_log}\n--- last 30 log lines ---\n{res.log_tail}"
