"""``normbench compare | noise | export | plot`` through Typer's CliRunner, on the fixture runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normbench.cli import app, main
from normbench.errors import NormbenchError

RUNS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runs"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
H200 = "rmsnorm-20260103T000000Z-cccccc"
E2E = "e2e-20260104T000000Z-eeeeee"

runner = CliRunner()


def invoke(*args: str):
    """Run the app; returns (exit code as ``normbench.cli.main`` maps it, result)."""
    result = runner.invoke(app, [*args, "--results-dir", str(RUNS)], env={"COLUMNS": "120"})
    if isinstance(result.exception, NormbenchError):  # an app that lets the error through to main()
        return result.exception.exit_code, result
    return result.exit_code, result


def test_compare_rich_by_prefix():
    code, r = invoke("compare", "rmsnorm-20260101", "rmsnorm-20260102")
    assert code == 0, r.output
    assert "faster" in r.stdout and "slower" in r.stdout and "within noise" in r.stdout
    assert "INCORRECT (cand)" in r.stdout and "only in base" in r.stdout
    assert "packages.triton" in r.stdout  # environment difference listed


def test_compare_by_path_and_markdown_output(tmp_path):
    out = tmp_path / "pr.md"
    code, r = invoke("compare", str(RUNS / BASE), str(RUNS / CAND / "run.json"), "--format", "markdown", "-o", str(out))
    assert code == 0, r.output
    md = out.read_text()
    assert md.startswith(f"## normbench: `{CAND}` vs `{BASE}`")
    assert (Path(__file__).resolve().parents[1] / "golden" / "compare_kernel.md").read_text() == md
    assert f"wrote {out}" in r.stderr.replace("\n", "")


def test_compare_json_csv():
    code, r = invoke("compare", BASE, CAND, "--format", "json")
    assert code == 0
    data = json.loads(r.stdout)
    assert data["mode"] == "runs" and data["candidates"][0]["run_id"] == CAND
    code, r = invoke("compare", BASE, CAND, "-f", "csv", "--min-effect", "0.5%")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    triton16 = next(x for x in rows if x["provider"] == "triton" and x["num_tokens"] == "16" and x["metric"] == "time_us")
    assert triton16["verdict"] == "slower"  # the real +0.7% counts once --min-effect is 0.5%


def test_compare_variants_and_latest():
    code, r = invoke("compare", "latest", "--variants")
    assert code == 0, r.output
    assert "baseline variant default" in r.stdout and "better" in r.stdout and "p=0.012" in r.stdout
    code, r = invoke("compare", E2E)  # one run with variants: variants implied
    assert code == 0 and "n=1, no verdict" in r.stdout
    code, r = invoke("compare", E2E, "--baseline-variant", "fused", "-f", "json")
    assert json.loads(r.stdout)["baseline"]["label"] == "fused"


def test_compare_n_runs():
    code, r = invoke("compare", BASE, CAND, H200, "-f", "markdown")
    assert code == 0
    assert "## normbench: 2 runs vs" in r.stdout and f"`{H200}`:" in r.stdout


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("time_us:+5%", 1),  # torch_compile 16x4096 +8% slower (and torch_naive OK -> INCORRECT)
        ("median:+5%", 1),
        ("gbps:-5%", 1),  # the derived metric follows time_us' verdict
    ],
)
def test_fail_on_regression_exits_1(spec, expected):
    code, r = invoke("compare", BASE, CAND, "--fail-on", spec)
    assert code == expected, r.output
    assert "regression" in r.stderr and "torch_compile" in r.stderr


def test_fail_on_noise_exits_0():
    code, r = invoke("compare", BASE, H200, "--fail-on", "median:+0.5%")  # A/A: all within noise
    assert code == 0, r.output
    assert "no significant regression" in r.stderr
    code, r = invoke("compare", E2E, "--variants", "--fail-on", "output_throughput:-3%; exact_match,strict-match:-1%")
    assert code == 0, r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["compare", BASE, CAND, "--fail-on", "time_us:5"], "expected METRIC:[+|-]N%"),
        (["compare", BASE, CAND, "--fail-on", "tme_us:+5%"], "Did you mean 'time_us'"),
        (["compare", BASE, CAND, "--fail-on", "time_us:-5%"], "lower-is-better"),
        (["compare", BASE, CAND, "--min-effect", "2"], "write 2% or 0.02"),
        (["compare", BASE, CAND, "--confidence", "1.5"], "--confidence"),
        (["compare", BASE, CAND, "--format", "html"], "choose one of rich, markdown, json, csv"),
        (["compare", BASE, H200, "--strict"], "different GPUs"),
        (["compare", BASE], "needs a baseline run and a candidate run"),
        (["compare", BASE, CAND, "--variants"], "exactly one run"),
        (["compare", "rmsnorm-2026010", CAND], "matches 3 runs"),
        (["compare", "nope", CAND], "no run 'nope'"),
        (["compare", E2E, "--variants", "--baseline-variant", "fusd"], "Did you mean 'fused'"),
    ],
)
def test_bad_input_exits_2(args, message):
    code, r = invoke(*args)
    assert code == 2
    assert message in (r.stderr if not isinstance(r.exception, NormbenchError) else str(r.exception))
    assert "Traceback" not in r.output


def test_main_maps_errors_to_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", BASE, H200, "--strict", "--results-dir", str(RUNS)])
    assert e.value.code == 2
    assert "different GPUs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compare", BASE, CAND, "--fail-on", "time_us:+5%", "-f", "json", "--results-dir", str(RUNS)])
    assert e.value.code == 1


def test_noise():
    code, r = invoke("noise", BASE)
    assert code == 0, r.output
    assert "smallest effect this machine resolves: ~" in r.stdout
    code, r = invoke("noise", BASE, "-f", "json")
    data = json.loads(r.stdout)
    assert len(data["rows"]) == 7 and data["resolvable_p95_pct"] > 0


def test_export(tmp_path):
    code, r = invoke("export", BASE)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {"num_tokens", "hidden_size", "dtype", "metric", "value", "unit", "status"} <= set(rows[0])
    skipped = [x for x in rows if x["status"] == "SKIPPED"]
    assert skipped and all(x["metric"] == "" for x in skipped)
    ok = [x for x in rows if x["status"] == "OK"]
    assert {x["metric"] for x in ok} == {"time_us", "gbps"}
    out = tmp_path / "e.json"
    code, r = invoke("export", E2E, "--format", "json", "--output", str(out))
    data = json.loads(out.read_text())
    assert any(x["metric"] == "exact_match,strict-match" for x in data)


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    code, r = invoke("plot", BASE, "--vs", CAND, "--out", str(tmp_path))
    assert code == 0, r.output
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 20_000
    assert str(pngs[0].name) in r.stdout.replace("\n", "")
