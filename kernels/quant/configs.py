"""Quantization launch configs: the config type, the formula, the tuned table and the tuner's candidates.

``default_config`` picks a config per launch: the tuned table (``kernels/tuned/quant.json``,
written by ``scripts/tune.py quant``: kernel v4 on an H200, fp8 and int8 scored together) where it
covers (kind, residual, next_pow2(hidden_size)) for 2-byte activations, else ``formula_config``.
``TUNING`` tells the tuner which points to measure and which configs to try.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from normbench.kernels import _triton, tuned
from normbench.kernels._triton import next_pow2


@dataclass(frozen=True)
class LaunchConfig(_triton.LaunchConfig):
    """Launch parameters of ``_rowquant_kernel`` (``kernels/_triton.py``: the base).

    Attributes:
        num_warps: warps per program.
        rows_per_program: rows of one tile (a power of two), loaded and reduced together.
        tuple_reduce: per-token norm ops: the sum of squares and the amax in one
            two-operand ``tl.reduce`` (one cross-warp exchange instead of two). None = on
            when compiled, off under the interpreter, which runs custom-combine reductions
            element by element in Python (about 100x slower); the math is the same.
        programs_per_sm: 0 launches one program per tile; k > 0 launches at most
            k x SM-count programs that loop over the tiles (persistent grid, weight loaded once).
        stages: persistent grid only: > 1 software-pipelines the loop over tiles
            (``tl.range(num_stages=stages)``: the next tile's loads are issued early).
        pdl: programmatic dependent launch (SM90+, Triton ``launch_pdl``).
        hw_cvt: codes (and bf16 residual sums) through the hardware conversion, which
            rounds to nearest even and saturates; False rounds in fp32 arithmetic first (v3's
            path, exact on every backend). None = on when compiled, off under the interpreter.
    """

    POSITIONAL = 2

    num_warps: int
    rows_per_program: int = 1
    tuple_reduce: bool | None = None
    programs_per_sm: int = 0
    stages: int = 1
    pdl: bool = False
    hw_cvt: bool | None = None

    def short(self) -> str:
        """Compact name: ``w8.r2[.p4[.s2]][.pdl][.two_red][.sw_cvt]``."""
        s = f"w{self.num_warps}.r{self.rows_per_program}"
        if self.programs_per_sm:
            s += f".p{self.programs_per_sm}" + (f".s{self.stages}" if self.stages > 1 else "")
        if self.pdl:
            s += ".pdl"
        if self.tuple_reduce is False:
            s += ".two_red"
        if self.hw_cvt is False:
            s += ".sw_cvt"
        return s


#: Largest tile (elements, all rows) one program keeps in registers.
MAX_BLOCK = 32768
#: Kernel kinds of the tuned table: per-token norm, per-group norm, standalone quantization
#: (dynamic per-token measured; static, per-tensor and ``group_quant`` borrow it).
KINDS = ("rms_norm_quant", "rms_norm_group_quant", "scaled_quant")

#: The tuned table's key: (kind, residual, next_pow2(hidden_size)).
KEY = (("kind", str), ("residual", bool), ("hidden_bucket", int))
#: Measured launch configs, bfloat16 (2-byte activations), keyed by (kind, residual,
#: next_pow2(hidden_size)): ascending (max num_tokens, LaunchConfig) rows, the first row
#: whose bound is >= num_tokens wins (bounds are geometric midpoints between the measured
#: token counts 1, 16, 128, 1024, 4096, 16384). Shapes not covered fall back to
#: ``formula_config`` (see ``default_config``).
TUNED = tuned.load("quant", LaunchConfig, KEY).rows


def formula_config(num_tokens: int, hidden_size: int, elem_bytes: int, pdl: bool = False) -> LaunchConfig:
    """The untuned rule, fitted to the H200 measurements: 16 elements per thread up to 1024
    tokens (latency: more warps per row); above, 64 bytes of input per thread (32 bf16/fp16,
    16 fp32 elements: fewer instructions per element and more rows per SM), i.e. num_warps =
    next_pow2(H) / (32 x elements per thread), clamped to [2, 32]; one row per program; PDL
    where supported.

    Why bytes, not elements, above 1024 tokens: on the H100 (2026-12-07,
    ``docs/results/h100/probes/``) a float32 4096 x 8192 static ``scaled_quant`` at 32 elements
    per thread (8 warps) replayed at 71.1 us (fp8) and 103.2 us (int8); at 16 (16 warps) at
    60.2 and 59.7 us; per-token quantization was level (60.2 vs 60.7 us)."""
    per_thread = 16 if num_tokens <= 1024 else max(16, 64 // elem_bytes)
    nw = min(32, max(2, next_pow2(hidden_size) // (32 * per_thread)))
    return LaunchConfig(nw, 1, pdl=pdl)


def _tuned_rows(kind: str, residual: bool, bucket: int) -> tuned.Rows:
    rows = TUNED.get((kind, residual, bucket))
    if rows is None and kind == "rms_norm_group_quant":  # same bytes and reductions per row
        rows = TUNED.get(("rms_norm_quant", residual, bucket))
    return rows or ()


def default_config(
    num_tokens: int, hidden_size: int, elem_bytes: int, kind: str = "rms_norm_quant",
    residual: bool = False, pdl: bool = False,
) -> LaunchConfig:
    """The launch config used when none is given: the tuned table for 2-byte activations
    where it covers (kind, residual, next_pow2(hidden_size)), else ``formula_config``.

    Args:
        kind: one of ``KINDS``. residual: whether the residual is added.
        pdl: whether the device supports programmatic dependent launch (a tuned row keeps
            its measured choice where it does; the formula uses it wherever supported).
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    if elem_bytes == 2:
        cfg = tuned.pick(_tuned_rows(kind, residual, next_pow2(hidden_size)), num_tokens)
        if cfg is not None:
            return replace(cfg, pdl=cfg.pdl and pdl)
    return formula_config(num_tokens, hidden_size, elem_bytes, pdl)


# =========================================================================== tuning (scripts/tune.py)

#: Tuned kinds: kind -> (op, extra params); "+res" adds the residual (updated in place).
TUNE_KINDS = {
    "rms_norm_quant": ("rms_norm_quant", {"residual": False}),
    "rms_norm_quant+res": ("rms_norm_quant", {"residual": True}),
    "rms_norm_group_quant": ("rms_norm_group_quant", {"residual": False, "group_size": 128, "scale_layout": "row_major"}),
    "rms_norm_group_quant+res": ("rms_norm_group_quant", {"residual": True, "group_size": 128, "scale_layout": "row_major"}),
    "scaled_quant": ("scaled_quant", {"static_scale": False, "scale_granularity": "per_token"}),
}
TUNE_HIDDEN = (4096, 8192, 1024, 2048)  # the table's buckets, most important first
TUNE_TOKENS = (1, 16, 128, 1024, 4096, 16384)
#: fp8 leads; int8 is timed on fp8's best configs, the default and the formula, and both are
#: scored together (one table row serves both).
TUNE_QUANT = ("fp8", "int8")
PERSISTENT_FROM = 1024  # persistent grids only where there are more tiles than programs
MAX_PER_THREAD = 64  # elements per thread; beyond, the fp32 tile and weight spill registers

#: GPU correctness of what the tuned kinds do not cover (scale_ub, fp16 / fp32 inputs,
#: static and per-tensor scales, column-major group scales, ``group_quant``), checked with the
#: default config and a persistent pipelined one: (op, tokens, hidden, dtype, axes).
PREFLIGHT = [
    ("rms_norm_quant", 33, 5120, "bfloat16", dict(quant_dtype="fp8", scale_ub=True)),
    ("rms_norm_quant", 33, 5120, "bfloat16", dict(quant_dtype="int8", scale_ub=True, residual=True)),
    ("rms_norm_quant", 300, 1536, "float16", dict(quant_dtype="fp8", residual=True)),
    ("rms_norm_quant", 33, 4096, "float32", dict(quant_dtype="int8", residual=True)),
    ("rms_norm_group_quant", 300, 5120, "bfloat16",
     dict(quant_dtype="int8", group_size=64, scale_layout="col_major", residual=True)),
    ("rms_norm_group_quant", 33, 1536, "float16", dict(quant_dtype="fp8", group_size=128, scale_layout="row_major")),
    ("scaled_quant", 33, 5120, "bfloat16", dict(quant_dtype="fp8", static_scale=True)),
    ("scaled_quant", 33, 1536, "float16", dict(quant_dtype="int8", static_scale=True)),
    ("scaled_quant", 300, 5120, "bfloat16", dict(quant_dtype="fp8", scale_granularity="per_tensor")),
    ("scaled_quant", 33, 8192, "float32", dict(quant_dtype="int8", scale_granularity="per_token")),
    ("group_quant", 33, 1536, "bfloat16", dict(quant_dtype="fp8", group_size=64, scale_layout="col_major")),
]


def candidates(kind: str, hidden: int, tokens: int, pdl: bool, quick: bool) -> list[LaunchConfig]:
    """Configs timed at one point: one program per tile with num_warps x rows per tile (rows
    loaded together; multi-row tiles from 128 tokens), PDL where supported; from 1024 tokens
    persistent grids (2 or 4 programs per SM) with and without a pipelined loop; and ablations
    of the formula's configs (PDL off, arithmetic rounding ``hw_cvt=False``, per-token norm:
    two separate reductions)."""
    b = next_pow2(hidden)
    warps = {1024: (1, 2, 4), 2048: (2, 4, 8)}.get(b, (2, 4, 8, 16) if b <= 4096 else (4, 8, 16, 32))
    rows = (1,) if quick else ((1, 2, 4) if b <= 1024 else (1, 2))
    out: list[LaunchConfig] = []

    def add(cfg: LaunchConfig, from_tokens: int = 1) -> None:
        per_thread = cfg.rows_per_program * b / (32 * cfg.num_warps)
        if per_thread > MAX_PER_THREAD or per_thread < 4 or cfg.rows_per_program * b > MAX_BLOCK:
            return
        # multi-row tiles only from 128 tokens (below, fewer programs than SMs anyway)
        if tokens >= (from_tokens if cfg.rows_per_program == 1 else max(from_tokens, 128)) and cfg not in out:
            out.append(cfg)

    for w in warps:
        for r in rows:
            add(LaunchConfig(w, r, pdl=pdl))
    base = formula_config(4096, hidden, 2, pdl)  # 32 elements per thread, one row
    if not quick:
        for r in (1, 2):
            for pps in (2, 4):
                for st in (1, 2):
                    add(replace(base, rows_per_program=r, programs_per_sm=pps, stages=st), PERSISTENT_FROM)
    # ablations of the formula's config (each alone), at every token count
    small = formula_config(1, hidden, 2, pdl)
    for cfg in dict.fromkeys([base, small]):
        add(cfg)
        if pdl:
            add(replace(cfg, pdl=False))
        add(replace(cfg, hw_cvt=False))
        if kind == "rms_norm_quant":
            add(replace(cfg, tuple_reduce=False))
    return out


class QuantTuning(tuned.Tuning):
    """Points: ``TUNE_KINDS`` x ``TUNE_HIDDEN`` x ``TUNE_TOKENS``, bfloat16, fp8 and int8 (scored
    together); candidates: ``candidates``; final round: the finalists, the default and the formula."""

    family = "quant"
    config_type = LaunchConfig
    key = KEY

    def points(self) -> list[tuned.Point]:
        from normbench.ops import OPS

        out = []
        for hidden in TUNE_HIDDEN:
            for label, (op, extra) in TUNE_KINDS.items():
                key = (op, bool(extra.get("residual", False)), next_pow2(hidden))
                for t in TUNE_TOKENS:
                    for qd in TUNE_QUANT:
                        params = OPS[op].complete(
                            {"num_tokens": t, "hidden_size": hidden, "dtype": "bfloat16", "quant_dtype": qd, **extra})
                        out.append(tuned.make_point(key, op, params, variant=qd))
        return out

    def candidates(self, point, facts, quick):
        return candidates(point.key[0], point.param_dict["hidden_size"], point.num_tokens, facts.pdl, quick)

    def default(self, point, facts):
        kind, residual, _ = point.key
        return default_config(point.num_tokens, point.param_dict["hidden_size"], 2, kind, residual, facts.pdl)

    def baselines(self, point, facts):
        return {"formula": formula_config(point.num_tokens, point.param_dict["hidden_size"], 2, facts.pdl)}

    def gate_tokens(self, config, facts):
        if not config.programs_per_sm:
            return 51  # ragged for 2 and 4 rows per tile
        return 2 * config.rows_per_program * config.programs_per_sm * facts.sms + 3

    def judge(self, op, params, out, ref, result):
        if not result.ok:
            return result.message
        # Ours matches the reference to fp32 rounding: tie mismatches only at (near-)exact ties,
        # which the exact bf16 inputs of the standalone quantization hit more often.
        limit = 1e-2 if op in ("scaled_quant", "group_quant") else 2e-3
        if result.metrics.get("mismatch_rate", 0) > limit:
            return (f"mismatch_rate {result.metrics['mismatch_rate']:.4f} > {limit} "
                    "(ours should match the reference to fp32 rounding)")
        if len(out) == 3 and not bool((out[2] == ref[2]).all()):
            return "residual_out differs from the once-rounded sum"
        return None

    def preflight(self, facts):
        from normbench.ops import OPS

        cases = []
        for op, t, h, dt, axes in PREFLIGHT:
            base = {"num_tokens": t, "hidden_size": h, "dtype": dt}
            if op in OPS:
                params = OPS[op].complete({**base, **axes})
            else:  # group_quant: internal, no op metadata
                params = {**base, "eps": 1e-6, "quant_dtype": "fp8", "group_size": 128, "scale_layout": "row_major",
                          **axes}
            for cfg in (None, LaunchConfig(4, 2, programs_per_sm=1, stages=2, pdl=facts.pdl)):
                label = f"{op} T={t} H={h} {dt} {axes} {cfg.short() if cfg else 'default'}"
                cases.append((label, op, params, {"launch_config": cfg} if cfg else {}))
        return cases


TUNING = QuantTuning()
