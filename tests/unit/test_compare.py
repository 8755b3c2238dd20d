"""normbench.compare and its renderers, on the fixture runs of tests/fixtures/runs/.

Golden outputs live in tests/golden/; regenerate them after an intended change with

    NORMBENCH_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_compare.py

and review the diff (``git diff tests/golden``).
"""

from __future__ import annotations

import statistics

import csv
import io
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from normbench import compare as C
from normbench.errors import IncomparableError, NormbenchError
from normbench.report.compare_data import to_csv, to_json
from normbench.report.compare_markdown import to_markdown
from normbench.report.compare_rich import noise_renderables, render_rich
from normbench.store import CaseRecord, Metric, RunRecord, SuiteSnapshot, load_run

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "tests" / "fixtures" / "runs"
GOLDEN = ROOT / "tests" / "golden"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
H200 = "rmsnorm-20260103T000000Z-cccccc"
E2E = "e2e-20260104T000000Z-eeeeee"


def run(name: str) -> RunRecord:
    return load_run(RUNS / name)


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with tests/golden/<name> (trailing spaces ignored), or rewrite it."""
    norm = "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n") + "\n"
    path = GOLDEN / name
    if os.environ.get("NORMBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(norm, encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: NORMBENCH_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    assert norm == path.read_text(encoding="utf-8")


def rich_text(renderables_or_cmp) -> str:
    buf = StringIO()
    console = Console(file=buf, width=100, color_system=None)
    if isinstance(renderables_or_cmp, C.Comparison):
        render_rich(renderables_or_cmp, console)
    else:
        for r in renderables_or_cmp:
            console.print(r)
    return buf.getvalue()


@pytest.fixture(scope="module")
def kernel_cmp() -> C.Comparison:
    return C.compare(run(BASE), [run(CAND)])


@pytest.fixture(scope="module")
def variant_cmp() -> C.Comparison:
    return C.compare_variants(run(E2E))


def find(cmp: C.Comparison, provider: str, num_tokens: int, metric: str | None = "time_us", candidate=None):
    rows = [
        r for r in cmp.rows
        if r.provider == provider and r.params.get("num_tokens") == num_tokens and r.metric == metric
        and (candidate is None or r.candidate == candidate)
    ]
    assert len(rows) == 1, rows
    return rows[0]


# --------------------------------------------------------------------------- purity
def test_compare_and_render_import_no_torch():
    code = f"""
import sys
from normbench.store import load_run
from normbench import compare
from normbench.report import compare_data, compare_markdown, compare_render, export
b = load_run({str(RUNS / BASE)!r}); c = load_run({str(RUNS / CAND)!r}); e = load_run({str(RUNS / E2E)!r})
cmp = compare.compare(b, [c])
compare_markdown.to_markdown(cmp); compare_data.to_json(cmp); compare_data.to_csv(cmp)
compare_markdown.to_markdown(compare.compare_variants(e)); compare.noise(b); export.to_csv(b)
import normbench.cli
try:
    from normbench.report import plot
    plot.figures(b, c); plot.figures(e)
except ImportError:  # no matplotlib here
    pass
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- kernel rows and verdicts
def test_known_effects_get_their_verdicts(kernel_cmp):
    triton = find(kernel_cmp, "triton", 1024)
    assert triton.verdict == "faster"
    assert triton.delta_pct == pytest.approx(-12, abs=1.5)  # built 12% faster
    assert triton.speedup == pytest.approx(triton.base_value / triton.cand_value)
    assert triton.ci_low_pct < triton.delta_pct < triton.ci_high_pct < 0
    assert (triton.n_base, triton.n_cand) == (60, 60)  # 2 repeats x 30 samples pooled

    compile16 = find(kernel_cmp, "torch_compile", 16)
    assert compile16.verdict == "slower" and compile16.delta_pct > 5

    small = find(kernel_cmp, "triton", 16)  # +1%: below the 2% practical threshold
    assert small.verdict == "within noise"
    assert find(kernel_cmp, "torch_compile", 1024).verdict == "within noise"
    assert find(kernel_cmp, "torch_naive", 16).verdict == "within noise"


