"""``--profile ncu|torch`` (``normbench.profile``): ncu's raw CSV parsed from a fixture, the ncu command
line, the torch profiler really run on a CPU case, the ncu path end to end through a stand-in ncu
(``tests/fixtures/profile/fake_ncu.py``: it runs the real child process), the record round trip,
and the profile tables of ``show`` and ``compare`` at 80 columns.

The raw-page fixture is synthetic (``tests/fixtures/profile/README.md``): written from the
documented layout, to be replaced by one recorded on a GPU.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from normbench import compare as C
from normbench import store
from normbench.cli import app
from normbench.errors import NormbenchError
from normbench.expand import Case, KernelSettings
from normbench.ops import OPS
from normbench.profile import MAX_UNFILTERED, NO_NCU, check_plan, check_tool, profile_one, stem_of, targets
from normbench.profile.case import CaseSpec
from normbench.profile.ncu import (
    METRICS,
    NcuParseError,
    import_command,
    parse_raw_csv,
    profile_command,
)
from normbench.profile.summary import attach_profiles, names_text, short_kernel_name, summarize
from normbench.report.compare_data import to_json
from normbench.report.compare_markdown import to_markdown
from normbench.report.compare_rich import rich_renderables
from normbench.report.run_table import render_run, run_markdown
from normbench.suite import ProviderRef

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "profile"
SYNTHETIC = FIXTURES / "ncu_raw_synthetic.csv"
RECORDED = FIXTURES / "ncu_raw_h100_scaled_quant.csv"
RUNS = ROOT / "tests" / "fixtures" / "runs"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"

runner = CliRunner()

VLLM_NORM = ("void vllm::rms_norm_kernel<c10::BFloat16, 8, 1>(c10::BFloat16 *, long, const c10::BFloat16 *, "
             "const c10::BFloat16 *, float, int, int)")


# --------------------------------------------------------------------------- the raw CSV
def test_parses_the_synthetic_raw_page() -> None:
    kernels = parse_raw_csv(SYNTHETIC.read_text())
    assert [k.id for k in kernels] == [0, 1]
    norm, quant = kernels
    assert norm.name == VLLM_NORM  # a name with commas, quoted in the CSV, whole
    assert quant.name.startswith("void vllm::dynamic_per_token_scaled_fp8_quant_kernel<c10::BFloat16,")
    assert (norm.time_us, norm.dram_pct, norm.occupancy_pct, norm.registers) == (4.87, 71.52, 83.41, 32)
    assert (quant.time_us, quant.dram_pct, quant.occupancy_pct, quant.registers) == (5.31, 64.08, 61.88, 40)
    assert (norm.block, norm.grid) == ("(256, 1, 1)", "(1024, 1, 1)")
    assert norm.as_record() == {"name": VLLM_NORM, "time_us": 4.87, "calls": 1, "dram_pct": 71.52,
                                "occupancy_pct": 83.41, "registers": 32, "block": "(256, 1, 1)",
                                "grid": "(1024, 1, 1)"}


def test_parses_a_raw_page_recorded_on_the_h100() -> None:
    """ncu 2025.3.1 on the H100 (2026-12-07): triton's dynamic per-tensor int8 scaled_quant of a
    float32 4096 x 8192 input, three launches (amax buffer fill, amax pass, quantize pass)."""
    fill, amax, quant = parse_raw_csv(RECORDED.read_text())
    assert fill.name == "void at::vectorized_elementwise_kernel<4, at::FillFunctor<float>, std::array<char *, 1>>(int, T2, T3)"
    assert (amax.name, quant.name) == ("_amax_kernel", "_rowquant_kernel")
    assert (fill.time_us, amax.time_us, quant.time_us) == (2.432, 48.416, 62.592)  # ncu's usecond column
    assert (round(amax.dram_pct, 2), round(amax.occupancy_pct, 2), amax.registers) == (84.58, 48.31, 62)
    assert (round(quant.dram_pct, 2), round(quant.occupancy_pct, 2), quant.registers) == (78.89, 82.14, 32)
    assert (quant.block, quant.grid, amax.grid) == ("(256, 1, 1)", "(4096, 1, 1)", "(528, 1, 1)")
    assert short_kernel_name(fill.name) == "vectorized_elementwise_kernel"


def _raw(time_unit: str, rows: list[str], metrics: tuple[str, ...] = tuple(METRICS.values())) -> str:
    head = '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",' \
           '"Device","CC",' + ",".join(f'"{m}"' for m in metrics)
    units = ",".join(['""'] * 11 + [f'"{time_unit if m == METRICS["time_us"] else "%"}"' for m in metrics])
    return "\n".join([head, units, *rows]) + "\n"


def _row(ident: int, name: str, values: tuple[str, ...]) -> str:
    return ",".join([f'"{ident}"', '"1"', '"python3"', '"h"', f'"{name}"', '"1"', '"7"', '"(128, 1, 1)"',
                     '"(33, 1, 1)"', '"0"', '"9.0"', *(f'"{v}"' for v in values)])


def test_time_units_thousands_separators_order_and_missing_values() -> None:
    # METRICS order: dram %, occupancy %, registers, duration
    text = _raw("nsecond", [_row(1, "b_kernel", ("n/a", "50.0", "64", "1,250")),
                            _row(0, "a_kernel", ("12.5", "", "32", "980"))])
    a, b = parse_raw_csv(text)
    assert (a.name, a.id, a.time_us, a.occupancy_pct) == ("a_kernel", 0, 0.98, None)
    assert (b.name, b.time_us, b.dram_pct, b.registers) == ("b_kernel", 1.25, None, 64)
    ms = parse_raw_csv(_raw("msecond", [_row(0, "k", ("1", "2", "3", "0.5"))]))[0]
    assert ms.time_us == 500.0
    # a metric the report lacks is None in every kernel
    only_time = parse_raw_csv(_raw("usecond", [_row(0, "k", ("7.5",))], metrics=(METRICS["time_us"],)))[0]
    assert (only_time.time_us, only_time.dram_pct, only_time.registers) == (7.5, None, None)


@pytest.mark.parametrize("text, message", [
    ("==PROF== Connected to process 1\n==ERROR== ERR_NVGPUCTRPERM\n", r"no header row .*ERR_NVGPUCTRPERM"),
    ('"ID","Process ID"\n"0","1"\n', r"no 'Kernel Name' column"),
    ('"ID","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value"\n'
     '"0","k","SOL","Duration","us","3"\n', r"details page"),
    (_raw("nsecond", [_row(0, "k", ("1", "2", "3"))]), r"row 3 has 14 cells, the header 15"),
    (_raw("nsecond", [_row(0, "k", ("1", "lots", "3", "4"))]), r"row 3, sm__warps_active.*'lots' is not a number"),
    (_raw("cycle", [_row(0, "k", ("1", "2", "3", "4"))]), r"gpu__time_duration.sum in unit 'cycle'"),
])
def test_the_parser_refuses_what_is_not_a_raw_page(text: str, message: str) -> None:
    with pytest.raises(NcuParseError, match=message):
        parse_raw_csv(text)


# --------------------------------------------------------------------------- names and summaries
@pytest.mark.parametrize("name, short", [
    (VLLM_NORM, "rms_norm_kernel"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::pow_tensor_scalar_kernel"
     "_impl<float, float>(at::TensorIteratorBase&, float)::{lambda(float)#1}, at::detail::Array<char*, 2> >(int, "
     "at::native::(anonymous namespace)::pow_tensor_scalar_kernel_impl<float, float>(at::TensorIteratorBase&, "
     "float)::{lambda(float)#1}, at::detail::Array<char*, 2>)", "vectorized_elementwise_kernel"),
    ("void at::native::(anonymous namespace)::reduce_kernel<512, 1>(int)", "reduce_kernel"),
    ("_rms_norm_fwd_kernel", "_rms_norm_fwd_kernel"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0"),
    ("aten::mul", "aten::mul"),
    ("rms_norm_kernel(float *, int)", "rms_norm_kernel"),
])
def test_short_kernel_names(name: str, short: str) -> None:
    assert short_kernel_name(name) == short


def test_names_are_counted_and_cut() -> None:
    assert names_text(["reduce", "ew", "ew", "ew"]) == "reduce + ew x3"
    assert names_text(["a" * 30, "b" * 30, "c" * 30], limit=64) == f"{'a' * 30} + {'b' * 30} (+1 more)"


def test_the_summary_weights_counters_by_kernel_duration() -> None:
    kernels = [k.as_record() for k in parse_raw_csv(SYNTHETIC.read_text())]
    s = summarize({"tool": "ncu", "launches": 1, "kernels": kernels})
    assert s is not None and s.kernels == 2 and s.registers == 40
    assert s.time_us == pytest.approx(4.87 + 5.31)
    assert s.dram_pct == pytest.approx((71.52 * 4.87 + 64.08 * 5.31) / (4.87 + 5.31))
    assert s.occupancy_pct == pytest.approx((83.41 * 4.87 + 61.88 * 5.31) / (4.87 + 5.31))
    assert s.names == ["rms_norm_kernel", "dynamic_per_token_scaled_fp8_quant_kernel"]
    # without durations: a plain mean; a failed profile: only its error
    plain = summarize({"tool": "ncu", "kernels": [{"name": "a", "dram_pct": 10.0}, {"name": "b", "dram_pct": 30.0}]})
    assert plain is not None and plain.dram_pct == 20.0 and plain.time_us is None
    failed = summarize({"tool": "ncu", "error": "ncu exited with code 1", "kernels": []})
    assert failed is not None and failed.error == "ncu exited with code 1" and failed.kernels == 0
    assert summarize(None) is None


# --------------------------------------------------------------------------- command lines and checks
def test_the_ncu_command_line(tmp_path: Path) -> None:
    cmd = profile_command("/opt/ncu", tmp_path / "a.b.ncu-rep", tmp_path / "a.case.json", python="/py")
    assert cmd[:5] == ["/opt/ncu", "--clock-control", "none", "--set", "basic"]
    metrics = cmd[cmd.index("--metrics") + 1].split(",")
    assert metrics == ["dram__throughput.avg.pct_of_peak_sustained_elapsed",
                       "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread",
                       "gpu__time_duration.sum"]
    assert cmd[cmd.index("--profile-from-start") + 1] == "off"
    assert cmd[cmd.index("--launch-count") + 1] == "64"
    assert cmd[cmd.index("--export") + 1] == str(tmp_path / "a.b.ncu-rep") and "--force-overwrite" in cmd
    assert cmd[-4:] == ["/py", "-m", "normbench.profile.one_case", str(tmp_path / "a.case.json")]
    assert profile_command("ncu", Path("r"), Path("s"), clock_control="base")[2] == "base"
    assert import_command("/opt/ncu", Path("r.ncu-rep")) == [
        "/opt/ncu", "--import", "r.ncu-rep", "--csv", "--page", "raw", "--print-kernel-base", "demangled"]


def _fake_ncu(tmp_path: Path, body: str | None = None) -> Path:
    """An ``ncu`` executable in ``tmp_path/bin``: the stand-in (``fake_ncu.py``), or a shell ``body``."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    ncu = bindir / "ncu"
    ncu.write_text(body or f'#!/bin/sh\nexec "{sys.executable}" "{FIXTURES / "fake_ncu.py"}" "$@"\n')
    ncu.chmod(0o755)
    return ncu


