"""The quantization launcher: tiles, validates a launch config and launches ``_rowquant_kernel``
(and ``_amax_kernel`` for dynamic per-tensor scales); the public ``triton_*`` entry points."""

from __future__ import annotations

import torch

from normbench.kernels._triton import cdiv, device_facts, interpreted, next_pow2
from normbench.kernels.providers._family import Unsupported
from normbench.kernels.quant.configs import MAX_BLOCK, LaunchConfig, default_config
from normbench.kernels.quant.reference import MIN_SCALE, QMAX, QMIN, QUANT_TORCH_DTYPES
from normbench.kernels.quant.triton_kernels import _amax_kernel, _rowquant_kernel

_INTERPRETED = interpreted(_rowquant_kernel)


def _tile(hidden_size: int, group_size: int) -> tuple[int, int, int]:
    """(BLOCK_G, GS, n_groups) of a row: per-token [1, next_pow2(H)], per-group [next_pow2(G), gs]."""
    if group_size:
        if hidden_size % group_size:
            raise Unsupported(f"hidden_size {hidden_size} is not a multiple of group_size {group_size}")
        if group_size & (group_size - 1):
            raise Unsupported(f"group_size {group_size} is not a power of two")
        n_groups = hidden_size // group_size
        bg, gs = next_pow2(n_groups), group_size
    else:
        bg, gs, n_groups = 1, next_pow2(hidden_size), 1
    if bg * gs > MAX_BLOCK:
        raise Unsupported(f"hidden_size {hidden_size} exceeds the one-row-in-registers kernel's {MAX_BLOCK} elements")
    return bg, gs, n_groups


def check_config(cfg: LaunchConfig, row_elems: int, pdl_ok: bool) -> None:
    """Refuse a config ``_rowquant_kernel`` cannot run on rows of ``row_elems`` register elements
    (``_tile``: BLOCK_G x GS) on a device with (``pdl_ok``) or without PDL.

    Raises:
        ValueError: rows_per_program not a power of two, a tile over ``MAX_BLOCK`` elements,
            PDL where unsupported, or stages > 1 without a persistent grid.
    """
    rows = int(cfg.rows_per_program)
    if rows < 1 or rows & (rows - 1):
        raise ValueError(f"{cfg}: rows_per_program must be a power of two")
    if rows * row_elems > MAX_BLOCK:
        raise ValueError(f"{cfg}: a tile of {rows} rows x {row_elems} elements exceeds {MAX_BLOCK} elements")
    if cfg.pdl and not pdl_ok:
        raise ValueError(f"{cfg}: programmatic dependent launch needs an SM90+ GPU and Triton >= 3.3")
    if cfg.stages > 1 and not cfg.programs_per_sm:
        raise ValueError(f"{cfg}: stages > 1 pipelines the persistent loop: set programs_per_sm")


def _kind(weight: torch.Tensor | None, group_size: int) -> str:
    if weight is None:
        return "scaled_quant"
    return "rms_norm_group_quant" if group_size else "rms_norm_quant"