def test_derived_metric_takes_its_source_verdict(kernel_cmp):
    t = find(kernel_cmp, "triton", 1024)
    g = find(kernel_cmp, "triton", 1024, "gbps")
    assert g.verdict == t.verdict == "faster"
    assert g.method == "derived from time_us"
    assert g.delta_pct > 0  # more GB/s
    # from the stored records: the time samples pooled over repeats; GB/s from its stored values
    def stored(run_id: str, metric: str) -> list[float]:
        ms = [c.metrics[metric] for c in run(run_id).cases if c.fingerprint == t.key]
        return [x for m in ms for x in (m.samples or [m.value])]

    def ratio(metric: str) -> float:
        return statistics.median(stored(CAND, metric)) / statistics.median(stored(BASE, metric))

    assert t.delta_pct == pytest.approx(100 * (ratio("time_us") - 1))
    assert g.delta_pct == pytest.approx(100 * (ratio("gbps") - 1))
    # reciprocal interval: 1 / (1 + hi) .. 1 / (1 + lo), around the point estimate
    assert 1 + g.ci_low_pct / 100 == pytest.approx(1 / (1 + t.ci_high_pct / 100))
    assert 1 + g.ci_high_pct / 100 == pytest.approx(1 / (1 + t.ci_low_pct / 100))
    assert g.ci_low_pct < g.delta_pct < g.ci_high_pct


def test_statuses_and_unmatched_rows_are_listed(kernel_cmp):
    incorrect = find(kernel_cmp, "torch_naive", 1024)
    assert incorrect.status == C.NOT_OK
    assert (incorrect.base_status, incorrect.cand_status) == ("OK", "INCORRECT")
    assert incorrect.status_text() == "INCORRECT in candidate"
    assert "max element-wise error" in incorrect.reason
    assert incorrect.verdict is None

    only_base = find(kernel_cmp, "torch_rms_norm", 16)
    assert only_base.status == C.ONLY_BASE and only_base.base_value is not None and only_base.cand_value is None
    only_cand = [r for r in kernel_cmp.rows if r.status == C.ONLY_CAND]
    assert [(r.provider, r.params["num_tokens"]) for r in only_cand] == [("triton", 4096)]

    skipped = [r for r in kernel_cmp.rows if r.provider == "liger"]
    assert len(skipped) == 2 and all(r.status_text() == "SKIPPED in both" for r in skipped)

    s = kernel_cmp.summary(CAND, "rms_norm")
    assert s.counts == {"faster": 1, "slower": 1, "within noise": 3}
    assert s.not_compared == 5
    assert "1 faster, 1 slower, 3 within noise" in s.line()


def test_environment_differences(kernel_cmp):
    keys = [d.key for d in kernel_cmp.env_diffs]
    assert keys == ["packages.triton", "git.commit", "peak_bandwidth_gbps"]
    d = kernel_cmp.env_diffs[0]
    assert (d.baseline, d.candidates[CAND]) == ("3.6.0", "3.6.1")


def test_env_helpers_read_flat_and_nested():
    assert C.env_get({"gpu.name": "H100"}, "gpu.name") == "H100"
    assert C.env_get({"gpu": {"name": "H100"}}, "gpu.name") == "H100"
    assert C.env_get({}, "gpu.name") is None
    diffs = C.env_differences({"gpu": {"name": "A"}, "x": 1.00001}, {"c": {"gpu.name": "B", "x": 1.00002}})
    assert [(d.key, d.baseline, d.candidates["c"]) for d in diffs] == [("gpu.name", "A", "B")]


def test_strict_refuses_other_gpus():
    with pytest.raises(IncomparableError, match="different GPUs.*NVIDIA H200"):
        C.compare(run(BASE), [run(H200)], C.CompareOptions(strict=True))
    cmp = C.compare(run(BASE), [run(H200)])  # without --strict: compared, difference listed
    assert [d.key for d in cmp.env_diffs][:2] == ["gpu.name", "driver"]
    assert C.compare(run(BASE), [run(CAND)], C.CompareOptions(strict=True)).rows


def test_aa_runs_are_within_noise():
    cmp = C.compare(run(BASE), [run(H200)])  # same distributions, other seeds
    verdicts = {r.verdict for r in cmp.rows if r.compared}
    assert verdicts == {"within noise"}


