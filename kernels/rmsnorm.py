"""RMSNorm and fused add + RMSNorm: inputs, float64 reference, check, Triton kernels, peer adapters.

Ops (``normbench.ops``):

* ``rms_norm``: ``out = x / sqrt(mean(x**2, -1) + eps) * weight`` -> ``(out,)``; with
  ``params["residual"]`` the residual is added first, as below.
* ``fused_add_rms_norm`` (``residual`` pinned to True): ``r = x + residual``,
  ``out = rms_norm(r) * weight`` -> ``(out, r)``, vLLM's ``fused_add_rms_norm``.

Tensors: ``x``, ``residual``, ``out``, ``r``: [num_tokens, hidden_size]; ``weight``:
[hidden_size]; all in ``params["dtype"]`` (bfloat16, float16 or float32).

Rounding convention of the reference: every fused kernel stores ``r`` in the activation
dtype, and the next layer reads that stored value, so the reference rounds ``x + residual``
to the dtype once and normalizes the *rounded* ``r``. Everything else is float64; ``out`` is
not rounded (a provider's output is compared with the exact value).

Sources: HuggingFace transformers ``LlamaRMSNorm`` (models/llama/modeling_llama.py) for the
eager formula; vLLM ``csrc/layernorm_kernels.cu`` (``rms_norm``, ``fused_add_rms_norm``) for
the fused op's semantics.

Providers in ``IMPLS``: ``reference``, ``torch_naive`` (HF formula, also what
``torch_compile`` compiles), ``torch_rms_norm``, ``triton`` (ours, below), and adapters for
``vllm``, ``flashinfer``, ``liger`` and ``quack`` (imported lazily inside their factories).
"""

import functools
import inspect
import types
from dataclasses import dataclass, replace

import torch

from normbench.kernels.base import (
    CheckResult,
    Inputs,
    OpFn,
    Outputs,
    Params,
    Tolerance,
    TORCH_DTYPES,
    check_close,
    merge_checks,
)
from normbench.kernels.providers._family import Unsupported

try:
    import triton
    import triton.language as tl

    try:  # programmatic dependent launch (SM90+); Triton >= 3.3
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

        _HAVE_GDC = True
    except ImportError:  # pragma: no cover - older Triton: PDL configs are refused
        _HAVE_GDC = False
except ImportError:  # pragma: no cover - triton is a Linux-only dependency (pyproject)
    # The torch providers and the reference must still import; the kernels below are then
    # never launched (the triton provider is unavailable without the package).
    triton = types.SimpleNamespace(jit=lambda fn=None, **kw: fn if fn is not None else (lambda f: f))
    tl = types.SimpleNamespace(constexpr=object)
    _HAVE_GDC = False

NORM_OPS = ("rms_norm", "fused_add_rms_norm")


def has_residual(op: str, params: Params) -> bool:
    """Whether this case adds a residual first (``fused_add_rms_norm`` always does)."""
    return op == "fused_add_rms_norm" or bool(params.get("residual", False))


# =========================================================================== family


