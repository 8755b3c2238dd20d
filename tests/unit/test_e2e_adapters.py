"""End-to-end adapters without vLLM: parsing real tool outputs, command lines, config checks, planning.

The fixtures under tests/fixtures/e2e are trimmed real outputs of guidellm
0.8.1, vLLM 0.32.0 (``bench serve``, ``bench latency``, the server log) and
lm-eval 0.4.13 from a ``suites/e2e_cpu.yaml`` run (``make_fixtures.py`` there
says how they were made).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from normbench.engines import vllm as vc
from normbench.errors import NormbenchError, SuiteError
from normbench.expand import Capabilities, expand
from normbench.runners import accuracy as acc
from normbench.runners import e2e
from normbench.runners import latency as lat
from normbench.runners import server as srv
from normbench.runners import throughput as tp
from normbench.suite import load_suite, parse_suite

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "e2e"
SUITES = Path(__file__).resolve().parents[2] / "suites"

LATENCY_NAMES = {"ttft", "tpot", "itl", "e2el"}


def _load(name: str):
    return json.loads((FIX / name).read_text())


def _check_throughput_metrics(metrics):
    for name in ("request_throughput", "output_throughput", "total_token_throughput"):
        m = metrics[name]
        assert m.higher_is_better and m.value > 0 and m.samples == [m.value]
    assert metrics["request_throughput"].unit == "req/s"
    assert metrics["output_throughput"].unit == "tok/s" and metrics["total_token_throughput"].unit == "tok/s"
    assert metrics["total_token_throughput"].value > metrics["output_throughput"].value
    for base in LATENCY_NAMES:
        for stat in ("mean", "median", "p99"):
            m = metrics[f"{base}_{stat}"]
            assert m.unit == "ms" and not m.higher_is_better and m.value >= 0 and m.samples == [m.value]


# --------------------------------------------------------------------------- guidellm
def test_guidellm_report_v2():
    report = _load("guidellm_report.json")
    metrics, counts = tp.parse_guidellm_report(report)
    _check_throughput_metrics(metrics)
    m = report["benchmarks"][0]["metrics"]
    assert metrics["request_throughput"].value == pytest.approx(m["requests_per_second"]["successful"]["mean"])
    assert metrics["ttft_p99"].value == pytest.approx(m["time_to_first_token_ms"]["successful"]["percentiles"]["p99"])
    # guidellm reports request latency in seconds: E2EL is stored in ms
    assert metrics["e2el_median"].value == pytest.approx(1000 * m["request_latency"]["successful"]["median"])
    assert counts["completed"] == m["request_totals"]["successful"] > 0
    assert counts["failed"] == m["request_totals"]["errored"] == 0


def test_guidellm_report_of_another_version_is_refused():
    report = _load("guidellm_report.json")
    report["metadata"]["version"] = 1
    with pytest.raises(NormbenchError, match=r"report version 1 .*reads version 2.*guidellm >= 0.7"):
        tp.parse_guidellm_report(report)


@pytest.mark.parametrize("old", ["0.4.2", "0.6.0", "0.3.0rc1"])
def test_guidellm_too_old(old):
    with pytest.raises(NormbenchError, match=rf"guidellm {old} is installed.*guidellm >= 0.7"):
        tp.check_guidellm_version(old)


def test_guidellm_supported_and_missing():
    assert tp.check_guidellm_version("0.8.1") == "0.8.1"
    assert tp.check_guidellm_version("0.7.0") == "0.7.0"
    assert tp.check_guidellm_version("1.0.0.dev3") == "1.0.0.dev3"
    with pytest.raises(NormbenchError, match=r"not installed.*pip install 'guidellm>=0.7'"):
        tp.check_guidellm_version(None)


def _stage(**kw):
    base = dict(profile="concurrent", rate=None, concurrency=None, prompt_tokens=64, output_tokens=128,
                max_seconds=None, num_prompts=None, extra_args=[])
    return SimpleNamespace(**{**base, **kw})


def test_guidellm_command_is_the_0_8_cli():
    st = _stage(rate=10, max_seconds=30)
    cmd = tp.guidellm_command(["guidellm"], st, "http://127.0.0.1:8000", "m", "/models/m", Path("/r/out.json"))
    assert cmd[:2] == ["guidellm", "run"]
    opts = dict(zip(cmd, cmd[1:]))
    assert opts["--backend"] == "kind=openai_http,target=http://127.0.0.1:8000,model=m,request_format=/v1/completions"
    assert opts["--profile"] == "kind=concurrent,streams=10"
    assert opts["--data"] == "kind=synthetic_text,prompt_tokens=64,output_tokens=128"
    assert opts["--tokenizer"] == "kind=huggingface_auto,model=/models/m"
    assert opts["--output"] == "kind=json,path=/r/out.json"
    assert opts["--constraint"] == "kind=max_duration,seconds=30"
    poisson = tp.guidellm_command(["g"], _stage(profile="poisson", rate=2.5, num_prompts=100), "u", "m", "t", Path("o"))
    assert "kind=poisson,rate=2.5" in poisson and "kind=max_requests,count=100" in poisson


# --------------------------------------------------------------------------- vllm bench serve / latency
def test_vllm_bench_serve_result():
    result = _load("vllm_bench_serve.json")
    metrics, counts = tp.parse_vllm_bench_serve(result)
    _check_throughput_metrics(metrics)
    assert metrics["output_throughput"].value == pytest.approx(result["output_throughput"])
    assert metrics["itl_p99"].value == pytest.approx(result["p99_itl_ms"])
    assert metrics["e2el_mean"].value == pytest.approx(result["mean_e2el_ms"])
    assert counts == {"completed": result["completed"], "failed": 0}
    with pytest.raises(NormbenchError, match="not a `vllm bench serve"):
        tp.parse_vllm_bench_serve({"avg_latency": 1})


def test_vllm_bench_serve_command():
    st = _stage(profile="throughput", num_prompts=512, prompt_tokens=100, output_tokens=100)
    cmd = tp.vllm_bench_serve_command(["vllm"], st, "http://127.0.0.1:9", "m", "/t", Path("/r"), "x.json")
    assert cmd[:3] == ["vllm", "bench", "serve"]
    opts = dict(zip(cmd, cmd[1:]))
    assert opts["--dataset-name"] == "random" and opts["--num-prompts"] == "512"
    assert opts["--random-input-len"] == "100" and opts["--random-output-len"] == "100"
    assert "--ignore-eos" in cmd and "--save-result" in cmd and "--max-concurrency" not in cmd
    conc = tp.vllm_bench_serve_command(["v"], _stage(concurrency=4), "u", "m", "t", Path("/r"), "x.json")
    assert conc[conc.index("--max-concurrency") + 1] == "4"


def test_vllm_bench_latency_output():
    data = _load("vllm_bench_latency.json")
    metrics, iters = lat.parse_latency_json(data)
    assert set(metrics) == {"latency_avg", *(f"latency_p{p}" for p in (10, 25, 50, 75, 90, 99))}
    for m in metrics.values():
        assert m.unit == "ms" and not m.higher_is_better and m.samples == [m.value]
    assert metrics["latency_avg"].value == pytest.approx(1000 * data["avg_latency"])
    assert metrics["latency_p10"].value <= metrics["latency_p50"].value <= metrics["latency_p99"].value
    assert iters == pytest.approx([1000 * x for x in data["latencies"]])


def test_latency_command_passes_json_as_one_argument():
    st = SimpleNamespace(output_len=1, batch_size=1, num_iters=10, num_iters_warmup=3, extra_args=[])
    cfg = {"custom_ops": ["-rms_norm"], "pass_config": {"fuse_norm_quant": True}}
    cmd = lat.latency_command(["vllm"], "m", 8192, st, cfg, ["--max-model-len", "9000"], Path("/o.json"))
    i = cmd.index("--compilation-config")
    assert json.loads(cmd[i + 1]) == cfg  # one argv element, "-rms_norm" never a bare token
    assert "-rms_norm" not in cmd and cmd[cmd.index("--input-len") + 1] == "8192"
    assert cmd[-2:] == ["--max-model-len", "9000"]
    assert "--compilation-config" not in lat.latency_command(["v"], "m", 1, st, {}, [], Path("o"))


def test_serve_only_options_are_stripped_for_bench_latency():
    args = ["--port", "9", "--max-model-len", "4096", "--host=0.0.0.0", "--disable-log-requests",
            "--served-model-name", "x", "--enforce-eager"]
    assert vc.strip_serve_only(args) == ["--max-model-len", "4096", "--enforce-eager"]
    assert vc.VllmEngine().offline_args(args) == ["--max-model-len", "4096", "--enforce-eager"]
    assert vc.option_value(["--port", "1", "--port=2"], "--port") == "2"
    assert vc.option_value(["--x"], "--port") is None


# --------------------------------------------------------------------------- lm-eval
def test_lm_eval_results_and_items():
    results = _load("lm_eval_results.json")
    samples = acc.read_samples(FIX / "lm_eval_samples.jsonl")
    task = next(iter(results["results"]))
    metrics, items = acc.parse_lm_eval(results, samples, task)
    assert set(metrics) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    for m in metrics.values():
        assert m.unit == "fraction" and m.higher_is_better and 0.0 <= m.value <= 1.0
        assert m.samples == [m.value] and m.n == 10
        assert m.stderr is not None and m.stderr >= 0
    assert [it["doc_id"] for it in items] == list(range(10))
    assert all(set(it) == {"doc_id", "strict", "flexible"} and it["strict"] in (0, 1) for it in items)
    assert sum(it["strict"] for it in items) / 10 == pytest.approx(metrics["exact_match,strict-match"].value)


def test_lm_eval_items_pair_documents_and_stderr_na():
    results = {"results": {"gsm8k": {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": "N/A",
                                     "exact_match,flexible-extract": 1.0, "exact_match_stderr,flexible-extract": 0.0}},
               "n-samples": {"gsm8k": {"original": 1319, "effective": 2}}}
    samples = [
        {"doc_id": 1, "filter": "strict-match", "exact_match": 1.0},
        {"doc_id": 1, "filter": "flexible-extract", "exact_match": 1.0},
        {"doc_id": 0, "filter": "strict-match", "exact_match": 0.0},
        {"doc_id": 0, "filter": "flexible-extract", "exact_match": 1.0},
    ]
    metrics, items = acc.parse_lm_eval(results, samples, "gsm8k")
    assert metrics["exact_match,strict-match"].stderr is None and metrics["exact_match,strict-match"].n == 2
    assert items == [{"doc_id": 0, "strict": 0, "flexible": 1}, {"doc_id": 1, "strict": 1, "flexible": 1}]
    with pytest.raises(NormbenchError, match="no task 'other'"):
        acc.parse_lm_eval(results, samples, "other")


def test_lm_eval_command_and_offline_task(tmp_path, monkeypatch):
    st = SimpleNamespace(num_fewshot=5, limit=500, concurrency=32, gen_kwargs={"max_gen_toks": 256}, extra_args=[])
    cmd = acc.lm_eval_command(["lm_eval"], st, "http://127.0.0.1:8000", "served", "gsm8k", tmp_path / "o", None)
    opts = dict(zip(cmd, cmd[1:]))
    assert opts["--model"] == "local-completions" and opts["--tasks"] == "gsm8k"
    assert "base_url=http://127.0.0.1:8000/v1/completions" in opts["--model_args"]
    assert "num_concurrent=32" in opts["--model_args"] and "tokenized_requests=False" in opts["--model_args"]
    assert opts["--num_fewshot"] == "5" and opts["--limit"] == "500" and opts["--gen_kwargs"] == "max_gen_toks=256"
    assert "--log_samples" in cmd and "--include_path" not in cmd

    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    files = acc.resolve_data_files(str(data))
    assert files == {"train": str(data.resolve()), "test": str(data.resolve())}
    with pytest.raises(NormbenchError, match="data_files.test: no such file"):
        acc.resolve_data_files({"test": str(tmp_path / "missing.jsonl")})
    monkeypatch.setattr(acc, "gsm8k_yaml", lambda: Path("/site/lm_eval/tasks/gsm8k/gsm8k.yaml"))
    task = acc.write_task(tmp_path / "tasks", files)
    text = (tmp_path / "tasks" / f"{task}.yaml").read_text()
    assert 'include: "/site/lm_eval/tasks/gsm8k/gsm8k.yaml"' in text
    assert "dataset_path: json" in text and f'test: "{data.resolve()}"' in text


# --------------------------------------------------------------------------- compilation config
def test_effective_config_from_the_server_log():
    eff = vc.parse_engine_config((FIX / "vllm_serve_engine_config.log").read_text())
    assert eff is not None
    assert "+rms_norm" in eff["custom_ops"] and eff["pass_config"]["fuse_norm_quant"] is True
    assert isinstance(eff["mode"], vc.EnumValue) and eff["mode"].value in (0, 1, 2, 3)
    requested = {"custom_ops": ["+rms_norm"], "pass_config": {"fuse_norm_quant": True}}
    assert vc.config_mismatches(requested, eff) == []
    assert vc.config_mismatches({**requested, "mode": str(eff["mode"]).lower()}, eff) == []
    assert vc.config_mismatches({**requested, "mode": eff["mode"].value}, eff) == []
    wrong = vc.config_mismatches({"custom_ops": ["-rms_norm"], "pass_config": {"fuse_norm_quant": False}}, eff)
    assert len(wrong) == 2 and "custom_ops" in wrong[0] and "fuse_norm_quant" in wrong[1]
    assert json.dumps(vc.jsonable(eff))  # storable
    assert vc.parse_engine_config("no such line\n") is None


def test_mismatch_rules():
    eff = {"custom_ops": ["+rms_norm", "-rms_norm"], "pass_config": {}}
    assert vc.config_mismatches({"custom_ops": ["-rms_norm"]}, eff)  # contradicted by "+rms_norm"
    # absent from the logged repr (defaults are left out) is not a mismatch
    assert vc.config_mismatches({"pass_config": {"eliminate_noops": True}}, eff) == []


def test_vllm_engine_command_line_gpu_count_and_port():
    eng = vc.VllmEngine()
    cmd = eng.serve_command("/m", "127.0.0.1", 8123, "m", {"custom_ops": ["-rms_norm"]}, ["--max-model-len", "64"])
    i = cmd.index("serve")
    assert cmd[i:] == ["serve", "/m", "--host", "127.0.0.1", "--port", "8123", "--served-model-name", "m",
                       "--compilation-config", '{"custom_ops":["-rms_norm"]}', "--max-model-len", "64"]
    own = eng.serve_command("/m", "127.0.0.1", 8123, "m", {}, ["--port=9", "--host", "::", "--served-model-name", "x"])
    assert own[i:] == ["serve", "/m", "--port=9", "--host", "::", "--served-model-name", "x"]  # the args' own win
    assert eng.given_port(["--port=9"]) == 9 and eng.given_port([]) is None and eng.given_host(["--host", "::"]) == "::"
    with pytest.raises(NormbenchError, match="not a port number"):
        eng.given_port(["--port", "http"])
    assert eng.gpus(["-tp", "2", "--data-parallel-size=3", "-pp", "1"]) == 6
    assert sorted(eng.cold_start_env("/c").values()) == ["/c/inductor", "/c/vllm"]


def test_preflight_refuses_a_parallel_size_that_is_not_a_number(monkeypatch, tmp_path):
    suite = parse_suite(E2E_SUITE.replace("server: {model: m}", "server: {model: m, args: [-tp, two]}"), "s.yaml")
    cases = [c for c in expand(suite, Capabilities("cpu")) if c.kind != "kernel"]
    monkeypatch.setattr(vc, "installed", lambda: True)
    monkeypatch.setattr(vc, "compilation_fields", lambda: {"": {"custom_ops", "pass_config"},
                                                           "pass_config": {"fuse_norm_quant"}})
    monkeypatch.setattr(acc, "gsm8k_yaml", lambda: tmp_path)
    with pytest.raises(NormbenchError) as e:
        e2e.preflight(cases, SimpleNamespace(suite=suite, status=lambda s: None))
    assert "variant base: server args: --tensor-parallel-size 'two' is not a whole number >= 1" in str(e.value)
    assert "variant fused: server args: --tensor-parallel-size 'two'" in str(e.value)


def _fake_vllm(tmp_path: Path, pass_fields: list[str], top: list[str]) -> Path:
    root = tmp_path / "vllm"
    (root / "config").mkdir(parents=True)
    body = "\n".join(f"    {f}: bool = False" for f in pass_fields)
    top_body = "\n".join(f"    {f}: int = 0" for f in top)
    (root / "config" / "compilation.py").write_text(
        "from typing import ClassVar\n"
        f"class PassConfig:\n{body}\n    _private: int = 0\n    KIND: ClassVar[str] = 'x'\n\n"
        f"class CompilationConfig:\n{top_body}\n    custom_ops: list[str] = []\n    pass_config: PassConfig = None\n"
    )
    return root


def test_old_vllm_expects_enable_fusion(tmp_path):
    fields = vc.compilation_fields(_fake_vllm(tmp_path, ["enable_fusion", "enable_noop"], ["level"]))
    assert fields == {"": {"level", "custom_ops", "pass_config"}, "pass_config": {"enable_fusion", "enable_noop"}}
    cfg = {"mode": 3, "custom_ops": ["-rms_norm"], "pass_config": {"fuse_norm_quant": True}}
    msgs = vc.check_compilation_config(cfg, fields, "0.11.0", where="variants.fused.compilation_config")
    assert msgs == [
        "variants.fused.compilation_config.mode: vLLM 0.11.0 has no such field; it expects level (the older name)",
        "variants.fused.compilation_config.pass_config.fuse_norm_quant: vLLM 0.11.0 has no such field; "
        "it expects enable_fusion (the older name)",
    ]


def test_new_vllm_expects_fuse_norm_quant(tmp_path):
    fields = vc.compilation_fields(_fake_vllm(tmp_path, ["fuse_norm_quant", "fuse_act_quant"], ["mode"]))
    msgs = vc.check_compilation_config({"pass_config": {"enable_fusion": True, "fuse_norm_qaunt": True}}, fields, "0.32.0")
    assert "pass_config.enable_fusion: vLLM 0.32.0 has no such field; it expects fuse_norm_quant (and fuse_act_quant)" in msgs[0]
    assert "did you mean fuse_norm_quant?" in msgs[1]
    assert vc.check_compilation_config({"pass_config": {"fuse_norm_quant": True}}, fields, "0.32.0") == []


def test_preflight_refuses_unknown_fields_before_any_server(monkeypatch, tmp_path):
    suite = parse_suite(E2E_SUITE.replace("fuse_norm_quant", "enable_fusion"), "s.yaml")
    cases = [c for c in expand(suite, Capabilities("cpu")) if c.kind != "kernel"]
    monkeypatch.setattr(vc, "installed", lambda: True)
    monkeypatch.setattr(vc, "compilation_fields", lambda: {"": {"custom_ops", "pass_config"}, "pass_config": {"fuse_norm_quant"}})
    monkeypatch.setattr(vc, "introspect_fields", lambda: None)
    monkeypatch.setattr(vc, "vllm_version", lambda: "0.32.0")
    monkeypatch.setattr(tp, "guidellm_version", lambda: "0.8.1")
    monkeypatch.setattr(acc, "gsm8k_yaml", lambda: tmp_path)
    launched = []
    monkeypatch.setattr(srv.VllmServer, "start", lambda self, *a, **k: launched.append(self))
    ctx = SimpleNamespace(suite=suite, status=lambda s: None)
    with pytest.raises(NormbenchError, match=r"variants.fused.compilation_config.pass_config.enable_fusion: "
                                             r"vLLM 0.32.0 has no such field; it expects fuse_norm_quant"):
        e2e.preflight(cases, ctx)
    assert launched == []


# --------------------------------------------------------------------------- suites and planning
E2E_SUITE = """\
name: e2e
server: {model: m}
variants:
  base: {}
  fused: {compilation_config: {custom_ops: ["+rms_norm"], pass_config: {fuse_norm_quant: true}}}
