"""The RMSNorm implementations this family ships: the float64 reference, eager PyTorch (HF's
formula, also what ``torch_compile`` compiles), ``F.rms_norm`` and our Triton kernel.

``OWN_IMPLS``: provider name -> op -> factory(params) -> OpFn. The peers' adapters live in
``kernels/providers/<peer>.py``.
"""

import torch

from normbench.kernels.base import Inputs, OpFn, Outputs, OutputBuffers, Params
from normbench.kernels.rmsnorm.reference import FAMILY
from normbench.kernels.rmsnorm.triton_launch import rms_norm


def norm_case(params: Params) -> tuple[float, bool]:
    """(eps, residual) of a case."""
    return float(params["eps"]), bool(params.get("residual", False))


def both_ops(factory) -> dict:
    """The same factory for both ops: ``fused_add_rms_norm``'s params carry residual=True."""

    def fused(params: Params) -> OpFn:
        return factory({**params, "residual": True})

    return {"rms_norm": factory, "fused_add_rms_norm": fused}


def _reference_factory(params: Params) -> OpFn:
    op = "fused_add_rms_norm" if params.get("residual") else "rms_norm"

    def fn(inputs: Inputs) -> Outputs:
        return FAMILY.reference(op, params, inputs)

    return fn


def hf_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HuggingFace ``LlamaRMSNorm.forward``: fp32 statistics, round, then weight in the input dtype."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


def _torch_naive_factory(params: Params) -> OpFn:
    eps, residual = norm_case(params)

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        if residual:
            r = x + inputs["residual"]
            return hf_rms_norm(r, inputs["weight"], eps), r
        return (hf_rms_norm(x, inputs["weight"], eps),)

    return fn


def _torch_rms_norm_factory(params: Params) -> OpFn:
    eps, residual = norm_case(params)
    shape = (int(params["hidden_size"]),)

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        if residual:
            r = x + inputs["residual"]
            return torch.nn.functional.rms_norm(r, shape, inputs["weight"], eps), r
        return (torch.nn.functional.rms_norm(x, shape, inputs["weight"], eps),)

    return fn


def _triton_factory(params: Params) -> OpFn:
    """Ours, out of place into per-factory buffers (``base.OutputBuffers``); ``params["launch_config"]``
    (a ``LaunchConfig``, used by the tuner) overrides ``default_config``."""
    eps, residual = norm_case(params)
    config = params.get("launch_config")
    bufs = OutputBuffers()

    def fn(inputs: Inputs) -> Outputs:
        x = inputs["x"]
        if residual:
            return rms_norm(
                x, inputs["weight"], eps, inputs["residual"],
                out=bufs.like("out", x), residual_out=bufs.like("residual_out", x), config=config,
            )
        return rms_norm(x, inputs["weight"], eps, out=bufs.like("out", x), config=config)

    return fn


OWN_IMPLS = {
    "reference": both_ops(_reference_factory),
    "torch_naive": both_ops(_torch_naive_factory),
    "torch_rms_norm": both_ops(_torch_rms_norm_factory),
    "triton": both_ops(_triton_factory),
}
