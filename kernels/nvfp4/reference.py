"""NVFP4 family: inputs, float64 reference and check (rules: the package docstring, "Correctness")."""

from __future__ import annotations

import math

import torch

from normbench.kernels.base import (
    CheckResult, Inputs, Outputs, Params, TORCH_DTYPES, Tolerance, check_close, merge_checks, normal_draws,
    relative_errors,
)
from normbench.kernels.nvfp4.format import (
    BLOCK_SIZE, DTYPE_EPS, E2M1_MAX, E2M1_THRESHOLDS, E4M3_MAX, decode_e2m1, encode_e2m1, output_scale_fp32,
    pack_codes, round_e4m3, round_to_format, scale_shape, swizzle_scales, unpack_codes, unswizzle_scales,
)
from normbench.ops import NVFP4_TOLERANCE

OPS = ("rms_norm_nvfp4_quant", "fused_add_rms_norm_nvfp4_quant")

#: This family's default tolerances: the op metadata's (``normbench.ops.NVFP4_TOLERANCE``),
#: which the kernel runner applies unless a suite overrides them.
DEFAULT_TOLERANCES = {dtype: Tolerance(**tol) for dtype, tol in NVFP4_TOLERANCE.items()}


# =========================================================================== reference
def _norm64(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, eps: float):
    """(h in dtype, y in float64): h = dtype(x + residual) or x; y = RMSNorm(h) * weight."""
    dtype = x.dtype
    if residual is not None:
        h = round_to_format(x.to(torch.float64) + residual.to(torch.float64), dtype).to(dtype)
    else:
        h = x
    h64 = h.to(torch.float64)
    rstd = torch.rsqrt(h64.square().mean(dim=-1, keepdim=True) + eps)
    return h, h64 * rstd * weight.to(torch.float64)


def calibrated_global_scale(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, eps: float, rows: int = 2048
) -> torch.Tensor:
    """float32 [1] ``448 * 6 / amax(y)`` with y the float64 norm output.

    Computed in chunks of ``rows`` rows to bound float64 memory. Returns 1.0
    when amax is 0 (an all-zero input).
    """
    amax = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], rows):
        r = residual[i : i + rows] if residual is not None else None
        _, y = _norm64(x[i : i + rows], weight, r, eps)
        amax = torch.maximum(amax, y.abs().max())
    gs = torch.where(amax > 0, (E4M3_MAX * E2M1_MAX) / torch.where(amax > 0, amax, 1.0), 1.0)
    return gs.to(torch.float32).reshape(1)


