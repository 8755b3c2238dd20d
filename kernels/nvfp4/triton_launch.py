"""The NVFP4 launcher (``rms_norm_nvfp4_quant_triton``: picks and launches the fast or the generic
kernel) and the fast encoder's probe against its float64 model."""

from __future__ import annotations

import torch

from normbench.kernels._triton import HAVE_TRITON, cdiv, device_facts, interpreting, next_pow2
from normbench.kernels.base import Outputs
from normbench.kernels.nvfp4.configs import LaunchConfig, default_config, nvfp4_config
from normbench.kernels.nvfp4.format import (
    BLOCK_SIZE, DTYPE_EPS, encode_e2m1, round_e4m3, round_to_format, scale_shape,
)
from normbench.kernels.nvfp4.triton_fast import _fast_probe_kernel, _nvfp4_fast_kernel
from normbench.kernels.nvfp4.triton_generic import _rms_norm_nvfp4_kernel


def uses_fast_kernel(dtype: torch.dtype, round_norm: bool = False, rows_per_program: int | None = None) -> bool:
    """Whether ``rms_norm_nvfp4_quant_triton`` picks the fast kernel by default:
    16-bit inputs, the default (unrounded) norm, no generic-kernel override."""
    return dtype in (torch.bfloat16, torch.float16) and not round_norm and rows_per_program is None