baseline: base
stages:
  - {kind: throughput, name: tp, client: vllm_bench_serve, concurrency: 2, prompt_tokens: 8, output_tokens: 8, repeats: 2}
  - {kind: accuracy, name: acc, limit: 5}
  - {kind: latency, name: lat, input_len: [16, 32]}
"""


def test_plan_one_server_per_variant_and_repeat_interleaved():
    suite = parse_suite(E2E_SUITE, "s.yaml")
    steps = e2e.plan(expand(suite, Capabilities("cpu")))
    shape = [(k, r, v, [c.stage for c in cs]) for k, r, v, cs in steps]
    assert shape == [
        ("server", 0, "base", ["tp", "acc"]),
        ("server", 0, "fused", ["tp", "acc"]),
        ("offline", 0, "base", ["lat"]), ("offline", 0, "base", ["lat"]),
        ("offline", 0, "fused", ["lat"]), ("offline", 0, "fused", ["lat"]),
        ("server", 1, "fused", ["tp"]),  # repeat 1 reverses the order: A B, then B A
        ("server", 1, "base", ["tp"]),
    ]


@pytest.mark.parametrize("stage, message", [
    ("{kind: throughput, client: guidellm, concurrency: 2, prompt_tokens: 8, output_tokens: 8}",
     "guidellm needs max_seconds or num_prompts"),
    ("{kind: throughput, client: guidellm, max_seconds: 5, prompt_tokens: 8, output_tokens: 8}",
     "the concurrent profile needs concurrency"),
    ("{kind: throughput, client: vllm_bench_serve, concurrency: 2, prompt_tokens: 8}",
     "needs prompt_tokens and output_tokens"),
    ("{kind: throughput, client: vllm_bench_serve, concurrency: 2, prompt_tokens: 8, output_tokens: 8, max_seconds: 3}",
     "vllm bench serve stops after num_prompts"),
    ("{kind: throughput, client: guidellm, profile: poisson, max_seconds: 5, prompt_tokens: 8, output_tokens: 8}",
     "the poisson profile needs rate"),
    ("{kind: throughput, client: guidellm, rate: 2.5, max_seconds: 5, prompt_tokens: 8, output_tokens: 8}",
     "rate is a stream count"),
    ("{kind: accuracy, data_files: {test: a.jsonl, dev: b.jsonl}}", "data_files"),
])
def test_throughput_and_accuracy_stage_checks(stage, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite(f"name: s\nserver: {{model: m}}\nstages:\n  - {stage}\n", "s.yaml")


def test_shipped_e2e_suites_validate_and_expand():
    cpu = load_suite(SUITES / "e2e_cpu.yaml").suite
    cases = expand(cpu, Capabilities("cpu"))
    assert {c.kind for c in cases} == {"throughput", "accuracy", "latency"}
    assert {c.variant for c in cases} == set(cpu.variants) and len(cpu.variants) == 2
    assert all(c.skip is None for c in cases)

    nv = load_suite(SUITES / "nvfp4.yaml").suite
    assert nv.server.model == "nvidia/Qwen3-30B-A3B-NVFP4" and nv.baseline == "default"
    assert nv.variants["default"].compilation_config == {}
    configs = [v.compilation_config for k, v in nv.variants.items() if k != "default"]
    assert sorted((c["custom_ops"][0], c["pass_config"]["fuse_norm_quant"]) for c in configs) == [
        ("+rms_norm", False), ("+rms_norm", True), ("-rms_norm", False), ("-rms_norm", True)]
    h100 = expand(nv, Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3"))
    e2e_cases = [c for c in h100 if c.kind != "kernel"]
    assert e2e_cases and all(c.skip and "SM100" in c.skip for c in e2e_cases)
    lat_points = sorted({c.param_dict["input_len"] for c in e2e_cases if c.kind == "latency"})
    assert lat_points == [512, 2048, 8192]
    assert nv.stages[-1].kind == "kernel" and nv.stages[-1].op == "rms_norm_nvfp4_quant"


def test_a_hung_guidellm_is_tried_again(tmp_path, monkeypatch):
    from normbench.runners import RunContext

    suite = parse_suite(
        "name: s\nserver: {model: m}\nvariants: {a: {}}\nstages:\n"
        "  - {kind: throughput, name: g, client: guidellm, rate: 2, prompt_tokens: 8, output_tokens: 8, max_seconds: 4}\n",
        "s.yaml")
    case = expand(suite, Capabilities("cpu"))[0]
    ctx = RunContext(suite=suite, caps=Capabilities("cpu"), environment={}, run_dir=tmp_path, record=lambda c, r: None)
    env = e2e._Env(ctx)
    env.versions["guidellm"] = "0.8.1"
    server = SimpleNamespace(base_url="http://127.0.0.1:1", name="m", log_path=tmp_path / "logs" / "a-server.log",
                             alive=lambda: True, effective_config=None, config_note=None, info=lambda: {"pid": 1})
    calls = []

    def fake_run_tool(cmd, log, env_, timeout_s, server=None, cwd=None, banner=None):
        calls.append(timeout_s)
        if len(calls) == 1:
            return srv.ToolResult(None, f"timeout after {timeout_s:g} s", "", timeout_s)
        out = Path(cmd[cmd.index("--output") + 1].split("path=", 1)[1])
        out.write_text((FIX / "guidellm_report.json").read_text())
        return srv.ToolResult(0, None, "", 1.0)

    monkeypatch.setattr(e2e, "run_tool", fake_run_tool)
    rec = e2e.run_case(env, case, server, suite.variants["a"])
    assert rec.status == "OK" and rec.attempts == 2 and calls == [4 + tp.GUIDELLM_SLACK_S] * 2
    assert rec.artifacts["raw"] == "logs/g-a-r0-guidellm.json"
    assert rec.metrics["request_throughput"].unit == "req/s"
