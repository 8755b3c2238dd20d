"""The quantization Triton kernels (launched by ``triton_launch``).

v4 (see docs/kernels/quant-notes.md). A program quantizes a tile of ROWS whole rows held in
registers as a [ROWS, BLOCK_G, GS] tensor (per-token: [ROWS, 1, next_pow2(H)]; per-group:
[ROWS, next_pow2(G), group_size], so a group amax is a reduction along axis 2). All ROWS
rows are loaded at once (more bytes in flight per program than one row after the other).
Grid: one program per tile, or with PERSISTENT a grid of programs_per_sm x SMs walking
tiles pid, pid + nprog, ... (the weight loaded once per program; STAGES > 1 pipelines the
next tile's loads behind this tile's math, ``tl.range(num_stages=...)``). With PDL the
kernel waits for the previous grid before its first load, then lets the next grid launch.

fp32 math; the input is read once (evict_first), the weight kept in L2 (evict_last). The
residual sum is rounded to the dtype, stored in place (vLLM's convention) and normalized
as rounded (the reference's). amax(|y|) = rstd * amax(|x w|) and the codes are
``x w * (rstd / s)``: one reduction phase and one multiply per element.

Code conversion. HW_CVT (compiled default): fp8 through the hardware conversion,
``cvt.rn.satfinite.e4m3x2.f32`` (round to nearest even, saturating at +-448: the clamp
comes for free); bf16/fp16 residual sums through ``cvt.rn``. Without HW_CVT (the
interpreter, whose fp32 -> fp8 conversion is not round-to-nearest: -31.37 -> -16 with
Triton 3.9, and whose fp32 -> bf16 truncates): codes are rounded to nearest-even *in fp32 arithmetic* first, so the
conversion is exact: for e4m3 by adding and subtracting 1.5 * 2**20 times the value's
power-of-two binade (floored at 2**-6, the subnormal quantum 2**-9), which makes the ulp
of the sum equal to the e4m3 quantum of that binade. int8 is the same on both paths:
``v + 1.5 * 2**23`` holds round-to-nearest-even(v) in its low mantissa bits (|v| < 2**22),
so its low byte *is* the two's-complement code (a bitcast and a truncation, no float ->
int conversion); the clamp to [-128, 127] is needed only where |v| may exceed 127.5
(scale_ub, static or per-tensor scales): a dynamic scale bounds |v| by 127 (1 + a few ulp).

"""

from normbench.kernels._triton import gdc_launch_dependents, gdc_wait, tl, triton