def rms_norm_nvfp4_quant_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    global_scale: torch.Tensor,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    *,
    rows_per_program: int | None = None,
    num_warps: int | None = None,
    round_norm: bool = False,
    exact_rounding: bool | None = None,
    fast: bool | None = None,
    fast_config: LaunchConfig | None = None,
    strided_pairs: bool | None = None,
) -> Outputs:
    """Fused (residual add +) RMSNorm + NVFP4 quantization in one Triton pass.

    Two kernels: the fast one (bf16/fp16, default norm order; ``LaunchConfig``)
    and the generic one (any dtype, ``round_norm``; ``rows_per_program`` x
    ``num_warps``). ``fast=None`` picks the fast one where it applies
    (``uses_fast_kernel``).

    Args:
        x: [m, n] bf16/fp16/fp32, unit stride along n; n % 16 == 0.
        weight: [n], same dtype. global_scale: float32 with one element (multiplies).
        residual: optional [m, n] like x; ``residual_out = dtype(x + residual)``
            is returned as a new tensor (inputs are not modified).
        rows_per_program, num_warps: generic-kernel launch (default ``nvfp4_config``);
            rows_per_program must be a power of two <= 128. ``num_warps`` also
            overrides the fast config's.
        round_norm: round the norm output to the input dtype before quantizing
            (the reference's rule: bit-exact with it; generic kernel). Default False:
            ``(x * w) * rstd`` in float32 with rstd folded into the per-block
            multiplier (FlashInfer's order), one dtype ulp from the reference,
            which ``check`` tolerates at near-ties.
        exact_rounding: generic kernel: round float16 in arithmetic instead of
            the conversion instruction (default: only under ``TRITON_INTERPRET=1``).
        fast: force (True) or refuse (False) the fast kernel.
        strided_pairs: generic kernel, float16 / float32 rows: load even and odd elements with
            two strided loads instead of one load split in two. Default (None): on for float32,
            off otherwise. Why: on the H100 (2026-12-07, Triton 3.6) the split load compiled for
            float32 rows at rows_per_program 1 x num_warps 2 (the default launch below 264
            tokens at small hidden sizes) gave wrong block scales (up to 2x) at 1-33 tokens;
            num_warps 1 or 4, rows_per_program 2 and the strided load were all correct
            (``scripts/probe_nvfp4_fp32.py``, ``docs/results/h100/probes/``).
        fast_config: the fast kernel's launch (default ``default_config``).
    Returns:
        (codes uint8 [m, n/2], scales float8_e4m3fn [round_up(m,128), round_up(n/16,4)]
        swizzled[, residual_out [m, n]]).
    Raises:
        ValueError: on shapes, strides or dtypes it cannot handle.
    """
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed")
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be 2-D with unit stride along hidden_size, got {tuple(x.shape)} {x.stride()}")
    m, n = x.shape
    if n % BLOCK_SIZE:
        raise ValueError(f"hidden_size {n} is not a multiple of {BLOCK_SIZE}")
    if x.dtype not in DTYPE_EPS or weight.dtype != x.dtype or weight.shape != (n,):
        raise ValueError(f"x {x.dtype} / weight {weight.dtype} {tuple(weight.shape)}: need matching bf16/fp16/fp32")
    if global_scale.numel() != 1 or global_scale.dtype != torch.float32:
        raise ValueError("global_scale must be a float32 tensor with one element")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype or residual.stride(-1) != 1):
        raise ValueError("residual must match x in shape, dtype and unit last stride")
    if rows_per_program is not None and (rows_per_program & (rows_per_program - 1) or not 0 < rows_per_program <= 128):
        raise ValueError(f"rows_per_program must be a power of two <= 128, got {rows_per_program}")
    mp, kp = scale_shape(m, n)
    if fast is None:
        # Without the PTX (CUDA GPUs before sm_89) the fast kernel's float32 emulation
        # (~45 instructions per element) is slower than the generic kernel (~22); the
        # interpreter runs it so that the CPU tests cover its logic.
        fast = uses_fast_kernel(x.dtype, round_norm, rows_per_program) and (
            x.device.type != "cuda" or device_facts(x.device).ptx_fp8)
    use_fast = fast
    if use_fast and (x.dtype not in (torch.bfloat16, torch.float16) or round_norm or mp * kp >= 2**31):
        raise ValueError("the fast kernel takes bf16/fp16, round_norm=False and < 2**31 scale bytes")
    if x.dtype == torch.bfloat16 or use_fast:
        # 16-bit rows are read as 4-byte words: copy views that start mid-word.
        x, weight = _word_aligned(x), _word_aligned(weight)
        residual = _word_aligned(residual) if residual is not None else None

    packed = torch.empty((m, n // 2), dtype=torch.uint8, device=x.device)
    if m == 0:
        empty = (packed, torch.empty((0, kp), dtype=torch.float8_e4m3fn, device=x.device))
        return empty + (torch.empty_like(x),) if residual is not None else empty
    scales = torch.empty((mp, kp), dtype=torch.uint8, device=x.device)
    res_out = torch.empty_like(x) if residual is not None else None
    res_arg = residual if residual is not None else x
    res_out_arg = res_out if res_out is not None else x
    block_k = max(4, next_pow2(n // BLOCK_SIZE))
    if use_fast:
        cfg = fast_config or default_config(m, n, residual is not None)
        facts = device_facts(x.device)
        sms, asm, pdl_ok = facts.sms, facts.ptx_fp8, facts.pdl
        programs = max(1, min(max(m, mp - m), cfg.programs_per_sm * sms))
        meta = dict(
            HAS_RES=residual is not None, BLOCK_K=block_k, EVEN_K=block_k * BLOCK_SIZE == n,
            PREFETCH=cfg.prefetch, PDL=cfg.pdl and pdl_ok, ASM=asm, num_warps=num_warps or cfg.num_warps,
        )
        if meta["PDL"]:
            meta["launch_pdl"] = True
        _nvfp4_fast_kernel[(programs,)](
            x, res_arg, res_out_arg, weight, global_scale, packed, scales,
            m, n, x.stride(0), res_arg.stride(0), res_out_arg.stride(0), packed.stride(0), mp, kp, kp // 4,
            float(eps), **meta,
        )
    else:
        d_rows, d_warps = nvfp4_config(m, n, x.dtype)
        rows = rows_per_program or d_rows
        warps = num_warps or d_warps
        exact = interpreting() if exact_rounding is None else exact_rounding
        n_data = cdiv(m, rows)
        pad_start = n_data * rows
        zrows = 32
        n_zero = cdiv(mp - pad_start, zrows)
        _rms_norm_nvfp4_kernel[(n_data + n_zero,)](
            x,
            res_arg,
            res_out_arg,
            weight,
            global_scale,
            packed,
            scales,
            m,
            n,
            x.stride(0),
            res_arg.stride(0),
            res_out_arg.stride(0),
            packed.stride(0),
            n_data,
            pad_start,
            mp,
            kp,
            kp // 4,
            float(eps),
            HAS_RES=residual is not None,
            BLOCK_K=block_k,
            ROWS=rows,
            ZROWS=zrows,
            EXACT=exact,
            ROUND_NORM=round_norm,
            STRIDED_PAIRS=x.dtype == torch.float32 if strided_pairs is None else bool(strided_pairs),
            num_warps=warps,
        )
    out = (packed, scales.view(torch.float8_e4m3fn))
    return out + (res_out,) if res_out is not None else out


def fast_encoder_probe(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the fast kernel's encoder helpers on float32 ``v`` (length a multiple of 8).

    Returns (codes int64 [len(v)], the E4M3 value float32 and bits int64 of
    |v[8i]| [len(v)/8]): PTX on an sm_89+ GPU, the float32 emulation elsewhere.
    Compare with ``fast_encoder_model``.
    """
    v = v.to(torch.float32).contiguous()
    if v.numel() % 8:
        raise ValueError("v must hold a multiple of 8 values")
    n_words = v.numel() // 8
    q = torch.empty(n_words, dtype=torch.int32, device=v.device)
    s = torch.empty(n_words, dtype=torch.float32, device=v.device)
    sb = torch.empty(n_words, dtype=torch.int32, device=v.device)
    block = 128
    asm = device_facts(v.device).ptx_fp8
    _fast_probe_kernel[(cdiv(n_words, block),)](v, q, s, sb, n_words, BLOCK=block, ASM=asm)
    words = q.to(torch.int64) & 0xFFFFFFFF
    codes = torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=1).reshape(-1)
    return codes, s, sb.to(torch.int64) & 0xFF


def fast_encoder_model(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``fast_encoder_probe`` must return, from the float64 definitions: the
    E2M1 code of v rounded to float16 (sign bit kept, also for -0), and
    ``round_e4m3(|v[8i]|)`` with its E4M3 bits."""
    v = v.to(torch.float32)
    r = round_to_format(v.to(torch.float64).abs(), torch.float16)
    codes = encode_e2m1(r) | (torch.signbit(v).to(torch.int64) << 3)
    s = round_e4m3(v[::8].abs().to(torch.float64))
    bits = s.to(torch.float32).to(torch.float8_e4m3fn).view(torch.uint8).to(torch.int64)
    return codes, s.to(torch.float32), bits


def _word_aligned(t: torch.Tensor) -> torch.Tensor:
    ok = t.data_ptr() % 4 == 0 and (t.dim() == 1 or t.stride(0) % 2 == 0)
    return t if ok else t.contiguous() if not t.is_contiguous() else t.clone()


def encoder_probe_values(n_random: int = 90000) -> torch.Tensor:
    """float32 probes for the encoder: E2M1 thresholds and grid points +- a few float32
    ulps, float16 neighbours and exact f16 ties around them, zeros, f16 subnormals,
    values that overflow f16, ``n_random`` random values (2/3 normal x 3, 2/9 up to 500,
    1/9 below 2^-6); E4M3 midpoints; both signs, each value in every slot of an 8-value
    word. The tuner's check uses the default; the interpreter tests a smaller ``n_random``."""
    thr = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0])
    bits = thr.view(torch.int32)
    near = torch.cat([(bits + d).view(torch.float32) for d in range(-4, 5)])
    h = thr.to(torch.float16).view(torch.int16)
    h_nb = torch.cat([(h + d).view(torch.float16).float() for d in (-2, -1, 1, 2)])
    ties = torch.cat([(h_nb.reshape(4, -1)[i] + thr) / 2 for i in range(4)])
    e4 = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    e4_mid = (e4[1:] + e4[:-1]) / 2
    e4b = e4_mid.view(torch.int32)
    e4_near = torch.cat([(e4b + d).view(torch.float32) for d in (-1, 0, 1)])
    special = torch.tensor([0.0, 1e-9, 3e-8, 6e-8, 1e-7, 5.9e-5, 6.2e-5, 448.0, 464.0, 1e5, 65504.0, 65520.0, 1e30,
                            float("inf")])
    g = torch.Generator().manual_seed(0)
    rnd = torch.cat([torch.randn(n_random * 2 // 3, generator=g) * 3, torch.rand(n_random * 2 // 9, generator=g) * 500,
                     torch.rand(n_random // 9, generator=g) * 2**-6])
    v = torch.cat([near, h_nb, ties, e4_near, special, rnd])
    v = torch.cat([v, -v])
    perm = torch.randperm(v.numel(), generator=g)  # every value lands in every slot of a word
    v = torch.cat([v, v[perm]])
    return v[: v.numel() // 8 * 8]