def test_check_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORMBENCH_NCU", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(NormbenchError) as err:
        check_tool("ncu")
    assert str(err.value) == NO_NCU == ("--profile ncu needs Nsight Compute's ncu on PATH; "
                                        "--profile torch works without it")
    assert check_tool("torch") == "torch" and check_tool(None) is None
    with pytest.raises(NormbenchError, match="--profile 'nsys': choose ncu or torch"):
        check_tool("nsys")
    monkeypatch.setenv("NORMBENCH_NCU", str(_fake_ncu(tmp_path)))
    assert check_tool("ncu") == "ncu"
    monkeypatch.setenv("NORMBENCH_NCU", str(tmp_path / "no-such-ncu"))
    with pytest.raises(NormbenchError, match="needs Nsight Compute's ncu"):
        check_tool("ncu")


def test_run_refuses_profile_ncu_without_ncu_before_anything_runs(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path / "nothing-here"), "NORMBENCH_NCU": ""}
    res = runner.invoke(app, ["run", "smoke", "--profile", "ncu", "--results-dir", str(tmp_path / "runs")], env=env)
    assert res.exit_code == 2
    assert NO_NCU in " ".join(res.output.split())
    assert not (tmp_path / "runs").exists()


def _case(n: int = 33, h: int = 1000, provider: str = "torch_naive", repeat: int = 0, op: str = "rms_norm") -> Case:
    params = OPS[op].complete({"num_tokens": n, "hidden_size": h, "dtype": "float32"})
    return Case("rms_norm", 0, "kernel", op, provider, None, tuple(params.items()), repeat,
                ref=ProviderRef(name=provider), settings=KernelSettings(seed=5))


