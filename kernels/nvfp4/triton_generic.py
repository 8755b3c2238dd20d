"""The generic NVFP4 Triton kernel (any dtype, ``round_norm``) and the rounding helpers both kernels use.

One pass over whole rows held in registers (package docstring, "Triton kernels"):
``rows_per_program`` rows per program as (even, odd) element pairs ``[rows, H, n/16, 8/H]``;
both roundings in float arithmetic (E4M3 by adding ``2**(e+20)``, E2M1 as
``RNE(min(2v, v+2, v/2+4))`` via a ``2**23`` magic add); ``round_norm=True`` applies the
reference's rule and is bit-exact with it.
"""

from normbench.kernels._triton import tl, triton


@triton.jit
def _round_to_grid(a, MBITS: tl.constexpr, EMIN: tl.constexpr):
    """RNE of non-negative float32 ``a`` to a float format with MBITS mantissa
    bits and minimum normal exponent EMIN (subnormals included), as float32.
    Exact when the quantum exponent stays in [-126, 127] (fp16 here)."""
    e = ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    qe = tl.maximum(e, EMIN) - MBITS
    inv_q = ((127 - qe) << 23).to(tl.float32, bitcast=True)
    q = ((127 + qe) << 23).to(tl.float32, bitcast=True)
    t = a * inv_q  # exact: scaling by a power of two
    f = tl.floor(t)
    d = t - f
    odd = (f.to(tl.int32) & 1) == 1
    up = (d > 0.5) | ((d == 0.5) & odd)
    return (f + up.to(tl.float32)) * q


@triton.jit
def _round_to_dtype(y, DTYPE: tl.constexpr, EXACT: tl.constexpr):
    """Round float32 ``y`` to DTYPE (RNE), returned as float32.

    bfloat16: integer RNE on the bits (exact everywhere, also in the
    interpreter, whose bf16 conversion truncates). float16: the conversion
    instruction (cvt.rn), or with EXACT arithmetic (for the interpreter,
    whose fp16 conversion rounds ties up)."""
    if DTYPE == tl.float32:
        return y
    elif DTYPE == tl.bfloat16:
        b = y.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        return b.to(tl.float32, bitcast=True)
    elif EXACT:
        r = _round_to_grid(tl.abs(y), 10, -14)
        return tl.where(y < 0, -r, r)
    else:
        return y.to(DTYPE).to(tl.float32)


@triton.jit
def _pair_index(h, k, p, H: tl.constexpr, P: tl.constexpr):
    """Pair index (= code byte index) 8k + hP + p of pair (h, k, p), [1, H, K, P]."""
    return k[None, None, :, None] * 8 + h[None, :, None, None] * P + p[None, None, None, :]