def _launch_rowquant(
    x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, quant_dtype: str, *,
    weight: torch.Tensor | None = None, residual: torch.Tensor | None = None, eps: float = 0.0,
    group_size: int = 0, scale_mode: int = 0, scale_in: torch.Tensor | None = None,
    scale_ub: torch.Tensor | None = None, config: LaunchConfig | None = None,
) -> None:
    """Launch ``_rowquant_kernel`` into given buffers.

    Args:
        x: [T, H], unit column stride. codes: [T, H] fp8 / int8, unit column stride.
        scales: fp32, written as ``scales[row, group]`` through its two strides (a
            [T, 1], [T, G] or transposed [G, T] view), or ``scales[0]`` for modes 1-2.
        scale_mode: 0 dynamic per block, 1 static ``scale_in`` [1], 2 per-tensor from the
            amax partials in ``scale_in`` [P] (``_amax_kernel``; program 0 writes ``scales[0]``).
        config: overrides ``default_config``.
    """
    t, h = x.shape
    if t == 0:
        return
    bg, gs, n_groups = _tile(h, group_size)
    facts = device_facts(x.device)
    sms, pdl_ok = facts.sms, facts.pdl
    cfg = config or default_config(t, h, x.element_size(), _kind(weight, group_size), residual is not None, pdl_ok)
    check_config(cfg, bg * gs, pdl_ok)
    rows = int(cfg.rows_per_program)
    tiles = cdiv(t, rows)
    grid = tiles if not cfg.programs_per_sm else min(tiles, int(cfg.programs_per_sm) * sms)
    s_row, s_grp = (scales.stride(0), scales.stride(1)) if scales.dim() == 2 else (0, 0)
    dummy = x
    meta = {"num_warps": int(cfg.num_warps)}
    if cfg.pdl:
        meta["launch_pdl"] = True
    _rowquant_kernel[(grid,)](
        x, weight if weight is not None else dummy, residual if residual is not None else dummy,
        codes, scales, scale_ub if scale_ub is not None else scales, scale_in if scale_in is not None else scales,
        t, h, n_groups,
        x.stride(0), residual.stride(0) if residual is not None else 0, codes.stride(0), s_row, s_grp,
        float(eps), QMAX[quant_dtype], QMIN[quant_dtype], MIN_SCALE[quant_dtype],
        BLOCK_G=bg, GS=gs, NORM=weight is not None, HAS_RES=residual is not None, HAS_UB=scale_ub is not None,
        SCALE_MODE=scale_mode, IS_FP8=quant_dtype == "fp8", ROWS=rows,
        RES_BF16=residual is not None and residual.dtype == torch.bfloat16,
        TUPLE_REDUCE=bg == 1 and ((not _INTERPRETED) if cfg.tuple_reduce is None else bool(cfg.tuple_reduce)),
        # Codes stored with the 16-byte vector width of the input (see _quant_tile) where the
        # input layout must win: the residual's in-place store, and multi-row per-token
        # tiles (else the weight, loaded as [1, H], is converted through shared memory).
        Q_VEC=16 // x.element_size() if residual is not None or (rows > 1 and bg == 1) else 0,
        HW_CVT=(not _INTERPRETED) if cfg.hw_cvt is None else bool(cfg.hw_cvt),
        PERSISTENT=cfg.programs_per_sm > 0, STAGES=max(1, int(cfg.stages)), PDL=bool(cfg.pdl),
        N_PART=next_pow2(scale_in.numel()) if scale_mode == 2 else 1, n_part=scale_in.numel() if scale_mode == 2 else 1,
        **meta,
    )


def _rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"expected a [num_tokens, hidden_size] tensor, got shape {tuple(x.shape)}")
    return x if x.stride(-1) == 1 else x.contiguous()


def _group_scales(t: int, g: int, col_major: bool, device: torch.device) -> torch.Tensor:
    if col_major:
        return torch.empty((g, t), dtype=torch.float32, device=device).t()
    return torch.empty((t, g), dtype=torch.float32, device=device)


