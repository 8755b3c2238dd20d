"""Readable at 120, 80 and 60 columns: tables keep their key columns whole at every width.

Every rich rendering (``show``, ``compare``, ``noise``; a run with many providers)
is checked at three widths against golden files (tests/golden/w<width>_<name>.txt,
rendered to ``Console(file=StringIO(), width=W, color_system=None)``; regenerate
after an intended change with ``NORMBENCH_UPDATE_GOLDEN=1 python -m pytest
tests/unit/test_render_widths.py``), and for properties that must hold at any
width: no line wider than the console, no cell cut (no ``…``), every case label
on one line with its provider and verdict. ``--help`` and ``list`` are checked
through the CLI at 80 and 60 columns.
"""

from __future__ import annotations

import os
import re
from io import StringIO
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from normbench import compare as C
from normbench.cli import app
from normbench.report.compare_cells import StageView, verdict_text
from normbench.report.compare_rich import render_noise, render_rich
from normbench.report.labels import case_label as kernel_case_label
from normbench.report.run_table import render_run
from normbench.store import CaseRecord, Metric, RunRecord, SuiteSnapshot, load_run

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "tests" / "fixtures" / "runs"
GOLDEN = ROOT / "tests" / "golden"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
E2E = "e2e-20260104T000000Z-eeeeee"
WIDTHS = (120, 80, 60)

runner = CliRunner()


def _render(fn, width: int) -> str:
    buf = StringIO()
    fn(Console(file=buf, width=width, color_system=None, highlight=False))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NORMBENCH_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: NORMBENCH_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    assert text == path.read_text(encoding="utf-8")


def _fits(text: str, width: int) -> None:
    wide = [line for line in text.splitlines() if cell_len(line) > width]
    assert not wide, f"lines wider than {width}: {wide[:3]}"
    assert "…" not in text, "a cell was cut"


def _wide_run() -> RunRecord:
    """A kernel run with six providers (two unfused compositions) over 32 sweep points: wider than 120 columns."""
    providers = ["torch_naive", "torch_compile", "triton", "vllm", "unfused[norm=triton,quant=triton]",
                 "unfused[norm=torch_compile,quant=torch_compile]"]
    cases = []
    for n in (1, 16, 1024, 16384):
        for h in (4096, 8192):
            for residual in (False, True):
                for q in ("fp8", "int8"):
                    for k, p in enumerate(providers):
                        params = {"num_tokens": n, "hidden_size": h, "dtype": "bfloat16", "residual": residual,
                                  "quant_dtype": q}
                        fp = f"per_token/rms_norm_quant/{p}/-/num_tokens={n},hidden_size={h},residual={residual},{q}"
                        us = (1.0 + k) * (1 + n * h / 2 ** 22) * (1.3 if residual else 1.0)
                        status = "INCORRECT" if (p == "vllm" and q == "int8" and n == 16) else "OK"
                        metrics = {} if status != "OK" else {
                            "time_us": Metric(value=us, unit="us", higher_is_better=False, samples=[us]),
                            "gbps": Metric(value=4 * n * h / (us * 1e3), unit="GB/s", higher_is_better=True,
                                           derived_from="time_us")}
                        cases.append(CaseRecord(
                            case_id=fp + "#0", fingerprint=fp, stage="per_token", kind="kernel", op="rms_norm_quant",
                            provider=p, params=params, status=status, metrics=metrics,
                            reason="out: max element-wise error 2 > atol 1" if status != "OK" else None))
    return RunRecord(run_id="wide-20260105T000000Z-ffffff", name="wide", created_at="2026-01-05T00:00:00Z",
                     status="complete", planned=len(cases), environment={"gpu.name": "NVIDIA H100 80GB HBM3"},
                     suite=SuiteSnapshot(name="wide", path="suites/wide.yaml", sha256="0" * 64, spec={}), cases=cases)


@pytest.fixture(scope="module")
def kernel_cmp() -> C.Comparison:
    return C.compare(load_run(RUNS / BASE), [load_run(RUNS / CAND)])