def test_a_large_plan_needs_a_filter(tmp_path: Path) -> None:
    many = [_case(n) for n in range(1, MAX_UNFILTERED + 2)]
    with pytest.raises(NormbenchError, match=rf"--profile ncu would profile {MAX_UNFILTERED + 1} kernel cases.*"
                                             r"--filter"):
        check_plan("ncu", many, [])
    check_plan("ncu", many, ["provider=triton"])  # a filter: the user chose
    check_plan("ncu", many[:MAX_UNFILTERED], [])
    check_plan(None, many, [])
    suite = tmp_path / "big.yaml"
    suite.write_text("name: big\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [torch_naive]\n"
                     f"    sweep: {{num_tokens: [{', '.join(str(n) for n in range(1, 61))}], hidden_size: 64}}\n")
    res = runner.invoke(app, ["run", str(suite), "--profile", "torch", "--dry-run"])
    assert res.exit_code == 2 and "would profile 60 kernel cases" in " ".join(res.output.split())
    res = runner.invoke(app, ["run", str(suite), "--profile", "torch", "--dry-run", "--filter", "num_tokens=1,2"])
    assert res.exit_code == 0, res.output


def test_targets_one_ok_case_per_fingerprint(tmp_path: Path) -> None:
    cases = [_case(33, repeat=0), _case(33, repeat=1), _case(1, repeat=0), _case(1, provider="triton")]
    cases[3] = dataclasses.replace(cases[3], skip="needs CUDA")  # skipped by expansion
    record = store.RunRecord(run_id="r", name="r", created_at="t",
                             suite=store.SuiteSnapshot(name="s", path="p", sha256="0", spec={}))
    ok = {"time_us": store.Metric(value=1.0, unit="us", higher_is_better=False, samples=[1.0])}
    record.cases = [store.CaseRecord(case_id=c.case_id, fingerprint=c.fingerprint, stage=c.stage, kind="kernel",
                                     status="OK" if i != 2 else "FAILED", metrics=ok if i != 2 else {}, seed=1)
                    for i, c in enumerate(cases[:3])]
    assert [c.case_id for c, _ in targets(cases, record)] == [cases[0].case_id]  # one repeat; FAILED and SKIPPED: none
    record.cases[1].profile = {"tool": "torch", "kernels": []}
    assert targets(cases, record) == []  # that fingerprint has a profile (a resumed run's)
    stems = {stem_of(c) for c in cases}
    assert len(stems) == len(cases) and all(s.replace(".", "").replace("_", "").replace("-", "").isalnum() for s in stems)
    assert stem_of(cases[0]).startswith("rms_norm.torch_naive.33x1000.")


