"""Make a real-architecture Llama checkpoint here, downloading nothing (``normbench make-model``).

The end-to-end stages need a model that vLLM serves like any Hugging Face
checkpoint, on machines that reach no model hub. This module writes one:

* ``config.json``: ``LlamaForCausalLM`` (written by the installed
  ``transformers.LlamaConfig``, so its field names match the transformers
  that vLLM reads it with), plus ``quantization_config`` for FP8;
* weights as safetensors shards, **one decoder layer per shard** (plus one for
  the embedding and one for the final norm and ``lm_head``), each generated on
  ``device``, quantized, saved and freed before the next, so an 8B-shaped FP8
  checkpoint (~9 GB) never needs twice its size in memory; the HF index
  ``model.safetensors.index.json`` maps every tensor to its shard;
* a byte-level BPE tokenizer trained with ``tokenizers`` on seeded synthetic
  text (no download), saved as a HF fast tokenizer with a minimal chat template;
* ``generation_config.json`` (greedy).

Weights are random and seeded: every Linear and embedding ~ N(0, 0.02^2) (the
``initializer_range`` of Llama), RMSNorm weights 1 + N(0, 0.02^2), never zeros.
Each tensor has its own generator seeded from ``(seed, tensor name)``, so a
tensor does not depend on the order of generation (CPU and CUDA generators
differ: the same seed gives other values on ``--device cuda``).

Quantization (``quant``), the checkpoint shapes vLLM's ``fp8`` method loads
(``vllm/model_executor/layers/quantization/fp8.py``, ``Fp8Config.from_config``
/ ``Fp8LinearMethod.create_weights`` / ``process_weights_after_loading``;
vLLM 0.25.1):

``none``
    bf16 weights.
``fp8-static`` (the AutoFP8 / Llama-3-8B-Instruct-FP8 shape)
    ``quantization_config = {quant_method: fp8, activation_scheme: static,
    ignored_layers: [lm_head]}``. Every Linear of every layer
    (``q/k/v/o_proj``, ``gate/up/down_proj``) stores ``weight`` as
    ``float8_e4m3fn`` [out, in], ``weight_scale`` (fp32 scalar, shape ``[]``:
    ``weight ~= q * weight_scale``, ``weight_scale = amax(|w|) / 448``) and
    ``input_scale`` (fp32 scalar: the static activation scale, see
    ``INPUT_AMAX``). vLLM maps ``q/k/v_proj`` onto ``qkv_proj`` and
    ``gate/up_proj`` onto ``gate_up_proj`` (``LlamaModel.hf_to_vllm_mapper``),
    loads each shard's scalars into a per-shard ``PerTensorScaleParameter``
    (shape [3] / [2]; [1] for ``o_proj`` / ``down_proj``), then requantizes
    the fused weight to the largest shard scale and takes the largest
    ``input_scale`` (``process_fp8_weight_tensor_strategy``). Embedding,
    norms and ``lm_head`` stay bf16. This is the checkpoint whose
    RMSNorm -> static FP8 quant pairs the ``fuse_norm_quant`` pass replaces
    with ``rms_norm_static_fp8_quant`` / ``fused_add_rms_norm_static_fp8_quant``.
``fp8-block`` (the DeepSeek-V3 / Qwen3-FP8 shape)
    ``quantization_config = {quant_method: fp8, activation_scheme: dynamic,
    fmt: e4m3, weight_block_size: [128, 128]}``; every Linear stores
    ``weight`` (``float8_e4m3fn``) and ``weight_scale_inv`` (fp32
    [ceil(out / 128), ceil(in / 128)], one per 128x128 block, ``weight ~= q *
    weight_scale_inv``, despite the name); activations are quantized per token
    and group of 128 at run time (the pass's ``rms_norm_per_block_quant``
    pattern). Every Linear dimension must be a multiple of 128.

Presets (``PRESETS``): ``tiny`` (the CPU end-to-end test model: hidden 256,
4 layers, 4 heads, 2 KV heads, intermediate 512, vocabulary 10240, tied
embeddings) and ``llama3-8b`` (Meta-Llama-3-8B's shapes: hidden 4096, 32 layers,
32 heads, 8 KV heads, intermediate 14336, vocabulary 128256, rope_theta 500000,
rms_norm_eps 1e-5, untied ``lm_head``). Both set ``max_position_embeddings``
16384 (Llama 3 says 8192) so ``--max-model-len`` can cover an 8192-token prompt
plus its output; with random weights and RoPE nothing else depends on it.
The tokenizer is trained to exactly ``vocab_size`` tokens when the synthetic
corpus allows and padded with unused ``<extra_N>`` tokens otherwise; a
smaller ``--vocab-size`` than Llama 3's shrinks only the embedding and
``lm_head`` (say so next to any result). ``vllm bench latency`` draws prompt
ids below 10000, so keep ``vocab_size`` >= 10000 for suites with a latency stage.

Errors: ``NormbenchError`` for shapes that do not fit (heads, KV heads, block
multiples), an unknown preset or quantization, or a non-empty output folder
without ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from normbench.errors import NormbenchError

#: Largest finite float8_e4m3fn value.
FP8_MAX = 448.0
#: Static activation amax of every Linear input (``input_scale = INPUT_AMAX / 448``).
#: Random weights have no calibration data; with this init, Linear inputs are
#: RMSNorm outputs (sigma ~1), attention outputs (sigma <= 0.02 * sqrt(hidden),
#: ~1.3 at 4096) and silu(gate) * up products (heavier tails): 16 covers them
#: to ~6 sigma at hidden <= 8192, and fp8's relative precision does not depend
#: on the scale below saturation.
INPUT_AMAX = 16.0
INIT_STD = 0.02
BLOCK = (128, 128)
QUANT_METHODS = ("none", "fp8-static", "fp8-block")
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class ModelSpec:
    """A Llama's shapes (the ``LlamaConfig`` fields of the same meaning)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_position_embeddings: int = 16384
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``[out_features, in_features]`` of each Linear of a decoder layer."""
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        h, f = self.hidden_size, self.intermediate_size
        return {
            "self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f),
        }

    def check(self, quant: str) -> None:
        """Raise ``NormbenchError`` when the shapes do not make a valid Llama (for ``quant``)."""
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size",
                     "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise NormbenchError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise NormbenchError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise NormbenchError(f"heads {self.num_heads} is not a multiple of kv-heads {self.num_kv_heads}")
        if quant not in QUANT_METHODS:
            raise NormbenchError(f"quant '{quant}': choose one of {', '.join(QUANT_METHODS)}")
        if quant == "fp8-block":
            bad = sorted({f"{n}={d}" for name, shape in self.linear_shapes().items()
                          for n, d in zip(("out", "in"), shape) if d % BLOCK[0]})
            if bad:
                raise NormbenchError(
                    f"fp8-block needs every Linear dimension to be a multiple of {BLOCK[0]} "
                    f"(vLLM's validate_fp8_block_shape); these are not: {', '.join(bad)}")

    def num_parameters(self) -> int:
        per_layer = sum(o * i for o, i in self.linear_shapes().values()) + 2 * self.hidden_size
        emb = self.vocab_size * self.hidden_size
        return self.num_layers * per_layer + emb * (1 if self.tie_word_embeddings else 2) + self.hidden_size


PRESETS: dict[str, ModelSpec] = {
    # The CPU end-to-end model (tests/e2e/tiny_model.py): ~5M parameters.
    "tiny": ModelSpec(hidden_size=256, intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=2,
                      vocab_size=10240, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True),
    # Meta-Llama-3-8B's config.json shapes (max_position_embeddings raised, see the module docstring).
    "llama3-8b": ModelSpec(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8,
                           vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False),
}


def spec_for(preset: str, **overrides: Any) -> ModelSpec:
    """``PRESETS[preset]`` with the non-None ``overrides`` applied.

    Raises:
        NormbenchError: unknown preset or override name.
    """
    if preset not in PRESETS:
        raise NormbenchError(f"preset '{preset}': choose one of {', '.join(PRESETS)}")
    fields = set(asdict(PRESETS[preset]))
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise NormbenchError(f"unknown model field(s): {', '.join(unknown)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


# --------------------------------------------------------------------------- gsm8k
#: gsm8k's format: ``question`` and ``answer`` whose last line is ``#### <number>``.
GSM8K_RECORDS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 6 eggs. How many eggs are in 5 boxes?", "6 * 5 = <<6*5=30>>30\n#### 30"),
    ("Mia reads 12 pages a day. How many pages does she read in 3 days?", "12 * 3 = <<12*3=36>>36\n#### 36"),
    ("There are 20 birds and 8 fly away. How many birds are left?", "20 - 8 = <<20-8=12>>12\n#### 12"),
    ("A pen costs 2 dollars. How much do 9 pens cost?", "2 * 9 = <<2*9=18>>18\n#### 18"),
    ("Sam had 50 cards and gave 15 to Ann. How many cards does Sam have?", "50 - 15 = <<50-15=35>>35\n#### 35"),
    ("A class has 4 rows of 7 desks. How many desks are there?", "4 * 7 = <<4*7=28>>28\n#### 28"),
    ("Lee splits 24 candies among 6 friends. How many does each get?", "24 / 6 = <<24/6=4>>4\n#### 4"),
    ("A train travels 60 miles an hour for 2 hours. How far does it go?", "60 * 2 = <<60*2=120>>120\n#### 120"),
    ("Ben has 11 marbles and finds 9 more. How many marbles does he have?", "11 + 9 = <<11+9=20>>20\n#### 20"),
]


def gsm8k_records(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` gsm8k-format (question, answer) pairs: the 10 of ``GSM8K_RECORDS``, then seeded
    one-step word problems of the same form (a + b, a * b, a - b with a > b)."""
    out = list(GSM8K_RECORDS[:count])
    rng = random.Random(seed)
    names = ["Ana", "Raj", "Li", "Omar", "Eva", "Kofi", "Ines", "Yuki"]
    things = ["shells", "stamps", "books", "coins", "pencils", "stickers"]
    while len(out) < count:
        who, what = rng.choice(names), rng.choice(things)
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        op = rng.choice("+*-")
        if op == "+":
            q, r = f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have?", a + b
        elif op == "*":
            a, b = a % 12 + 2, b % 12 + 2
            q, r = f"{who} fills {a} bags with {b} {what} each. How many {what} is that?", a * b
        else:
            a, b = max(a, b) + 1, min(a, b)
            q, r = f"{who} had {a} {what} and gave away {b}. How many {what} are left?", a - b
        out.append((q, f"{a} {op} {b} = <<{a}{op}{b}={r}>>{r}\n#### {r}"))
    return out


