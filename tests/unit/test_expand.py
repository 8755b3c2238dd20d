"""Sweep expansion, rules, filters and capability skips (pure: fake capabilities)."""

from __future__ import annotations

import sys

from normbench.expand import Capabilities, apply_filters, expand, sweep_size
from normbench.suite import parse_suite

CPU = Capabilities("cpu", None, None, {})
H100 = Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3", {"flashinfer": "flashinfer not installed: pip install 'normbench[flashinfer]'"})

SUITE = """\
name: t
stages:
  - kind: kernel
    op: rms_norm
    providers: [torch_naive, triton, flashinfer]
    sweep: {num_tokens: [1, 16], hidden_size: [64, 128], residual: [false, true]}
"""


def test_cartesian_product_with_defaults_filled() -> None:
    cases = expand(parse_suite(SUITE, "t.yaml"), H100)
    assert len(cases) == 2 * 2 * 2 * 3 == sweep_size(parse_suite(SUITE, "t.yaml"))
    first = cases[0].param_dict
    assert first == {"num_tokens": 1, "hidden_size": 64, "dtype": "bfloat16", "eps": 1e-6, "residual": False}
    # grouped by point: the first three cases share a point, one per provider
    assert [c.provider for c in cases[:3]] == ["torch_naive", "triton", "flashinfer"]
    assert len({c.params for c in cases[:3]}) == 1


def test_capability_skips_carry_reasons() -> None:
    cpu = {c.provider: c.skip for c in expand(parse_suite(SUITE, "t.yaml"), CPU)}
    assert cpu == {"torch_naive": None, "triton": "needs CUDA", "flashinfer": "needs CUDA"}
    gpu = {c.provider: c.skip for c in expand(parse_suite(SUITE, "t.yaml"), H100)}
    assert gpu["flashinfer"] == "flashinfer not installed: pip install 'normbench[flashinfer]'"
    assert gpu["triton"] is None


def test_provider_without_op_is_skipped_with_reason() -> None:
    text = SUITE.replace("op: rms_norm", "op: rms_norm_quant").replace("flashinfer]", "liger]")
    skips = {c.provider: c.skip for c in expand(parse_suite(text, "t.yaml"), H100)}
    assert skips["liger"] == "liger has no rms_norm_quant"


def test_invalid_point_is_skipped_with_the_op_reason() -> None:
    text = """\
name: t
stages:
  - kind: kernel
    op: rms_norm_group_quant
    providers: [torch_naive]
    sweep: {num_tokens: 1, hidden_size: [256, 200], group_size: 128}
"""
    cases = expand(parse_suite(text, "t.yaml"), CPU)
    assert [c.skip for c in cases] == [None, "hidden_size 200 is not a multiple of group_size 128: per-group scales need whole groups"]


def test_include_and_exclude_rules() -> None:
    text = SUITE + "    exclude: [{provider: flashinfer}, {num_tokens: 16, residual: true}]\n" \
                   "    include: [{hidden_size: 64}]\n"
    cases = expand(parse_suite(text, "t.yaml"), H100)
    assert {c.provider for c in cases} == {"torch_naive", "triton"}
    assert all(c.param_dict["hidden_size"] == 64 for c in cases)
    assert not any(c.param_dict["num_tokens"] == 16 and c.param_dict["residual"] for c in cases)
    assert len(cases) == 3 * 2


def test_repeats_interleave_providers_within_a_point() -> None:
    cases = expand(parse_suite(SUITE, "t.yaml"), H100, repeats=2)
    assert [(c.provider, c.repeat) for c in cases[:6]] == [
        ("torch_naive", 0), ("triton", 0), ("flashinfer", 0), ("torch_naive", 1), ("triton", 1), ("flashinfer", 1)]
    assert cases[0].fingerprint == cases[3].fingerprint and cases[0].case_id != cases[3].case_id


def test_fingerprint_is_readable_and_stable() -> None:
    c = expand(parse_suite(SUITE, "t.yaml"), H100)[1]
    assert c.fingerprint == "rms_norm/rms_norm/triton/-/num_tokens=1,hidden_size=64,dtype=bfloat16,eps=1e-06,residual=False"
    assert c.case_id.endswith("#0")