class RMSNormFamily:
    """``OpFamily`` of ``rms_norm`` and ``fused_add_rms_norm`` (see the module docstring)."""

    ops = NORM_OPS

    def make_inputs(self, op: str, params: Params, device: torch.device, seed: int) -> Inputs:
        """Fresh inputs drawn from ``seed``: ``x`` and ``residual`` ~ N(0, 1), ``weight`` ~ 1 + 0.1 N(0, 1).

        Drawn in float32 from a ``torch.Generator`` on ``device`` (deterministic per seed
        and device; a CPU and a CUDA draw differ), then rounded to ``params["dtype"]``.
        ``residual`` is present only when the case adds one.
        """
        device = torch.device(device)
        n, h = int(params["num_tokens"]), int(params["hidden_size"])
        dtype = TORCH_DTYPES[params["dtype"]]
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

        inputs = {"x": randn(n, h).to(dtype), "weight": (1.0 + 0.1 * randn(h)).to(dtype)}
        if has_residual(op, params):
            inputs["residual"] = randn(n, h).to(dtype)
        return inputs

    def reference(self, op: str, params: Params, inputs: Inputs) -> Outputs:
        """Float64 ``(out,)`` or ``(out, r)``; ``r`` holds the dtype-rounded ``x + residual``."""
        x = inputs["x"]
        r = x.to(torch.float64)
        if has_residual(op, params):
            # One rounding of the exact sum, as every fused kernel stores r.
            r = (r + inputs["residual"].to(torch.float64)).to(x.dtype).to(torch.float64)
        rstd = torch.rsqrt(r.square().mean(dim=-1, keepdim=True) + float(params["eps"]))
        out = r * rstd * inputs["weight"].to(torch.float64)
        return (out, r) if has_residual(op, params) else (out,)

    def check(
        self, op: str, params: Params, inputs: Inputs, out: Outputs, ref: Outputs, tol: Tolerance
    ) -> CheckResult:
        """``base.check_close`` on ``out`` (and ``residual_out``), merged."""
        names = ("out", "residual_out")[: len(ref)]
        if not isinstance(out, (tuple, list)) or len(out) != len(ref):
            got = len(out) if isinstance(out, (tuple, list)) else type(out).__name__
            return CheckResult(False, {}, f"expected {len(ref)} outputs ({', '.join(names)}), got {got}")
        return merge_checks(*(check_close(n, o, r, tol) for n, o, r in zip(names, out, ref)))


FAMILY = RMSNormFamily()


# =========================================================================== Triton kernels
#
# Both kernels accumulate in fp32, round each output once, and read/write rows with unit
# column stride (16-byte vectors when the row stride and hidden_size are multiples of 16
# elements, which Triton's integer specialization sees). With HINTS, activations are
# streamed once (evict_first) and the weight is reused by every row (evict_last); without,
# every access takes the default policy (Liger's kernel has no hints). With PDL the kernel
# waits for the previous grid before its first load, then lets the next grid start
# launching, so its launch latency hides behind this grid's tail (what FlashInfer does by
# default on SM90).


@triton.jit
def _ld_stream(ptrs, mask, HINTS: tl.constexpr):
    """A load of data read once (activations): evict_first with HINTS."""
    if HINTS:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v


@triton.jit
def _ld_keep(ptrs, mask, HINTS: tl.constexpr):
    """A load of data read again soon (the weight; a row pass 2 re-reads): evict_last with HINTS."""
    if HINTS:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_last")
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v


@triton.jit
def _rows_tile(
    tile, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, w,
    n_rows, n_cols, stride_x, stride_res, stride_out, stride_res_out, eps, cols, col_mask,
    ROWS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HINTS: tl.constexpr, RELOAD: tl.constexpr,
):
    """Normalize the [ROWS, BLOCK_N] tile ``tile`` (see ``_rms_norm_rows_kernel``)."""
    rows = tile * ROWS + tl.arange(0, ROWS)
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    rows = rows.to(tl.int64)[:, None]  # num_tokens * hidden_size may pass 2**31
    x_ptrs = x_ptr + rows * stride_x + cols[None, :]
    res_out_ptrs = res_out_ptr + rows * stride_res_out + cols[None, :]
    if RELOAD and not HAS_RESIDUAL:
        x = _ld_keep(x_ptrs, mask, HINTS).to(tl.float32)  # pass 2 reads it again
    else:
        x = _ld_stream(x_ptrs, mask, HINTS).to(tl.float32)
    if HAS_RESIDUAL:
        res = _ld_stream(res_ptr + rows * stride_res + cols[None, :], mask, HINTS)
        r = (x + res.to(tl.float32)).to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptrs, r, mask=mask)
        x = r.to(tl.float32)  # normalize what was stored, as the reference does
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    if RELOAD:
        # Pass 2 re-reads the row (x from L1/L2, or the r this thread just stored, from L2)
        # and the weight, so no fp32 copy of the row stays live across the reduction.
        if HAS_RESIDUAL:
            x = tl.load(res_out_ptrs, mask=mask, other=0.0).to(tl.float32)
        else:
            x = _ld_stream(x_ptrs, mask, HINTS).to(tl.float32)
        w = _ld_keep(w_ptr + cols, col_mask, HINTS).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    tl.store(out_ptr + rows * stride_out + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["n_rows"])
