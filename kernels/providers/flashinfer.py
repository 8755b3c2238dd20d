"""The flashinfer peer: its adapters for every family (``ADAPTERS``).

* ``rms_norm`` / ``fused_add_rms_norm``: ``flashinfer.norm.rmsnorm`` / ``fused_add_rmsnorm``;
* ``rms_norm_static_quant``: ``flashinfer.norm.rmsnorm_quant`` / ``fused_add_rmsnorm_quant``
  (fp8, SM89+);
* the NVFP4 fusions: ``flashinfer.norm.rmsnorm_fp4quant`` / ``add_rmsnorm_fp4quant`` (SM100+).

FlashInfer is imported inside the factories; the norm kernels take float16 and bfloat16 only.
"""

from __future__ import annotations

import inspect

import torch

from normbench.kernels.base import (
    TORCH_DTYPES, Inputs, OpFn, Outputs, OutputBuffers, Params, cuda_device, require_sm,
)
from normbench.kernels.nvfp4.format import scale_shape
from normbench.kernels.nvfp4.reference import OPS as NVFP4_OPS
from normbench.kernels.providers._family import FamilyProvider, Unsupported
from normbench.kernels.quant.impls import static_fp8_fn
from normbench.kernels.quant.reference import STATIC_OP, check_quant_dtype, has_residual
from normbench.kernels.rmsnorm.impls import both_ops, norm_case


def rms_norm_adapter(params: Params) -> OpFn:
    """``flashinfer.norm.rmsnorm(x, w, eps, out=...)`` into a reused ``out``;
    ``fused_add_rmsnorm(x, residual, w, eps)`` in place (residual += x, x = norm(residual) * w)."""
    if params["dtype"] == "float32":
        raise Unsupported("flashinfer.norm takes float16 and bfloat16 only")
    import flashinfer.norm

    eps, residual = norm_case(params)
    bufs = OutputBuffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if residual:
            res = inputs["residual"]
            flashinfer.norm.fused_add_rmsnorm(x, res, w, eps)
            return x, res
        return (flashinfer.norm.rmsnorm(x, w, eps, out=bufs.like("out", x)),)

    return fn


def static_quant_adapter(params: Params) -> OpFn:
    """FlashInfer's ``flashinfer.norm.rmsnorm_quant(out, input, weight, scale, eps=1e-6,
    enable_pdl=None)`` / ``fused_add_rmsnorm_quant(out, input, residual, weight, scale,
    eps=1e-6, enable_pdl=None)`` (0.7.x ``flashinfer/norm/__init__.py``; CuTe-DSL kernels, or
    the CUDA ones of ``include/flashinfer/norm.cuh`` with ``FLASHINFER_USE_CUDA_NORM=1``).

    ``out`` is a preallocated fp8 tensor (reused across calls), ``scale`` an fp32 tensor of
    shape (1,); ``residual`` becomes ``input + residual`` in place. Convention: both kernels
    compute ``y * (1 / scale)`` in fp32 (``scale_inv = 1.0f / scale``; the CuTe kernel an
    approximate reciprocal), clamp to +-448 and convert with round-to-nearest-even: the scale
    divides, as vLLM's and ours, so the adapter passes it unchanged. The fused-add CUDA
    kernel normalizes the unrounded fp32 sum (it stores the rounded one), within ``check``'s
    tie rule. FP8 conversion needs SM89+ (``registry``: ``min_sm``).

    Raises:
        Unsupported: int8 (FlashInfer writes e4m3 / e5m2 only), float32 inputs (its norm
            kernels take fp16 / bf16), or a FlashInfer without ``rmsnorm_quant``.
    """
    qd = check_quant_dtype(params)
    if qd != "fp8":
        raise Unsupported("flashinfer's rmsnorm_quant writes fp8 only")
    if params["dtype"] == "float32":
        raise Unsupported("flashinfer.norm takes float16 and bfloat16 only")
    res = has_residual(STATIC_OP, params)
    eps = float(params.get("eps", 1e-6))
    import flashinfer.norm as fi_norm

    kernel = getattr(fi_norm, "fused_add_rmsnorm_quant" if res else "rmsnorm_quant", None)
    if kernel is None:
        raise Unsupported("this flashinfer has no rmsnorm_quant / fused_add_rmsnorm_quant")
    return static_fp8_fn(kernel, res, eps)