# --------------------------------------------------------------------------- torch, for real on the CPU
def test_torch_profiles_a_real_cpu_case(tmp_path: Path) -> None:
    from normbench.profile import torch as torch_profile

    spec = CaseSpec.of(_case(), seed=123, warmup=3, launches=2)
    assert CaseSpec.from_json(spec.to_json()) == spec
    profile, artifacts = torch_profile.profile_case(spec, tmp_path, "case")
    assert profile["tool"] == "torch" and profile["device"] == "cpu" and profile["settings"]["activities"] == ["cpu"]
    assert (profile["warmup"], profile["launches"]) == (3, 2)
    kernels = {k["name"]: k for k in profile["kernels"]}
    # torch_naive is the HF LlamaRMSNorm formula: one rsqrt, one mean per call; warm-up calls are not counted
    assert kernels["aten::rsqrt"]["calls"] == 1 and kernels["aten::mean"]["calls"] == 1
    assert all(k["time_us"] > 0 for k in profile["kernels"])
    times = [k["time_us"] for k in profile["kernels"]]
    assert times == sorted(times, reverse=True)
    assert artifacts == {"torch_trace": "profile/case.trace.json.gz"}
    with gzip.open(tmp_path / artifacts["torch_trace"], "rt") as f:
        trace = json.load(f)
    assert any(e.get("name") == "aten::rsqrt" for e in trace["traceEvents"])
    assert not (tmp_path / "profile" / "case.trace.json").exists()
    rec = store.CaseRecord(case_id="c", fingerprint="c", stage="s", kind="kernel", status="OK", profile=profile,
                           metrics={"time_us": store.Metric(value=1.0, unit="us", higher_is_better=False)})
    assert rec.profile == profile