def triton_rms_norm_quant(
    x: torch.Tensor, weight: torch.Tensor, eps: float, quant_dtype: str,
    residual: torch.Tensor | None = None, scale_ub: torch.Tensor | None = None,
    config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused [residual add +] RMSNorm + dynamic per-token quantization, one read of ``x``.

    Args:
        x: [T, H] bf16 / fp16 / fp32; weight: [H] same dtype; residual: [T, H] same dtype,
            updated in place to the dtype-rounded ``x + residual`` (vLLM's convention);
        quant_dtype: ``"fp8"`` or ``"int8"``; scale_ub: fp32 scalar tensor or None.
        config: launch override (``LaunchConfig``), else ``default_config``.

    Returns:
        (codes [T, H] float8_e4m3fn / int8, scales fp32 [T, 1]).
    """
    x = _rows(x)
    t, h = x.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[quant_dtype], device=x.device)
    scales = torch.empty((t, 1), dtype=torch.float32, device=x.device)
    _launch_rowquant(x, codes, scales, quant_dtype, weight=weight, residual=residual, eps=eps,
                     scale_ub=scale_ub, config=config)
    return codes, scales


def triton_rms_norm_static_quant(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, eps: float, quant_dtype: str,
    residual: torch.Tensor | None = None, config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused [residual add +] RMSNorm + quantization with a static per-tensor scale, one read
    of ``x``: ``_rowquant_kernel`` with ``SCALE_MODE=1`` (the kernel of ``scaled_quant``'s
    static path, here with the norm).

    Codes are ``RNE(clamp(y * (1 / scale)))`` with ``y = rms_norm(x [+ residual]) * weight``
    in fp32 and ``1 / scale`` computed once per program in fp32 (vLLM's convention).

    Args:
        x: [T, H] bf16 / fp16 / fp32; weight: [H] same dtype; scale: fp32, one element
            (``[1]``), device memory (read by the kernel: no host sync); residual: [T, H]
            same dtype, updated in place to the dtype-rounded ``x + residual``;
        quant_dtype: ``"fp8"`` or ``"int8"``; config: launch override, else ``default_config``
            (the per-token norm's tuned rows: same bytes per row, one reduction fewer).

    Returns:
        (codes [T, H] float8_e4m3fn / int8, ``scale`` itself).

    Raises:
        ValueError: ``scale`` not a one-element fp32 tensor.
    """
    if scale.dtype != torch.float32 or scale.numel() != 1:
        raise ValueError(f"scale: expected one fp32 element, got {scale.dtype} {tuple(scale.shape)}")
    x = _rows(x)
    t, h = x.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[quant_dtype], device=x.device)
    _launch_rowquant(x, codes, scale, quant_dtype, weight=weight, residual=residual, eps=eps,
                     scale_mode=1, scale_in=scale, config=config)
    return codes, scale


def triton_rms_norm_group_quant(
    x: torch.Tensor, weight: torch.Tensor, eps: float, quant_dtype: str, group_size: int,
    col_major: bool = False, residual: torch.Tensor | None = None, config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused [residual add +] RMSNorm + dynamic per-group quantization, one read of ``x``.

    Returns:
        (codes [T, H], scales fp32 [T, H / group_size]: contiguous, or with ``col_major``
        the transposed view of a contiguous [G, T] tensor). Arguments as
        ``triton_rms_norm_quant``; ``residual`` is updated in place.
    """
    x = _rows(x)
    t, h = x.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[quant_dtype], device=x.device)
    scales = _group_scales(t, h // group_size, col_major, x.device)
    _launch_rowquant(x, codes, scales, quant_dtype, weight=weight, residual=residual, eps=eps,
                     group_size=group_size, config=config)
    return codes, scales


def triton_scaled_quant(
    x: torch.Tensor, quant_dtype: str, scale: torch.Tensor | None = None, per_token: bool = True,
    scale_ub: torch.Tensor | None = None, config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standalone quantization of ``x`` [T, H].

    ``scale`` given (fp32 [1]): static, returned as is. Else dynamic: per token (one pass,
    scales [T, 1], optional ``scale_ub``) or per tensor (two passes: an amax kernel writing one
    partial max per program, then quantization, whose programs reduce the partials; scale [1]).
    """
    x = _rows(x)
    t, h = x.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[quant_dtype], device=x.device)
    if scale is not None:
        _launch_rowquant(x, codes, scale, quant_dtype, scale_mode=1, scale_in=scale, config=config)
        return codes, scale
    if per_token:
        scales = torch.empty((t, 1), dtype=torch.float32, device=x.device)
        _launch_rowquant(x, codes, scales, quant_dtype, scale_ub=scale_ub, config=config)
        return codes, scales
    scales = torch.empty(1, dtype=torch.float32, device=x.device)
    if t:
        _, gs, _ = _tile(h, 0)
        n_part = min(t, 4 * device_facts(x.device).sms)
        partials = torch.empty(n_part, dtype=torch.float32, device=x.device)  # every one written by pass 1
        cfg = config or default_config(t, h, x.element_size(), "scaled_quant")
        _amax_kernel[(n_part,)](x, partials, t, h, x.stride(0), BLOCK=gs, num_warps=int(cfg.num_warps))
        _launch_rowquant(x, codes, scales, quant_dtype, scale_mode=2, scale_in=partials, config=config)
    return codes, scales


def triton_group_quant(
    x: torch.Tensor, quant_dtype: str, group_size: int, col_major: bool = False,
    config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standalone dynamic per-group quantization of ``x`` [T, H] (scales as
    ``triton_rms_norm_group_quant``)."""
    x = _rows(x)
    t, h = x.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[quant_dtype], device=x.device)
    scales = _group_scales(t, h // group_size, col_major, x.device)
    _launch_rowquant(x, codes, scales, quant_dtype, group_size=group_size, config=config)
    return codes, scales
