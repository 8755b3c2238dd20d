"""The end-to-end runner: every throughput, accuracy and latency case of a suite.

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
   start (``startup`` cases), runs that variant's throughput and accuracy cases
   in stage order against it, stops it. Then that repeat's latency cases run
   ``vllm bench latency`` (an offline engine each, no server), in expansion order.
3. Hands each finished ``CaseRecord`` to ``ctx.record`` at once.

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

Record fields (``CaseRecord``; extras allowed):

* ``metrics``: see ``throughput``, ``latency`` and ``accuracy`` modules; one
  sample per metric (this repeat).
* ``artifacts``: paths relative to the run directory: ``server_log``
  (``logs/<variant>-server.log``), ``client_log``, ``raw`` (the tool's JSON),
  ``samples`` (lm-eval's per-document JSONL).
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
  client runs it took (guidellm is tried again once when it hangs past its
  timeout, see ``GUIDELLM_RETRIES``).
* ``items``: accuracy only: ``[{"doc_id": 0, "strict": 0|1, "flexible": 0|1}, ...]``
  sorted by ``doc_id``: the per-document gsm8k results (exact match under
  lm-eval's strict-match and flexible-extract filters), for paired tests
  (McNemar) between variants or runs.
* ``latencies_ms``: latency only: every timed iteration (ms).
"""

from __future__ import annotations

import os
import re
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from normbench.engines import engine_for, jsonable
from normbench.engines import vllm as vllm_engine
from normbench.errors import NormbenchError
from normbench.expand import Case, E2ESettings
from normbench.runners import RunContext, Stopwatch, base_record
from normbench.runners import accuracy as acc
from normbench.runners import latency as lat
from normbench.runners import throughput as tp
from normbench.runners.server import (
    Server,
    ServerError,
    expand_env,
    load_json,
    looks_local,
    port_in_use,
    resolve_model,
    run_tool,
    sigterm_as_interrupt,
    tool_command,
)
from normbench.stages import kind_of
from normbench.store import CaseRecord, Metric, utc_now
from normbench.suite import Variant

#: Clients with no natural end get this long before they are stopped (s).
CLIENT_TIMEOUT_S = 4 * 3600.0
#: guidellm with max_seconds: its duration plus this much for start-up, tokenizing and the report.
GUIDELLM_SLACK_S = 300.0
#: guidellm 0.8.1 can deadlock between its scheduler and worker processes on an overloaded
#: machine (seen on 2 busy cores: workers wait on a sync event, the main process on their
#: messages, forever). A run stopped by its timeout is tried again this many times; the
#: record's ``attempts`` says how many it took.
GUIDELLM_RETRIES = 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


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
    """Steps in run order: ``("server", repeat, variant, cases)`` and ``("latency", repeat, variant, [case])``.

    Per repeat: one server step per variant, in the order that repeat's first
    server stage lists them (expansion interleaves A B / B A), holding the
    variant's startup, throughput and accuracy cases in stage order; then the repeat's
    latency cases, one step each, in expansion order.
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
                steps.append(("latency", r, c.variant, [c]))
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
                _record(env, c, _guard(env, c, lambda c=c, v=v: kind_of(c.kind).run(env, c, None, v)))


def _release_gpu_memory() -> None:
    """Give back what this process's kernel stages cached on the GPU: the server needs it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _record(env: _Env, case: Case, rec: CaseRecord) -> None:
    env.ctx.record(case, rec)


def _guard(env: _Env, case: Case, fn) -> CaseRecord:
    """Run ``fn``; a bug or a tool's unreadable output fails this case only."""
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
    log = env.logs / f"{_slug(vname)}-server.log"
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
            rec = _guard(env, c, lambda c=c: kind_of(c.kind).run(env, c, server, variant))
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
        "tool": {"name": tool, "version": env.versions.get(tool.split()[0]) or env.versions.get(env.engine.name)},
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