def test_profile_one_turns_a_failure_into_the_profiles_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NORMBENCH_NCU", str(_fake_ncu(tmp_path, "#!/bin/sh\necho '==ERROR== ERR_NVGPUCTRPERM'\nexit 3\n")))
    rec = store.CaseRecord(case_id="c", fingerprint="c", stage="s", kind="kernel", status="OK", seed=7,
                           metrics={"time_us": store.Metric(value=1.0, unit="us", higher_is_better=False)})
    profile, artifacts = profile_one("ncu", _case(), rec, tmp_path, device="NVIDIA H100 80GB HBM3")
    assert profile["tool"] == "ncu" and profile["kernels"] == []
    assert profile["error"].startswith("ncu exited with code 3;") and "ERR_NVGPUCTRPERM" in profile["error"]
    assert set(artifacts) == {"profile_case", "ncu_log"}
    spec = CaseSpec.from_json((tmp_path / artifacts["profile_case"]).read_text())
    assert (spec.seed, spec.provider, spec.op) == (7, {"name": "torch_naive"}, "rms_norm")
    # and it is a valid profile of a record
    rec.profile = profile
    assert store.CaseRecord.model_validate_json(rec.model_dump_json()).profile == profile


def test_run_profile_ncu_end_to_end_through_a_stand_in_ncu(tmp_path: Path) -> None:
    """The whole ncu path on a CPU: the CLI's pass, the real child (``one_case``) run under the stand-in,
    the CSV parsed (the synthetic fixture's kernels), the record and ``show``."""
    ncu = _fake_ncu(tmp_path)
    log = tmp_path / "ncu-args.jsonl"
    env = {"PATH": f"{ncu.parent}{os.pathsep}{os.environ['PATH']}", "NORMBENCH_NCU": "",
           "FAKE_NCU_CSV": str(SYNTHETIC), "FAKE_NCU_LOG": str(log)}
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", "smoke", "--profile", "ncu", "--filter", "stage=rms_norm", "--filter",
                              "provider=torch_naive", "--filter", "num_tokens=33", "--filter", "hidden_size=1000",
                              "--filter", "dtype=float32", "--results-dir", str(runs), "--no-progress"], env=env)
    assert res.exit_code == 0, res.output
    (run_dir,) = runs.iterdir()
    record = store.load_run(run_dir)
    assert [c.status for c in record.cases] == ["OK", "OK"]  # residual false and true
    for case in record.cases:
        prof = case.profile
        assert prof is not None and prof["tool"] == "ncu" and "error" not in prof
        assert prof["settings"]["clock_control"] == "none" and prof["settings"]["set"] == "basic"
        assert prof["tool_version"] == "Version 2025.1.0.0 (build 00000000) (public-release)"
        assert [k["name"] for k in prof["kernels"]][0] == VLLM_NORM and len(prof["kernels"]) == 2
        assert prof["command"][1:3] == ["--clock-control", "none"]
        assert set(case.artifacts) == {"profile_case", "ncu_log", "ncu_report", "ncu_csv"}
        assert all((run_dir / p).is_file() for p in case.artifacts.values())
        # the child really ran the case: warm-up outside the range, one profiled call
        assert "3 warm-up + 1 profiled call(s) on cpu" in (run_dir / case.artifacts["ncu_log"]).read_text()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2 and all(c[:3] == ["--clock-control", "none", "--set"] for c in calls)
    shown = runner.invoke(app, ["show", str(run_dir)])
    text = " ".join(shown.output.split())
    assert shown.exit_code == 0 and "profile (ncu)" in text and "DRAM %" in text
    assert "rms_norm_kernel + dynamic_per_token_scaled_fp8_quant_kernel" in text