def _reference_parts(params: Params, inputs: Inputs) -> dict[str, torch.Tensor]:
    """Every intermediate of the reference (float64 unless noted).

    y64 [m, n] exact norm output; yq32 [m, n] float32, y rounded to dtype;
    s_pre [m, n/16] amax/6*gs before E4M3 rounding; s8 [m, n/16] E4M3 values;
    v32 [m, n] float32 y*out_scale; codes int64 [m, n]; h (dtype) residual out.
    """
    x, w, gs = inputs["x"], inputs["weight"], inputs["global_scale"]
    res = inputs.get("residual") if params.get("residual") else None
    m, n = x.shape
    h, y64 = _norm64(x, w, res, float(params["eps"]))
    yq = round_to_format(y64, x.dtype)
    amax = yq.abs().reshape(m, n // BLOCK_SIZE, BLOCK_SIZE).amax(dim=-1)
    s_pre = amax / E2M1_MAX * gs.to(torch.float64).reshape(())
    s8 = round_e4m3(s_pre)
    yq32 = yq.to(torch.float32)
    v32 = _block_mul(yq32, output_scale_fp32(s8, gs))
    return {"y64": y64, "yq32": yq32, "s_pre": s_pre, "s8": s8, "v32": v32, "codes": encode_e2m1(v32), "h": h}


def _block_mul(y: torch.Tensor, per_block: torch.Tensor) -> torch.Tensor:
    m, n = y.shape
    return (y.reshape(m, n // BLOCK_SIZE, BLOCK_SIZE) * per_block.unsqueeze(-1)).reshape(m, n)


# =========================================================================== the family
class NVFP4Family:
    """Inputs, float64 reference and check of the NVFP4 ops (see the package docstring)."""

    def make_inputs(self, op: str, params: Params, device: torch.device, seed: int) -> Inputs:
        """x ~ N(0,1), weight ~ N(1, 0.1), residual ~ N(0,1) in ``params["dtype"]``;
        global_scale float32 [1] calibrated on the float64 norm output."""
        m, n = int(params["num_tokens"]), int(params["hidden_size"])
        dtype = TORCH_DTYPES[params["dtype"]]
        randn = normal_draws(device, seed)

        inputs: Inputs = {"x": randn(m, n).to(dtype), "weight": (1.0 + 0.1 * randn(n)).to(dtype)}
        if params.get("residual"):
            inputs["residual"] = randn(m, n).to(dtype)
        inputs["global_scale"] = calibrated_global_scale(
            inputs["x"], inputs["weight"], inputs.get("residual"), float(params["eps"])
        )
        return inputs

    def reference(self, op: str, params: Params, inputs: Inputs) -> Outputs:
        """(codes uint8 [m, n/2], scales float8_e4m3fn swizzled[, residual_out dtype [m, n]]).

        The intermediates are attached to the returned codes tensor so that
        ``check`` does not depend on inputs that an in-place provider mutated.
        """
        parts = _reference_parts(params, inputs)
        packed = pack_codes(parts["codes"])
        scales = swizzle_scales(parts["s8"].to(torch.float32).to(torch.float8_e4m3fn))
        packed._nvfp4_parts = parts  # type: ignore[attr-defined]
        if params.get("residual"):
            return packed, scales, parts["h"]
        return packed, scales

    def check(
        self, op: str, params: Params, inputs: Inputs, out: Outputs, ref: Outputs, tol: Tolerance
    ) -> CheckResult:
        """See the package docstring ("Correctness") for the rule."""
        parts = getattr(ref[0], "_nvfp4_parts", None) or _reference_parts(params, inputs)
        m, n = parts["y64"].shape
        dtype = TORCH_DTYPES[params["dtype"]]
        n_out = 3 if params.get("residual") else 2
        if len(out) != n_out:
            return CheckResult(False, {}, f"expected {n_out} outputs, got {len(out)}")
        packed, scales = out[0], out[1]
        device = parts["y64"].device
        packed = packed.to(device)
        scales = scales.to(device)

        if packed.dtype != torch.uint8 or tuple(packed.shape) != (m, n // 2):
            return CheckResult(False, {}, f"codes: {packed.dtype} {tuple(packed.shape)}, expected uint8 {(m, n // 2)}")
        sshape = scale_shape(m, n)
        if scales.dtype not in (torch.float8_e4m3fn, torch.uint8) or tuple(scales.shape) != sshape:
            return CheckResult(
                False, {}, f"scales: {scales.dtype} {tuple(scales.shape)}, expected float8_e4m3fn {sshape}"
            )
        sbytes = scales.view(torch.uint8)

        # 1. padding of the swizzled buffer: padded k columns of real rows must be
        # zero (a GEMM multiplies them with the zero-filled K padding: a NaN there
        # poisons real outputs); padded rows only feed output rows that are
        # dropped, so nonzero bytes there are reported, not failed.
        mp, kp = sshape
        pad_cols = torch.zeros((mp, kp), dtype=torch.uint8, device=device)
        pad_cols[:m, n // BLOCK_SIZE :] = 1
        pad_rows = torch.zeros((mp, kp), dtype=torch.uint8, device=device)
        pad_rows[m:, :] = 1
        sw_cols = swizzle_scales(pad_cols) != 0
        sw_rows = swizzle_scales(pad_rows) != 0
        cols_nonzero = int((sbytes[sw_cols] != 0).sum().item())
        metrics: dict[str, float] = {
            "scale_pad_cols_nonzero": float(cols_nonzero),
            "scale_pad_rows_nonzero": float((sbytes[sw_rows] != 0).sum().item()),
        }
        if cols_nonzero:
            return CheckResult(
                False, metrics, f"scales: {cols_nonzero} nonzero bytes in the padded k columns of the swizzle"
            )

        # 2. scales: exact, or one E4M3 step across a near-tie
        delta = 1.5 * DTYPE_EPS[dtype] + 2.0**-16
        s_bits = unswizzle_scales(sbytes, m, n).to(torch.int64)
        r_bits = parts["s8"].to(torch.float32).to(torch.float8_e4m3fn).view(torch.uint8).to(torch.int64)
        s_val = s_bits.to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float64)
        s_diff = s_bits != r_bits
        mid = (s_val + parts["s8"]) / 2
        s_ok = (~s_diff) | (
            ((s_bits - r_bits).abs() == 1) & ((parts["s_pre"] - mid).abs() <= delta * mid)
        )
        n_blocks = s_bits.numel()
        bad_scales = int((~s_ok).sum().item())
        metrics["scale_mismatch_rate"] = float(s_diff.sum().item()) / n_blocks
        if bad_scales:
            idx = tuple(int(i) for i in torch.nonzero(~s_ok)[0].tolist())
            return CheckResult(
                False,
                metrics,
                f"scales: {bad_scales}/{n_blocks} block scales wrong, first at (row, block) {idx}: "
                f"{s_val[idx].item():.6g} vs {parts['s8'][idx].item():.6g} "
                f"(pre-rounding {parts['s_pre'][idx].item():.6g})",
            )

        # 3. codes against the reference recomputed with the provider's scales
        codes = unpack_codes(packed)
        if bool(s_diff.any()):
            v = _block_mul(parts["yq32"], output_scale_fp32(s_val, inputs["global_scale"].to(device)))
            rcodes = encode_e2m1(v)
        else:
            v, rcodes = parts["v32"], parts["codes"]
        bad, flips = _code_errors(codes, rcodes, v.to(torch.float64), delta)
        n_codes = codes.numel()
        metrics["mismatch_rate"] = flips / n_codes
        # 5. dequantized error against the float64 norm output (reported even on failure)
        gs64 = inputs["global_scale"].to(device=device, dtype=torch.float64).reshape(())
        deq = _block_mul(decode_e2m1(codes), s_val) / gs64
        ref_deq = _block_mul(decode_e2m1(parts["codes"]), parts["s8"]) / gs64
        metrics["dequant_rel_err"], metrics["dequant_max_abs_err"] = relative_errors(deq, parts["y64"])
        metrics["ref_dequant_rel_err"], _ = relative_errors(ref_deq, parts["y64"])
        if bad:
            msg = f"codes: {bad}/{n_codes} codes wrong (not a one-step flip at a near-tie)"
            swapped = unpack_codes(((packed & 0xF) << 4) | (packed >> 4))
            if _code_errors(swapped, rcodes, v.to(torch.float64), delta)[0] < bad // 2:
                msg += "; swapping the nibbles would fix most: low nibble must hold the even element"
            else:
                first = tuple(int(i) for i in torch.nonzero(_wrong_codes(codes, rcodes, v.to(torch.float64), delta))[0].tolist())
                msg += f", first at {first}: {int(codes[first])} vs {int(rcodes[first])} (value {v[first].item():.6g})"
            return CheckResult(False, metrics, msg)
        if _over_cap(flips, n_codes, tol.mismatch_rate):
            return CheckResult(
                False, metrics, f"codes: near-tie flips {metrics['mismatch_rate']:.3g} > mismatch_rate {tol.mismatch_rate:g}"
            )
        if _over_cap(int(s_diff.sum().item()), n_blocks, tol.mismatch_rate):
            return CheckResult(
                False,
                metrics,
                f"scales: near-tie flips {metrics['scale_mismatch_rate']:.3g} > mismatch_rate {tol.mismatch_rate:g}",
            )
        if not math.isfinite(metrics["dequant_rel_err"]) or (
            metrics["dequant_rel_err"] > metrics["ref_dequant_rel_err"] + tol.norm_rel
        ):
            return CheckResult(
                False,
                metrics,
                f"dequantized: norm-wise relative error {metrics['dequant_rel_err']:.4g} > reference's "
                f"{metrics['ref_dequant_rel_err']:.4g} + {tol.norm_rel:g}",
            )
        result = CheckResult(True, metrics)
        if params.get("residual"):
            result = merge_checks(result, check_close("residual_out", out[2].to(device), ref[2].to(device), tol))
        return result


def _over_cap(count: int, total: int, rate: float) -> bool:
    """More tolerated flips than ``rate`` allows, with a binomial 3-sigma + 1
    allowance so that a case of a few blocks does not fail on one or two flips."""
    expected = rate * total
    return count > expected + 3.0 * math.sqrt(expected) + 1.0


def _zero_norm(codes: torch.Tensor) -> torch.Tensor:
    """Map the negative-zero code 0x8 to 0x0."""
    return torch.where(codes == 8, torch.zeros_like(codes), codes)


def _code_errors(codes: torch.Tensor, rcodes: torch.Tensor, v: torch.Tensor, delta: float) -> tuple[int, int]:
    """(codes that are wrong, codes that differ by a tolerated near-tie flip)."""
    wrong = _wrong_codes(codes, rcodes, v, delta)
    diff = _zero_norm(codes) != _zero_norm(rcodes)
    n_wrong = int(wrong.sum().item())
    return n_wrong, int(diff.sum().item()) - n_wrong


def _wrong_codes(codes: torch.Tensor, rcodes: torch.Tensor, v: torch.Tensor, delta: float) -> torch.Tensor:
    """Mask of codes that differ from the reference other than by a one-step near-tie flip."""
    c, r = _zero_norm(codes), _zero_norm(rcodes)
    diff = c != r
    wrong = torch.zeros_like(diff)
    if not bool(diff.any()):
        return wrong
    signed = lambda k: torch.where((k & 8) != 0, -(k & 7), k & 7)  # noqa: E731
    sc, sr = signed(c[diff]), signed(r[diff])
    step = (sc - sr).abs() == 1
    lo_mag = torch.minimum(sc.abs(), sr.abs())  # the threshold between them is below index lo+1
    thr = torch.tensor(E2M1_THRESHOLDS, dtype=torch.float64, device=v.device)[lo_mag.clamp(max=6)]
    near = (v[diff].abs() - thr).abs() <= delta * thr
    wrong[diff] = ~(step & near)
    return wrong


FAMILY = NVFP4Family()