def test_filters() -> None:
    cases = expand(parse_suite(SUITE, "t.yaml"), H100)
    assert {c.provider for c in apply_filters(cases, ["provider=triton"])} == {"triton"}
    assert len(apply_filters(cases, ["num_tokens=16", "provider=tri*,torch_naive"])) == 2 * 2 * 2
    assert len(apply_filters(cases, ["hidden_size=128"])) == len(cases) // 2
    assert all("residual=True" in c.case_id for c in apply_filters(cases, ["residual=True"]))
    assert apply_filters(cases, ["nomatch=1"]) == []


def test_unfused_composition_names_and_skips() -> None:
    text = """\
name: t
stages:
  - kind: kernel
    op: rms_norm_quant
    providers: [{unfused: {norm: vllm, quant: torch_compile}}]
    sweep: {num_tokens: 1, hidden_size: 256}
"""
    case = expand(parse_suite(text, "t.yaml"), CPU)[0]
    assert case.provider == "unfused[norm=vllm,quant=torch_compile]"
    assert case.skip == "unfused[norm=vllm,quant=torch_compile]: vllm needs CUDA"


def test_e2e_variants_interleave_and_skip_before_any_server() -> None:
    text = """\
name: e
server: {model: m, requires: {cuda: true, min_sm: 100}}
variants: {a: {}, b: {compilation_config: {custom_ops: ["+rms_norm"]}}}
baseline: a
stages:
  - kind: latency
    input_len: [512, 2048]
    repeats: 2
"""
    suite = parse_suite(text, "e.yaml")
    cases = expand(suite, H100)
    assert [(c.variant, c.param_dict["input_len"]) for c in cases] == [
        ("a", 512), ("a", 2048), ("b", 512), ("b", 2048), ("b", 512), ("b", 2048), ("a", 512), ("a", 2048)]
    assert cases[0].skip == "m needs SM100+ (this GPU is SM90)"
    assert expand(suite, CPU)[0].skip == "m needs a CUDA GPU"


def test_list_and_validate_paths_import_no_torch() -> None:
    import subprocess

    code = (
        "import sys; from normbench.expand import expand, Capabilities; from normbench.suite import parse_suite;"
        f"expand(parse_suite({SUITE!r}, 't.yaml'), Capabilities('cpu', None, None, {{}}));"
        "import normbench.cli.run, normbench.report.run_table, normbench.store;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hardware_reasons_come_before_install_hints() -> None:
    text = """\
name: t
stages:
  - kind: kernel
    op: rms_norm_nvfp4_quant
    providers: [flashinfer, triton]
    sweep: {num_tokens: 1, hidden_size: 256}
"""
    skips = {c.provider: c.skip for c in expand(parse_suite(text, "t.yaml"), H100)}
    assert skips == {"flashinfer": "needs SM100+ (this GPU is SM90)", "triton": None}
    assert {c.provider: c.skip for c in expand(parse_suite(text, "t.yaml"), CPU)}["flashinfer"] == "needs CUDA"


def test_op_tolerance_defaults_sit_between_suite_defaults_and_overrides() -> None:
    text = """\
name: t
stages:
  - kind: kernel
    op: rms_norm_nvfp4_quant
    providers: [triton]
    sweep: {num_tokens: 1, hidden_size: 256}
    tolerance: {float32: {mismatch_rate: 0.5}}
"""
    stage = parse_suite(text, "t.yaml").stages[0]
    assert stage.tolerance_for("bfloat16")["mismatch_rate"] == 0.05  # the op's default
    assert stage.tolerance_for("float32")["mismatch_rate"] == 0.5  # the suite's override
    assert stage.tolerance_for("float32")["norm_rel"] == 1e-3


def test_a_served_model_skip_names_the_model_as_the_run_would_resolve_it(monkeypatch) -> None:
    """``${NAME:-default}`` in server.model is expanded in the skip reason (unset: the default)."""
    suite = parse_suite(
        "name: s\nserver: {model: '${NB_TEST_MODEL_DIR:-/tmp/nb-model/x}', requires: {cuda: true}}\n"
        "variants: {a: {}}\nstages: [{kind: startup}]\n", "m.yaml"
    )
    monkeypatch.delenv("NB_TEST_MODEL_DIR", raising=False)
    assert expand(suite, CPU)[0].skip == "/tmp/nb-model/x needs a CUDA GPU"
    monkeypatch.setenv("NB_TEST_MODEL_DIR", "/data/m")
    assert expand(suite, CPU)[0].skip == "/data/m needs a CUDA GPU"
