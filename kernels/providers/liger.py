"""The liger peer: Liger-Kernel's Triton RMSNorm as ``rms_norm`` / ``fused_add_rms_norm`` (``ADAPTERS``)."""

from __future__ import annotations

from normbench.kernels.base import Inputs, OpFn, Outputs, Params
from normbench.kernels.providers._family import FamilyProvider
from normbench.kernels.rmsnorm.impls import both_ops, norm_case


def rms_norm_adapter(params: Params) -> OpFn:
    """Liger's Triton RMSNorm (``casting_mode="llama"``: HF's rounding), out of place; with a
    residual its fused ``LigerFusedAddRMSNormFunction`` when the release has it, else a torch
    add followed by Liger's norm."""
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    eps, residual = norm_case(params)
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


#: op -> factory.
ADAPTERS = both_ops(rms_norm_adapter)

PROVIDER = FamilyProvider("liger", packages=("liger_kernel",), needs_cuda=True, adapters=ADAPTERS)