def write_gsm8k(path: Path, count: int = 10) -> Path:
    """Write ``count`` gsm8k-format records as JSONL (``{"question": .., "answer": ..}`` a line)."""
    if count < 1:
        raise NormbenchError(f"gsm8k records: need at least 1, got {count}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for q, a in gsm8k_records(count):
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    return path


# --------------------------------------------------------------------------- tokenizer
def _corpus(vocab_size: int, seed: int = 0) -> list[str]:
    """Seeded text with enough distinct words for a ``vocab_size``-token BPE.

    At ``vocab_size`` <= 20000 this is exactly the corpus of the original tiny
    test model (20000 random words, 60000 corpus words), so its tokenizer is
    unchanged; larger vocabularies get proportionally more words.
    """
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    n_lex = max(20000, vocab_size)
    n_words = max(60000, 3 * vocab_size)
    lexicon = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n_lex)]
    lexicon += [q for q, _ in GSM8K_RECORDS] + [a for _, a in GSM8K_RECORDS]
    lines = []
    for _ in range(n_words // 12):
        lines.append(" ".join(rng.choice(lexicon) for _ in range(12)) + f" {rng.randint(0, 999)}.")
    lines += [f"Question: {q}\nAnswer: {a}" for q, a in GSM8K_RECORDS] * 20
    return lines


def make_tokenizer(out_dir: Path, vocab_size: int, max_positions: int, seed: int = 0):
    """Train a byte-level BPE of exactly ``vocab_size`` tokens and save it as a HF fast tokenizer.

    Special tokens ``<s>`` (bos), ``</s>`` (eos), ``<unk>``; a minimal chat
    template (``role: content`` lines) so chat endpoints work. When the corpus
    yields fewer merges than needed, the rest are unused ``<extra_N>`` tokens.

    Returns:
        the ``PreTrainedTokenizerFast`` (``len(tok) == vocab_size``).

    Raises:
        NormbenchError: ``vocab_size`` below 259 (256 bytes + 3 special tokens).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 259:
        raise NormbenchError(f"vocab_size {vocab_size}: a byte-level BPE needs at least 259 tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(vocab_size, seed), trainer=trainer)
    if tok.get_vocab_size() < vocab_size:  # pad with unused tokens to the exact size
        tok.add_tokens([f"<extra_{i}>" for i in range(vocab_size - tok.get_vocab_size())])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        model_max_length=max_positions,
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fast.save_pretrained(out_dir)
    return fast


# --------------------------------------------------------------------------- quantization
def quantize_fp8_per_tensor(w):
    """``w`` (float tensor [out, in]) -> (``float8_e4m3fn`` codes, fp32 scalar scale).

    ``scale = amax(|w|) / 448``; codes = round-to-nearest-even of ``w / scale``
    clamped to +-448, so ``codes * scale`` approximates ``w`` to fp8's 3-bit
    mantissa (relative error <= 2^-4 above the smallest normal 2^-6 * scale).
    """
    import torch

    w32 = w.float()
    amax = w32.abs().max().clamp(min=torch.finfo(torch.float32).tiny)
    scale = (amax / FP8_MAX).to(torch.float32)
    q = (w32 / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale.reshape(())


def quantize_fp8_block(w, block: tuple[int, int] = BLOCK):
    """``w`` [out, in] -> (``float8_e4m3fn`` codes [out, in], fp32 ``weight_scale_inv``
    [ceil(out / bn), ceil(in / bk)]): one ``amax / 448`` per ``bn x bk`` block,
    ``codes * scale_inv`` (block-broadcast) approximates ``w``.

    Raises:
        NormbenchError: a dimension that is not a multiple of the block.
    """
    import torch

    out_f, in_f = w.shape
    bn, bk = block
    if out_f % bn or in_f % bk:
        raise NormbenchError(f"fp8-block: weight [{out_f}, {in_f}] is not a multiple of the {bn}x{bk} block")
    w32 = w.float().reshape(out_f // bn, bn, in_f // bk, bk)
    amax = w32.abs().amax(dim=(1, 3)).clamp(min=torch.finfo(torch.float32).tiny)
    scale = (amax / FP8_MAX).to(torch.float32)
    q = (w32 / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.reshape(out_f, in_f), scale


def quantization_config(quant: str) -> dict[str, Any] | None:
    """The ``config.json`` ``quantization_config`` for ``quant`` (None for ``none``)."""
    if quant == "fp8-static":
        return {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]}
    if quant == "fp8-block":
        return {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                "weight_block_size": list(BLOCK)}
    return None


# --------------------------------------------------------------------------- weights
def _seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _normal(shape: tuple[int, ...], name: str, seed: int, device: str):
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(_seed(seed, name))
    return torch.randn(shape, generator=g, device=device, dtype=torch.float32) * INIT_STD


def _norm_weight(size: int, name: str, seed: int, device: str):
    import torch

    return (1.0 + _normal((size,), name, seed, device)).to(torch.bfloat16)


def layer_tensors(spec: ModelSpec, index: int, quant: str, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Every tensor of decoder layer ``index`` (HF Llama names), on the CPU, ready to save."""
    import torch

    p = f"model.layers.{index}."
    out: dict[str, Any] = {
        p + "input_layernorm.weight": _norm_weight(spec.hidden_size, p + "input_layernorm.weight", seed, device),
        p + "post_attention_layernorm.weight": _norm_weight(spec.hidden_size, p + "post_attention_layernorm.weight",
                                                            seed, device),
    }
    for lin, shape in spec.linear_shapes().items():
        name = p + lin
        w = _normal(shape, name + ".weight", seed, device)
        if quant == "none":
            out[name + ".weight"] = w.to(torch.bfloat16)
        elif quant == "fp8-static":
            q, s = quantize_fp8_per_tensor(w)
            out[name + ".weight"] = q
            out[name + ".weight_scale"] = s
            out[name + ".input_scale"] = torch.tensor(INPUT_AMAX / FP8_MAX, dtype=torch.float32)
        else:
            q, s = quantize_fp8_block(w)
            out[name + ".weight"] = q
            out[name + ".weight_scale_inv"] = s
        del w
    return {k: v.contiguous().cpu() for k, v in out.items()}


@dataclass
class MadeModel:
    """What ``make_model`` wrote: the folder, its spec, quantization, files and sizes."""

    path: Path
    spec: ModelSpec
    quant: str
    files: list[str]
    total_bytes: int
    num_parameters: int
    tokenizer_vocab: int


#: What ``make_model`` writes (``overwrite`` removes these and nothing else).
_OWN_FILES = re.compile(
    r"^(config\.json|generation_config\.json|model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json"
    r"|tokenizer.*|special_tokens_map\.json|added_tokens\.json|chat_template\.jinja|gsm8k\.jsonl)$")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; with ``overwrite`` remove a previous model's files from it, never anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NormbenchError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise NormbenchError(f"{out_dir}: folder is not empty (use --overwrite to replace a model made here)")
        foreign = sorted(p.name for p in out_dir.iterdir() if not (p.is_file() and _OWN_FILES.match(p.name)))
        if foreign:
            raise NormbenchError(f"{out_dir}: --overwrite replaces only a model made by normbench make-model; "
                                 f"the folder also holds {', '.join(foreign[:5])}")
        for p in out_dir.iterdir():
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def make_model(
    out_dir: Path, spec: ModelSpec, quant: str = "none", device: str = "cpu", seed: int = 0,
    overwrite: bool = False, progress: Callable[[str], None] = lambda s: None,
) -> MadeModel:
    """Write the checkpoint described in the module docstring to ``out_dir``.

    Args:
        out_dir: created; must be empty unless ``overwrite`` (then it is replaced).
        spec: the shapes (``PRESETS`` / ``spec_for``).
        quant: ``none``, ``fp8-static`` or ``fp8-block``.
        device: where tensors are generated and quantized (``cpu``, ``cuda``,
            ``cuda:1``); every shard is moved to the CPU, saved and freed.
        seed: the weights' and the tokenizer corpus' seed.
        progress: called with a short line per shard.

    Raises:
        NormbenchError: see the module docstring.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    spec.check(quant)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NormbenchError(f"--device {device}: no CUDA device here")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)

    progress(f"tokenizer ({spec.vocab_size} tokens)")
    tok = make_tokenizer(out_dir, spec.vocab_size, spec.max_position_embeddings, seed)

    config = LlamaConfig(
        architectures=["LlamaForCausalLM"],
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps,
        rope_theta=spec.rope_theta,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        torch_dtype="bfloat16",
    )
    cfg = config.to_diff_dict()
    cfg["tie_word_embeddings"] = spec.tie_word_embeddings
    qc = quantization_config(quant)
    if qc is not None:
        cfg["quantization_config"] = qc
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    gen = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "do_sample": False}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")

    n_files = spec.num_layers + 2
    files: list[str] = []
    weight_map: dict[str, str] = {}
    total = 0

    def save(tensors: dict[str, Any], what: str) -> None:
        nonlocal total
        name = f"model-{len(files) + 1:05d}-of-{n_files:05d}.safetensors"
        save_file(tensors, str(out_dir / name), metadata={"format": "pt"})
        (out_dir / name).chmod(0o644)
        files.append(name)
        for k, v in tensors.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
        progress(f"{name}: {what}")

    emb = _normal((spec.vocab_size, spec.hidden_size), "model.embed_tokens.weight", seed, device)
    save({"model.embed_tokens.weight": emb.to(torch.bfloat16).cpu()}, "embed_tokens")
    del emb
    for i in range(spec.num_layers):
        save(layer_tensors(spec, i, quant, device, seed), f"layer {i}")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    last = {"model.norm.weight": _norm_weight(spec.hidden_size, "model.norm.weight", seed, device).cpu()}
    if not spec.tie_word_embeddings:
        last["lm_head.weight"] = _normal((spec.vocab_size, spec.hidden_size), "lm_head.weight", seed,
                                         device).to(torch.bfloat16).cpu()
    save(last, "norm" + ("" if spec.tie_word_embeddings else " + lm_head"))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return MadeModel(out_dir, spec, quant, files, total, spec.num_parameters(), len(tok))
