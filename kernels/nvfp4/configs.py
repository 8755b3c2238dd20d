"""NVFP4 launch configs: the fast kernel's config type, its formula, the tuned table, the tuner's
candidates; and the generic kernel's heuristic (``nvfp4_config``).

``default_config`` picks the fast kernel's config per launch: the tuned table
(``kernels/tuned/nvfp4.json``, written by ``scripts/tune.py nvfp4``: measured on an H200, bf16)
where it has the hidden size and residual flag, else ``formula_config``. A row's bound is the
geometric midpoint between two measured token counts, so a token count takes the config of
the nearest measured one (log scale; ties to the smaller).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from normbench.kernels import _triton, tuned
from normbench.kernels._triton import next_pow2
from normbench.kernels.nvfp4.format import BLOCK_SIZE


@dataclass(frozen=True)
class LaunchConfig(_triton.LaunchConfig):
    """Launch config of the fast (bf16/fp16) kernel (``kernels/_triton.py``: the base).

    Attributes:
        num_warps: warps per program; a row of n elements gives each thread
            n / (32 * num_warps) elements (whole 16-element blocks).
        programs_per_sm: persistent grid of ``programs_per_sm * SMs`` programs
            (capped at the rows, or at the padding rows when there are more).
        prefetch: load the next row while this one is reduced and encoded.
        pdl: programmatic dependent launch (SM90+): the launch overlaps the
            previous kernel's tail; ignored where unsupported.
    """

    POSITIONAL = 4

    num_warps: int = 4
    programs_per_sm: int = 4
    prefetch: bool = True
    pdl: bool = True

    def short(self) -> str:
        return f"w{self.num_warps}.p{self.programs_per_sm}" + (".pf" if self.prefetch else "") + (
            ".pdl" if self.pdl else "")


#: The tuned table's key: (residual, hidden_size).
KEY = (("residual", bool), ("hidden_size", int))
#: (residual, hidden_size) -> ascending (max num_tokens, LaunchConfig) rows, measured at
#: num_tokens 1, 16, 128, 1024, 4096, 16384 (bf16).
TUNED = tuned.load("nvfp4", LaunchConfig, KEY).rows


def nvfp4_config(num_tokens: int, hidden_size: int, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """Heuristic launch config ``(rows_per_program, num_warps)`` of the Triton kernel.

    One program normalizes ``rows_per_program`` whole rows held in registers.
    Many rows (>= 2 waves of 132 SMs): about 32 elements per thread, where the
    kernel needs ~22 SASS instructions per element (bf16) against a budget of
    ~30 at 90% of H100 copy bandwidth, with rows of 2048 paired to keep 4 warps.
    Few rows (latency-bound): about 16 elements per thread, to split each row
    over more warps. The fast kernel's configs are tuned (``default_config``).
    """
    block_n = 1 << max(hidden_size - 1, 1).bit_length()
    if num_tokens >= 264:
        rows = 2 if block_n <= 2048 else 1
        per_thread = 32
    else:
        rows, per_thread = 1, 16
    warps = max(2, min(16, rows * block_n // (32 * per_thread)))
    return rows, warps


def formula_config(num_tokens: int, hidden_size: int) -> LaunchConfig:
    """Unmeasured default: 32 elements per thread from 512 rows up (~12 SASS
    instructions per element; 16 per thread cost ~13.5, 64 ~11 but 165-214
    registers), 16 below (a latency-bound row finishes sooner on more warps).
    Programs per SM so that about 16 warps are resident (registers allow ~4
    programs of 4 warps at ~110 registers with prefetch)."""
    block_n = 16 * max(4, next_pow2(max(hidden_size // BLOCK_SIZE, 1)))
    per_thread = 32 if num_tokens >= 512 else 16
    warps = max(1, min(16, block_n // (32 * per_thread)))
    return LaunchConfig(num_warps=warps, programs_per_sm=max(1, 16 // warps), prefetch=num_tokens >= 512, pdl=True)


def default_config(num_tokens: int, hidden_size: int, residual: bool = False) -> LaunchConfig:
    """The fast kernel's config: the tuned rows of (residual, hidden_size), else ``formula_config``."""
    cfg = tuned.pick(TUNED.get((residual, hidden_size), ()), num_tokens)
    return cfg if cfg is not None else formula_config(num_tokens, hidden_size)


# =========================================================================== tuning (scripts/tune.py)

TUNE_HIDDEN = (2048, 4096, 8192)
TUNE_TOKENS = (1, 16, 128, 1024, 4096, 16384)
#: One-wave shapes: every program normalizes at most one row, so only the warps matter.
FEW_TOKENS = 256
#: GPU correctness before timing: (tokens, hidden, residual, dtype, fast configs; None = the
#: default) of the fast kernel, and (tokens, hidden, residual) of the generic one with ``round_norm``.
CHECK_FAST = [
    (1, 4096, False, "bfloat16", [None]),
    (300, 5120, True, "bfloat16", [None, LaunchConfig(4, 1, True), LaunchConfig(2, 2, False)]),
    (1024, 4096, False, "bfloat16", [None, LaunchConfig(4, 1, True), LaunchConfig(8, 2, False),
                                     LaunchConfig(2, 8, True)]),
    (4096, 8192, True, "bfloat16", [None, LaunchConfig(8, 1, True)]),
    (77, 2048, False, "float16", [None]),
    (257, 1536, True, "float16", [None, LaunchConfig(2, 1, True)]),
]
CHECK_GENERIC = [(1, 4096, False), (300, 5120, True)]