def _rms_norm_rows_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
    n_rows, n_cols,
    stride_x, stride_res, stride_out, stride_res_out,
    eps,
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    PDL: tl.constexpr,
    PERSISTENT: tl.constexpr,
    HINTS: tl.constexpr,
    RELOAD: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Whole rows in registers: tiles of [ROWS, BLOCK_N], BLOCK_N >= n_cols.

    Without PERSISTENT a program normalizes tile ``pid`` (one program per tile, Liger's
    shape of kernel). With PERSISTENT a program walks tiles pid, pid + nprog, ... (a grid
    smaller than the tile count) and loads the weight once; STAGES > 1 software-pipelines
    that loop (``tl.range(num_stages=...)``: the next tiles' loads are issued, through
    shared memory, while this tile reduces and stores). With RELOAD the tile is read twice
    (pass 1 reduces, pass 2 re-reads it from L1/L2 and scales), which holds fewer registers
    per row, so more rows are in flight per SM.
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    if PERSISTENT:
        if RELOAD:
            w = tl.zeros([BLOCK_N], dtype=tl.float32)  # loaded per tile, after the reduction
        else:
            w = _ld_keep(w_ptr + cols, col_mask, HINTS).to(tl.float32)
        for tile in tl.range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0), num_stages=STAGES):
            _rows_tile(
                tile, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, w,
                n_rows, n_cols, stride_x, stride_res, stride_out, stride_res_out, eps, cols, col_mask,
                ROWS, HAS_RESIDUAL, HINTS, RELOAD,
            )
    else:
        if RELOAD:
            w = tl.zeros([BLOCK_N], dtype=tl.float32)
        else:
            w = _ld_keep(w_ptr + cols, col_mask, HINTS).to(tl.float32)
        _rows_tile(
            pid, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, w,
            n_rows, n_cols, stride_x, stride_res, stride_out, stride_res_out, eps, cols, col_mask,
            ROWS, HAS_RESIDUAL, HINTS, RELOAD,
        )


@triton.jit(do_not_specialize=["n_rows"])
def _rms_norm_chunked_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
    n_rows, n_cols,
    stride_x, stride_res, stride_out, stride_res_out,
    eps,
    BLOCK_N: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    PDL: tl.constexpr,
    PERSISTENT: tl.constexpr,
    HINTS: tl.constexpr,
):
    """Rows too long for registers: pass 1 sums squares over BLOCK_N chunks, pass 2 scales.

    Pass 2 re-reads the row the same program just touched (x, or the r it stored), which
    is still in L2, so device memory still sees each tensor once. A program normalizes row
    ``pid``, or with PERSISTENT rows pid, pid + nprog, ...
    """
    pid = tl.program_id(0)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    if PERSISTENT:
        for row in range(pid, n_rows, tl.num_programs(0)):
            _chunked_row(
                row, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n_cols,
                stride_x, stride_res, stride_out, stride_res_out, eps, BLOCK_N, HAS_RESIDUAL, HINTS,
            )
    else:
        _chunked_row(
            pid, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n_cols,
            stride_x, stride_res, stride_out, stride_res_out, eps, BLOCK_N, HAS_RESIDUAL, HINTS,
        )


