"""Fake of ``vllm/model_executor/layers/quantization/utils/fp8_utils.py`` (vLLM 0.25.1):
``per_token_group_quant_fp8`` only. Not vLLM; see ``vllm/__init__.py``."""

import torch

from vllm._fake_support import api, round_up

#: What ``is_deep_gemm_e8m0_used()`` answers when ``use_ue8m0`` is left None. True (the
#: answer on an SM100 machine with DeepGEMM): an adapter that wants plain fp32 group scales
#: must pass ``use_ue8m0=False``, and one that relies on the default is caught on the CPU.
DEEP_GEMM_E8M0_USED = True


@api("fp8_utils.per_token_group_quant_fp8")
def per_token_group_quant_fp8(
    x: torch.Tensor,
    group_size: int,
    eps: float = 1e-10,
    dtype: torch.dtype | None = None,
    column_major_scales: bool = False,
    tma_aligned_scales: bool = False,
    out_q: torch.Tensor | None = None,
    use_ue8m0: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (codes ``dtype`` (default float8_e4m3fn) like x, scales fp32 [..., H / group_size]:
    ``max(group amax, eps) / 448``, a power of two at or above it with ``use_ue8m0``;
    row-major, or with ``column_major_scales`` a transposed view of [..., G, M] (M padded to
    a multiple of 4 with ``tma_aligned_scales``, 2-D only in this fake))."""
    if use_ue8m0 is None:
        use_ue8m0 = DEEP_GEMM_E8M0_USED
    dtype = torch.float8_e4m3fn if dtype is None else dtype
    assert x.shape[-1] % group_size == 0, (
        f"the last dimension of `x` {x.shape[-1]} must be divisible by `group_size` {group_size}"
    )
    assert x.stride(-1) == 1, "`x` groups must be contiguous"
    finfo = torch.finfo(dtype)
    assert out_q is None or out_q.shape == x.shape
    x_q = torch.empty(x.shape, device=x.device, dtype=dtype) if out_q is None else out_q
    groups = x.shape[-1] // group_size
    if column_major_scales and tma_aligned_scales:
        assert x.dim() == 2, "fake vLLM: TMA-aligned scales are modelled for 2-D inputs only"
        m = x.shape[0]
        x_s = torch.empty_strided((m, groups), (1, round_up(m, 4)), device=x.device, dtype=torch.float32)
    elif column_major_scales:
        x_s = torch.empty(x.shape[:-2] + (groups, x.shape[-2]), device=x.device, dtype=torch.float32).permute(-1, -2)
    else:
        x_s = torch.empty(x.shape[:-1] + (groups,), device=x.device, dtype=torch.float32)
    torch.ops._C.per_token_group_fp8_quant(
        x, x_q, x_s, group_size, eps, finfo.min, finfo.max, use_ue8m0, column_major_scales, tma_aligned_scales
    )
    return x_q, x_s
