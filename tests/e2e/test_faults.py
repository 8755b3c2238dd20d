"""Faults with real vLLM servers, in one ``normbench run`` (server starts are the cost):

variants, in run order (one ``vllm serve`` each):

* ``taken``: ``--port`` of a socket this test holds: FAILED before launching;
* ``bogus``: an argument vLLM rejects, so the server exits before it is healthy;
* ``ok``: runs normally;
* ``killed``: its server's API process is SIGKILLed while ``vllm bench serve``
  runs against it (its EngineCore and worker are left orphaned, for normbench
  to find and kill);
* ``interrupted``: normbench itself gets SIGINT (Ctrl-C) while that variant's
  client runs.

After each fault the other variants' records survive in the stored run
(``load_run``) and no process of any server's group is left. The server-side
faults are also covered without vLLM, in seconds, by test_server_lifecycle.py
(a startup timeout included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from e2e_helpers import MARK, leftovers, normbench
from normbench.runners.server import group_members
from normbench.store import load_run

pytestmark = pytest.mark.e2e

SUITE = """\
name: e2e_faults
server:
  model: .normbench/e2e-cpu/tiny-llama
  served_model_name: tiny-llama
  args: [--max-num-seqs, "4"]
  startup_timeout_s: 300
variants:
  taken: {{args: [--port, "{port}"]}}
  bogus: {{args: [--no-such-vllm-flag]}}
  ok: {{}}
  killed: {{}}
  interrupted: {{}}
baseline: ok
stages:
  - kind: throughput
    name: quick
    variants: [taken, bogus, ok]
    client: vllm_bench_serve
    concurrency: 2
    num_prompts: 8
    prompt_tokens: 32
    output_tokens: 16
  - kind: throughput
    name: long
    variants: [killed, interrupted]
    client: vllm_bench_serve
    concurrency: 1
    num_prompts: 5000
    prompt_tokens: 32
    output_tokens: 64
"""
#: {mode: 0} (no torch.compile) in every variant: these tests are about processes, not compilation.
NO_COMPILE = {"compilation_config": {"mode": 0}}


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"normbench exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _requests_flowing(log: Path) -> bool:
    return log.exists() and "POST /v1/completions" in log.read_text(errors="replace")


def _serve_process(env: dict[str, str]) -> psutil.Process | None:
    """The live ``vllm serve`` API process this session started (a session leader)."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if "serve" in cmd and "--served-model-name" in cmd and os.getsid(p.pid) == p.pid \
                    and p.environ().get(MARK) == env[MARK]:
                return p
        except (psutil.Error, OSError):
            continue
    return None


@pytest.fixture(scope="module")
def fault_run(e2e_work, e2e_env):
    import yaml

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    spec = yaml.safe_load(SUITE.format(port=port))
    for v in spec["variants"].values():
        v.update(NO_COMPILE)
    suite = e2e_work / "e2e_faults.yaml"
    suite.write_text(yaml.safe_dump(spec, sort_keys=False))
    results = e2e_work / "runs-faults"
    log = open(e2e_work / "faults-run.log", "w")
    proc = subprocess.Popen(normbench("run", str(suite), "--results-dir", str(results), "--no-progress"),
                            cwd=e2e_work, env=e2e_env, stdout=log, stderr=subprocess.STDOUT)
    killed_pids: list[int] = []
    try:
        _wait(lambda: results.exists() and any(results.iterdir()), 120, "the run directory", proc)
        run_dir = next(results.iterdir())
        logs = run_dir / "logs"
        # killed: SIGKILL the API server once requests flow; its engine processes are orphaned
        _wait(lambda: (logs / "long-killed-r0-vllm_bench_serve.log").exists()
              and _requests_flowing(logs / "killed-server.log"), 400, "killed's client", proc)
        victim = _serve_process(e2e_env)
        assert victim is not None
        killed_pids = [victim.pid, *(c.pid for c in victim.children(recursive=True))]
        victim.kill()
        # interrupted: Ctrl-C to normbench once that variant's requests flow
        _wait(lambda: (logs / "long-interrupted-r0-vllm_bench_serve.log").exists()
              and _requests_flowing(logs / "interrupted-server.log"), 400, "interrupted's client", proc)
        interrupted_server = _serve_process(e2e_env)
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        holder.close()
        log.close()
    return SimpleNamespace(rc=rc, dir=run_dir, record=load_run(run_dir), port=port, env=e2e_env,
                           killed_pids=killed_pids, interrupted_server=interrupted_server,
                           log=(e2e_work / "faults-run.log").read_text())


def _case(run, variant: str):
    found = [c for c in run.record.cases if c.variant == variant]
    return found[0] if found else None


def _ok_survives(run) -> None:
    ok = _case(run, "ok")
    assert ok is not None and ok.status == "OK", (ok and ok.reason, run.log[-3000:])
    assert ok.metrics["output_throughput"].value > 0 and ok.requests["completed"] == 8


def test_port_already_taken(fault_run):
    c = _case(fault_run, "taken")
    assert c.status == "FAILED"
    assert f"port {fault_run.port} on 127.0.0.1 is already in use" in c.reason
    assert not (fault_run.dir / "logs" / "taken-server.log").exists()  # refused before launching
    _ok_survives(fault_run)


def test_server_never_healthy(fault_run):
    c = _case(fault_run, "bogus")
    assert c.status == "FAILED"
    assert "vllm serve exited with code" in c.reason and "before becoming healthy" in c.reason
    assert "last 30 log lines" in c.reason and "--no-such-vllm-flag" in c.reason
    assert c.artifacts["server_log"] == "logs/bogus-server.log"
    _ok_survives(fault_run)


def test_server_killed_mid_stage(fault_run):
    c = _case(fault_run, "killed")
    assert c.status == "FAILED"
    assert "vllm serve died" in c.reason, c.reason
    assert fault_run.killed_pids and all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
                                         for p in fault_run.killed_pids)
    _ok_survives(fault_run)


def test_ctrl_c_during_a_stage(fault_run):
    assert fault_run.rc == 130, fault_run.log[-3000:]
    assert fault_run.record.status == "interrupted"
    assert _case(fault_run, "interrupted") is None  # the case in flight is not recorded
    assert {c.variant for c in fault_run.record.cases} == {"taken", "bogus", "ok", "killed"}
    _ok_survives(fault_run)
    assert "normbench run --resume" in fault_run.log


def test_no_process_left_after_faults(fault_run):
    assert leftovers(fault_run.env) == []
    assert fault_run.interrupted_server is not None
    assert group_members(fault_run.interrupted_server.pid) == []
    for c in fault_run.record.cases:
        pid = (getattr(c, "server", None) or {}).get("pid")
        if pid:
            assert group_members(pid) == []