@triton.jit
def _chunked_row(
    row, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n_cols,
    stride_x, stride_res, stride_out, stride_res_out, eps,
    BLOCK_N: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HINTS: tl.constexpr,
):
    row64 = tl.cast(row, tl.int64)  # num_tokens * hidden_size may pass 2**31
    x_row = x_ptr + row64 * stride_x
    out_row = out_ptr + row64 * stride_out
    res_row = res_ptr + row64 * stride_res
    res_out_row = res_out_ptr + row64 * stride_res_out
    offs = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + offs
        mask = cols < n_cols
        if HAS_RESIDUAL:
            x = _ld_stream(x_row + cols, mask, HINTS).to(tl.float32)
            res = _ld_stream(res_row + cols, mask, HINTS)
            r = (x + res.to(tl.float32)).to(res_out_ptr.dtype.element_ty)
            tl.store(res_out_row + cols, r, mask=mask)
            x = r.to(tl.float32)
        else:
            x = _ld_keep(x_row + cols, mask, HINTS).to(tl.float32)  # kept in L2 for pass 2
        acc += x * x
    rstd = tl.rsqrt(tl.sum(acc, axis=0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + offs
        mask = cols < n_cols
        if HAS_RESIDUAL:
            x = _ld_stream(res_out_row + cols, mask, HINTS)
        else:
            x = _ld_stream(x_row + cols, mask, HINTS)
        w = _ld_keep(w_ptr + cols, mask, HINTS).to(tl.float32)
        y = x.to(tl.float32) * rstd * w
        tl.store(out_row + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


# =========================================================================== launch configs


@dataclass(frozen=True)
class Config:
    """How the Triton kernel runs one case.

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

    def literal(self) -> str:
        """Python source of this config: the five positional fields, then non-default keywords."""
        head = f"{self.block_n}, {self.num_warps}, {self.rows}, {self.programs_per_sm}, {self.pdl}"
        tail = "".join(
            f", {k}={getattr(self, k)!r}" for k in ("hints", "reload", "stages", "maxnreg")
            if getattr(self, k) != Config.__dataclass_fields__[k].default
        )
        return f"Config({head}{tail})"


#: Bytes of a row segment above which the whole-row kernel would need more than 32 values
#: per thread at 16 warps (register spills): longer rows go to the chunked kernel.
MAX_RESIDENT_BYTES = 32 * 1024
#: Bytes per chunk of the chunked kernel.
CHUNK_BYTES = 8 * 1024

#: Tuned on an H200 by scripts/tune_rmsnorm.py for 16-bit activations at the suites' points,
#: timed as the suites time (``normbench.timing.time_cuda`` over input sets rotated through
#: 2 x L2; docs/results/h200/tune_rmsnorm*.json), keyed by (has_residual, hidden_size):
#: ascending (max num_tokens, Config) rows; the first row whose bound is >= num_tokens wins.
#: A hidden_size that is not in the table borrows the table of the largest tuned hidden_size
#: with the same power-of-2 block; otherwise ``formula_config``.
TUNED: dict[tuple[bool, int], tuple[tuple[int, Config], ...]] = {
    (False, 2880): (
        (1, Config(4096, 8, 1, 0, True, hints=False)),
        (256, Config(4096, 8, 1, 0, True)),
        (4096, Config(4096, 4, 1, 0, True)),
        (16384, Config(4096, 4, 1, 0, True, hints=False)),
        (2147483647, Config(4096, 4, 1, 0, True, reload=True)),
    ),
    (False, 4096): (
        (256, Config(4096, 8, 1, 0, True)),
        (1024, Config(4096, 16, 2, 0, True)),
        (4096, Config(4096, 8, 2, 0, True)),
        (16384, Config(4096, 8, 1, 0, True, reload=True)),
        (2147483647, Config(4096, 16, 2, 0, True, reload=True)),
    ),
    (False, 7168): (
        (1, Config(8192, 16, 1, 0, True)),
        (4, Config(8192, 8, 1, 0, True)),
        (16, Config(8192, 8, 1, 0, True, hints=False)),
        (256, Config(8192, 8, 1, 0, True)),
        (4096, Config(8192, 4, 1, 0, True, hints=False)),
        (16384, Config(8192, 16, 1, 0, True, reload=True)),
        (2147483647, Config(8192, 16, 1, 0, False, reload=True)),
    ),
    (False, 8192): (
        (1, Config(8192, 16, 1, 0, True)),
        (1024, Config(8192, 8, 1, 0, True)),
        (4096, Config(8192, 16, 1, 0, True, hints=False, reload=True)),
        (16384, Config(8192, 16, 1, 0, True, reload=True)),
        (2147483647, Config(8192, 16, 1, 0, False, reload=True)),
    ),
    (True, 2880): (
        (256, Config(4096, 8, 1, 0, True)),
        (1024, Config(4096, 4, 1, 0, True)),
        (4096, Config(4096, 4, 1, 0, True, hints=False)),
        (16384, Config(4096, 16, 1, 0, True, hints=False)),
        (2147483647, Config(4096, 2, 1, 0, True, hints=False)),
    ),
    (True, 4096): (
        (256, Config(4096, 8, 1, 0, True)),
        (1024, Config(4096, 4, 1, 0, True)),
        (32768, Config(4096, 2, 1, 0, True, hints=False)),
        (2147483647, Config(4096, 4, 1, 0, True, hints=False, reload=True)),
    ),
    (True, 7168): (
        (1, Config(8192, 8, 1, 0, True, hints=False)),
        (16, Config(8192, 8, 1, 0, True)),
        (64, Config(8192, 16, 1, 0, True)),
        (256, Config(8192, 4, 1, 0, True, hints=False)),
        (1024, Config(8192, 4, 1, 0, True)),
        (4096, Config(8192, 32, 1, 0, True, hints=False, reload=True)),
        (16384, Config(8192, 32, 1, 0, True, hints=False)),
        (2147483647, Config(8192, 32, 1, 0, True, hints=False, reload=True)),
    ),
    (True, 8192): (
        (1, Config(8192, 8, 1, 0, True, hints=False)),
        (4, Config(8192, 8, 1, 0, True)),
        (128, Config(8192, 8, 1, 0, True, hints=False)),
        (256, Config(8192, 8, 1, 0, True)),
        (1024, Config(8192, 4, 1, 0, True)),
        (16384, Config(8192, 32, 1, 0, True, hints=False)),
        (32768, Config(8192, 16, 2, 0, True, hints=False, reload=True)),
        (2147483647, Config(8192, 32, 1, 0, True, hints=False)),
    ),
    (True, 16384): (
        (1024, Config(16384, 16, 1, 0, True, hints=False)),
        (2147483647, Config(16384, 32, 1, 0, True, hints=False)),
    ),
    (True, 32768): (
        (1024, Config(32768, 16, 1, 0, True, hints=False)),
        (4096, Config(32768, 32, 1, 0, True, hints=False)),
        (2147483647, Config(32768, 32, 1, 0, False, hints=False)),
    ),
}


def _pow2_clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, int(v)))))


def formula_config(n_rows: int, n_cols: int, elem_bytes: int) -> Config:
    """The untuned rule: two 16-byte vectors per thread per row, one program per tile.

    Rows over ``MAX_RESIDENT_BYTES`` take the chunked kernel with 8 KiB chunks; short
    rows (< 1024 elements) pack several rows per tile so a program still moves >= 2 KiB.
    """
    block = triton.next_power_of_2(n_cols)
    if block * elem_bytes > MAX_RESIDENT_BYTES:
        return Config(block_n=CHUNK_BYTES // elem_bytes, num_warps=8)
    rows = _pow2_clamp(1024 // block, 1, 16) if block < 1024 else 1
    num_warps = _pow2_clamp(rows * block * elem_bytes // 1024, 1, 16)
    return Config(block_n=block, num_warps=num_warps, rows=rows)


def _tuned_rows(n_cols: int, residual: bool) -> tuple[tuple[int, Config], ...]:
    rows = TUNED.get((residual, n_cols))
    if rows is None:
        block = triton.next_power_of_2(n_cols)
        same = [h for res, h in TUNED if res == residual and triton.next_power_of_2(h) == block]
        rows = TUNED[(residual, max(same))] if same else ()
    return rows


def default_config(n_rows: int, n_cols: int, elem_bytes: int, residual: bool, pdl: bool) -> Config:
    """The heuristic: the tuned table for 16-bit activations where it covers the shape, else the formula.

    Args:
        n_rows, n_cols: num_tokens, hidden_size.
        elem_bytes: bytes per activation element (2 or 4).
        residual: whether the residual is added (more bytes per row).
        pdl: whether this device supports programmatic dependent launch; the formula uses
            it wherever supported, a tuned row keeps its measured choice.
    """
    if elem_bytes == 2:
        for bound, cfg in _tuned_rows(n_cols, residual):
            if n_rows <= bound:
                return replace(cfg, pdl=cfg.pdl and pdl)
    return replace(formula_config(n_rows, n_cols, elem_bytes), pdl=pdl)


@functools.lru_cache(maxsize=None)
def device_facts(device: torch.device) -> tuple[int, bool]:
    """(SM count, PDL supported) of a device; the interpreter (CPU) counts as 1 SM without PDL."""
    if device.type != "cuda":
        return 1, False
    props = torch.cuda.get_device_properties(device)
    return props.multi_processor_count, _HAVE_GDC and props.major >= 9


@functools.lru_cache(maxsize=4096)
def _plan(n_rows: int, n_cols: int, elem_bytes: int, residual: bool, device: torch.device, config):
    """(kernel, grid, constexpr/launch kwargs) of one shape; cached so a call does no queries."""
    sms, pdl_ok = device_facts(device)
    cfg = config if config is not None else default_config(n_rows, n_cols, elem_bytes, residual, pdl_ok)
    if cfg.block_n & (cfg.block_n - 1) or cfg.rows & (cfg.rows - 1):
        raise ValueError(f"block_n and rows must be powers of 2: {cfg}")
    if cfg.pdl and not pdl_ok:
        raise ValueError(f"{cfg}: programmatic dependent launch needs an SM90+ GPU and Triton >= 3.3")
    chunked = cfg.block_n < n_cols
    if chunked and (cfg.rows != 1 or cfg.reload or cfg.stages > 1):
        raise ValueError(
            f"{cfg}: the chunked kernel (block_n < hidden_size {n_cols}) takes rows=1, reload=False, stages=1"
        )
    if cfg.stages > 1 and not cfg.programs_per_sm:
        raise ValueError(f"{cfg}: stages > 1 pipelines the persistent loop: set programs_per_sm")
    if cfg.stages > 1 and cfg.reload and residual:
        # The pipeliner would issue tile i+1's re-read of r before tile i+1 stores r.
        raise ValueError(f"{cfg}: reload with a residual cannot be pipelined (stages > 1)")
    tiles = triton.cdiv(n_rows, cfg.rows)
    programs = tiles if cfg.programs_per_sm == 0 else min(tiles, cfg.programs_per_sm * sms)
    meta = {
        "BLOCK_N": cfg.block_n, "HAS_RESIDUAL": residual, "PDL": cfg.pdl,
        "PERSISTENT": cfg.programs_per_sm > 0, "HINTS": cfg.hints, "num_warps": cfg.num_warps,
    }
    if cfg.pdl:
        meta["launch_pdl"] = True
    if cfg.maxnreg:
        meta["maxnreg"] = cfg.maxnreg
    if chunked:
        return _rms_norm_chunked_kernel, (programs,), meta
    meta.update(ROWS=cfg.rows, RELOAD=cfg.reload, STAGES=max(1, cfg.stages))
    return _rms_norm_rows_kernel, (programs,), meta


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
    config: Config | None = None,
) -> Outputs:
    """normbench's Triton RMSNorm, optionally fused with the residual add.

    Args:
        x: [num_tokens, hidden_size], bfloat16/float16/float32, unit stride along hidden_size.
        weight: [hidden_size], contiguous (any float dtype; read as fp32).
        eps: added to mean(x**2) before the reciprocal square root.
        residual: optional [num_tokens, hidden_size] in x's dtype, unit column stride.
        out, residual_out: where to write (allocated when None). Passing ``out=x`` and
            ``residual_out=residual`` gives vLLM's in-place behaviour; each row is read in
            full before any of it is written, so aliasing is safe.
        config: a launch ``Config`` (tuning); None takes ``default_config``.

    Returns:
        ``(out,)``, or ``(out, residual_out)`` with ``residual_out = x + residual`` rounded
        to the dtype. ``out = r * rsqrt(mean(r**2) + eps) * weight`` computed in fp32
        (r = x, or the rounded sum) and rounded once.

    Raises:
        ValueError: shapes, dtypes or strides the kernel does not take, or a bad ``config``.
    """
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be 2-D with unit stride along hidden_size, got {tuple(x.shape)} strides {x.stride()}")
    n_rows, n_cols = x.shape
    if weight.shape != (n_cols,) or not weight.is_contiguous():
        raise ValueError(f"weight must be a contiguous [{n_cols}] tensor, got {tuple(weight.shape)}")
    if out is None:
        out = torch.empty_like(x)
    tensors = [out]
    if residual is not None:
        if residual_out is None:
            residual_out = torch.empty_like(x)
        tensors += [residual, residual_out]
    for t in tensors:
        if t.shape != x.shape or t.dtype != x.dtype or t.stride(1) != 1:
            raise ValueError(
                f"outputs and residual must be {tuple(x.shape)} {x.dtype} with unit column stride, "
                f"got {tuple(t.shape)} {t.dtype} strides {t.stride()}"
            )
    if n_rows == 0:
        return (out,) if residual is None else (out, residual_out)
    kernel, grid, meta = _plan(n_rows, n_cols, x.element_size(), residual is not None, x.device, config)
    # Without a residual the residual pointers are never read (HAS_RESIDUAL is constexpr).
    res, res_out = (residual, residual_out) if residual is not None else (x, out)
    kernel[grid](
        x, res, weight, out, res_out,
        n_rows, n_cols,
        x.stride(0), res.stride(0), out.stride(0), res_out.stride(0),
        eps,
        **meta,
    )
    return (out,) if residual is None else (out, residual_out)


def compile_config(n_cols: int, dtype: torch.dtype, residual: bool, config: Config, device: torch.device) -> None:
    """Compile, without launching, the kernel ``config`` selects for rows of ``n_cols``.

    The arguments specialize exactly as ``rms_norm``'s on contiguous [*, n_cols] tensors
    (num_tokens is not specialized), so the compiled kernel lands in Triton's on-disk cache
    under the key a later ``rms_norm`` call looks up: scripts/tune_rmsnorm.py compiles its
    candidates this way in parallel worker processes.

    Raises:
        ValueError: a bad ``config`` (as ``rms_norm``); compiler errors propagate.
    """
    device = torch.device(device)
    x = torch.empty(2, n_cols, dtype=dtype, device=device)
    w = torch.empty(n_cols, dtype=dtype, device=device)
    out = torch.empty_like(x)
    kernel, grid, meta = _plan(2, n_cols, x.element_size(), residual, device, config)
    res, res_out = (torch.empty_like(x), torch.empty_like(x)) if residual else (x, out)
    kernel.warmup(
        x, res, w, out, res_out,
        2, n_cols,
        x.stride(0), res.stride(0), out.stride(0), res_out.stride(0),
        1e-6,
        grid=grid,
        **meta,
    )


# =========================================================================== providers


class _Buffers:
    """Output buffers of one factory, allocated on first use per (name, shape, dtype, device).

    The harness calls a factory's fn on several rotating input sets of one shape; reusing
    an output keeps allocation out of the timed call, as vLLM's benchmark does. A later
    call overwrites the previous call's outputs.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def like(self, name: str, x: torch.Tensor) -> torch.Tensor:
        key = (name, tuple(x.shape), x.dtype, x.device)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = torch.empty_like(x, memory_format=torch.contiguous_format)
        return buf


def _case(params: Params) -> tuple[float, bool]:
    return float(params["eps"]), bool(params.get("residual", False))


def _both_ops(factory) -> dict:
    """The same factory for both ops: ``fused_add_rms_norm``'s params carry residual=True."""

    def fused(params: Params) -> OpFn:
        return factory({**params, "residual": True})

    return {"rms_norm": factory, "fused_add_rms_norm": fused}


def _reference_factory(params: Params) -> OpFn:
    op = "fused_add_rms_norm" if params.get("residual") else "rms_norm"

    def fn(inputs: Inputs) -> Outputs:
        return FAMILY.reference(op, params, inputs)

    return fn


def hf_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HuggingFace ``LlamaRMSNorm.forward``: fp32 statistics, round, then weight in the input dtype."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


def _torch_naive_factory(params: Params) -> OpFn:
    eps, residual = _case(params)

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        if residual:
            r = x + inputs["residual"]
            return hf_rms_norm(r, inputs["weight"], eps), r
        return (hf_rms_norm(x, inputs["weight"], eps),)

    return fn


def _torch_rms_norm_factory(params: Params) -> OpFn:
    eps, residual = _case(params)
    shape = (int(params["hidden_size"]),)

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        if residual:
            r = x + inputs["residual"]
            return torch.nn.functional.rms_norm(r, shape, inputs["weight"], eps), r
        return (torch.nn.functional.rms_norm(x, shape, inputs["weight"], eps),)

    return fn


def _triton_factory(params: Params) -> OpFn:
    """Ours, out of place into per-factory buffers (see ``_Buffers``)."""
    eps, residual = _case(params)
    bufs = _Buffers()

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        if residual:
            return rms_norm(
                x, inputs["weight"], eps, inputs["residual"],
                out=bufs.like("out", x), residual_out=bufs.like("residual_out", x),
            )
        return rms_norm(x, inputs["weight"], eps, out=bufs.like("out", x))

    return fn


def _vllm_factory(params: Params) -> OpFn:
    """vLLM 0.25.1's ``vllm._custom_ops`` wrappers of ``torch.ops._C``:

    * ``rms_norm(out, input, weight, epsilon) -> None`` into a reused ``out`` (as vLLM's
      benchmark allocates it outside the timed call);
    * ``fused_add_rms_norm(input, residual, weight, epsilon) -> None`` in place: ``input``
      becomes the normalized output and ``residual`` the dtype-rounded ``input + residual``.

    Raises:
        Unsupported: this vLLM build has no ``torch.ops._C`` kernel for the op.
    """
    from normbench.kernels.providers.vllm import custom_ops

    eps, residual = _case(params)
    vllm_ops = custom_ops("fused_add_rms_norm" if residual else "rms_norm")
    bufs = _Buffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if residual:
            res = inputs["residual"]
            vllm_ops.fused_add_rms_norm(x, res, w, eps)
            return x, res
        out = bufs.like("out", x)
        vllm_ops.rms_norm(out, x, w, eps)
        return (out,)

    return fn


def _flashinfer_factory(params: Params) -> OpFn:
    """``flashinfer.norm.rmsnorm(x, w, eps, out=...)`` into a reused ``out``;
    ``fused_add_rmsnorm(x, residual, w, eps)`` in place (residual += x, x = norm(residual) * w)."""
    if params["dtype"] == "float32":
        raise Unsupported("flashinfer.norm takes float16 and bfloat16 only")
    import flashinfer.norm

    eps, residual = _case(params)
    bufs = _Buffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if residual:
            res = inputs["residual"]
            flashinfer.norm.fused_add_rmsnorm(x, res, w, eps)
            return x, res
        return (flashinfer.norm.rmsnorm(x, w, eps, out=bufs.like("out", x)),)

    return fn


def _liger_factory(params: Params) -> OpFn:
    """Liger's Triton RMSNorm (``casting_mode="llama"``: HF's rounding), out of place; with a
    residual its fused ``LigerFusedAddRMSNormFunction`` when the release has it, else a torch
    add followed by Liger's norm."""
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    eps, residual = _case(params)
    fused = None
    if residual:
        try:
            from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction as fused
        except ImportError:
            fused = None

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if not residual:
            return (LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama"),)
        if fused is not None:
            out, r = fused.apply(x, inputs["residual"], w, eps, 0.0, "llama")
            return out, r
        r = x + inputs["residual"]
        return LigerRMSNormFunction.apply(r, w, eps, 0.0, "llama"), r

    return fn


def _quack_factory(params: Params) -> OpFn:
    """quack's CuTe-DSL ``rmsnorm_fwd(x, weight, residual=..., eps=...)``, which allocates its
    outputs. quack adds the residual in fp32 and normalizes the unrounded sum (it stores the
    rounded one), a difference within rounding of the reference's convention."""
    from quack.rmsnorm import rmsnorm_fwd

    eps, residual = _case(params)
    # 0.6.x returns (out, residual_out, rstd); later releases take store_residual_out and
    # return (out, rstd, residual_out).
    newer = "store_residual_out" in inspect.signature(rmsnorm_fwd).parameters
    kwargs = {"store_residual_out": True} if newer and residual else {}
    res_index = 2 if newer else 1

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if residual:
            outs = rmsnorm_fwd(x, w, residual=inputs["residual"], eps=eps, **kwargs)
            return outs[0], outs[res_index]
        return (rmsnorm_fwd(x, w, eps=eps)[0],)

    return fn


IMPLS = {
    "reference": _both_ops(_reference_factory),
    "torch_naive": _both_ops(_torch_naive_factory),
    "torch_rms_norm": _both_ops(_torch_rms_norm_factory),
    "triton": _both_ops(_triton_factory),
    "vllm": _both_ops(_vllm_factory),
    "flashinfer": _both_ops(_flashinfer_factory),
    "liger": _both_ops(_liger_factory),
    "quack": _both_ops(_quack_factory),
}