def test_n_runs_against_a_baseline():
    cmp = C.compare(run(BASE), [run(CAND), run(H200)])
    assert [c.label for c in cmp.candidates] == [CAND, H200]
    assert find(cmp, "triton", 1024, candidate=CAND).verdict == "faster"
    assert find(cmp, "triton", 1024, candidate=H200).verdict == "within noise"
    text = rich_text(cmp)
    assert "bbbbbb" in text and "cccccc" in text


# --------------------------------------------------------------------------- variants and gsm8k
def test_variants(variant_cmp):
    assert variant_cmp.baseline.label == "default"
    assert [c.label for c in variant_cmp.candidates] == ["fused"]
    by = {(r.stage, r.metric, r.params.get("input_len")): r for r in variant_cmp.rows}
    assert by[("serve", "output_throughput", None)].verdict == "faster"
    assert by[("serve", "request_throughput", None)].verdict == "faster"  # derived
    assert by[("serve", "ttft_ms", None)].verdict == "within noise"
    assert by[("serve", "output_throughput", None)].n_base == 4  # one sample per repeat
    assert by[("latency", "avg_latency_ms", 512)].verdict == "n=1, no verdict"
    strict = by[("gsm8k", "exact_match,strict-match", None)]
    assert strict.method == "mcnemar-exact"
    assert (strict.extra["base_only_correct"], strict.extra["cand_only_correct"]) == (4, 16)
    assert strict.p_value == pytest.approx(12392 / 2**20)
    assert strict.verdict == "better"
    flexible = by[("gsm8k", "exact_match,flexible-extract", None)]
    assert flexible.verdict == "within noise" and flexible.p_value == 1.0


def test_variant_errors():
    with pytest.raises(NormbenchError, match="unknown baseline variant 'fusd'.*Did you mean 'fused'"):
        C.compare_variants(run(E2E), "fusd")
    with pytest.raises(NormbenchError, match="no variants"):
        C.compare_variants(run(BASE))
    cmp = C.compare_variants(run(E2E), "fused")
    assert cmp.baseline.label == "fused" and cmp.candidates[0].label == "default"


# --------------------------------------------------------------------------- synthetic records
def _record(run_id: str, cases: list[CaseRecord], env: dict | None = None) -> RunRecord:
    return RunRecord(run_id=run_id, name="t", created_at="2026-01-01T00:00:00Z", suite=SuiteSnapshot(
        name="t", path="t.yaml", sha256="0", spec={}), environment=env or {}, cases=cases)


