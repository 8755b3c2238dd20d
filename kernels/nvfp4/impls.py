"""The NVFP4 implementations this family ships: the float64 reference, eager PyTorch (HF's norm,
then vLLM's quantization recipe; ``torch_compile`` compiles it) and our Triton kernels.

``OWN_IMPLS``: provider name -> op -> factory(params) -> OpFn. The peers' adapters live in
``kernels/providers/<peer>.py``.
"""

from __future__ import annotations

import torch

from normbench.kernels.base import Inputs, OpFn, Outputs, Params
from normbench.kernels.nvfp4.format import BLOCK_SIZE, E2M1_MAX, E4M3_MAX, output_scale_fp32
from normbench.kernels.nvfp4.reference import FAMILY, OPS
from normbench.kernels.nvfp4.triton_launch import rms_norm_nvfp4_quant_triton


def nvfp4_quantize_torch(y: torch.Tensor, global_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager-torch NVFP4 quantizer of a [m, n] tensor (vLLM's recipe, float32 math).

    No ``.item()`` and no data-dependent Python branches (``torch.compile``-able).
    Returns (uint8 [m, n/2], float8_e4m3fn swizzled [round_up(m,128), round_up(n/16,4)]).
    """
    m, n = y.shape
    yf = y.to(torch.float32).reshape(m, n // BLOCK_SIZE, BLOCK_SIZE)
    gs = global_scale.to(torch.float32).reshape(())
    amax = yf.abs().amax(dim=-1)
    # Clamp first: the E4M3 conversion is specified as saturating.
    s8 = torch.clamp(gs * (amax / E2M1_MAX), max=E4M3_MAX).to(torch.float8_e4m3fn)
    out_scale = output_scale_fp32(s8.to(torch.float32), global_scale)
    v = yf * out_scale.unsqueeze(-1)
    a = v.abs()
    idx = (
        (a > 0.25).to(torch.int32)
        + (a >= 0.75).to(torch.int32)
        + (a > 1.25).to(torch.int32)
        + (a >= 1.75).to(torch.int32)
        + (a > 2.5).to(torch.int32)
        + (a >= 3.5).to(torch.int32)
        + (a > 5.0).to(torch.int32)
    )
    codes = (idx + (v < 0).to(torch.int32) * 8).reshape(m, n // 2, 2)
    packed = (codes[..., 0] + codes[..., 1] * 16).to(torch.uint8)
    mp, kp = (m + 127) // 128 * 128, (n // BLOCK_SIZE + 3) // 4 * 4
    sb = torch.nn.functional.pad(s8.view(torch.uint8), (0, kp - n // BLOCK_SIZE, 0, mp - m))
    sw = sb.reshape(mp // 128, 4, 32, kp // 4, 4).permute(0, 3, 2, 1, 4).reshape(mp, kp)
    return packed, sw.view(torch.float8_e4m3fn)


def _torch_naive(params: Params) -> OpFn:
    """HF ``LlamaRMSNorm`` (fp32 norm, ``weight * h.to(dtype)``), then the torch quantizer."""
    eps = float(params["eps"])
    has_res = bool(params.get("residual"))

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        h = x + inputs["residual"] if has_res else x
        hf = h.to(torch.float32)
        hf = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
        y = w * hf.to(h.dtype)
        packed, scales = nvfp4_quantize_torch(y, inputs["global_scale"])
        return (packed, scales, h) if has_res else (packed, scales)

    return fn


def _reference_impl(params: Params) -> OpFn:
    op = OPS[1] if params.get("residual") else OPS[0]
    return lambda inputs: FAMILY.reference(op, params, inputs)


def _triton(params: Params) -> OpFn:
    """Ours (``rms_norm_nvfp4_quant_triton``). Launch overrides, not suite axes (tests and the
    tuner): ``launch_config`` (a fast-kernel ``LaunchConfig``; implies ``fast``), ``fast``,
    ``rows_per_program`` / ``num_warps`` / ``strided_pairs`` (generic kernel), ``round_norm``."""
    eps = float(params["eps"])
    has_res = bool(params.get("residual"))
    rows, warps = params.get("rows_per_program"), params.get("num_warps")
    round_norm = bool(params.get("round_norm", False))
    fast_cfg = params.get("launch_config")
    fast = params.get("fast", True if fast_cfg is not None else None)
    strided = params.get("strided_pairs")  # None: the launcher's default (on for float32)

    def fn(inputs: Inputs) -> Outputs:
        return rms_norm_nvfp4_quant_triton(
            inputs["x"],
            inputs["weight"],
            inputs["global_scale"],
            eps,
            inputs["residual"] if has_res else None,
            rows_per_program=rows,
            num_warps=warps,
            round_norm=round_norm,
            fast=fast,
            fast_config=fast_cfg,
            strided_pairs=strided,
        )

    return fn


OWN_IMPLS = {
    "reference": {op: _reference_impl for op in OPS},
    "torch_naive": {op: _torch_naive for op in OPS},
    "triton": {op: _triton for op in OPS},
}