def test_resume_profiles_a_stored_run_on_demand(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["--results-dir", str(runs), "--no-progress"]
    res = runner.invoke(app, ["run", "smoke", "--filter", "stage=rms_norm", "--filter", "provider=torch_naive",
                              "--filter", "num_tokens=33", "--filter", "hidden_size=1000", "--filter", "dtype=float32",
                              "--filter", "residual=False", *args])
    assert res.exit_code == 0, res.output
    (run_dir,) = runs.iterdir()
    assert [c.profile for c in store.load_run(run_dir).cases] == [None]
    res = runner.invoke(app, ["run", "--resume", "latest", "--profile", "torch", *args])
    assert res.exit_code == 0, res.output
    (case,) = store.load_run(run_dir).cases
    assert case.profile is not None and case.profile["tool"] == "torch" and case.profile["launches"] == 5
    assert (run_dir / case.artifacts["torch_trace"]).is_file()
    res = runner.invoke(app, ["run", "--resume", "latest", "--profile", "torch", *args])
    assert res.exit_code == 0 and "nothing to profile" in res.output


# --------------------------------------------------------------------------- records, show, compare
def _ncu_profile(dram: tuple[float, float], regs: tuple[int, int]) -> dict:
    kernels = [k.as_record() for k in parse_raw_csv(SYNTHETIC.read_text())]
    for k, d, r in zip(kernels, dram, regs):
        k["dram_pct"], k["registers"] = d, r
    return {"tool": "ncu", "tool_version": "Version 2025.1.0.0", "device": "NVIDIA H100 80GB HBM3", "warmup": 3,
            "launches": 1, "settings": {"clock_control": "none", "set": "basic"}, "command": ["ncu"],
            "kernels": kernels}


def _with_profiles(name: str, dram: float, regs: int) -> store.RunRecord:
    record = store.load_run(RUNS / name)
    for c in record.cases:
        if c.provider == "triton" and c.params["num_tokens"] == 1024 and c.repeat == 0:
            c.profile = _ncu_profile((dram, dram), (regs, regs))
        if c.provider == "torch_compile" and c.params["num_tokens"] == 16 and c.repeat == 0:
            c.profile = {"tool": "ncu", "error": "ncu exited with code 1; ERR_NVGPUCTRPERM", "kernels": []}
    return record


def test_profiles_round_trip_through_a_stored_run(tmp_path: Path) -> None:
    record = _with_profiles(CAND, 70.0, 40)
    writer = store.create_run(tmp_path, "p", record.suite, record.environment, ["normbench"], planned=len(record.cases))
    for c in record.cases:
        writer.add(c)
    writer.finish("complete")
    back = store.load_run(writer.dir)
    got = {c.case_id: c.profile for c in back.cases if c.profile}
    assert got == {c.case_id: c.profile for c in record.cases if c.profile} and len(got) == 2
    raw = json.loads((writer.dir / "run.json").read_text())
    assert sum("profile" in c for c in raw["cases"]) == 2  # written only where set
    raw["cases"][0]["profile"] = {"tool": "ncu", "kernels": [{"name": "k", "bogus": 1}]}
    (writer.dir / "run.json").write_text(json.dumps(raw))
    with pytest.raises(NormbenchError, match=r"case 0 \(.*\): profile\.kernels\[0\]\.bogus is not a field of record "
                                             r"schema version 2"):
        store.load_run(writer.dir)
    assert store.load_run(RUNS / BASE).cases[0].profile is None  # older records load, without profiles


def test_the_profile_schema_declares_and_documents_every_field() -> None:
    from pydantic import TypeAdapter

    for td in (store.CaseProfile, store.ProfileKernel):
        schema = TypeAdapter(td).json_schema()
        assert schema.get("additionalProperties") is False, td.__name__
        assert set(schema["properties"]) == set(td.__annotations__), td.__name__
        assert all(prop.get("description") for prop in schema["properties"].values()), td.__name__
    assert store.CaseRecord.model_fields["profile"].description
    assert set(parse_raw_csv(SYNTHETIC.read_text())[0].as_record()) == set(store.ProfileKernel.__annotations__)


def _render(fn, width: int) -> str:
    buf = StringIO()
    fn(Console(file=buf, width=width, color_system=None, highlight=False))
    return buf.getvalue()


def _fits(text: str, width: int) -> None:
    wide = [line for line in text.splitlines() if cell_len(line.rstrip()) > width]
    assert not wide, f"lines wider than {width}: {wide[:3]}"
    assert "…" not in text


def test_show_prints_the_profile_columns_at_80_columns() -> None:
    record = _with_profiles(CAND, 70.0, 40)
    # 120 columns: a table; 80: the same values, one block per case (kernel names are never cut)
    wide = _render(lambda c: render_run(record, c), 120)
    _fits(wide, 120)
    row = next(line for line in wide.splitlines() if line.startswith("triton") and "1024x4096" in line)
    assert row.split() == ["triton", "1024x4096", "10.18", "70.0", "72.2", "40",
                           "rms_norm_kernel", "+", "dynamic_per_token_scaled_fp8_quant_kernel"]
    text = _render(lambda c: render_run(record, c), 80)
    _fits(text, 80)
    assert "rms_norm, profile (ncu)" in text
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split() == ["triton", "1024x4096"])
    assert lines[at + 1].split() == ["kernel", "us", "10.18", "·", "DRAM", "%", "70.0", "·", "occ", "%", "72.2", "·",
                                     "regs", "40"]  # kernel us summed; occupancy weighted; the most registers
    flat = " ".join(text.split())
    assert "rms_norm_kernel + dynamic_per_token_scaled_fp8_quant_kernel" in flat
    assert "profile failed: ncu exited with code 1; ERR_NVGPUCTRPERM" in flat
    assert "ncu --set basic --clock-control none" in flat
    md = run_markdown(record)
    assert "#### rms_norm, profile (ncu)" in md
    assert ("| triton | 1024x4096 | 10.18 | 70.0 | 72.2 | 40 | rms_norm_kernel + "
            "dynamic_per_token_scaled_fp8_quant_kernel |") in md
    # a run without profiles shows no profile table
    assert "profile (" not in _render(lambda c: render_run(store.load_run(RUNS / BASE), c), 80)


