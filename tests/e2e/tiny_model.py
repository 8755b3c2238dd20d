"""The CPU end-to-end model and gsm8k file, made by ``normbench.model_maker`` (what ``normbench make-model`` runs).

Nothing is downloaded: ``make_all(out_dir)`` writes ``out_dir/tiny-llama``, the
``tiny`` preset (~5M-parameter random-weight Llama: hidden 256, 4 layers, 4 heads,
2 KV heads, tied embeddings; ``max_position_embeddings`` 16384 so ``vllm bench
latency --input-len 8192 --output-len 1`` fits; a 10240-token byte-level BPE,
since ``vllm bench latency`` draws dummy prompt ids below 10000), and
``out_dir/gsm8k.jsonl`` (10 gsm8k-format records): the paths
``suites/e2e_cpu.yaml`` reads. The same as::

    normbench make-model --preset tiny --out .normbench/e2e-cpu/tiny-llama \\
        --gsm8k .normbench/e2e-cpu/gsm8k.jsonl --gsm8k-records 10
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from normbench import model_maker  # noqa: E402

GSM8K_RECORDS = model_maker.GSM8K_RECORDS
VOCAB_SIZE = model_maker.PRESETS["tiny"].vocab_size
MAX_POSITIONS = model_maker.PRESETS["tiny"].max_position_embeddings


def make_model(out_dir: Path, seed: int = 0) -> Path:
    """The ``tiny`` preset, unquantized bf16, into ``out_dir`` (replaced if it holds an earlier one)."""
    return model_maker.make_model(Path(out_dir), model_maker.PRESETS["tiny"], quant="none", seed=seed,
                                  overwrite=True).path


def make_all(out_dir: Path) -> Path:
    """``out_dir/tiny-llama`` (model + tokenizer) and ``out_dir/gsm8k.jsonl``: what suites/e2e_cpu.yaml reads."""
    out_dir = Path(out_dir)
    make_model(out_dir / "tiny-llama")
    model_maker.write_gsm8k(out_dir / "gsm8k.jsonl", count=10)
    return out_dir


if __name__ == "__main__":  # python tests/e2e/tiny_model.py [.normbench/e2e-cpu]
    print(make_all(Path(sys.argv[1] if len(sys.argv) > 1 else ".normbench/e2e-cpu")))