@triton.jit
def _rne_bf16_grid(v):
    """fp32 ``v`` rounded to the nearest bfloat16 value (ties to even), still fp32.

    Same trick as the codes: 1.5 * 2**16 times the binade (floored at the smallest normal,
    where bf16 subnormals share fp32's exponent) has an ulp equal to bf16's quantum. Used
    without HW_CVT because the Triton interpreter truncates fp32 -> bf16 (the GPU rounds to
    nearest even, so there the conversion after this is exact either way).
    """
    binade = (v.to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
    magic = tl.maximum(binade, 1.1754943508222875e-38) * 98304.0
    return (v + magic) - magic


@triton.jit
def _sum_and_max(a0, a1, b0, b1):
    return a0 + b0, tl.maximum(a1, b1)


@triton.jit
def _quant_tile(
    tile, x_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, w, k_fixed,
    n_rows, n_cols, n_groups,
    stride_x, stride_res, stride_q, stride_s_row, stride_s_grp,
    eps, qmax, qmin, min_scale,
    BLOCK_G: tl.constexpr, GS: tl.constexpr,
    NORM: tl.constexpr, HAS_RES: tl.constexpr, HAS_UB: tl.constexpr, SCALE_MODE: tl.constexpr,
    IS_FP8: tl.constexpr, ROWS: tl.constexpr, RES_BF16: tl.constexpr, TUPLE_REDUCE: tl.constexpr,
    Q_VEC: tl.constexpr, HW_CVT: tl.constexpr,
):
    """Quantize rows [tile * ROWS, tile * ROWS + ROWS) (see ``_rowquant_kernel``)."""
    g_idx = tl.arange(0, BLOCK_G)
    cols = (g_idx[:, None] * GS + tl.arange(0, GS)[None, :])[None, :, :]  # [1, BG, GS]
    rows = tile * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    # The row mask is constant along the columns, so the mask keeps the column mask's
    # 16-element constancy (16-byte vector loads and stores).
    m = (cols < n_cols) & row_ok[:, None, None]
    rows64 = rows.to(tl.int64)  # num_tokens * hidden_size may pass 2**31
    x = tl.load(x_ptr + rows64[:, None, None] * stride_x + cols, mask=m, other=0.0,
                eviction_policy="evict_first").to(tl.float32)
    if HAS_RES:
        rp = res_ptr + rows64[:, None, None] * stride_res + cols
        x = x + tl.load(rp, mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
        if RES_BF16 and not HW_CVT:
            x = _rne_bf16_grid(x)
        rsum = x.to(res_ptr.dtype.element_ty)
        tl.store(rp, rsum, mask=m)
        x = rsum.to(tl.float32)
    if NORM:
        # amax(|y|) = rstd * amax(|x * w|) (rstd > 0): the sum of squares and the amax come
        # out of one reduction phase instead of two dependent ones.
        # A given scale (SCALE_MODE 1, rms_norm_static_quant) needs the sum of squares only.
        xw = x * w
        if SCALE_MODE != 0:
            ss = tl.sum(tl.sum(x * x, axis=2), axis=1)
        elif TUPLE_REDUCE:  # one two-operand reduction (one cross-warp exchange)
            ss, amax = tl.reduce((x * x, tl.abs(xw)), 2, _sum_and_max)
            ss = tl.sum(ss, axis=1)
        else:
            amax = tl.max(tl.abs(xw), axis=2)
            ss = tl.sum(tl.sum(x * x, axis=2), axis=1)
        rstd = tl.rsqrt(ss / n_cols + eps)  # [ROWS]
        if SCALE_MODE == 0:
            amax = amax * rstd[:, None]  # [ROWS, BG]: amax of y = x w rstd
        x = xw
    else:
        rstd = tl.full([ROWS], 1.0, tl.float32)
        if SCALE_MODE == 0:
            amax = tl.max(tl.abs(x), axis=2)
    if SCALE_MODE == 0:
        if HAS_UB:
            amax = tl.minimum(amax, tl.load(ub_ptr))
        s = tl.maximum(amax / qmax, min_scale)  # [ROWS, BG]
        s_mask = (g_idx < n_groups)[None, :] & row_ok[:, None]
        tl.store(s_ptr + rows64[:, None] * stride_s_row + g_idx[None, :] * stride_s_grp, s, mask=s_mask)
        k = rstd[:, None] / s  # codes = x w * rstd / s: one multiply per element
        v = x * k[:, :, None]
    else:
        v = x * (rstd * k_fixed)[:, None, None]
    if IS_FP8:
        if not HW_CVT:
            v = tl.minimum(tl.maximum(v, qmin), qmax)
            binade = (v.to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
            magic = tl.maximum(binade, 0.015625) * 1572864.0
            v = (v + magic) - magic
        codes = v.to(q_ptr.dtype.element_ty)
    else:
        if HAS_UB or SCALE_MODE != 0:
            v = tl.minimum(tl.maximum(v, qmin), qmax)
        codes = (v + 12582912.0).to(tl.int32, bitcast=True).to(q_ptr.dtype.element_ty)
    if Q_VEC > 0:
        # Codes addressed with a Q_VEC-element contiguity (the residual's 16-byte vector):
        # Triton then lays the whole row out Q_VEC elements per thread, as the residual
        # store wants, instead of converting the residual through shared memory.
        q_cols = (cols // Q_VEC) * Q_VEC + cols % Q_VEC
    else:
        q_cols = cols
    tl.store(q_ptr + rows64[:, None, None] * stride_q + q_cols, codes, mask=m)


@triton.jit(do_not_specialize=["n_rows"])
def _rowquant_kernel(
    x_ptr, w_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, sin_ptr,
    n_rows, n_cols, n_groups,
    stride_x, stride_res, stride_q, stride_s_row, stride_s_grp,
    eps, qmax, qmin, min_scale,
    BLOCK_G: tl.constexpr, GS: tl.constexpr,
    NORM: tl.constexpr, HAS_RES: tl.constexpr, HAS_UB: tl.constexpr,
    SCALE_MODE: tl.constexpr,  # 0: dynamic per block, 1: static scale at sin_ptr, 2: from the amax partials at sin_ptr
    IS_FP8: tl.constexpr, ROWS: tl.constexpr, RES_BF16: tl.constexpr, TUPLE_REDUCE: tl.constexpr,
    Q_VEC: tl.constexpr, HW_CVT: tl.constexpr, PERSISTENT: tl.constexpr, STAGES: tl.constexpr,
    PDL: tl.constexpr, N_PART: tl.constexpr = 1,  # SCALE_MODE 2: the partials (n_part of them), a power of two above
    n_part=1,
):
    pid = tl.program_id(0)
    if PDL:
        gdc_wait()  # every global read below may depend on the previous grid
        gdc_launch_dependents()
    g_idx = tl.arange(0, BLOCK_G)
    cols = (g_idx[:, None] * GS + tl.arange(0, GS)[None, :])[None, :, :]
    if NORM:
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0, eviction_policy="evict_last").to(tl.float32)
    else:
        w = 0.0
    k_fixed = 1.0
    if SCALE_MODE == 1:
        k_fixed = 1.0 / tl.load(sin_ptr)
    if SCALE_MODE == 2:
        # the amax pass's per-program maxima (no zeroed buffer, no atomics): one L2-resident reduction per program
        part = tl.arange(0, N_PART)
        amax = tl.max(tl.load(sin_ptr + part, mask=part < n_part, other=0.0), axis=0)
        s_fixed = tl.maximum(amax / qmax, min_scale)
        k_fixed = 1.0 / s_fixed
        tl.store(s_ptr, s_fixed, mask=pid == 0)
    if PERSISTENT:
        for tile in tl.range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0), num_stages=STAGES):
            _quant_tile(
                tile, x_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, w, k_fixed, n_rows, n_cols, n_groups,
                stride_x, stride_res, stride_q, stride_s_row, stride_s_grp, eps, qmax, qmin, min_scale,
                BLOCK_G, GS, NORM, HAS_RES, HAS_UB, SCALE_MODE, IS_FP8, ROWS, RES_BF16, TUPLE_REDUCE, Q_VEC, HW_CVT,
            )
    else:
        _quant_tile(
            pid, x_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, w, k_fixed, n_rows, n_cols, n_groups,
            stride_x, stride_res, stride_q, stride_s_row, stride_s_grp, eps, qmax, qmin, min_scale,
            BLOCK_G, GS, NORM, HAS_RES, HAS_UB, SCALE_MODE, IS_FP8, ROWS, RES_BF16, TUPLE_REDUCE, Q_VEC, HW_CVT,
        )


@triton.jit
def _amax_kernel(x_ptr, part_ptr, n_rows, n_cols, stride_x, BLOCK: tl.constexpr):
    """Pass 1 of dynamic per-tensor quantization: program ``pid`` writes max |x| over its rows
    (``pid``, ``pid + nprog``, ...) to ``part_ptr[pid]`` (fp32 [nprog], no initial value needed);
    the quantize pass reduces the partials."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK)
    cmask = cols < n_cols
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    row_ptr = x_ptr + pid.to(tl.int64) * stride_x
    step = nprog.to(tl.int64) * stride_x
    for _ in range(pid, n_rows, nprog):
        # evict_last: the quantize pass reads the same bytes next (an L2 hit when they fit).
        x = tl.load(row_ptr + cols, mask=cmask, other=0.0, eviction_policy="evict_last")
        acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
        row_ptr += step
    tl.store(part_ptr + pid, tl.max(acc, axis=0))
