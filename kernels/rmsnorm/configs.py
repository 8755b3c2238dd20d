"""RMSNorm launch configs: the config type, the formula, the tuned table and the tuner's candidates.

``default_config`` picks a config per launch: the tuned table (``kernels/tuned/rmsnorm.json``,
written by ``scripts/tune.py rmsnorm``: measured on an H200 for 16-bit activations at the
suites' points, timed as the suites time) where it covers the shape, else ``formula_config``.
``TUNING`` tells the tuner which points to measure and which configs to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from normbench.kernels import _triton, tuned
from normbench.kernels._triton import next_pow2


@dataclass(frozen=True)
class LaunchConfig(_triton.LaunchConfig):
    """How the Triton RMSNorm kernel runs one case (``kernels/_triton.py``: the base).

    Attributes:
        block_n: elements of a row a program holds at once (a power of 2). ``>= hidden_size``
            selects the whole-row kernel; smaller selects the two-pass chunked kernel.
        num_warps: warps per program (1..32).
        rows: rows per tile in the whole-row kernel (a power of 2; 1 for chunked).
        programs_per_sm: 0 launches one program per tile; k > 0 launches at most
            k * SM-count programs that loop over the tiles (persistent grid).
        pdl: programmatic dependent launch (SM90+, ``launch_pdl``).
        hints: eviction hints (activations evict_first, weight evict_last); False leaves
            every access at the default policy.
        reload: whole-row kernel only: pass 2 re-reads the row (and the weight) from L1/L2
            instead of holding it in registers across the reduction (more rows per SM).
        stages: persistent whole-row kernel only: > 1 software-pipelines the loop over
            tiles (``tl.range(num_stages=stages)``; loads go through shared memory).
        maxnreg: > 0 caps registers per thread (``.maxnreg``), so that more programs fit
            per SM (at 4 warps: <= 64 registers -> 8 programs); 0 leaves it to ptxas.
    """

    POSITIONAL = 5

    block_n: int
    num_warps: int
    rows: int = 1
    programs_per_sm: int = 0
    pdl: bool = False
    hints: bool = True
    reload: bool = False
    stages: int = 1
    maxnreg: int = 0

    def short(self) -> str:
        grid = f"p{self.programs_per_sm}" if self.programs_per_sm else "g"
        extra = "".join(
            f".{flag}" for flag, on in (("pdl", self.pdl), ("nohint", not self.hints), ("reload", self.reload)) if on
        )
        stages = f".s{self.stages}" if self.stages > 1 else ""
        regs = f".m{self.maxnreg}" if self.maxnreg else ""
        return f"b{self.block_n}.w{self.num_warps}.r{self.rows}.{grid}{stages}{extra}{regs}"


#: Bytes of a row segment above which the whole-row kernel would need more than 32 values
#: per thread at 16 warps (register spills): longer rows go to the chunked kernel.
MAX_RESIDENT_BYTES = 32 * 1024
#: Bytes per chunk of the chunked kernel.
CHUNK_BYTES = 8 * 1024

#: The tuned table's key: (has_residual, hidden_size).
KEY = (("residual", bool), ("hidden_size", int))
#: (residual, hidden_size) -> ascending (max num_tokens, LaunchConfig) rows; the first row whose
#: bound is >= num_tokens wins. A hidden_size that is not in the table borrows the table of the
#: largest tuned hidden_size with the same power-of-2 block; otherwise ``formula_config``.
TUNED = tuned.load("rmsnorm", LaunchConfig, KEY).rows


def _pow2_clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, next_pow2(max(1, int(v)))))


def formula_config(n_rows: int, n_cols: int, elem_bytes: int) -> LaunchConfig:
    """The untuned rule: two 16-byte vectors per thread per row, one program per tile.

    Rows over ``MAX_RESIDENT_BYTES`` take the chunked kernel with 8 KiB chunks; short
    rows (< 1024 elements) pack several rows per tile so a program still moves >= 2 KiB.
    """
    block = next_pow2(n_cols)
    if block * elem_bytes > MAX_RESIDENT_BYTES:
        return LaunchConfig(block_n=CHUNK_BYTES // elem_bytes, num_warps=8)
    rows = _pow2_clamp(1024 // block, 1, 16) if block < 1024 else 1
    num_warps = _pow2_clamp(rows * block * elem_bytes // 1024, 1, 16)
    return LaunchConfig(block_n=block, num_warps=num_warps, rows=rows)


def _tuned_rows(n_cols: int, residual: bool) -> tuned.Rows:
    rows = TUNED.get((residual, n_cols))
    if rows is None:
        block = next_pow2(n_cols)
        same = [h for res, h in TUNED if res == residual and next_pow2(h) == block]
        rows = TUNED[(residual, max(same))] if same else ()
    return rows


def default_config(n_rows: int, n_cols: int, elem_bytes: int, residual: bool, pdl: bool) -> LaunchConfig:
    """The heuristic: the tuned table for 16-bit activations where it covers the shape, else the formula.

    Args:
        n_rows, n_cols: num_tokens, hidden_size.
        elem_bytes: bytes per activation element (2 or 4).
        residual: whether the residual is added (more bytes per row).
        pdl: whether this device supports programmatic dependent launch; the formula uses
            it wherever supported, a tuned row keeps its measured choice.
    """
    if elem_bytes == 2:
        cfg = tuned.pick(_tuned_rows(n_cols, residual), n_rows)
        if cfg is not None:
            return replace(cfg, pdl=cfg.pdl and pdl)
    return replace(formula_config(n_rows, n_cols, elem_bytes), pdl=pdl)


# =========================================================================== tuning (scripts/tune.py)

#: The suites' bf16 points (suites/rmsnorm.yaml, suites/fused_add_rmsnorm.yaml):
#: (residual, hidden_size) -> num_tokens.
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
GRID = {
    **{(False, h): _TOKENS for h in (2880, 4096, 7168, 8192)},
    **{(True, h): _TOKENS for h in (2880, 7168)},
    **{(True, h): tuple(sorted(_TOKENS + (128, 32768))) for h in (4096, 8192)},
    **{(True, h): (1024, 4096, 16384, 32768) for h in (16384, 32768)},
}
#: Whole-row candidates up to this many bytes per row (32768 bf16).
LONG_ROW_BYTES = 64 * 1024


def liger_config(hidden: int) -> LaunchConfig | None:
    """Liger's launch (``calculate_settings``): one row per program, BLOCK = next_pow2, warps by
    BLOCK (4; 8 from 2048; 16 from 8192; 32 from 32768), no PDL, no eviction hints."""
    block = next_pow2(hidden)
    if block * 2 > LONG_ROW_BYTES:
        return None
    nw = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    return LaunchConfig(block, nw, 1, 0, False, hints=False)


def structures(hidden: int, tokens: int, pdl: bool, quick: bool) -> list[LaunchConfig]:
    """Round 1: kernel structures (block, warps, rows per tile, re-read or register-resident
    row, chunked for long rows) at one program per tile, PDL where supported, hints on."""
    block = next_pow2(hidden)
    out: list[LaunchConfig] = []
    if block * 2 <= LONG_ROW_BYTES:
        long_row = block * 2 > 16 * 1024
        rows_opts = (1, 2) if tokens >= 1024 and not long_row else (1,)
        if tokens < 256:
            epls = (8, 16, 32)  # latency-bound: a short reduction matters more than rows per SM
        elif quick:
            epls = (16, 32, 64)
        else:
            epls = (8, 16, 32, 64)
        reloads = (False, True) if tokens >= 256 else (False,)
        for rows in rows_opts:
            for epl in epls:
                nw = rows * block // (32 * epl)  # epl = values of the tile per thread
                # sm_90 ptxas: 2-row tiles at 8 values per thread lose 16-byte vectors and spill.
                if not 1 <= nw <= 32 or (rows > 1 and epl == 8):
                    continue
                for reload in reloads:
                    out.append(LaunchConfig(block, nw, rows, 0, pdl, reload=reload))
    if block * 2 > MAX_RESIDENT_BYTES:  # long rows: the chunked two-pass kernel too
        for chunk in (4096, 8192, 16384):
            if chunk >= hidden:
                continue
            for epl in (8, 16, 32) if not quick else (16, 32):
                nw = chunk // (32 * epl)
                if 1 <= nw <= 32:
                    out.append(LaunchConfig(chunk, nw, 1, 0, pdl))
    return out


def variants(parent: LaunchConfig, hidden: int, tokens: int, residual: bool, pdl: bool, sms: int,
             quick: bool) -> list[LaunchConfig]:
    """Round 1b around a round-1 leader: eviction hints, PDL, register caps, persistent and
    software-pipelined grids (``tl.range(num_stages=2|3)``)."""
    out = [replace(parent, hints=False)]
    if pdl:
        out.append(replace(parent, pdl=False))
    chunked = parent.block_n < hidden
    tiles = math.ceil(tokens / parent.rows)
    # A register cap that lets every tile be resident at once (one wave), where that takes
    # a plausible cap: e.g. 1024 rows of 8192 at 4 warps: 8 programs per SM at <= 64
    # registers (sm_90: 65 with PDL, 64 + 8 bytes of spills capped). Only a re-reading
    # kernel can live with it: a register-resident row needs ~2 registers per value.
    threads = 32 * parent.num_warps
    per_sm = min(math.ceil(tiles / sms), 2048 // threads, 32)
    cap = 65536 // (per_sm * threads) // 8 * 8
    if parent.reload and tokens >= 256 and 40 <= cap <= 128:
        out.append(replace(parent, maxnreg=cap))
    # A persistent whole-row kernel keeps the weight in registers across its loop: at 64 KiB
    # rows (32768) that spills unless the row is re-read.
    spills = not chunked and not parent.reload and parent.block_n * 2 > MAX_RESIDENT_BYTES
    if 256 <= tokens <= 16384 and not spills:
        for pps in (1, 2, 4, 8) if not quick else (2, 4):
            if tiles > pps * sms:  # otherwise the same grid as one program per tile
                out.append(replace(parent, programs_per_sm=pps))
        if not chunked and not (parent.reload and residual):
            for pps, stages in ((1, 3), (2, 2)) if not quick else ((1, 3),):
                if tiles > pps * sms:
                    out.append(replace(parent, programs_per_sm=pps, stages=stages))
    return out


class RMSNormTuning(tuned.Tuning):
    """Round 1: ``structures``; round 1b: ``variants`` of the 3 fastest (1 below 256 tokens, 2
    when quick); final round: the finalists, the current default and Liger's launch."""

    family = "rmsnorm"
    config_type = LaunchConfig
    key = KEY

    def points(self) -> list[tuned.Point]:
        from normbench.ops import OPS

        out = []
        for (residual, hidden), tokens in GRID.items():
            op = "fused_add_rms_norm" if residual else "rms_norm"
            for t in tokens:
                params = OPS[op].complete({"num_tokens": t, "hidden_size": hidden, "dtype": "bfloat16"})
                out.append(tuned.make_point((residual, hidden), op, params))
        return sorted(out, key=lambda p: p.num_tokens < 256)  # bandwidth-bound points first

    def candidates(self, point, facts, quick):
        return structures(point.key[1], point.num_tokens, facts.pdl, quick)

    def refine(self, point, ranked, facts, quick):
        residual, hidden = point.key
        n = 1 if point.num_tokens < 256 else 2 if quick else 3
        return [v for c in ranked[:n] for v in variants(c, hidden, point.num_tokens, residual, facts.pdl, facts.sms,
                                                        quick)]

    def default(self, point, facts):
        residual, hidden = point.key
        return default_config(point.num_tokens, hidden, 2, residual, facts.pdl)

    def baselines(self, point, facts):
        liger = liger_config(point.key[1])
        return {"liger": liger} if liger else {}


TUNING = RMSNormTuning()
