"""Fake of ``vllm/_custom_ops.py`` (vLLM 0.25.1): the wrappers normbench's adapters call.

Signatures are 0.25.1's exactly; each wrapper allocates its outputs as 0.25.1 does (shapes,
dtypes, strides, padding) and launches the kernel through ``torch.ops._C`` (the fake's
``vllm._fake_kernels.OPS`` once a test installs it there), so the adapters meet the same
two layers as on a GPU. The platform is CUDA: the fp8 dtype is ``torch.float8_e4m3fn``.
Not vLLM; see ``vllm/__init__.py``.
"""

import torch

from vllm._fake_support import api, round_up

_FP8_DTYPE = torch.float8_e4m3fn  # current_platform.fp8_dtype() on CUDA


# --------------------------------------------------------------------------- fp4 helpers


@api("_custom_ops.create_fp4_scale_tensor")
def create_fp4_scale_tensor(
    m: int,
    n: int,
    device: torch.device,
    is_sf_swizzled_layout: bool,
) -> torch.Tensor:
    """Swizzled: zeroed int32 [round_up(m, 128), round_up(n / 16, 4) / 4] (4 e4m3 scales per
    word); else uint8 [m, n / 16]."""
    if is_sf_swizzled_layout:
        return torch.zeros((round_up(m, 128), round_up(n // 16, 4) // 4), device=device, dtype=torch.int32)
    return torch.empty((m, n // 16), device=device, dtype=torch.uint8)


@api("_custom_ops.create_fp4_output_tensors")
def create_fp4_output_tensors(
    m: int,
    n: int,
    device: torch.device,
    is_sf_swizzled_layout: bool,
    padded_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes uint8 [m, physical_n / 2], scale buffer), physical_n = padded_n or n."""
    physical_n = n if padded_n is None else padded_n
    codes = torch.empty((m, physical_n // 2), device=device, dtype=torch.uint8)
    return codes, create_fp4_scale_tensor(m, physical_n, device, is_sf_swizzled_layout)


# --------------------------------------------------------------------------- layer norm


@api("_custom_ops.rms_norm")
def rms_norm(
    out: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor | None,
    epsilon: float,
) -> None:
    torch.ops._C.rms_norm(out, input, weight, epsilon)


@api("_custom_ops.fused_add_rms_norm")
def fused_add_rms_norm(
    input: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor | None,
    epsilon: float,
) -> None:
    torch.ops._C.fused_add_rms_norm(input, residual, weight, epsilon)


@api("_custom_ops.rms_norm_dynamic_per_token_quant")
def rms_norm_dynamic_per_token_quant(
    input: torch.Tensor,
    weight: torch.Tensor,
    epsilon: float,
    quant_dtype: torch.dtype,
    scale_ub: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (codes ``quant_dtype`` like input, scales fp32 [tokens, 1]); residual in place."""
    codes = torch.empty(input.shape, dtype=quant_dtype, device=input.device)
    tokens = input.numel() // input.shape[-1]
    scales = torch.empty((tokens, 1), dtype=torch.float32, device=input.device)
    torch.ops._C.rms_norm_dynamic_per_token_quant(codes, input, weight, scales, epsilon, scale_ub, residual)
    return codes, scales


@api("_custom_ops.rms_norm_per_block_quant")
def rms_norm_per_block_quant(
    input: torch.Tensor,
    weight: torch.Tensor,
    epsilon: float,
    quant_dtype: torch.dtype,
    group_size: list[int],
    scale_ub: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    is_scale_transposed: bool = False,
    tma_alignment: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (codes, scales fp32 [tokens, H / group_size[1]]): contiguous, or with
    ``is_scale_transposed`` a view of a [G, tokens] tensor (tokens padded to a multiple of
    ``tma_alignment`` when it is 4, 2-D inputs only in this fake)."""
    assert len(group_size) == 2
    assert tma_alignment in (0, 4), f"Expected TMA alignment 0 or 4, but got {tma_alignment}"
    codes = torch.empty(input.shape, dtype=quant_dtype, device=input.device)
    tokens = input.numel() // input.shape[-1]
    groups = input.shape[-1] // group_size[1]
    if not is_scale_transposed:
        scales = torch.empty((tokens, groups), dtype=torch.float32, device=input.device)
    elif tma_alignment == 0:
        scales = torch.empty((groups, tokens), dtype=torch.float32, device=input.device).transpose(0, 1)
    else:
        assert input.dim() == 2, "fake vLLM: TMA-aligned scales are modelled for 2-D inputs only"
        m = input.shape[0]
        aligned = round_up(m, tma_alignment)
        scales = torch.empty_strided((m, groups), (1, aligned), dtype=torch.float32, device=input.device)
    torch.ops._C.rms_norm_per_block_quant(
        codes, input, weight, scales, epsilon, scale_ub, residual, group_size[1], is_scale_transposed
    )
    return codes, scales


# --------------------------------------------------------------------------- fp4


@api("_custom_ops.scaled_fp4_quant")
def scaled_fp4_quant(
    input: torch.Tensor,
    input_global_scale: torch.Tensor,
    is_sf_swizzled_layout: bool = True,
    backend: str = "none",
    padded_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (packed E2M1 codes uint8 [m, n/2], E4M3 block scales viewed as float8_e4m3fn:
    swizzled [round_up(m, 128), round_up(n/16, 4)] or [m, n/16])."""
    assert input.ndim >= 1, f"input.ndim needs to be >= 1, but got {input.ndim}."
    input = input.reshape(1 if input.ndim == 1 else -1, input.shape[-1])
    m, n = input.shape
    assert n % 16 == 0, f"last dim has to be multiple of 16, but got {n}."
    assert input.dtype in (torch.float16, torch.bfloat16), f"input.dtype needs to be fp16 or bf16 but got {input.dtype}."
    if padded_n is not None:
        assert padded_n >= n and padded_n % 16 == 0, f"bad padded_n {padded_n} for n {n}"
    if "trtllm" in backend and m <= 32:
        raise NotImplementedError("fake vLLM: FlashInfer's 8x4 scale layout (backend trtllm, m <= 32) is not modelled")
    output, output_scale = create_fp4_output_tensors(m, n, input.device, is_sf_swizzled_layout, padded_n=padded_n)
    torch.ops._C.scaled_fp4_quant.out(
        input, input_global_scale, is_sf_swizzled_layout, output=output, output_scale=output_scale
    )
    return output, output_scale.view(torch.float8_e4m3fn)


# --------------------------------------------------------------------------- fp8


@api("_custom_ops.scaled_fp8_quant")
def scaled_fp8_quant(
    input: torch.Tensor,
    scale: torch.Tensor | None = None,
    num_token_padding: int | None = None,
    scale_ub: torch.Tensor | None = None,
    use_per_token_if_dynamic: bool = False,
    output: torch.Tensor | None = None,
    group_shape: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (codes fp8 [max(M, num_token_padding), N], scale): the given ``scale`` (static),
    fp32 [rows, 1] (dynamic per token) or fp32 [1] (dynamic per tensor)."""
    assert input.ndim == 2
    shape = tuple(input.shape)
    if num_token_padding:
        shape = (max(num_token_padding, input.shape[0]), shape[1])
    if output is None:
        output = torch.empty(shape, device=input.device, dtype=_FP8_DTYPE)
    else:
        assert num_token_padding is None, "padding not supported if output passed in"
        assert output.dtype == _FP8_DTYPE
    if scale is None:
        if use_per_token_if_dynamic:
            scale = torch.empty((shape[0], 1), device=input.device, dtype=torch.float32)
            torch.ops._C.dynamic_per_token_scaled_fp8_quant(output, input, scale, scale_ub)
        else:
            scale = torch.empty(1, device=input.device, dtype=torch.float32)
            torch.ops._C.dynamic_scaled_fp8_quant(output, input, scale)
    else:
        torch.ops._C.static_scaled_fp8_quant(output, input, scale, group_shape)
    return output, scale


# --------------------------------------------------------------------------- int8


@api("_custom_ops.scaled_int8_quant")
def scaled_int8_quant(
    input: torch.Tensor,
    scale: torch.Tensor | None = None,
    azp: torch.Tensor | None = None,
    symmetric: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """-> (codes int8, scale, azp): static per-tensor (the given scale and azp) or dynamic
    per-token (scales fp32 [tokens, 1], azp None when symmetric)."""
    codes = torch.empty_like(input, dtype=torch.int8)
    if scale is not None:
        assert symmetric == (azp is None), "azp must only be provided for asymmetric quantization."
        torch.ops._C.static_scaled_int8_quant(codes, input, scale, azp)
        return codes, scale, azp
    tokens = input.numel() // input.shape[-1]
    scales = torch.empty((tokens, 1), device=input.device, dtype=torch.float32)
    zero_points = None if symmetric else torch.empty_like(scales, dtype=torch.int32)
    torch.ops._C.dynamic_scaled_int8_quant(codes, input.contiguous(), scales, zero_points)
    return codes, scales, zero_points