def test_compare_prints_profiles_beside_the_deltas() -> None:
    base, cand = _with_profiles(BASE, 60.0, 32), _with_profiles(CAND, 70.0, 40)
    cmp = C.compare(base, [cand])
    assert attach_profiles(cmp, base, [cand]) >= 2  # time_us and GB/s rows of triton 1024x4096, torch_compile 16x4096
    text = _render(lambda c: [c.print(r) for r in rich_renderables(cmp, 80)], 80)
    _fits(text, 80)
    assert "profile (base→cand)" in text
    row = next(line for line in text.splitlines() if "triton" in line and "60.0→70.0" in line)
    # the delta, then why: kernel us (the same fixture kernels on both sides), DRAM %, occupancy, registers
    assert row.split() == ["triton", "1024x4096", "-11.5%", "10.18", "60.0→70.0", "72.2", "32→40"]
    flat = " ".join(text.split())
    assert "not shown at 80 columns: kernels" in flat
    assert "torch_compile 16x4096: base and cand profile failed: ncu exited with code 1" in flat
    wide = _render(lambda c: [c.print(r) for r in rich_renderables(cmp, 140)], 140)
    assert any(line.split()[-3:] == ["rms_norm_kernel", "+", "dynamic_per_token_scaled_fp8_quant_kernel"]
               for line in wide.splitlines() if "60.0→70.0" in line)
    md = to_markdown(cmp)
    assert "**Profile** (base→cand):" in md
    assert ("| triton | 1024x4096 | -11.5% | 10.18 | 60.0→70.0 | 72.2 | 32→40 | rms_norm_kernel + "
            "dynamic_per_token_scaled_fp8_quant_kernel |") in md.splitlines()
    rows = json.loads(to_json(cmp))["rows"]
    prof = next(r["extra"]["profile"] for r in rows if r["provider"] == "triton" and r["metric"] == "time_us"
                and r["params"]["num_tokens"] == 1024)
    assert prof["base"]["dram_pct"] == 60.0 and prof["cand"]["registers"] == 40
    assert C.compare(store.load_run(RUNS / BASE), [store.load_run(RUNS / CAND)]).rows  # and nothing without profiles


