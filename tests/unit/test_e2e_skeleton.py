"""The end-to-end skeleton (``normbench.runners.e2e.run_case``) with a kind it has never seen.

A stage kind gives only ``command`` / ``outputs`` / ``parse`` (``normbench.stages.e2e``);
the runner does the rest. These tests register a kind that exists only here
(``echo``, whose client is a real Python subprocess writing a JSON report) and
check what the runner adds on every path: the client's process, log and
timeout, a retry, the artifacts, the server's or the offline engine's start,
the config check, the failure reasons and the record. No vLLM runs: the
"engine" log is a real vLLM server log from tests/fixtures/e2e.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from normbench import stages
from normbench.errors import NormbenchError
from normbench.expand import Capabilities, Case, E2ESettings
from normbench.runners import RunContext, e2e
from normbench.stages.e2e import Command, E2EKind, Parsed
from normbench.store import Metric
from normbench.suite import parse_suite

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "e2e"
ENGINE_LOG = FIX / "vllm_serve_engine_config.log"  # logs custom_ops ['+rms_norm', 'none'], fuse_norm_quant True

SUITE = """\
name: skel
server: {model: m}
variants:
  a: {compilation_config: {custom_ops: ["+rms_norm"], pass_config: {fuse_norm_quant: true}}}
  b: {compilation_config: {custom_ops: ["-rms_norm"]}}
stages:
  - {kind: startup}
"""

#: The client: argv = mode, report path, n, engine log to print (or "-").
CLIENT = r"""
import json, sys, time
mode, out, n, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if log != "-":
    print(open(log).read(), flush=True)
print(f"echo: mode {mode}, n {n}", flush=True)
if mode == "sleep":
    time.sleep(30)
if mode == "exit3":
    print("echo: giving up", flush=True)
    sys.exit(3)
if mode == "garbage":
    open(out, "w").write("[1, 2]")
elif mode != "nothing":
    open(out, "w").write(json.dumps({"ms": 1.5 * n, "iters": [1.0] * n, "ok": mode != "empty"}))
