"""The NVFP4 format: E2M1 codes, E4M3 block scales, the swizzled scale layout, exact rounding.

The format's rules (vLLM's convention) are in the package docstring (``Format``). Everything
here is float64 / integer arithmetic, exact by construction; the reference, the check, the
torch provider and the tests build on it.
"""

from __future__ import annotations

from typing import Any

import torch

BLOCK_SIZE = 16  # elements per E4M3 block scale
E2M1_MAX = 6.0
E4M3_MAX = 448.0
#: E2M1 magnitudes by 3-bit index (code & 7).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: Decision thresholds between consecutive E2M1 magnitudes (midpoints).
E2M1_THRESHOLDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)

#: Machine epsilon (ulp of 1.0) of each input dtype.
DTYPE_EPS = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10, torch.float32: 2.0**-23}
#: (mantissa bits, minimum normal exponent) of the formats we round to exactly.
_FORMATS = {
    torch.bfloat16: (7, -126),
    torch.float16: (10, -14),
    torch.float32: (23, -126),
    "e4m3": (3, -6),
}


# =========================================================================== layout helpers
def round_up(a: int, b: int) -> int:
    return (a + b - 1) // b * b


def scale_shape(num_tokens: int, hidden_size: int) -> tuple[int, int]:
    """Shape of the swizzled scale buffer: (round_up(m, 128), round_up(n/16, 4))."""
    return round_up(num_tokens, 128), round_up(hidden_size // BLOCK_SIZE, 4)


def swizzle_offset(row: int, k: int, hidden_size: int) -> int:
    """Flat byte offset of scale (row, k) in the swizzled buffer (vLLM's
    ``cvt_quant_to_fp4_get_sf_out_offset``)."""
    k_tiles = round_up(hidden_size // BLOCK_SIZE, 4) // 4
    return (
        (row // 128 * k_tiles + k // 4) * 512
        + (row % 32) * 16
        + (row % 128) // 32 * 4
        + k % 4
    )


def swizzle_scales(s: torch.Tensor) -> torch.Tensor:
    """Row-major block scales -> the swizzled 128x4-tile layout.

    Args:
        s: [m, n/16] scales, any dtype (float8_e4m3fn, uint8 or a float type).
    Returns:
        [round_up(m, 128), round_up(n/16, 4)] of ``s.dtype``; padding is zero.
        Viewed flat, element (row, k) of ``s`` is at ``swizzle_offset(row, k, n)``.
    """
    m, kb = s.shape
    mp, kp = round_up(m, 128), round_up(kb, 4)
    raw = s.view(torch.uint8) if s.dtype == torch.float8_e4m3fn else s
    padded = torch.zeros((mp, kp), dtype=raw.dtype, device=s.device)
    padded[:m, :kb] = raw
    # [m_tiles, 4 (inner_m), 32 (outer_m), k_tiles, 4 (inner_k)]
    #   -> [m_tiles, k_tiles, 32 (outer_m), 4 (inner_m), 4 (inner_k)]
    out = padded.view(mp // 128, 4, 32, kp // 4, 4).permute(0, 3, 2, 1, 4).reshape(mp, kp)
    return out.view(torch.float8_e4m3fn) if s.dtype == torch.float8_e4m3fn else out


def unswizzle_scales(buf: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Inverse of ``swizzle_scales``: swizzled buffer -> [m, n/16] row-major scales.

    Args:
        buf: the swizzled buffer, [round_up(m,128), round_up(n/16,4)] or flat
            with that many elements, any 1-byte dtype.
        m: num_tokens; n: hidden_size.
    Raises:
        ValueError: ``buf`` has the wrong number of elements.
    """
    mp, kp = scale_shape(m, n)
    if buf.numel() != mp * kp:
        raise ValueError(f"scale buffer has {buf.numel()} elements, expected {mp}x{kp}")
    raw = buf.view(torch.uint8) if buf.dtype == torch.float8_e4m3fn else buf
    rows = raw.reshape(mp // 128, kp // 4, 32, 4, 4).permute(0, 3, 2, 1, 4).reshape(mp, kp)
    out = rows[:m, : n // BLOCK_SIZE]
    return out.view(torch.float8_e4m3fn) if buf.dtype == torch.float8_e4m3fn else out


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """[m, n] 4-bit codes (int tensor) -> uint8 [m, n/2], low nibble = even element."""
    c = codes.to(torch.int32).reshape(codes.shape[0], -1, 2)
    return (c[..., 0] | (c[..., 1] << 4)).to(torch.uint8)


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [m, n/2] -> int64 codes [m, n]: low nibble -> element 2k, high -> 2k+1."""
    p = packed.to(torch.int64)
    return torch.stack((p & 0xF, p >> 4), dim=-1).reshape(packed.shape[0], -1)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes -> float64 values (sign bit 3, magnitude index bits 0-2)."""
    table = torch.tensor(E2M1_VALUES, dtype=torch.float64, device=codes.device)
    mag = table[codes & 7]
    return torch.where((codes & 8) != 0, -mag, mag)


# =========================================================================== exact rounding
def round_to_format(x: torch.Tensor, fmt: Any) -> torch.Tensor:
    """Round float64 ``x`` to the grid of ``fmt`` (a torch dtype or ``"e4m3"``),
    to nearest, ties to even, exactly (no double rounding); no overflow handling.

    Returns float64. Works elementwise; signs and zeros are kept.
    """
    if x.dtype != torch.float64:
        raise TypeError("round_to_format takes float64")
    mbits, emin = _FORMATS[fmt]
    a = x.abs()
    _, e = torch.frexp(a)  # a = f * 2**e with f in [0.5, 1)
    e = torch.clamp(e.to(torch.float64) - 1, min=emin)
    q = torch.pow(2.0, e - mbits)  # exact powers of two
    r = torch.round(a / q) * q  # torch.round: half to even; a / q is exact
    return torch.copysign(r, x)


def round_e4m3(s: torch.Tensor) -> torch.Tensor:
    """Non-negative float64 scales -> E4M3 values (float64): RNE, saturating at 448."""
    return round_to_format(torch.clamp(s, max=E4M3_MAX), "e4m3")


def encode_e2m1(v: torch.Tensor) -> torch.Tensor:
    """Values -> 4-bit E2M1 codes (int64): RNE, ties to even index, saturate at 6.

    Sign bit set for v < 0 (so small negatives that round to 0 give 0x8, as the
    PTX conversion does); exact zeros of either sign give 0x0.
    """
    a = v.to(torch.float64).abs()
    idx = torch.zeros(a.shape, dtype=torch.int64, device=a.device)
    # Even indices win ties: strict '>' below an even index, '>=' below an odd one.
    for i, t in enumerate(E2M1_THRESHOLDS):
        idx += (a >= t) if i % 2 == 1 else (a > t)
    return idx | ((v < 0).to(torch.int64) << 3)


def output_scale_fp32(s8: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """vLLM's per-block multiplier, float32: ``1 / (s8 * (1 / gs))``, 0 where s8 == 0.

    Args:
        s8: E4M3 block scales as float32 (exact values), any shape.
        global_scale: float32 [1].
    """
    s = s8.to(torch.float32)
    inv_gs = torch.reciprocal(global_scale.to(torch.float32).reshape(()))
    denom = s * inv_gs
    safe = torch.where(s != 0, denom, torch.ones_like(denom))
    return torch.where(s != 0, torch.reciprocal(safe), torch.zeros_like(denom))
