"""The RMSNorm Triton kernel (launched by ``triton_launch.rms_norm``): whole rows or chunked rows.

Both kernels accumulate in fp32, round each output once, and read/write rows with unit
column stride (16-byte vectors when the row stride and hidden_size are multiples of 16
elements, which Triton's integer specialization sees). With HINTS, activations are
streamed once (evict_first) and the weight is reused by every row (evict_last); without,
every access takes the default policy (Liger's kernel has no hints). With PDL the kernel
waits for the previous grid before its first load, then lets the next grid start
launching, so its launch latency hides behind this grid's tail (what FlashInfer does by
default on SM90).
"""

from normbench.kernels._triton import gdc_launch_dependents, gdc_wait, tl, triton


@triton.jit
def _ld_hinted(ptrs, mask, HINTS: tl.constexpr, POLICY: tl.constexpr):
    """A masked load (0 where masked) with eviction policy POLICY when HINTS, else the default."""
    if HINTS:
        v = tl.load(ptrs, mask=mask, other=0.0, eviction_policy=POLICY)
    else:
        v = tl.load(ptrs, mask=mask, other=0.0)
    return v


@triton.jit
def _ld_stream(ptrs, mask, HINTS: tl.constexpr):
    """A load of data read once (activations): evict_first with HINTS."""
    return _ld_hinted(ptrs, mask, HINTS, "evict_first")


@triton.jit
def _ld_keep(ptrs, mask, HINTS: tl.constexpr):
    """A load of data read again soon (the weight; a row pass 2 re-reads): evict_last with HINTS."""
    return _ld_hinted(ptrs, mask, HINTS, "evict_last")


@triton.jit
def _rows_tile(
    tile, x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, w,
    n_rows, n_cols, stride_x, stride_res, stride_out, stride_res_out, eps, cols, col_mask,
    ROWS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HINTS: tl.constexpr, RELOAD: tl.constexpr,
):
    """Normalize the [ROWS, BLOCK_N] tile ``tile`` (see ``_rms_norm_kernel``, whole rows)."""
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
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
    n_rows, n_cols,
    stride_x, stride_res, stride_out, stride_res_out,
    eps,
    BLOCK_N: tl.constexpr,
    CHUNKED: tl.constexpr,
    ROWS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    PDL: tl.constexpr,
    PERSISTENT: tl.constexpr,
    HINTS: tl.constexpr,
    RELOAD: tl.constexpr,
    STAGES: tl.constexpr,
):
    """RMSNorm [+ residual add] of ``n_rows`` rows of ``n_cols``; two kernels in one (CHUNKED).

    **Whole rows** (CHUNKED=False): rows held in registers, tiles of [ROWS, BLOCK_N],
    BLOCK_N >= n_cols. Without PERSISTENT a program normalizes tile ``pid`` (one program per
    tile, Liger's shape of kernel). With PERSISTENT a program walks tiles pid, pid + nprog, ...
    (a grid smaller than the tile count) and loads the weight once; STAGES > 1
    software-pipelines that loop (``tl.range(num_stages=...)``: the next tiles' loads are
    issued, through shared memory, while this tile reduces and stores). With RELOAD the tile
    is read twice (pass 1 reduces, pass 2 re-reads it from L1/L2 and scales), which holds fewer
    registers per row, so more rows are in flight per SM.

    **Chunked** (CHUNKED=True; ROWS=1, RELOAD=False, STAGES=1): rows too long for registers:
    pass 1 sums squares over BLOCK_N chunks, pass 2 scales. Pass 2 re-reads the row the same
    program just touched (x, or the r it stored), which is still in L2, so device memory
    still sees each tensor once. A program normalizes row ``pid``, or with PERSISTENT rows
    pid, pid + nprog, ...
    """
    pid = tl.program_id(0)
    if CHUNKED:
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
    else:
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
