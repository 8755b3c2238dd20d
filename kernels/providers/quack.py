"""The quack peer: quack's CuTe-DSL RMSNorm as ``rms_norm`` / ``fused_add_rms_norm`` (``ADAPTERS``)."""

from __future__ import annotations

import inspect

from normbench.kernels.base import Inputs, OpFn, Outputs, Params
from normbench.kernels.providers._family import FamilyProvider
from normbench.kernels.rmsnorm.impls import both_ops, norm_case


def rms_norm_adapter(params: Params) -> OpFn:
    """quack's CuTe-DSL ``rmsnorm_fwd(x, weight, residual=..., eps=...)``, which allocates its
    outputs. quack adds the residual in fp32 and normalizes the unrounded sum (it stores the
    rounded one), a difference within rounding of the reference's convention."""
    from quack.rmsnorm import rmsnorm_fwd

    eps, residual = norm_case(params)
    # 0.6.x returns (out, residual_out, rstd); later releases take store_residual_out and
    # return (out, rstd, residual_out).
    newer = "store_residual_out" in inspect.signature(rmsnorm_fwd).parameters
    kwargs = {"store_residual_out": True} if newer and residual else {}
    res_index = 2 if newer else 1

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if residual:
            outs = rmsnorm_fwd(x, w, residual=inputs["residual"], eps=eps, **kwargs)
            return outs[0], outs[res_index]
        return (rmsnorm_fwd(x, w, eps=eps)[0],)

    return fn


#: op -> factory.
ADAPTERS = both_ops(rms_norm_adapter)

PROVIDER = FamilyProvider("quack", packages=("quack",), needs_cuda=True, adapters=ADAPTERS)