@triton.jit
def _load_pairs(ptr, rows64, stride, h, k, p, mask, H: tl.constexpr, P: tl.constexpr,
                IS_BF16: tl.constexpr, POLICY: tl.constexpr, STRIDED: tl.constexpr = False):
    """(even, odd) float32 elements of pairs [ROWS, H, BLOCK_K, P]: pair
    (r, h, k, p) holds elements 16k + 2(hP + p) and the next one of row r.

    Each thread reads 16 contiguous bytes per (h, k); all H chunks of a block
    (hence the whole block) stay in one thread. bf16 is read as uint32 words:
    the even element is the low half, one shift or mask converts it. ``STRIDED`` (fp16 / fp32):
    two loads, of the even and of the odd elements, instead of one load split in two (the
    float32 default: the split load compiled wrong on the H100, see ``rms_norm_nvfp4_quant_triton``)."""
    pair = _pair_index(h, k, p, H, P)
    if STRIDED and not IS_BF16:
        even = rows64[:, None, None, None] * stride + 2 * pair
        lo = tl.load(ptr + even, mask=mask, other=0.0, eviction_policy=POLICY).to(tl.float32)
        hi = tl.load(ptr + even + 1, mask=mask, other=0.0, eviction_policy=POLICY).to(tl.float32)
        return lo, hi
    if IS_BF16:
        words = tl.load(
            ptr.to(tl.pointer_type(tl.uint32)) + rows64[:, None, None, None] * (stride // 2) + pair,
            mask=mask, other=0, eviction_policy=POLICY,
        )
        return (words << 16).to(tl.float32, bitcast=True), (words & 0xFFFF0000).to(tl.float32, bitcast=True)
    else:
        e = tl.arange(0, 2 * P)
        offs = rows64[:, None, None, None] * stride + (
            k[None, None, :, None] * 16 + h[None, :, None, None] * (2 * P) + e[None, None, None, :]
        )
        m2 = tl.reshape(tl.join(mask, mask), (mask.shape[0], H, mask.shape[2], 2 * P))
        v = tl.load(ptr + offs, mask=m2, other=0.0, eviction_policy=POLICY).to(tl.float32)
        return tl.split(tl.reshape(v, (mask.shape[0], H, mask.shape[2], P, 2)))


@triton.jit
def _store_pairs(ptr, lo, hi, rows64, stride, h, k, p, mask, H: tl.constexpr, P: tl.constexpr,
                 IS_BF16: tl.constexpr):
    """Store float32 pairs (already on the dtype's grid) as the dtype."""
    if IS_BF16:
        words = (lo.to(tl.uint32, bitcast=True) >> 16) | (hi.to(tl.uint32, bitcast=True) & 0xFFFF0000)
        pair = _pair_index(h, k, p, H, P)
        tl.store(ptr.to(tl.pointer_type(tl.uint32)) + rows64[:, None, None, None] * (stride // 2) + pair,
                 words, mask=mask)
    else:
        e = tl.arange(0, 2 * P)
        offs = rows64[:, None, None, None] * stride + (
            k[None, None, :, None] * 16 + h[None, :, None, None] * (2 * P) + e[None, None, None, :]
        )
        m2 = tl.reshape(tl.join(mask, mask), (mask.shape[0], H, mask.shape[2], 2 * P))
        v = tl.reshape(tl.join(lo, hi), (lo.shape[0], H, lo.shape[2], 2 * P))
        tl.store(ptr + offs, v.to(ptr.dtype.element_ty), mask=m2)


@triton.jit
def _e2m1_code(a, sign_src, c2, c1, c05):
    """4-bit E2M1 code (bits 0-3 of an int32, bits 4-7 zero, higher bits junk) of
    ``a * c1`` for a >= 0, sign taken from ``sign_src``'s sign bit.

    Magnitude: RNE(min(2v, v + 2, v/2 + 4)) for v = a * c1, saturated at 6
    (index 7): the piecewise-linear map through the E2M1 grid sends every
    E2M1 value to its index and keeps ties on even indices (= even
    mantissas); adding 2**23 makes the float adder round to an integer,
    which lands in the low mantissa bits. c2 = 2 c1 and c05 = c1 / 2 come in
    precomputed so the products fuse into FMAs. Sign: bit 31 -> bit 3 (set
    for negative values, also when they round to 0, like PTX cvt)."""
    MAGIC: tl.constexpr = 8388608.0  # 2**23: ulp 1
    t = tl.minimum(a * c2 + MAGIC, a * c1 + (MAGIC + 2.0))
    t = tl.minimum(t, a * c05 + (MAGIC + 4.0))
    t = tl.minimum(t, MAGIC + 7.0)
    # Bits 3-7 of t are 0 (2**23 + index); the callers keep only the low byte.
    return t.to(tl.int32, bitcast=True) | ((sign_src.to(tl.int32, bitcast=True) >> 28) & 8)


@triton.jit
def _rms_norm_nvfp4_kernel(
    x_ptr,
    res_ptr,
    res_out_ptr,
    w_ptr,
    gs_ptr,
    q_ptr,
    s_ptr,
    M,
    N,
    x_stride,
    res_stride,
    res_out_stride,
    q_stride,
    num_data_programs,
    pad_row_start,
    M_PAD,
    K_PAD,
    K_TILES,
    eps,
    HAS_RES: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ROWS: tl.constexpr,
    ZROWS: tl.constexpr,
    EXACT: tl.constexpr,
    ROUND_NORM: tl.constexpr,
    STRIDED_PAIRS: tl.constexpr = False,
):
    """One program: ROWS whole rows -> residual add, RMSNorm, block amax,
    E4M3 scales, E2M1 codes, packed bytes and swizzled scale bytes.
    Programs past ``num_data_programs`` only zero the swizzle padding rows.

    Rows are held as (even, odd) element pairs [ROWS, H, BLOCK_K, P]
    (H 16-byte chunks per 16-element block, P pairs per chunk): pair
    (h, k, p) is byte 8k + hP + p of the codes."""
    DT: tl.constexpr = x_ptr.dtype.element_ty
    IS_BF16: tl.constexpr = DT == tl.bfloat16
    H: tl.constexpr = 4 if DT == tl.float32 else 2
    P: tl.constexpr = 8 // H
    pid = tl.program_id(0)
    k = tl.arange(0, BLOCK_K)  # block (scale) index within the row
    if pid < num_data_programs:
        rows = pid * ROWS + tl.arange(0, ROWS)
        h = tl.arange(0, H)
        p = tl.arange(0, P)
        row_ok = rows < M
        k_ok = k < N // 16
        rows64 = rows.to(tl.int64)
        full = (h < H)[None, :, None, None] & (p < P)[None, None, None, :]
        mask = row_ok[:, None, None, None] & k_ok[None, None, :, None] & full
        x_lo, x_hi = _load_pairs(x_ptr, rows64, x_stride, h, k, p, mask, H, P, IS_BF16, "evict_first", STRIDED_PAIRS)
        if HAS_RES:
            r_lo, r_hi = _load_pairs(res_ptr, rows64, res_stride, h, k, p, mask, H, P, IS_BF16, "evict_first",
                                     STRIDED_PAIRS)
            x_lo = _round_to_dtype(x_lo + r_lo, DT, EXACT)
            x_hi = _round_to_dtype(x_hi + r_hi, DT, EXACT)
            _store_pairs(res_out_ptr, x_lo, x_hi, rows64, res_out_stride, h, k, p, mask, H, P, IS_BF16)
        w_lo, w_hi = _load_pairs(w_ptr, tl.zeros((1,), dtype=tl.int64), 0, h, k, p,
                                 k_ok[None, None, :, None] & full, H, P, IS_BF16, "evict_last", STRIDED_PAIRS)
        # in-thread axes (pairs, chunks) first: one cross-thread tree
        ss = tl.sum(tl.sum(tl.sum(x_lo * x_lo + x_hi * x_hi, axis=3), axis=1), axis=1)
        if ROUND_NORM:
            rstd = tl.div_rn(1.0, tl.sqrt_rn(ss / N + eps))  # [ROWS], IEEE like the reference
        else:
            rstd = tl.math.rsqrt(ss / N + eps)
        gs = tl.load(gs_ptr)
        if ROUND_NORM:
            # The reference's rule: y = dtype(x * rstd * w), quantized.
            y_lo = _round_to_dtype(x_lo * rstd[:, None, None, None] * w_lo, DT, EXACT)
            y_hi = _round_to_dtype(x_hi * rstd[:, None, None, None] * w_hi, DT, EXACT)
            amax = tl.max(tl.max(tl.maximum(tl.abs(y_lo), tl.abs(y_hi)), axis=3), axis=1)
        else:
            # Fast path (FlashInfer's order): y = x * w in float32, never rounded;
            # rstd moves into the per-block multiplier.
            y_lo = x_lo * w_lo
            y_hi = x_hi * w_hi
            amax = tl.max(tl.max(tl.maximum(tl.abs(y_lo), tl.abs(y_hi)), axis=3), axis=1) * rstd[:, None]

        # Block scale [ROWS, BLOCK_K]: amax / 6 * gs -> E4M3, RNE, saturating at
        # 448. Adding 2**(e+20) (ulp 2**(e-3): the E4M3 quantum of binade e,
        # clamped at the subnormal quantum 2**-9) rounds in the float adder;
        # the E4M3 bits are (e + 6) * 8 + the rounded mantissa count.
        s_pre = tl.minimum(gs * (amax / 6.0), 448.0)
        ef = tl.maximum(s_pre.to(tl.int32, bitcast=True) >> 23, 121)
        magic_bits = (ef + 20) << 23
        magic = magic_bits.to(tl.float32, bitcast=True)
        s_sum = s_pre + magic
        s = s_sum - magic
        s_bits = ((ef - 121) * 8 + (s_sum.to(tl.int32, bitcast=True) - magic_bits)).to(tl.uint8)
        # vLLM's multiplier 1 / (s * (1 / gs)), 0 where s == 0.
        denom = tl.where(s != 0.0, s * tl.div_rn(1.0, gs), 1.0)
        if ROUND_NORM:
            out_scale = tl.where(s != 0.0, tl.div_rn(1.0, denom), 0.0)[:, None, :, None]
            v_lo = y_lo * out_scale
            v_hi = y_hi * out_scale
            c_lo = _e2m1_code(tl.abs(v_lo), v_lo, 2.0, 1.0, 0.5)
            c_hi = _e2m1_code(tl.abs(v_hi), v_hi, 2.0, 1.0, 0.5)
        else:
            c1 = (tl.where(s != 0.0, 1.0 / denom, 0.0) * rstd[:, None])[:, None, :, None]
            c_lo = _e2m1_code(tl.abs(y_lo), y_lo, c1 * 2.0, c1, c1 * 0.5)
            c_hi = _e2m1_code(tl.abs(y_hi), y_hi, c1 * 2.0, c1, c1 * 0.5)
        packed = (c_lo | (c_hi << 4)).to(tl.uint8)
        tl.store(q_ptr + rows64[:, None, None, None] * q_stride + _pair_index(h, k, p, H, P), packed, mask=mask)

        so = (
            ((rows64 // 128) * K_TILES)[:, None] * 512
            + (k // 4)[None, :] * 512
            + ((rows64 % 32) * 16 + ((rows64 % 128) // 32) * 4)[:, None]
            + (k % 4)[None, :]
        )
        # Rows in [M, M_PAD) of this program and columns in [N/16, K_PAD) carry
        # zero scales (their inputs were masked to 0): the padding is written.
        tl.store(s_ptr + so, s_bits, mask=(rows < M_PAD)[:, None] & (k < K_PAD)[None, :])
    else:
        # (names differ from the other branch: Triton needs one type per name)
        prow = pad_row_start + (pid - num_data_programs) * ZROWS + tl.arange(0, ZROWS)
        prow64 = prow.to(tl.int64)
        pso = (
            ((prow64 // 128) * K_TILES)[:, None] * 512
            + (k // 4)[None, :] * 512
            + ((prow64 % 32) * 16 + ((prow64 % 128) // 32) * 4)[:, None]
            + (k % 4)[None, :]
        )
        zeros = tl.zeros((ZROWS, BLOCK_K), dtype=tl.uint8)
        tl.store(s_ptr + pso, zeros, mask=(prow < M_PAD)[:, None] & (k < K_PAD)[None, :])

# ----------------------------------------------------------------------- fast kernel (bf16/fp16)