def test_compare_of_torch_profiles_shows_times_without_counter_columns() -> None:
    base, cand = store.load_run(RUNS / BASE), store.load_run(RUNS / CAND)
    for record, us in ((base, 7.0), (cand, 6.0)):
        for c in record.cases:
            if c.provider == "triton" and c.params["num_tokens"] == 1024 and c.repeat == 0:
                c.profile = {"tool": "torch", "launches": 5, "kernels": [
                    {"name": "_rms_norm_fwd_kernel", "time_us": us, "calls": 1}]}
    cmp = C.compare(base, [cand])
    attach_profiles(cmp, base, [cand])
    text = _render(lambda c: [c.print(r) for r in rich_renderables(cmp, 80)], 80)
    _fits(text, 80)
    head = next(line for line in text.splitlines() if line.startswith("provider") and "kernel us" in line)
    assert head.split() == ["provider", "case", "Δ%", "kernel", "us", "kernels"]
    row = next(line for line in text.splitlines() if "7.00→6.00" in line)
    assert row.split() == ["triton", "1024x4096", "-11.5%", "7.00→6.00", "_rms_norm_fwd_kernel"]


def test_the_compare_command_attaches_the_profiles(tmp_path: Path) -> None:
    paths = []
    for name, dram, regs in ((BASE, 60.0, 32), (CAND, 70.0, 40)):
        d = tmp_path / name
        d.mkdir()
        store.atomic_write_text(d / "run.json", _with_profiles(name, dram, regs).model_dump_json())
        paths.append(str(d))
    res = runner.invoke(app, ["compare", *paths, "-f", "markdown"])
    assert res.exit_code == 0, res.output
    assert "**Profile** (base→cand):" in res.output and "60.0→70.0" in res.output


def test_the_documented_numbers_are_the_code_s() -> None:
    from normbench.profile import TORCH_LAUNCHES
    from normbench.profile.case import LAUNCHES, WARMUP
    from normbench.profile.ncu import CLOCK_CONTROL, SECTION_SET

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (MAX_UNFILTERED, TORCH_LAUNCHES, WARMUP, LAUNCHES) == (50, 5, 3, 1)
    assert (CLOCK_CONTROL, SECTION_SET) == ("none", "basic")
    assert "more than 50 cases need a `--filter`" in readme and "`torch` wraps 5 calls" in readme
    assert "called 3 times to warm up" in readme and "`--set basic`, `--clock-control none`" in readme
