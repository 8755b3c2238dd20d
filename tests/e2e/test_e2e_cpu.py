"""The real thing on the CPU: ``normbench run suites/e2e_cpu.yaml``, then ``normbench compare``.

Two variants x (guidellm, ``vllm bench serve``, lm-eval gsm8k against one
``vllm serve`` per variant, then ``vllm bench latency``) on a tiny random
model made locally. No mocks: real servers, real clients, the real CLI.
Checked: every metric is stored with its unit, direction and a sane value;
the tools' raw outputs are kept; the engine's effective compilation config is
recorded and carries the variant's values; ``normbench compare --variants``
renders; no process of any server's group survives.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from e2e_helpers import REPO, leftovers, normbench, run_logged
from normbench.runners.server import group_members
from normbench.store import load_run

pytestmark = pytest.mark.e2e

SUITE = REPO / "suites" / "e2e_cpu.yaml"
THROUGHPUT = {"request_throughput": "req/s", "output_throughput": "tok/s", "total_token_throughput": "tok/s",
              **{f"{m}_{s}": "ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "p99")}}
LATENCY = {"latency_avg": "ms", **{f"latency_p{p}": "ms" for p in (10, 25, 50, 75, 90, 99)}}
ACCURACY = {"exact_match,strict-match": "fraction", "exact_match,flexible-extract": "fraction"}


@pytest.fixture(scope="module")
def cpu_run(e2e_work, e2e_env):
    results = e2e_work / "runs-cpu"
    t0 = time.monotonic()
    proc = run_logged(normbench("run", str(SUITE), "--results-dir", str(results), "--no-progress"),
                      e2e_work, e2e_env, e2e_work / "cpu-run.log", timeout=1500)
    seconds = time.monotonic() - t0
    runs = sorted(results.iterdir()) if results.exists() else []
    assert runs, f"no run stored:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return SimpleNamespace(proc=proc, dir=runs[-1], record=load_run(runs[-1]), seconds=seconds, env=e2e_env)


def _explain(run) -> str:
    bad = [f"{c.case_id}: {c.status}: {c.reason}" for c in run.record.cases if c.status != "OK"]
    return "\n".join(bad) + f"\n--- stderr ---\n{run.proc.stderr[-4000:]}"


def test_run_completes_every_case(cpu_run):
    rec = cpu_run.record
    assert cpu_run.proc.returncode == 0, _explain(cpu_run)
    assert rec.status == "complete"
    kinds = sorted((c.stage, c.variant) for c in rec.cases)
    assert kinds == sorted((s, v) for s in ("guidellm", "serve", "gsm8k", "latency") for v in ("native", "custom_fused"))
    assert all(c.status == "OK" for c in rec.cases), _explain(cpu_run)


def test_every_metric_has_its_unit_and_a_sane_value(cpu_run):
    for c in cpu_run.record.cases:
        want = {"throughput": THROUGHPUT, "latency": LATENCY, "accuracy": ACCURACY}[c.kind]
        assert set(c.metrics) == set(want), c.case_id
        for name, m in c.metrics.items():
            assert m.unit == want[name], (c.case_id, name)
            assert m.samples == [m.value], (c.case_id, name)
            assert m.higher_is_better == (m.unit in ("req/s", "tok/s", "fraction")), (c.case_id, name)
            if m.unit == "ms":
                assert 0 <= m.value < 60_000, (c.case_id, name, m.value)
            elif m.unit == "fraction":
                assert 0.0 <= m.value <= 1.0 and m.n == 10 and m.stderr is not None
            else:
                assert 0 < m.value < 1e6, (c.case_id, name, m.value)
        if c.kind == "throughput":
            assert c.metrics["total_token_throughput"].value > c.metrics["output_throughput"].value
            assert c.metrics["ttft_p99"].value >= c.metrics["ttft_median"].value > 0
            assert c.metrics["e2el_median"].value >= c.metrics["ttft_median"].value
            assert c.requests["completed"] > 0 and c.requests["failed"] == 0
        if c.kind == "latency":
            ms = c.metrics
            assert 0 < ms["latency_p10"].value <= ms["latency_p50"].value <= ms["latency_p99"].value
            assert len(c.latencies_ms) == 3
        if c.kind == "accuracy":
            assert [it["doc_id"] for it in c.items] == list(range(10))
            assert all(it["strict"] in (0, 1) and it["flexible"] in (0, 1) for it in c.items)


def test_raw_outputs_and_effective_config_are_kept(cpu_run):
    suite = cpu_run.record.suite.spec
    for c in cpu_run.record.cases:
        for name, rel in c.artifacts.items():
            assert (cpu_run.dir / rel).is_file(), (c.case_id, name, rel)
        assert "raw" in c.artifacts and "client_log" in c.artifacts
        if c.kind != "latency":
            assert c.artifacts["server_log"] == f"logs/{c.variant}-server.log"
            assert c.server["startup_s"] > 0 and "--compilation-config" in c.server["command"]
        raw = cpu_run.dir / c.artifacts["raw"]
        json.loads(raw.read_text())
        want = suite["variants"][c.variant]["compilation_config"]
        assert c.requested_config == want
        eff = c.effective_config
        assert eff is not None, c.case_id
        assert want["custom_ops"][0] in eff["custom_ops"]
        assert eff["pass_config"]["fuse_norm_quant"] is want["pass_config"]["fuse_norm_quant"]
        # vLLM's CPU platform compiles without vLLM's passes: evidence says so, never a made-up zero
        ev = c.evidence
        assert ev["platform"] == "cpu" and ev["fusion"] is None, (c.case_id, ev)
        assert ev["note"] == "no fusion pass on this platform", (c.case_id, ev)
        assert ev["source"] == c.artifacts["server_log" if c.kind != "latency" else "client_log"]
    server_log = (cpu_run.dir / "logs" / "native-server.log").read_text()
    assert '--compilation-config \'{"custom_ops":["-rms_norm"],"pass_config":{"fuse_norm_quant":false}}\'' in server_log


def test_compare_between_variants_renders(cpu_run, e2e_work):
    for fmt in ("markdown", "rich"):
        proc = run_logged(normbench("compare", "--variants", str(cpu_run.dir), "--format", fmt), e2e_work,
                          cpu_run.env, e2e_work / f"compare-{fmt}.log", timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout
        for word in ("custom_fused", "native", "output_throughput", "ttft_p99", "latency_avg",
                     "exact_match,strict-match"):
            assert word in out, (fmt, word)
    md = (e2e_work / "compare-markdown.log").read_text()
    assert "| custom_fused | request_throughput (req/s) |" in md
    assert "### Fusion evidence" in md and "unknown (no fusion pass on this platform)" in md and "⚠" not in md


def test_no_server_process_survives(cpu_run):
    assert leftovers(cpu_run.env) == []
    pids = {c.server["pid"] for c in cpu_run.record.cases if c.kind != "latency"}
    assert len(pids) == 2  # one server per variant, shared by its throughput and accuracy stages
    for pgid in pids:
        assert group_members(pgid) == []
