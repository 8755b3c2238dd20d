"""A tiny Llama-style model, its tokenizer and a gsm8k-format JSONL, made locally.

Nothing is downloaded: the weights are random (seeded), the tokenizer is a
byte-level BPE trained with ``tokenizers`` on seeded synthetic text, and the
gsm8k records are written here. vLLM loads the directory like any HF model.

Sizes (issue 4): ~5M parameters; ``max_position_embeddings`` 16384 (so
``vllm bench latency --input-len 8192 --output-len 1`` fits); vocabulary 10240
(``vllm bench latency`` draws dummy prompt ids below 10000).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

VOCAB_SIZE = 10240
MAX_POSITIONS = 16384

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


def write_gsm8k(path: Path) -> Path:
    """Write the 10 records as JSONL (``{"question": .., "answer": ..}`` a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for q, a in GSM8K_RECORDS:
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    return path


def _corpus(seed: int = 0, words: int = 60000) -> list[str]:
    """Seeded text with enough distinct words for a 10k-token BPE vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(20000)]
    lexicon += [q for q, _ in GSM8K_RECORDS] + [a for _, a in GSM8K_RECORDS]
    lines = []
    for _ in range(words // 12):
        lines.append(" ".join(rng.choice(lexicon) for _ in range(12)) + f" {rng.randint(0, 999)}.")
    lines += [f"Question: {q}\nAnswer: {a}" for q, a in GSM8K_RECORDS] * 20
    return lines


def make_tokenizer(out_dir: Path):
    """Train a byte-level BPE (vocab ``VOCAB_SIZE``) and save it as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if tok.get_vocab_size() < VOCAB_SIZE:  # pad with unused tokens to the exact size
        tok.add_tokens([f"<extra_{i}>" for i in range(VOCAB_SIZE - tok.get_vocab_size())])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_POSITIONS,
    )
    # A minimal chat template, so chat endpoints work too.
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fast.save_pretrained(out_dir)
    return fast


def make_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a ~5M-parameter random-weight Llama and its tokenizer to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    fast = make_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def make_all(out_dir: Path) -> Path:
    """``out_dir/tiny-llama`` (model + tokenizer) and ``out_dir/gsm8k.jsonl``: what suites/e2e_cpu.yaml reads."""
    make_model(out_dir / "tiny-llama")
    write_gsm8k(out_dir / "gsm8k.jsonl")
    return out_dir


if __name__ == "__main__":  # python tests/e2e/tiny_model.py [.normbench/e2e-cpu]
    import sys

    print(make_all(Path(sys.argv[1] if len(sys.argv) > 1 else ".normbench/e2e-cpu")))