@pytest.fixture(scope="module")
def variant_cmp() -> C.Comparison:
    return C.compare_variants(load_run(RUNS / E2E), None)


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_kernel_keeps_case_and_verdict_whole(kernel_cmp, width: int) -> None:
    text = _render(lambda c: render_rich(kernel_cmp, c), width)
    _golden(f"w{width}_compare_kernel.txt", text)
    _fits(text, width)
    lines = text.splitlines()
    view = StageView(kernel_cmp, "rms_norm")
    for r in view.table_rows():
        case = kernel_case_label(r.params, view.varying)
        verdict = verdict_text(r, short=True)
        assert any(re.search(rf"\b{re.escape(r.provider)}\s+{re.escape(case)}\s+.*\b{re.escape(verdict.split()[0])}", ln)
                   for ln in lines), (r.provider, case, verdict)
        assert verdict in " ".join(text.split())
    if width >= 120:
        assert "95% CI Δ%" in text and "speedup" in text and "not shown" not in text
    elif width == 80:
        assert "95% CI Δ%" in text and "not shown at 80 columns: n, speedup" in text
    else:
        assert "    base 21.15 · cand 21.19 · Δ% +0.2%" in text  # stacked: one block per case


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_variants(variant_cmp, width: int) -> None:
    text = _render(lambda c: render_rich(variant_cmp, c), width)
    _golden(f"w{width}_compare_variants.txt", text)
    _fits(text, width)
    for metric in ("output_throughput (tok/s)", "exact_match,strict-match", "avg_latency_ms (ms)"):
        assert any(metric in ln and "fused" in ln for ln in text.splitlines()), metric


@pytest.mark.parametrize("width", WIDTHS)
def test_noise(width: int) -> None:
    report = C.noise(load_run(RUNS / BASE))
    text = _render(lambda c: render_noise(report, c), width)
    _golden(f"w{width}_noise.txt", text)
    _fits(text, width)
    for r in report.rows:
        assert f"{r.provider} " in text and f"{r.resolves_pct:.1f}%" in text


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", [CAND, E2E])
def test_show(width: int, name: str) -> None:
    text = _render(lambda c: render_run(load_run(RUNS / name), c), width)
    _golden(f"w{width}_show_{name.split('-')[0]}.txt", text)
    _fits(text.replace("…", ""), width)  # (no cell is cut: checked below per value)
    assert "…" not in text


@pytest.mark.parametrize("width", WIDTHS)
def test_show_many_providers_splits_or_stacks(width: int) -> None:
    record = _wide_run()
    text = _render(lambda c: render_run(record, c), width)
    _golden(f"w{width}_show_wide.txt", text)
    _fits(text, width)
    for c in record.cases:  # every case label and every provider's value is there, whole
        label = f"{c.params['num_tokens']}x{c.params['hidden_size']} {'+' if c.params['residual'] else '-'}residual " \
                f"{c.params['quant_dtype']}"
        assert label in text
        if c.status == "OK":
            assert f"{c.metrics['time_us'].value:,.2f}" in text or f"{c.metrics['time_us'].value:,.0f}" in text


def _cli(width: int, *args: str) -> str:
    r = runner.invoke(app, list(args), env={"COLUMNS": str(width), "TERMINAL_WIDTH": str(width)})
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("width", (80, 60))
def test_cli_compare_fits_the_terminal(width: int) -> None:
    out = _cli(width, "compare", BASE, CAND, "--results-dir", str(RUNS))
    _fits(out, width)
    assert "torch_naive" in out and "1024x4096" in out and "INCORRECT" in out


@pytest.mark.parametrize("width", (80, 60))
@pytest.mark.parametrize("command", ["run", "compare", "show", "plot"])
def test_help_is_not_cut(width: int, command: str) -> None:
    out = _cli(width, command, "--help")
    assert "…" not in out
    flat = " ".join(out.replace("│", " ").split())
    if command == "run":
        assert "matches a param/op/provider/stage/variant (globs allowed)" in flat
        assert "--accelerator-type" in out and "(Ray's accelerator_type, e.g. H100, A100, B200)" in flat
    if command == "compare":
        assert "`median:+5%` (every metric)" in flat or "median:+5% (every metric)" in flat


@pytest.mark.parametrize("width", (100, 80, 60))
def test_list_keeps_the_cases_column(width: int) -> None:
    from normbench.expand import sweep_size
    from normbench.suite import load_suite

    from normbench.cli.run import suite_dirs

    out = _cli(width, "list")
    assert re.search(r"\bsuite\b.*\bcases\b", out.splitlines()[0])
    bundled = sorted({f.stem: f for d in reversed(suite_dirs(None)) for f in d.glob("*.yaml")}.items())
    assert len(bundled) >= 5
    for _, f in bundled:
        s = load_suite(f).suite
        assert re.search(rf"^{re.escape(s.name)}\s+.*\s{re.escape(f'{sweep_size(s):,}')}\s", out, re.M), s.name