def _startup_case(env: _Env, case: Case, server: Server, variant: Variant) -> CaseRecord:
    """The start of ``server``: ``server_startup_s`` and, when logged, ``torch_compile_s`` (s, lower is better)."""
    started = utc_now()
    common = _common(env, server, variant, env.engine.display)
    metrics = {}
    if server.startup_s is not None:
        metrics["server_startup_s"] = Metric(value=server.startup_s, unit="s", higher_is_better=False,
                                             samples=[server.startup_s])
    compile_s = (server.evidence or {}).get("torch_compile_s")
    if compile_s is not None:
        metrics["torch_compile_s"] = Metric(value=float(compile_s), unit="s", higher_is_better=False,
                                            samples=[float(compile_s)])
    art = {"server_log": env.rel(server.log_path)}
    if not metrics:
        return base_record(case, "FAILED", "the server started but its start-up time was not measured",
                           started_at=started, artifacts=art, **common)
    return base_record(case, "OK", started_at=started, metrics=metrics, artifacts=art, duration_s=server.startup_s,
                       **common)


def _tool_failure(env: _Env, what: str, res, client_log: str, server: Server | None) -> str:
    if res.stopped == "server died" or (server is not None and not server.alive()):
        code = server.process.poll() if server and server.process else None
        msg = (f"{env.engine.display} died (exit code {code}) while {what} ran; "
               f"log: {server.log_path if server else '?'}\n"
               f"--- last 30 log lines ---\n{server.process.tail() if server and server.process else ''}")
        return msg + f"\n--- {what} (log: {client_log}) ---\n{res.log_tail}"
    why = res.stopped or f"exit code {res.returncode}"
    return f"{what} failed ({why}); log: {client_log}\n--- last 30 log lines ---\n{res.log_tail}"


def _throughput_case(env: _Env, case: Case, server: Server, variant: Variant) -> CaseRecord:
    stage = client_of(case)
    slug = _slug(f"{case.stage}-{case.variant or 'default'}-r{case.repeat}")
    started, watch = utc_now(), Stopwatch()
    client_log = env.logs / f"{slug}-{stage.client}.log"
    if stage.client == "guidellm":
        tp.check_guidellm_version(env.versions["guidellm"])
        raw = env.logs / f"{slug}-guidellm.json"
        cmd = tp.guidellm_command(tool_command("guidellm"), stage, server.base_url, server.name, env.model, raw)
        timeout = stage.max_seconds + GUIDELLM_SLACK_S if stage.max_seconds else CLIENT_TIMEOUT_S
        tool, retries = "guidellm", GUIDELLM_RETRIES
    else:
        raw = env.logs / f"{slug}-vllm-bench-serve.json"
        cmd = tp.vllm_bench_serve_command(tool_command("vllm"), stage, server.base_url, server.name, env.model,
                                          env.logs, raw.name)
        timeout, tool, retries = CLIENT_TIMEOUT_S, "vllm bench serve", 0
    attempts = 0
    while True:
        attempts += 1
        raw.unlink(missing_ok=True)
        res = run_tool(cmd, client_log, env.client_env, timeout, server=server,
                       banner=f"case {case.case_id}" + (f" (attempt {attempts})" if attempts > 1 else ""))
        retry = res.stopped is not None and res.stopped.startswith("timeout") and server.alive()
        if not retry or attempts > retries:
            break
        env.ctx.status(f"{case.variant}: {tool} timed out after {timeout:g} s; trying again")
    art = {"server_log": env.rel(server.log_path), "client_log": env.rel(client_log)}
    common = {**_common(env, server, variant, tool), "attempts": attempts}
    if raw.exists():
        art["raw"] = env.rel(raw)
    if not res.ok:
        return base_record(case, "FAILED", _tool_failure(env, tool, res, env.rel(client_log), server), started_at=started,
                           artifacts=art, duration_s=watch.elapsed(), **common)
    if not raw.exists():
        return base_record(case, "FAILED", f"{tool} exited 0 but wrote no {raw.name}; log: {env.rel(client_log)}",
                           started_at=started, artifacts=art, duration_s=watch.elapsed(), **common)
    data = load_json(raw)
    metrics, counts = (tp.parse_guidellm_report(data) if stage.client == "guidellm" else tp.parse_vllm_bench_serve(data))
    if counts["completed"] == 0:
        return base_record(case, "FAILED", f"{tool}: no request completed ({counts['failed']} failed); "
                           f"log: {env.rel(client_log)}", started_at=started, artifacts=art,
                           duration_s=watch.elapsed(), requests=counts, **common)
    return base_record(case, "OK", started_at=started, metrics=metrics, artifacts=art, duration_s=watch.elapsed(),
                       requests=counts, **common)