def _kcase(repeat: int, samples: list[float], status: str = "OK", reason: str | None = None) -> CaseRecord:
    fp = "s/rms_norm/triton/-/num_tokens=1,hidden_size=8"
    metrics = {"time_us": Metric(value=sorted(samples)[len(samples) // 2], unit="us", higher_is_better=False,
                                 samples=samples)} if status == "OK" else {}
    return CaseRecord(case_id=f"{fp}#{repeat}", fingerprint=fp, stage="s", kind="kernel", op="rms_norm",
                      provider="triton", params={"num_tokens": 1, "hidden_size": 8}, repeat=repeat,
                      status=status, reason=reason, metrics=metrics)


def test_kernel_repeats_pool_samples_and_failed_repeats_are_noted():
    a = _record("a", [_kcase(0, [1.0] * 5 + [1.01] * 5), _kcase(1, [1.02] * 10)])
    b = _record("b", [_kcase(0, [1.0] * 10), _kcase(1, [], "FAILED", "CUDA error: launch failure")])
    row = C.compare(a, [b]).rows[0]
    assert (row.n_base, row.n_cand) == (20, 10)
    assert "candidate: 1 of 2 repeats FAILED: CUDA error" in row.note
    b2 = _record("b", [_kcase(0, [1.0] * 10), _kcase(1, [], "INCORRECT", "wrong")])
    row = C.compare(a, [b2]).rows[0]
    assert row.status == C.NOT_OK and row.cand_status == "INCORRECT"


def test_repeat_spread_is_a_noise_floor():
    """Tight samples, but identical repeats drift 5% apart: a 4% change is within that noise
    (the pooled samples alone give a narrow interval that excludes 1)."""
    import numpy as np

    rng = np.random.default_rng(0)

    def samples(scale):
        return list(scale * rng.lognormal(0, 0.002, 40))

    drift = (1.0, 1.025, 1.05)
    a = _record("a", [_kcase(i, samples(f)) for i, f in enumerate(drift)])
    b = _record("b", [_kcase(i, samples(1.04 * f)) for i, f in enumerate(drift)])
    row = C.compare(a, [b]).rows[0]
    assert row.verdict == "within noise" and row.ci_low_pct > 3  # real, but inside the drift
    assert row.extra["repeat_spread_pct"] == pytest.approx(5.0, abs=0.5)
    assert "spread between repeats" in row.note
    row = C.compare(a, [b], C.CompareOptions(repeat_floor=False)).rows[0]
    assert row.verdict == "slower"
    b2 = _record("b", [_kcase(i, samples(1.10 * f)) for i, f in enumerate(drift)])
    assert C.compare(a, [b2]).rows[0].verdict == "slower"  # 10% is beyond the 5% drift


# --------------------------------------------------------------------------- gating
def test_parse_fail_on():
    gates = C.parse_fail_on(["median:+5%", "time_us:+5%, output_throughput:-3%", "exact_match,strict-match:-1%"])
    assert [(g.metric, g.threshold_pct, g.sign) for g in gates] == [
        (None, 5.0, 1), ("time_us", 5.0, 1), ("output_throughput", 3.0, -1), ("exact_match,strict-match", 1.0, -1)
    ]
    assert C.parse_fail_on("time_us:2.5%")[0].sign == 0
    for bad in ("time_us", "time_us:+5", "time_us:+x%", ":5%", "median:+0%"):
        with pytest.raises(NormbenchError, match="--fail-on"):
            C.parse_fail_on(bad)


def test_gates_fail_only_on_significant_regressions(kernel_cmp):
    failures = C.check_gates(kernel_cmp, C.parse_fail_on("time_us:+5%"))
    assert sorted((f.row.provider, f.row.params["num_tokens"]) for f in failures) == [
        ("torch_compile", 16), ("torch_naive", 1024)  # +8% slower; OK -> INCORRECT
    ]
    failures = C.check_gates(kernel_cmp, C.parse_fail_on("time_us:+10%"))
    assert [f.why for f in failures] == ["INCORRECT in candidate"]
    # +0.7% on triton 16 is statistically real but within noise: never fails, however low the threshold
    failures = C.check_gates(kernel_cmp, C.parse_fail_on("median:+0.1%"))
    assert ("triton", 16) not in [(f.row.provider, f.row.params["num_tokens"]) for f in failures]
    aa = C.compare(run(BASE), [run(H200)])
    assert C.check_gates(aa, C.parse_fail_on("median:+0.1%")) == []


def test_gate_errors(kernel_cmp, variant_cmp):
    with pytest.raises(NormbenchError, match="no metric 'time_uss'.*Did you mean 'time_us'"):
        C.check_gates(kernel_cmp, C.parse_fail_on("time_uss:+5%"))
    with pytest.raises(NormbenchError, match="lower-is-better.*time_us:\\+5%"):
        C.check_gates(kernel_cmp, C.parse_fail_on("time_us:-5%"))
    with pytest.raises(NormbenchError, match="output_throughput:-3%"):
        C.check_gates(variant_cmp, C.parse_fail_on("output_throughput:+3%"))
    assert C.check_gates(variant_cmp, C.parse_fail_on("output_throughput:-3%")) == []  # it got faster


# --------------------------------------------------------------------------- noise
def test_noise_report():
    rep = C.noise(run(BASE))
    assert len(rep.rows) == 7  # 7 OK fingerprints with time_us (gbps is derived)
    assert all(r.repeats == 2 and r.samples == 60 and r.method == "repeats" for r in rep.rows)
    assert 0.5 < rep.resolvable() < 5.0
    e2e = C.noise(run(E2E))
    serve = [r for r in e2e.rows if r.stage == "serve"]
    assert {r.metric for r in serve} == {"output_throughput", "ttft_ms"}
    assert all(r.resolves_pct is not None for r in serve)
    assert all(r.resolves_pct is None for r in e2e.rows if r.stage != "serve")  # n=1
    one = _record("a", [_kcase(0, [1.0, 1.1, 1.0, 1.1, 1.0, 1.1])])
    assert C.noise(one).rows[0].method == "split samples"


# --------------------------------------------------------------------------- rendering
def test_golden_rich_kernel(kernel_cmp):
    check_golden("compare_kernel.txt", rich_text(kernel_cmp))


def test_golden_markdown_kernel(kernel_cmp):
    md = to_markdown(kernel_cmp)
    check_golden("compare_kernel.md", md)
    assert "| torch_compile | 16 | 4096 |" in md
    assert "**slower**" in md and "**faster**" in md
    assert "`normbench run suites/rmsnorm.yaml --repeat 2`" in md
    assert "NVIDIA H100 80GB HBM3" in md


def test_golden_rich_variants(variant_cmp):
    check_golden("compare_variants.txt", rich_text(variant_cmp))


def test_golden_markdown_variants(variant_cmp):
    check_golden("compare_variants.md", to_markdown(variant_cmp))


def test_golden_noise():
    check_golden("noise_kernel.txt", rich_text(noise_renderables(C.noise(run(BASE)))))


def test_json_and_csv(kernel_cmp):
    data = json.loads(to_json(kernel_cmp))
    assert data["baseline"]["run_id"] == BASE
    assert data["summary"][CAND]["rms_norm"]["counts"]["faster"] == 1
    row = next(r for r in data["rows"] if r["provider"] == "triton" and r["params"]["num_tokens"] == 1024
               and r["metric"] == "time_us")
    assert row["verdict"] == "faster" and row["n_base"] == 60
    rows = list(csv.DictReader(io.StringIO(to_csv(kernel_cmp))))
    assert len(rows) == len(kernel_cmp.rows)
    assert {"num_tokens", "hidden_size", "dtype", "verdict", "delta_pct"} <= set(rows[0])
    t = next(r for r in rows if r["provider"] == "triton" and r["num_tokens"] == "1024" and r["metric"] == "time_us")
    assert float(t["delta_pct"]) < -10


def test_rich_is_colored_by_verdict(kernel_cmp):
    buf = StringIO()
    render_rich(kernel_cmp, Console(file=buf, width=100, color_system="truecolor", force_terminal=True))
    text = buf.getvalue()
    assert "\x1b[1;32mfaster" in text  # bold green
    assert "\x1b[1;31mslower" in text  # bold red


def test_wide_console_shows_bandwidth(kernel_cmp):
    buf = StringIO()
    render_rich(kernel_cmp, Console(file=buf, width=140, color_system=None))
    assert "GB/s base→cand" in buf.getvalue()
    assert "GB/s base→cand" not in rich_text(kernel_cmp)


def test_strict_keeps_the_gpu_models_of_a_heterogeneous_run_apart():
    def case(repeat: int, samples: list[float], gpu: str) -> CaseRecord:
        c = _kcase(repeat, samples)
        c.device = gpu
        c.device_info = {"name": gpu, "label": f"node:{gpu}"}  # type: ignore[attr-defined]  (extra field)
        return c

    # a Ray cluster of H100 and A100 nodes: repeat 0 landed on an H100, repeat 1 on an A100 (2x slower)
    a = _record("a", [case(0, [1.0] * 10, "H100"), case(1, [2.0] * 10, "A100")])
    b = _record("b", [case(0, [1.0] * 10, "H100"), case(1, [2.0] * 10, "A100")])
    pooled = C.compare(a, [b]).rows
    assert len(pooled) == 1  # without --strict the two GPU models are one sample
    apart = C.compare(a, [b], C.CompareOptions(strict=True)).rows
    assert sorted((r.params["gpu"], r.base_value, r.verdict) for r in apart) == [
        ("A100", 2.0, "within noise"), ("H100", 1.0, "within noise")]
    # a repeat that ran on another model than its baseline is not matched with it
    c = _record("c", [case(0, [1.0] * 10, "A100"), case(1, [2.0] * 10, "A100")])
    rows = C.compare(a, [c], C.CompareOptions(strict=True)).rows
    assert sorted((r.params["gpu"], r.status) for r in rows) == [
        ("A100", C.COMPARED), ("H100", C.ONLY_BASE)]
    # two homogeneous runs on different models are refused, as before
    h = _record("h", [case(0, [1.0] * 10, "H100")])
    with pytest.raises(IncomparableError, match="baseline h: H100; c: A100"):
        C.compare(h, [_record("c", [case(0, [1.0] * 10, "A100")])], C.CompareOptions(strict=True))