"""


class EchoKind(E2EKind):
    """A kind made of the three hooks only (what a new kind's module holds)."""

    kind = "echo"

    def __init__(self, mode: str = "ok", serves: bool = True, retries: int | None = None,
                 timeout_s: float | None = None):
        self.mode, self.serves, self.retries, self.timeout_s = mode, serves, retries, timeout_s

    def command(self, run: Any) -> Command:
        if self.mode == "refuse":
            raise NormbenchError("echo is not installed here")
        raw = run.file("echo.json")
        log = "-" if self.serves else str(ENGINE_LOG)  # an offline client runs (and logs) its own engine
        argv = [sys.executable, "-c", CLIENT, self.mode, str(raw), str(run.stage.n), log]
        return Command("echo", argv, run.file("echo.log"), env=None if self.serves else run.engine_env(),
                       outputs={"raw": raw}, timeout_s=self.timeout_s, retries=self.retries)

    def parse(self, run: Any, outputs: dict[str, Path]) -> Parsed:
        data = json.loads(outputs["raw"].read_text())
        if not isinstance(data, dict):
            raise NormbenchError("not an echo report")
        if self.mode == "bug":
            raise ValueError("a bug in a parser")
        metrics = {"echo_ms": Metric(value=data["ms"], unit="ms", higher_is_better=False, samples=[data["ms"]])}
        return Parsed(metrics, {"latencies_ms": data["iters"]}, None if data["ok"] else "echo: nothing measured")


def _server(log: Path) -> SimpleNamespace:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("server log\n")
    return SimpleNamespace(
        base_url="http://127.0.0.1:1", name="m", log_path=log, alive=lambda: True, process=None,
        effective_config={"custom_ops": ["+rms_norm"]}, config_note=None, startup_s=3.0,
        evidence={"source": str(log), "platform": "cpu", "fusion": None, "note": "no fusion pass on this platform"},
        info=lambda: {"url": "http://127.0.0.1:1", "pid": 7, "startup_s": 3.0, "command": ["serve"]})


def _run(tmp_path: Path, monkeypatch, kind: EchoKind, variant: str = "a", n: int = 3):
    """Run one ``echo`` case through the skeleton: (record, status lines, env)."""
    monkeypatch.setitem(stages.KINDS, "echo", "tests.unit.test_e2e_skeleton:KIND")
    monkeypatch.setitem(stages._LOADED, "echo", kind)
    suite = parse_suite(SUITE, "skel.yaml")
    lines: list[str] = []
    ctx = RunContext(suite=suite, caps=Capabilities("cpu"), environment={}, run_dir=tmp_path, record=lambda c, r: None,
                     status=lines.append)
    env = e2e._Env(ctx)
    case = Case("ec", 0, "echo", None, None, variant, (("n", n),), 1, settings=E2ESettings(SimpleNamespace(n=n)))
    server = _server(env.logs / f"{variant}-server.log") if kind.serves else None
    rec = e2e._guard(env, case, lambda: e2e.run_case(env, case, server, env.variant(variant)))
    return rec, lines, env


def test_a_new_kind_gets_process_log_artifacts_and_record_from_the_runner(tmp_path, monkeypatch):
    rec, _, env = _run(tmp_path, monkeypatch, EchoKind())
    assert rec.status == "OK", rec.reason
    assert rec.metrics["echo_ms"].value == 4.5 and rec.latencies_ms == [1.0, 1.0, 1.0]
    assert rec.artifacts == {"server_log": "logs/a-server.log", "client_log": "logs/ec-a-r1-echo.log",
                             "raw": "logs/ec-a-r1-echo.json"}
    log = (tmp_path / rec.artifacts["client_log"]).read_text()
    assert f"==== normbench: case {rec.case_id}\n" in log and "echo: mode ok, n 3" in log
    assert rec.tool["name"] == "echo" and rec.device == "cpu" and rec.server["pid"] == 7 and rec.repeat == 1
    assert rec.requested_config == env.variant("a").compilation_config
    assert rec.effective_config == {"custom_ops": ["+rms_norm"]}
    assert rec.evidence["source"] == "logs/a-server.log" and rec.attempts is None
    assert rec.duration_s is not None and rec.duration_s > 0


@pytest.mark.parametrize("mode, reason", [
    ("exit3", r"^echo failed \(exit code 3\); log: logs/ec-a-r1-echo\.log\n--- last 30 log lines ---\n"
              r"(.|\n)*echo: giving up"),
    ("nothing", r"^echo exited 0 but wrote no ec-a-r1-echo\.json; log: logs/ec-a-r1-echo\.log$"),
    ("garbage", r"^not an echo report; log: logs/ec-a-r1-echo\.log$"),
    ("empty", r"^echo: nothing measured; log: logs/ec-a-r1-echo\.log$"),
])
def test_every_failure_keeps_the_reason_the_logs_and_the_common_fields(tmp_path, monkeypatch, mode, reason):
    rec, _, _ = _run(tmp_path, monkeypatch, EchoKind(mode))
    assert rec.status == "FAILED" and re.search(reason, rec.reason), rec.reason
    assert rec.artifacts["client_log"] == "logs/ec-a-r1-echo.log" and rec.artifacts["server_log"] == "logs/a-server.log"
    assert ("raw" in rec.artifacts) == (mode in ("garbage", "empty"))
    assert rec.tool["name"] == "echo" and rec.server["pid"] == 7 and rec.evidence["platform"] == "cpu"
    assert rec.metrics == {}
    assert rec.latencies_ms == ([1.0, 1.0, 1.0] if mode == "empty" else None)  # Parsed.fields kept


def test_a_refusing_command_and_a_bug_fail_only_their_case(tmp_path, monkeypatch):
    rec, _, _ = _run(tmp_path, monkeypatch, EchoKind("refuse"))
    assert rec.status == "FAILED" and rec.reason == "echo is not installed here"
    rec, _, _ = _run(tmp_path / "bug", monkeypatch, EchoKind("bug"))
    assert rec.status == "FAILED" and rec.reason.startswith("internal error: ValueError: a bug in a parser")


def test_a_timed_out_client_is_tried_again_when_its_kind_allows(tmp_path, monkeypatch):
    rec, lines, _ = _run(tmp_path, monkeypatch, EchoKind("sleep", retries=1, timeout_s=0.5))
    assert rec.status == "FAILED" and rec.attempts == 2
    assert rec.reason.startswith("echo failed (timeout after 0.5 s); log: logs/ec-a-r1-echo.log")
    assert lines == ["a: echo timed out after 0.5 s; trying again"]
    log = (tmp_path / "logs" / "ec-a-r1-echo.log").read_text()
    assert f"case {rec.case_id} (attempt 2)" in log
    rec, lines, _ = _run(tmp_path / "once", monkeypatch, EchoKind("sleep", timeout_s=0.5))
    assert rec.attempts is None and lines == []  # no retries: one attempt, and the record says nothing of attempts


def test_an_offline_kind_has_its_engines_start_read_from_its_own_log_and_checked(tmp_path, monkeypatch):
    rec, _, _ = _run(tmp_path, monkeypatch, EchoKind(serves=False), variant="a")
    assert rec.status == "OK", rec.reason
    assert rec.artifacts == {"client_log": "logs/ec-a-r1-echo.log", "raw": "logs/ec-a-r1-echo.json"}
    assert rec.server is None and rec.effective_config["pass_config"]["fuse_norm_quant"] is True
    assert rec.evidence["source"] == "logs/ec-a-r1-echo.log" and rec.config_note is None
    rec, _, _ = _run(tmp_path / "b", monkeypatch, EchoKind(serves=False), variant="b")
    assert rec.status == "FAILED" and rec.metrics == {}
    assert rec.reason == ("the engine's logged compilation_config does not carry the requested values: "
                          "custom_ops: asked ['-rms_norm'], engine has ['+rms_norm', 'none']")
    assert rec.effective_config is not None and rec.artifacts["raw"] == "logs/ec-b-r1-echo.json"


def test_every_registered_e2e_kind_gives_its_hooks_and_the_runner_names_no_client():
    for name in stages.KINDS:
        kind = stages.kind_of(name)
        if isinstance(kind, E2EKind):
            assert type(kind).command is not E2EKind.command, name
            assert type(kind).parse is not E2EKind.parse, name
    clients = {f"normbench.runners.{m}" for m in ("throughput", "latency", "accuracy")}
    used = {getattr(v, "__name__", None) if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
            for v in vars(e2e).values()}
    assert not used & clients, "the shared runner uses a kind's client module"


KIND = EchoKind()