def _accuracy_case(env: _Env, case: Case, server: Server, variant: Variant) -> CaseRecord:
    stage = client_of(case)
    slug = _slug(f"{case.stage}-{case.variant or 'default'}-r{case.repeat}")
    started, watch = utc_now(), Stopwatch()
    out_dir = env.logs / f"{slug}-lm_eval"
    client_log = env.logs / f"{slug}-lm_eval.log"
    include = None
    task = stage.task
    if stage.data_files is not None:
        include = env.logs / f"{_slug(case.stage)}-{_slug(case.variant or 'default')}-lm_eval-task"
        task = acc.write_task(include, acc.resolve_data_files(stage.data_files))
    cmd = acc.lm_eval_command(tool_command("lm_eval"), stage, server.base_url, server.name, task, out_dir, include)
    res = run_tool(cmd, client_log, env.client_env, CLIENT_TIMEOUT_S, server=server, banner=f"case {case.case_id}")
    art = {"server_log": env.rel(server.log_path), "client_log": env.rel(client_log)}
    common = _common(env, server, variant, "lm_eval")
    if not res.ok:
        return base_record(case, "FAILED", _tool_failure(env, "lm_eval", res, env.rel(client_log), server),
                           started_at=started, artifacts=art, duration_s=watch.elapsed(), **common)
    results_path, samples_path = acc.find_outputs(out_dir, task)
    art["raw"] = env.rel(results_path)
    if samples_path is not None:
        art["samples"] = env.rel(samples_path)
    metrics, items = acc.parse_lm_eval(load_json(results_path), acc.read_samples(samples_path), task)
    return base_record(case, "OK", started_at=started, metrics=metrics, artifacts=art, duration_s=watch.elapsed(),
                       items=items, task=task, **common)


def _latency_case(env: _Env, case: Case) -> CaseRecord:
    stage = client_of(case)
    variant = env.variant(case.variant)
    input_len = case.param_dict["input_len"]
    slug = _slug(f"{case.stage}-{case.variant or 'default'}-in{input_len}-r{case.repeat}")
    started, watch = utc_now(), Stopwatch()
    raw = env.logs / f"{slug}-latency.json"
    client_log = env.logs / f"{slug}-latency.log"
    raw.unlink(missing_ok=True)
    engine_args = env.engine.offline_args([*env.spec.args, *variant.args])
    cmd = lat.latency_command(tool_command("vllm"), env.model, input_len, stage, variant.compilation_config,
                              engine_args, raw)
    env.ctx.status(f"{case.variant or 'default'}: vllm bench latency --input-len {input_len} (repeat {case.repeat})")
    res = run_tool(cmd, client_log, env.server_env(variant), CLIENT_TIMEOUT_S, banner=f"case {case.case_id}")
    art = {"client_log": env.rel(client_log)}
    common = _common(env, None, variant, "vllm bench latency")
    text = client_log.read_text(encoding="utf-8", errors="replace") if client_log.exists() else ""
    marker = f"==== normbench: case {case.case_id}"
    text = text[text.rfind(marker):] if marker in text else text
    effective, evidence = env.engine.read_start(text)
    common["effective_config"] = jsonable(effective)
    common["evidence"] = None if evidence is None else {"source": env.rel(client_log), **evidence}
    if effective is None:
        common["config_note"] = "no engine config line found in the log; requested values not verified"
    if raw.exists():
        art["raw"] = env.rel(raw)
    if not res.ok:
        return base_record(case, "FAILED", _tool_failure(env, "vllm bench latency", res, env.rel(client_log), None),
                           started_at=started, artifacts=art, duration_s=watch.elapsed(), **common)
    wrong = env.engine.mismatches(variant.compilation_config, effective) if effective else []
    if wrong:
        return base_record(case, "FAILED", "the engine's logged compilation_config does not carry the requested "
                           "values: " + "; ".join(wrong), started_at=started, artifacts=art,
                           duration_s=watch.elapsed(), **common)
    if not raw.exists():
        return base_record(case, "FAILED", f"vllm bench latency exited 0 but wrote no {raw.name}",
                           started_at=started, artifacts=art, duration_s=watch.elapsed(), **common)
    metrics, iters = lat.parse_latency_json(load_json(raw))
    return base_record(case, "OK", started_at=started, metrics=metrics, artifacts=art, duration_s=watch.elapsed(),
                       latencies_ms=iters, **common)
