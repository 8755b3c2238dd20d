"""Fake of ``vllm/model_executor/layers/quantization/utils/int8_utils.py`` (vLLM 0.25.1):
``per_token_group_quant_int8`` only. Not vLLM; see ``vllm/__init__.py``."""

import torch

from vllm._fake_support import api


@api("int8_utils.per_token_group_quant_int8")
def per_token_group_quant_int8(
    x: torch.Tensor,
    group_size: int,
    eps: float = 1e-10,
    dtype: torch.dtype = torch.int8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (codes int8 like x, scales fp32 [..., H / group_size] = max(group amax, eps) / 127),
    row-major scales only."""
    assert x.shape[-1] % group_size == 0, "the last dimension of `x` cannot be divisible by `group_size`"
    assert x.is_contiguous(), "`x` is not contiguous"
    iinfo = torch.iinfo(dtype)
    x_q = torch.empty_like(x, device=x.device, dtype=dtype)
    x_s = torch.empty(x.shape[:-1] + (x.shape[-1] // group_size,), device=x.device, dtype=torch.float32)
    torch.ops._C.per_token_group_quant_int8(x, x_q, x_s, group_size, eps, float(iinfo.min), float(iinfo.max))
    return x_q, x_s