def nvfp4_adapter(params: Params) -> OpFn:
    """FlashInfer ``flashinfer.norm.rmsnorm_fp4quant`` / ``add_rmsnorm_fp4quant``
    (CuTe-DSL, SM100+, fp16/bf16, hidden_size >= 64), swizzled E4M3 scales.

    Global-scale convention: FlashInfer's docstring says it *divides* by
    ``global_scale``, while the kernel in the stored source multiplies (like
    vLLM). The factory probes the installed version once on a one-row input
    and passes ``global_scale`` or ``1/global_scale`` accordingly (the inverse
    is computed on the first call with each global_scale tensor, i.e. during
    the correctness check, and cached).

    FlashInfer writes only the valid scale rows and (for n % 64 != 0) not the
    padded k columns, so the adapter keeps one zero-initialized scale buffer
    per num_tokens and reuses it across calls: padding stays zero and no
    memset is timed. ``add_rmsnorm_fp4quant`` updates ``residual`` in place to
    ``x + residual`` and returns it as residual_out.
    """
    if params["dtype"] not in ("bfloat16", "float16"):
        raise Unsupported(f"FlashInfer's rmsnorm_fp4quant takes fp16/bf16, not {params['dtype']}")
    if int(params["hidden_size"]) < 64:
        raise Unsupported("FlashInfer's rmsnorm_fp4quant needs hidden_size >= 64")
    dev = cuda_device()
    why = require_sm(dev, 10)
    if why:
        raise Unsupported(why)
    try:
        from flashinfer.norm import add_rmsnorm_fp4quant, rmsnorm_fp4quant
    except ImportError as e:
        raise Unsupported(f"this flashinfer has no rmsnorm_fp4quant: {e}") from None
    has_res = bool(params.get("residual"))
    kernel = add_rmsnorm_fp4quant if has_res else rmsnorm_fp4quant
    sig = inspect.signature(kernel).parameters
    if "global_scale" not in sig or "is_sf_swizzled_layout" not in sig:
        raise Unsupported("this flashinfer's rmsnorm_fp4quant has no global_scale / swizzled layout")
    eps = float(params["eps"])
    dtype = TORCH_DTYPES[params["dtype"]]
    n = int(params["hidden_size"])
    buffers: dict[int, torch.Tensor] = {}
    inverses: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def call(x, w, gs_arg, res, y, s):
        kw = dict(
            y_fp4=y, block_scale=s.view(-1), global_scale=gs_arg, eps=eps,
            block_size=16, scale_format="e4m3", is_sf_swizzled_layout=True,
        )
        if res is not None:
            add_rmsnorm_fp4quant(x, res, w, **kw)
        else:
            rmsnorm_fp4quant(x, w, **kw)

    # Probe the convention: y = 1 everywhere (x = w = 1), gs = 64. Multiplying
    # gives a scale of 64/6 ~ 10.7; dividing gives 1/384 ~ 0.0026.
    px = torch.ones((1, n), dtype=dtype, device=dev)
    pres = torch.zeros_like(px) if has_res else None
    py = torch.empty((1, n // 2), dtype=torch.uint8, device=dev)
    ps = torch.zeros(scale_shape(1, n), dtype=torch.float8_e4m3fn, device=dev)
    call(px, torch.ones(n, dtype=dtype, device=dev), torch.full((1,), 64.0, device=dev), pres, py, ps)
    divides = float(ps.view(-1)[0].float()) < 1.0

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        m = x.shape[0]
        s = buffers.get(m)
        if s is None:
            s = buffers[m] = torch.zeros(scale_shape(m, n), dtype=torch.float8_e4m3fn, device=x.device)
        gs = inputs["global_scale"]
        if divides:
            cached = inverses.get(id(gs))
            if cached is None or cached[0] is not gs:
                cached = inverses[id(gs)] = (gs, torch.reciprocal(gs))
            gs = cached[1]
        y = torch.empty((m, n // 2), dtype=torch.uint8, device=x.device)
        res = inputs["residual"] if has_res else None
        call(x, inputs["weight"], gs, res, y, s)
        return (y, s, res) if has_res else (y, s)

    return fn


#: op -> factory.
ADAPTERS = {
    **both_ops(rms_norm_adapter),
    STATIC_OP: static_quant_adapter,
    **{op: nvfp4_adapter for op in NVFP4_OPS},
}

PROVIDER = FamilyProvider("flashinfer", packages=("flashinfer",), needs_cuda=True, adapters=ADAPTERS)
