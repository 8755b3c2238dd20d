"""``normbench make-model``: a random-weight Llama checkpoint made here (``normbench.model_maker``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from normbench.cli import app, console, err_console


@app.command("make-model")
def make_model(
    out: Path = typer.Option(..., "--out", help="Folder to write (created; must be empty unless --overwrite)."),
    preset: str = typer.Option("tiny", "--preset", help="Shapes to start from: tiny or llama3-8b."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", help="Override the preset's hidden_size."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Override the number of decoder layers."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Override the attention heads."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", help="Override the KV heads (GQA)."),
    intermediate_size: Optional[int] = typer.Option(None, "--intermediate-size", help="Override the MLP width."),
    vocab_size: Optional[int] = typer.Option(
        None, "--vocab-size", help="Override the vocabulary (tokenizer and embedding)."),
    max_positions: Optional[int] = typer.Option(
        None, "--max-positions", help="Override max_position_embeddings (16384)."),
    quant: str = typer.Option("none", "--quant", help="none, fp8-static (per-tensor FP8, static input scales) or "
                                                     "fp8-block (128x128 block FP8, dynamic activations)."),
    device: str = typer.Option("cpu", "--device", help="Where weights are generated and quantized: cpu, cuda, cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and of the tokenizer's corpus."),
    gsm8k: Optional[Path] = typer.Option(None, "--gsm8k", help="Also write gsm8k-format JSONL records to this file."),
    gsm8k_records: int = typer.Option(50, "--gsm8k-records", min=1, help="How many records --gsm8k writes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model made here before (nothing else)."),
) -> None:
    """Write a real-architecture Llama (config, safetensors shards, tokenizer, generation config) with random
    weights, downloading nothing.

    Weights ~ N(0, 0.02^2), seeded per tensor; one safetensors shard per decoder layer, each made,
    saved and freed in turn. `--quant fp8-static` writes the checkpoint vLLM loads as its `fp8` method
    with static activation scales (float8_e4m3fn weights, per-tensor `weight_scale` and `input_scale`
    for q/k/v/o and gate/up/down): the one whose RMSNorm + FP8 quant pairs vLLM's `fuse_norm_quant`
    pass fuses. Examples:

    * `normbench make-model --preset tiny --out .normbench/e2e-cpu/tiny-llama` (the CPU e2e model)
    * `normbench make-model --preset llama3-8b --layers 4 --quant fp8-static --device cuda
      --out /tmp/nb-model/llama3-8b-fp8`
    """
    from normbench import model_maker as mm

    spec = mm.spec_for(preset, hidden_size=hidden_size, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                       intermediate_size=intermediate_size, vocab_size=vocab_size,
                       max_position_embeddings=max_positions)
    spec.check(quant)
    if spec.vocab_size < 10000:
        err_console().print(f"note: vocab_size {spec.vocab_size} < 10000: `vllm bench latency` draws prompt ids "
                            "below 10000 and fails on this model", soft_wrap=True)
    made = mm.make_model(out, spec, quant=quant, device=device, seed=seed, overwrite=overwrite,
                         progress=lambda s: err_console().print(f"  {s}", highlight=False, soft_wrap=True))
    if gsm8k is not None:
        mm.write_gsm8k(gsm8k, gsm8k_records)
    c = console()
    c.print(f"wrote {made.path}: Llama, {spec.num_layers} layer{'s' if spec.num_layers != 1 else ''}, "
            f"hidden {spec.hidden_size}, "
            f"{spec.num_heads} heads / {spec.num_kv_heads} KV heads, intermediate {spec.intermediate_size}, "
            f"vocab {spec.vocab_size}, {_count(made.num_parameters)} parameters, quant {quant}, "
            f"{made.total_bytes / 2**30:.2f} GiB in {len(made.files)} shards", soft_wrap=True)
    if gsm8k is not None:
        c.print(f"wrote {gsm8k}: {gsm8k_records} gsm8k-format records", soft_wrap=True)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
