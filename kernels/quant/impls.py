"""The quantization implementations this family ships: the float64 reference, eager PyTorch
(unfused, compile-friendly: ``torch_compile`` compiles it) and our Triton kernels.

``OWN_IMPLS``: provider name -> op -> factory(params) -> OpFn. The peers' adapters live in
``kernels/providers/<peer>.py``.
"""

from __future__ import annotations

import torch

from normbench.kernels._triton import HAVE_TRITON
from normbench.kernels.base import Inputs, OpFn, Outputs, OutputBuffers, Params
from normbench.kernels.providers._family import Unsupported
from normbench.kernels.quant.reference import (
    FAMILY, GROUP_QUANT, MIN_SCALE, NORM_OPS, QMAX, QMIN, QUANT_TORCH_DTYPES, STATIC_OP, SUITE_OPS,
    check_quant_dtype, scales_col_major, granularity, has_residual, has_scale_ub, is_static,
)
from normbench.kernels.quant.triton_launch import (
    _tile, triton_group_quant, triton_rms_norm_group_quant, triton_rms_norm_quant,
    triton_rms_norm_static_quant, triton_scaled_quant,
)


def _naive_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None):
    """HF ``LlamaRMSNorm`` (fp32 statistics, round, weight product in the dtype) after a
    dtype residual add, as the rmsnorm family's ``torch_naive``."""
    res_out = None
    if residual is not None:
        x = x + residual
        res_out = x
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype), res_out


def _naive_quant(
    y: torch.Tensor, quant_dtype: str, gran: str, group_size: int = 0,
    scale: torch.Tensor | None = None, scale_ub: torch.Tensor | None = None, col_major: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``y`` [T, H] with torch ops; no host syncs (``torch.compile`` friendly)."""
    qmax, qmin = QMAX[quant_dtype], QMIN[quant_dtype]
    yf = y.to(torch.float32)
    t, h = yf.shape
    if gran == "group":
        yf = yf.view(t, h // group_size, group_size)
    if scale is None:
        if gran == "tensor":
            amax = yf.abs().amax().reshape(1)
        else:
            amax = yf.abs().amax(dim=-1, keepdim=gran == "token")
        if scale_ub is not None:
            amax = torch.minimum(amax, scale_ub)
        scale = (amax / qmax).clamp(min=MIN_SCALE[quant_dtype])
    s_b = scale.unsqueeze(-1) if gran == "group" else scale
    v = (yf / s_b).clamp(qmin, qmax)
    if quant_dtype == "int8":
        v = torch.round(v)
    codes = v.to(QUANT_TORCH_DTYPES[quant_dtype]).view(t, h)
    if gran == "group" and col_major:
        scale = scale.t().contiguous().t()
    return codes, scale


def _naive_factory(op: str):
    def factory(params: Params) -> OpFn:
        qd = check_quant_dtype(params)
        gran = granularity(op, params)
        gs = int(params.get("group_size", 0) or 0)
        col = scales_col_major(params)
        res, ub = has_residual(op, params), has_scale_ub(op, params)
        static = is_static(op, params)
        eps = float(params.get("eps", 1e-6))

        def fn(inputs: Inputs) -> Outputs:
            x = inputs["x"]
            res_out = None
            if op in NORM_OPS:
                x, res_out = _naive_norm(x, inputs["weight"], eps, inputs["residual"] if res else None)
            codes, scales = _naive_quant(
                x, qd, gran, gs, inputs["scale"] if static else None, inputs["scale_ub"] if ub else None, col
            )
            return (codes, scales, res_out) if res_out is not None else (codes, scales)

        return fn

    return factory


def _reference_factory(op: str):
    def factory(params: Params) -> OpFn:
        check_quant_dtype(params)

        def fn(inputs: Inputs) -> Outputs:
            return FAMILY.reference(op, params, inputs)

        return fn

    return factory


def _triton_factory(op: str):
    def factory(params: Params) -> OpFn:
        if not HAVE_TRITON:
            raise Unsupported("triton is not installed")
        qd = check_quant_dtype(params)
        gs = int(params.get("group_size", 0) or 0)
        if gs:
            _tile(int(params["hidden_size"]), gs)
        elif op != GROUP_QUANT:
            _tile(int(params["hidden_size"]), 0)
        col = scales_col_major(params)
        res, ub = has_residual(op, params), has_scale_ub(op, params)
        eps = float(params.get("eps", 1e-6))
        static = bool(params.get("static_scale"))
        per_token = params.get("scale_granularity", "per_token") == "per_token"
        cfg = params.get("launch_config")  # optional LaunchConfig override (tuning)

        def fn(inputs: Inputs) -> Outputs:
            x = inputs["x"]
            if op == "rms_norm_quant":
                r = inputs["residual"] if res else None
                codes, scales = triton_rms_norm_quant(
                    x, inputs["weight"], eps, qd, r, inputs["scale_ub"] if ub else None, config=cfg
                )
                return (codes, scales, r) if res else (codes, scales)
            if op == "rms_norm_group_quant":
                r = inputs["residual"] if res else None
                codes, scales = triton_rms_norm_group_quant(x, inputs["weight"], eps, qd, gs, col, r, config=cfg)
                return (codes, scales, r) if res else (codes, scales)
            if op == STATIC_OP:
                r = inputs["residual"] if res else None
                codes, scale = triton_rms_norm_static_quant(x, inputs["weight"], inputs["scale"], eps, qd, r, config=cfg)
                return (codes, scale, r) if res else (codes, scale)
            if op == GROUP_QUANT:
                return triton_group_quant(x, qd, gs, col, config=cfg)
            return triton_scaled_quant(
                x, qd, inputs["scale"] if static else None, per_token, inputs["scale_ub"] if ub else None, config=cfg
            )

        return fn

    return factory


def static_fp8_fn(kernel, residual: bool, eps: float) -> OpFn:
    """The OpFn of a peer's fused static-scale fp8 kernel (``rms_norm_static_quant``) with the
    calling convention vLLM's and FlashInfer's share: ``kernel(out, x, [residual,] weight,
    scale, eps)`` writes the codes into ``out`` (a contiguous float8_e4m3fn [T, H], reused
    across calls) and, with a residual, ``x + residual`` into ``residual`` in place.
    Outputs ``(codes, scale[, residual])``, the given scale returned as is."""
    bufs = OutputBuffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w, scale = inputs["x"], inputs["weight"], inputs["scale"]
        out = bufs.empty("codes", x.shape, torch.float8_e4m3fn, x.device)
        if residual:
            r = inputs["residual"]
            kernel(out, x, r, w, scale, eps)
            return out, scale, r
        kernel(out, x, w, scale, eps)
        return out, scale

    return fn


ALL_OPS = SUITE_OPS + (GROUP_QUANT,)

OWN_IMPLS = {
    "reference": {op: _reference_factory(op) for op in ALL_OPS},
    "torch_naive": {op: _naive_factory(op) for op in ALL_OPS},
    "triton": {op: _triton_factory(op) for op in ALL_OPS},
}
