"""The RMSNorm launcher: validates a launch config, plans the grid (cached per shape) and launches."""

import functools

import torch

from normbench.kernels._triton import cdiv, device_facts
from normbench.kernels.base import Outputs
from normbench.kernels.rmsnorm.configs import LaunchConfig, default_config
from normbench.kernels.rmsnorm.triton_kernels import _rms_norm_kernel


@functools.lru_cache(maxsize=4096)
def _plan(n_rows: int, n_cols: int, elem_bytes: int, residual: bool, device: torch.device, config):
    """(kernel, grid, constexpr/launch kwargs) of one shape; cached so a call does no queries."""
    facts = device_facts(device)
    sms, pdl_ok = facts.sms, facts.pdl
    cfg = config if config is not None else default_config(n_rows, n_cols, elem_bytes, residual, pdl_ok)
    if cfg.block_n & (cfg.block_n - 1) or cfg.rows & (cfg.rows - 1):
        raise ValueError(f"block_n and rows must be powers of 2: {cfg}")
    if cfg.pdl and not pdl_ok:
        raise ValueError(f"{cfg}: programmatic dependent launch needs an SM90+ GPU and Triton >= 3.3")
    chunked = cfg.block_n < n_cols
    if chunked and (cfg.rows != 1 or cfg.reload or cfg.stages > 1):
        raise ValueError(
            f"{cfg}: the chunked kernel (block_n < hidden_size {n_cols}) takes rows=1, reload=False, stages=1"
        )
    if cfg.stages > 1 and not cfg.programs_per_sm:
        raise ValueError(f"{cfg}: stages > 1 pipelines the persistent loop: set programs_per_sm")
    if cfg.stages > 1 and cfg.reload and residual:
        # The pipeliner would issue tile i+1's re-read of r before tile i+1 stores r.
        raise ValueError(f"{cfg}: reload with a residual cannot be pipelined (stages > 1)")
    tiles = cdiv(n_rows, cfg.rows)
    programs = tiles if cfg.programs_per_sm == 0 else min(tiles, cfg.programs_per_sm * sms)
    meta = {
        "BLOCK_N": cfg.block_n, "HAS_RESIDUAL": residual, "PDL": cfg.pdl,
        "PERSISTENT": cfg.programs_per_sm > 0, "HINTS": cfg.hints, "num_warps": cfg.num_warps,
    }
    if cfg.pdl:
        meta["launch_pdl"] = True
    if cfg.maxnreg:
        meta["maxnreg"] = cfg.maxnreg
    meta.update(CHUNKED=chunked, ROWS=cfg.rows, RELOAD=cfg.reload, STAGES=max(1, cfg.stages))
    return _rms_norm_kernel, (programs,), meta


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    residual_out: torch.Tensor | None = None,
    config: LaunchConfig | None = None,
) -> Outputs:
    """normbench's Triton RMSNorm, optionally fused with the residual add.

    Args:
        x: [num_tokens, hidden_size], bfloat16/float16/float32, unit stride along hidden_size.
        weight: [hidden_size], contiguous (any float dtype; read as fp32).
        eps: added to mean(x**2) before the reciprocal square root.
        residual: optional [num_tokens, hidden_size] in x's dtype, unit column stride.
        out, residual_out: where to write (allocated when None). Passing ``out=x`` and
            ``residual_out=residual`` gives vLLM's in-place behaviour; each row is read in
            full before any of it is written, so aliasing is safe.
        config: a ``LaunchConfig`` (tuning); None takes ``default_config``.

    Returns:
        ``(out,)``, or ``(out, residual_out)`` with ``residual_out = x + residual`` rounded
        to the dtype. ``out = r * rsqrt(mean(r**2) + eps) * weight`` computed in fp32
        (r = x, or the rounded sum) and rounded once.

    Raises:
        ValueError: shapes, dtypes or strides the kernel does not take, or a bad ``config``.
    """
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be 2-D with unit stride along hidden_size, got {tuple(x.shape)} strides {x.stride()}")
    n_rows, n_cols = x.shape
    if weight.shape != (n_cols,) or not weight.is_contiguous():
        raise ValueError(f"weight must be a contiguous [{n_cols}] tensor, got {tuple(weight.shape)}")
    if out is None:
        out = torch.empty_like(x)
    tensors = [out]
    if residual is not None:
        if residual_out is None:
            residual_out = torch.empty_like(x)
        tensors += [residual, residual_out]
    for t in tensors:
        if t.shape != x.shape or t.dtype != x.dtype or t.stride(1) != 1:
            raise ValueError(
                f"outputs and residual must be {tuple(x.shape)} {x.dtype} with unit column stride, "
                f"got {tuple(t.shape)} {t.dtype} strides {t.stride()}"
            )
    if n_rows == 0:
        return (out,) if residual is None else (out, residual_out)
    kernel, grid, meta = _plan(n_rows, n_cols, x.element_size(), residual is not None, x.device, config)
    # Without a residual the residual pointers are never read (HAS_RESIDUAL is constexpr).
    res, res_out = (residual, residual_out) if residual is not None else (x, out)
    kernel[grid](
        x, res, weight, out, res_out,
        n_rows, n_cols,
        x.stride(0), res.stride(0), out.stride(0), res_out.stride(0),
        eps,
        **meta,
    )
    return (out,) if residual is None else (out, residual_out)