def warp_options(hidden: int) -> list[int]:
    """Warps per program that give 16..64 elements per thread. (At 8 a program has
    more threads than blocks, Triton spreads a block's words over lanes and the row
    costs ~30 instructions per element: see scripts/nvfp4_sass.py.)"""
    block_n = 16 * max(4, 1 << max(hidden // 16 - 1, 0).bit_length())
    return [w for w in (1, 2, 4, 8, 16, 32) if 16 <= block_n // (32 * w) <= 64]


def candidates(hidden: int, tokens: int) -> list[LaunchConfig]:
    """Fast-kernel configs timed at one point, PDL on: warps only at one-wave shapes, else
    warps x programs per SM (8-32 warps per SM) x prefetch."""
    if tokens <= FEW_TOKENS:
        return [LaunchConfig(w, 1, False, True) for w in warp_options(hidden)]
    out = []
    for w in warp_options(hidden):
        for p in (1, 2, 4, 8, 16):
            if 8 <= p * w <= 32:
                out += [LaunchConfig(w, p, False, True), LaunchConfig(w, p, True, True)]
    return out


def _op(residual: bool) -> str:
    return "fused_add_rms_norm_nvfp4_quant" if residual else "rms_norm_nvfp4_quant"


class NVFP4Tuning(tuned.Tuning):
    """Points: ``TUNE_HIDDEN`` x ``TUNE_TOKENS`` x residual, bf16 (>= 4096 tokens first);
    candidates: ``candidates``; final round: the finalists, the default and the formula."""

    family = "nvfp4"
    config_type = LaunchConfig
    key = KEY

    def points(self) -> list[tuned.Point]:
        from normbench.ops import OPS

        shapes = sorted(((r, h, t) for r in (False, True) for h in TUNE_HIDDEN for t in TUNE_TOKENS),
                        key=lambda s: (s[2] < 4096, s[0], -s[2], s[1]))
        return [
            tuned.make_point((r, h), _op(r), OPS[_op(r)].complete({"num_tokens": t, "hidden_size": h,
                                                                  "dtype": "bfloat16"}))
            for r, h, t in shapes
        ]

    def candidates(self, point, facts, quick):
        cands = candidates(point.key[1], point.num_tokens)
        return cands[: max(1, len(cands) // 2)] if quick else cands

    def default(self, point, facts):
        residual, hidden = point.key
        return default_config(point.num_tokens, hidden, residual)

    def baselines(self, point, facts):
        return {"formula": formula_config(point.num_tokens, point.key[1])}

    def judge(self, op, params, out, ref, result):
        if not result.ok:
            return result.message
        if len(out) == 3 and not bool((out[2] == ref[2]).all()):
            return f"residual_out differs from dtype(x + residual) in {int((out[2] != ref[2]).sum())} elements"
        return None

    def preflight(self, facts):
        from normbench.ops import OPS

        cases = []
        for tokens, hidden, residual, dtype, cfgs in CHECK_FAST:
            params = OPS[_op(residual)].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype})
            for cfg in cfgs:
                label = f"fast {tokens}x{hidden} {dtype} residual={residual} {cfg.short() if cfg else 'default'}"
                cases.append((label, _op(residual), params, {"fast": True, **({"launch_config": cfg} if cfg else {})}))
        for tokens, hidden, residual in CHECK_GENERIC:
            params = OPS[_op(residual)].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16"})
            cases.append((f"generic round_norm {tokens}x{hidden} residual={residual}", _op(residual), params,
                          {"round_norm": True}))
        return cases

    def probe(self, device):
        """The fast kernel's encoder (PTX on sm_89+) against its float64 model on every
        threshold, f16 tie, E4M3 midpoint and signed zero: must be identical."""
        from normbench.kernels.nvfp4.triton_launch import encoder_probe_values, fast_encoder_model, fast_encoder_probe

        v = encoder_probe_values().to(device)
        failures = []
        for got, want, name in zip(fast_encoder_probe(v), fast_encoder_model(v), ("E2M1 codes", "E4M3 values",
                                                                                   "E4M3 bits")):
            bad = int((got != want).sum())
            if bad:
                i = int(torch.nonzero(got != want)[0])
                src = v[i] if name == "E2M1 codes" else v[8 * i]
                failures.append(f"encoder probe {name}: {bad} of {got.numel()} wrong, first input {src.item()!r}: "
                                f"{got[i].item()} vs {want[i].item()}")
        return failures


TUNING = NVFP4Tuning()
