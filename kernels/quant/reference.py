"""Quantization family: rules, inputs, float64 reference and check (semantics: ``__init__``'s docstring)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch

from normbench.kernels.base import (
    CheckResult, Inputs, Outputs, Params, Tolerance, TORCH_DTYPES, check_close, merge_checks, normal_draws,
)
from normbench.kernels.providers._family import Unsupported

#: [residual add +] RMSNorm + quantization with a given (static) per-tensor scale.
STATIC_OP = "rms_norm_static_quant"
SUITE_OPS = ("scaled_quant", "rms_norm_quant", "rms_norm_group_quant", STATIC_OP)
#: Internal op of the unfused per-group compositions (not in ``normbench.ops.OPS``).
GROUP_QUANT = "group_quant"
NORM_OPS = ("rms_norm_quant", "rms_norm_group_quant", STATIC_OP)

QUANT_TORCH_DTYPES = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}
QMAX = {"fp8": 448.0, "int8": 127.0}
QMIN = {"fp8": -448.0, "int8": -128.0}
#: vLLM ``min_scaling_factor``: fp8 ``1 / (448 * 512)`` (as fp32), int8 ``FLT_EPSILON``.
MIN_SCALE = {
    "fp8": float(torch.tensor(1.0 / (448.0 * 512.0), dtype=torch.float32)),
    "int8": float(torch.finfo(torch.float32).eps),
}
#: Unit roundoff of each activation dtype (half its epsilon).
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24}
#: Slack for fp32 arithmetic (reductions, rsqrt, reciprocal scales) in every rule below.
FP32_SLACK = 2.0**-16


def granularity(op: str, params: Params) -> str:
    """``"tensor"``, ``"token"`` or ``"group"``: the blocks that share one scale."""
    if op == STATIC_OP:
        return "tensor"
    if op == "scaled_quant":
        if params.get("static_scale") or params.get("scale_granularity") == "per_tensor":
            return "tensor"
        return "token"
    return "token" if op == "rms_norm_quant" else "group"


def is_static(op: str, params: Params) -> bool:
    """Whether the case quantizes with the given fp32 ``inputs["scale"]`` [1]."""
    return op == STATIC_OP or (op == "scaled_quant" and bool(params.get("static_scale")))


def has_residual(op: str, params: Params) -> bool:
    return op in NORM_OPS and bool(params.get("residual", False))


def has_scale_ub(op: str, params: Params) -> bool:
    """``scale_ub`` is an axis of ``rms_norm_quant``; the unfused compositions also pass it
    to their per-token ``scaled_quant`` half (dynamic per-token only)."""
    return bool(params.get("scale_ub", False)) and granularity(op, params) == "token"


def scales_col_major(params: Params) -> bool:
    return params.get("scale_layout", "row_major") == "col_major"


def check_quant_dtype(params: Params) -> str:
    qd = params.get("quant_dtype", "fp8")
    if qd not in QMAX:
        raise Unsupported(f"quant_dtype {qd!r}: this family quantizes to fp8 or int8")
    return qd


# =========================================================================== reference


@dataclass
class _RefParts:
    """Float64 internals of one reference computation (kept for ``check``).

    Attributes:
        y: [T, H] float64, the real-valued values that get quantized.
        scale: per-block fp32 scales as float64: [1], [T, 1] or [T, G].
        amax: per-block amax of ``y`` (before ``scale_ub`` and the floor), same shape.
        gran, group_size: the blocks (see ``granularity``).
    """

    y: torch.Tensor
    scale: torch.Tensor
    amax: torch.Tensor
    gran: str
    group_size: int

    def expand(self, blocks: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """Per-block values of rows [r0, r1) broadcast to [r1 - r0, H]."""
        b = blocks if self.gran == "tensor" else blocks[r0:r1]
        if self.gran == "group":
            return b.repeat_interleave(self.group_size, dim=1)
        return b.expand(r1 - r0, self.y.shape[1])

    def real_values(self, r0: int = 0, r1: int | None = None) -> torch.Tensor:
        """``v = y / scale`` of rows [r0, r1) (float64): what the codes round."""
        r1 = self.y.shape[0] if r1 is None else r1
        return self.y[r0:r1] / self.expand(self.scale, r0, r1)


def _row_chunks(t: int, h: int, elems: int = 1 << 22):
    """Row ranges of at most ``elems`` elements (bounds the float64 temporaries)."""
    step = max(1, elems // max(h, 1))
    return [(r0, min(t, r0 + step)) for r0 in range(0, t, step)]


def _norm_f64(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None):
    """(y float64 real-valued, residual_out in x.dtype or None), the reference's norm."""
    r = x.to(torch.float64)
    res_out = None
    if residual is not None:
        res_out = (r + residual.to(torch.float64)).to(x.dtype)
        r = res_out.to(torch.float64)
    rstd = torch.rsqrt(r.square().mean(dim=-1, keepdim=True) + eps)
    return r * rstd * weight.to(torch.float64), res_out


def _block_amax(a: torch.Tensor, gran: str, group_size: int) -> torch.Tensor:
    """Per-block amax of ``a`` [T, H], shaped [1], [T, 1] or [T, G]."""
    if gran == "tensor":
        return a.abs().amax().reshape(1)
    if gran == "token":
        return a.abs().amax(dim=-1, keepdim=True)
    t, h = a.shape
    return a.reshape(t, h // group_size, group_size).abs().amax(dim=-1)


def round_e4m3(v: torch.Tensor) -> torch.Tensor:
    """Round float64 ``v`` (already within [-448, 448]) to the nearest e4m3 value, ties to even.

    Exact in float64: ``frexp`` gives the binade, the quantum is ``2**(e - 3)`` (3 mantissa
    bits), ``2**-9`` below the smallest normal ``2**-6``; ``torch.round`` is half-to-even.
    """
    _, exp = torch.frexp(v)
    e = (exp - 1).clamp(min=-6)  # floor(log2 |v|), clamped to the subnormal range
    quantum = torch.ldexp(torch.ones_like(v), e - 3)
    return torch.round(v / quantum) * quantum


def quantize_f64(v: torch.Tensor, quant_dtype: str) -> torch.Tensor:
    """Codes of the real values ``v = y / scale`` (float64): clamp, RNE, stored dtype."""
    v = v.clamp(QMIN[quant_dtype], QMAX[quant_dtype])
    if quant_dtype == "fp8":
        return round_e4m3(v).to(torch.float8_e4m3fn)  # exact: already on the grid
    return torch.round(v).to(torch.int8)


def _reference_parts(op: str, params: Params, inputs: Inputs) -> tuple[Outputs, _RefParts]:
    qd = check_quant_dtype(params)
    gran = granularity(op, params)
    gs = int(params.get("group_size", 0) or 0)
    x = inputs["x"]
    res_out = None
    if op in NORM_OPS:
        y, res_out = _norm_f64(
            x, inputs["weight"], float(params["eps"]), inputs["residual"] if has_residual(op, params) else None
        )
    else:
        y = x.to(torch.float64)
    amax = _block_amax(y, gran, gs)
    if is_static(op, params):
        scale32 = inputs["scale"].to(torch.float32).reshape(1)
    else:
        a = amax
        if has_scale_ub(op, params):
            a = torch.minimum(a, inputs["scale_ub"].to(torch.float64))
        scale32 = (a / QMAX[qd]).clamp(min=MIN_SCALE[qd]).to(torch.float32)
    parts = _RefParts(y, scale32.to(torch.float64), amax, gran, gs)
    t, h = y.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[qd], device=y.device)
    for r0, r1 in _row_chunks(t, h):
        codes[r0:r1] = quantize_f64(parts.real_values(r0, r1), qd)
    if gran == "group" and scales_col_major(params):
        scales_out = scale32.t().contiguous().t()
    else:
        scales_out = scale32.contiguous()
    outs: Outputs = (codes, scales_out) + ((res_out,) if res_out is not None else ())
    return outs, parts


# id(reference codes tensor) -> (weakref to it, parts): check() finds the float64 internals
# of the reference it is handed without recomputing them from (possibly mutated) inputs.
_PARTS: dict[int, tuple[weakref.ref, _RefParts]] = {}


def _remember(codes: torch.Tensor, parts: _RefParts) -> None:
    key = id(codes)
    _PARTS[key] = (weakref.ref(codes), parts)
    weakref.finalize(codes, _PARTS.pop, key, None)


def _recall(codes: torch.Tensor) -> _RefParts | None:
    hit = _PARTS.get(id(codes))
    if hit is not None and hit[0]() is codes:
        return hit[1]
    return None


# =========================================================================== check


def _code_index(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed step index, NaN mask) of fp8 / int8 codes: adjacent codes differ by 1.

    e4m3fn magnitudes are monotonic in their 7 low bits (0x7F = NaN), so the index is
    ``sign * (bits & 0x7F)``; +0 and -0 are both 0. int8: the code itself.
    """
    if codes.dtype == torch.int8:
        return codes.to(torch.int32), torch.zeros_like(codes, dtype=torch.bool)
    bits = codes.contiguous().view(torch.uint8).to(torch.int32)
    mag = bits & 0x7F
    return torch.where(bits >= 0x80, -mag, mag), mag == 0x7F


def _rules(op: str, params: Params) -> tuple[float, float]:
    """(tie_rel, scale_rtol) for this case, see ``QuantFamily.check``."""
    u = UNIT_ROUNDOFF[params["dtype"]] if op in NORM_OPS else 0.0
    return 6.0 * u + FP32_SLACK, 3.0 * u + FP32_SLACK


def _first(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0].tolist())


class QuantFamily:
    """``OpFamily`` of ``scaled_quant``, ``rms_norm_quant``, ``rms_norm_group_quant`` (and the
    internal ``group_quant``); see the module docstring for semantics."""

    ops = SUITE_OPS + (GROUP_QUANT,)

    def make_inputs(self, op: str, params: Params, device: torch.device, seed: int) -> Inputs:
        """Fresh inputs drawn from ``seed`` on ``device`` (float32 draws, then rounded to dtype).

        * norm ops: ``x``, ``residual`` ~ N(0, 1), ``weight`` ~ 1 + 0.1 N(0, 1) (vLLM's
          benchmark); with ``scale_ub`` a 0-d fp32 ``scale_ub`` = min(90th percentile of
          the row amaxes of the norm output, 0.95 x the largest), so that some rows (at
          least the largest) are clamped.
        * ``rms_norm_static_quant``: the norm inputs, and an fp32 ``scale`` [1] =
          ``static_scale_factor * amax(|y|) / qmax`` with ``y`` the norm output computed in
          fp32 (a calibration on this very batch): factor 1 maps the largest value to qmax (to
          fp32 rounding of the amax); a factor below 1 makes every value with
          ``|y| > factor * amax`` saturate at +-qmax (a calibration that saw smaller
          activations than these).
        * ``scaled_quant`` / ``group_quant``: ``x`` ~ 3 N(0, 1); with ``static_scale`` an fp32
          ``scale`` [1] = amax(|x|) / qmax (the largest value maps to qmax exactly).

        Raises:
            ValueError: ``static_scale_factor`` not positive.
        """
        device = torch.device(device)
        qd = check_quant_dtype(params)
        t, h = int(params["num_tokens"]), int(params["hidden_size"])
        dtype = TORCH_DTYPES[params["dtype"]]
        randn = normal_draws(device, seed)

        if op in NORM_OPS:
            inputs = {"x": randn(t, h).to(dtype), "weight": (1.0 + 0.1 * randn(h)).to(dtype)}
            if has_residual(op, params):
                inputs["residual"] = randn(t, h).to(dtype)
            if has_scale_ub(op, params) or op == STATIC_OP:
                r = inputs["x"].float()
                if "residual" in inputs:
                    r = (r + inputs["residual"].float()).to(dtype).float()
                y = r * torch.rsqrt(r.square().mean(-1, keepdim=True) + float(params["eps"])) * inputs["weight"].float()
                amax = y.abs().amax(dim=-1)
                if op == STATIC_OP:
                    factor = float(params.get("static_scale_factor", 1.0))
                    if not factor > 0:
                        raise ValueError(f"static_scale_factor {factor!r}: must be positive")
                    inputs["scale"] = (factor * amax.max() / QMAX[qd]).to(torch.float32).reshape(1)
                else:
                    ub = torch.minimum(torch.quantile(amax, 0.9), 0.95 * amax.max())
                    inputs["scale_ub"] = ub.to(torch.float32).reshape(())
            return inputs
        inputs = {"x": (3.0 * randn(t, h)).to(dtype)}
        if op == "scaled_quant" and params.get("static_scale"):
            amax = inputs["x"].float().abs().amax()
            inputs["scale"] = (amax / QMAX[qd]).to(torch.float32).reshape(1)
        return inputs

    def reference(self, op: str, params: Params, inputs: Inputs) -> Outputs:
        """``(codes, scales[, residual_out])`` by the module docstring's rules, in float64."""
        outs, parts = _reference_parts(op, params, inputs)
        _remember(outs[0], parts)
        return outs

    def check(
        self, op: str, params: Params, inputs: Inputs, out: Outputs, ref: Outputs, tol: Tolerance
    ) -> CheckResult:
        """Compare a provider's quantized outputs with the reference's.

        Let ``u`` be the unit roundoff of the activation dtype for the norm ops (bf16 2^-8,
        fp16 2^-11, fp32 2^-24) and ``u = 0`` for ``scaled_quant`` / ``group_quant`` (their
        input is exact). A provider may round the norm output to the dtype twice (HF, vLLM),
        add the residual in fp32 and compute its scale from those values: its ``y`` and its
        scale then each differ from the reference's by at most 3u relatively, so its real
        value ``v' = y'/s'`` differs from ``v = y/s`` by at most about ``6u |v|``.

        1. Structure: as many outputs as the reference, codes ``[T, H]`` in
           float8_e4m3fn / int8, scales fp32 of the reference's shape, and for
           ``scale_layout=col_major`` a ``[T, G]`` view of a contiguous ``[G, T]`` tensor
           (strides ``(1, T)``).
        2. ``residual_out``: ``base.check_close`` within one ulp of the dtype
           (``rtol = 2u``, ``norm_rel = u``; the sum is rounded once either way).
        3. Scales: finite everywhere; where the block amax is > 0,
           ``|s - s_ref| <= scale_rtol * s_ref`` with ``scale_rtol = 3u + 2^-16``; a block of
           zeros may have any finite scale >= 0 (its codes must be 0). Static scales
           (``rms_norm_static_quant``, ``scaled_quant`` with ``static_scale``): ``s_ref`` is
           the input scale, which providers return unchanged, and ``y / s_ref`` may exceed
           qmax: those codes must be the saturated +-qmax (rule 4, whose window is clamped too).
        4. Codes: each code equals the reference's, or lies between the codes of
           ``v * (1 - tie_rel)`` and ``v * (1 + tie_rel)`` (same clamp and rounding), where
           ``v = y / s_ref`` is the reference's real value and ``tie_rel = 6u + 2^-16``: a
           tie mismatch. Where that window holds at most one rounding boundary (always for
           fp8: its relative code spacing, >= 2^-4, exceeds the window's width; for int8 with
           fp16/fp32 inputs; for bf16 int8 below |v| of about 21) this is the one-step rule:
           a code one step away is accepted only where ``v`` is within ``tie_rel * |v|`` of
           the boundary (midpoint) between the two codes. bf16 int8 codes near 127 are
           ambiguous by up to 3 steps (a step is 1/127 = 2u there), and accepted so.
           Anything else (NaN codes, codes outside the window) fails. ``mismatch_rate`` =
           tie mismatches / codes; ``max_code_step`` = the largest step difference.
        5. Dequantized error: ``deq = codes * s`` against the reference's real values
           saturated to the code range, ``y_sat = clamp(y, qmin * s_ref, qmax * s_ref)``:
           ``deq_rel_err = ||deq - y_sat|| / ||y_sat||`` must not exceed the reference's own
           ``ref_deq_rel_err + 2 tie_rel ||y|| / ||y_sat|| + 2 scale_rtol`` (what the tie
           flips and the scale tolerance can add).

        ``tol`` (the stage's per-dtype tolerance) is not applied: these bounds follow from
        the dtypes. In particular ``tol.mismatch_rate`` is not an upper bound here: legit
        HF-rounding providers show about 3% (fp8) and 6.5% (int8) tie mismatches for bf16
        and 0.4% / 0.8% for fp16 against the real-valued reference (more than the suites'
        default 0.02), all inside the per-element tie windows.

        Metrics: ``mismatch_rate``, ``tie_mismatches``, ``hard_mismatches``, ``max_code_step``,
        ``deq_rel_err``, ``ref_deq_rel_err``, ``scale_max_rel_err`` (and ``residual_out_*``).
        """
        qd = check_quant_dtype(params)
        names = ("codes", "scales", "residual_out")[: len(ref)]
        if not isinstance(out, (tuple, list)) or len(out) != len(ref):
            got = len(out) if isinstance(out, (tuple, list)) else type(out).__name__
            return CheckResult(False, {}, f"expected {len(ref)} outputs ({', '.join(names)}), got {got}")
        codes, scales = out[0], out[1]
        ref_codes, ref_scales = ref[0], ref[1]
        want = QUANT_TORCH_DTYPES[qd]
        if codes.dtype != want:
            return CheckResult(False, {}, f"codes: dtype {codes.dtype}, expected {want}")
        if tuple(codes.shape) != tuple(ref_codes.shape):
            return CheckResult(False, {}, f"codes: shape {tuple(codes.shape)}, expected {tuple(ref_codes.shape)}")
        if scales.dtype != torch.float32:
            return CheckResult(False, {}, f"scales: dtype {scales.dtype}, expected torch.float32")
        if tuple(scales.shape) != tuple(ref_scales.shape):
            return CheckResult(False, {}, f"scales: shape {tuple(scales.shape)}, expected {tuple(ref_scales.shape)}")
        if granularity(op, params) == "group":
            t, g = scales.shape
            if scales_col_major(params) and t > 1 and g > 1 and scales.stride() != (1, t):
                return CheckResult(
                    False, {}, f"scales: strides {scales.stride()}, expected (1, {t}) (col_major: a [G, T] tensor transposed)"
                )
            if not scales_col_major(params) and t > 1 and g > 1 and scales.stride() != (g, 1):
                return CheckResult(False, {}, f"scales: strides {scales.stride()}, expected ({g}, 1) (row_major)")

        results = []
        if len(ref) == 3:
            u = UNIT_ROUNDOFF[params["dtype"]]
            results.append(check_close("residual_out", out[2], ref[2], Tolerance(norm_rel=u, rtol=2 * u, atol=0.0)))

        parts = _recall(ref_codes)
        if parts is None:  # a reference made elsewhere: recompute (inputs must be unmutated)
            _, parts = _reference_parts(op, params, inputs)
        tie_rel, scale_rtol = _rules(op, params)
        t, h = parts.y.shape
        metrics: dict[str, float] = {}

        # 3. scales, per block
        s_out = scales.to(torch.float64)
        s_ref = parts.scale
        live = parts.amax > 0
        finite = torch.isfinite(s_out) & (s_out >= 0)
        rel = torch.where(live, (s_out - s_ref).abs() / s_ref, torch.zeros_like(s_ref))
        rel = torch.where(finite, rel, torch.full_like(rel, math.inf))
        metrics["scale_max_rel_err"] = float(rel.max()) if rel.numel() else 0.0
        bad_scale = rel > scale_rtol
        if bool(bad_scale.any()):
            i = _first(bad_scale)
            results.append(CheckResult(
                False, metrics,
                f"scales: {int(bad_scale.sum())} of {rel.numel()} off by more than {scale_rtol:.3g} relative "
                f"(max {metrics['scale_max_rel_err']:.3g}), first at {i}: {s_out[i].item():.8g} vs {s_ref[i].item():.8g}",
            ))
            return merge_checks(*results)

        # 4. codes and 5. dequantized error, over row chunks (bounded float64 temporaries)
        n = codes.numel()
        n_tie = n_hard = max_step = 0
        first_hard = None
        sq = {"deq": 0.0, "ref": 0.0, "sat": 0.0, "y": 0.0}
        qmax, qmin = QMAX[qd], QMIN[qd]
        for r0, r1 in _row_chunks(t, h):
            y = parts.y[r0:r1]
            sr = parts.expand(s_ref, r0, r1)
            so = parts.expand(s_out, r0, r1)
            v = y / sr
            window = tie_rel * v.abs()
            lo_c, hi_c = quantize_f64(v - window, qd), quantize_f64(v + window, qd)
            ci, nan = _code_index(codes[r0:r1])
            ri, _ = _code_index(ref_codes[r0:r1])
            lo, _ = _code_index(lo_c)
            hi, _ = _code_index(hi_c)
            diff = ci != ri
            inside = (ci >= lo) & (ci <= hi) & ~nan
            hard = diff & ~inside
            n_tie += int((diff & inside).sum())
            n_hard_c = int(hard.sum())
            if n_hard_c and first_hard is None:
                j = _first(hard)
                first_hard = (
                    (j[0] + r0, j[1]), codes[r0:r1][j].double().item(), ref_codes[r0:r1][j].double().item(),
                    v[j].item(), lo_c[j].double().item(), hi_c[j].double().item(),
                )
            n_hard += n_hard_c
            if ci.numel():
                max_step = max(max_step, int((ci - ri).abs().max()))
            y_sat = torch.maximum(torch.minimum(y, qmax * sr), qmin * sr)
            sq["deq"] += float(torch.linalg.vector_norm(codes[r0:r1].to(torch.float64) * so - y_sat)) ** 2
            sq["ref"] += float(torch.linalg.vector_norm(ref_codes[r0:r1].to(torch.float64) * sr - y_sat)) ** 2
            sq["sat"] += float(torch.linalg.vector_norm(y_sat)) ** 2
            sq["y"] += float(torch.linalg.vector_norm(y)) ** 2
        metrics.update(
            mismatch_rate=n_tie / n if n else 0.0, tie_mismatches=float(n_tie), hard_mismatches=float(n_hard),
            max_code_step=float(max_step),
        )
        denom = math.sqrt(sq["sat"]) if sq["sat"] > 0 else 1.0
        deq_err = math.sqrt(sq["deq"]) / denom
        ref_err = math.sqrt(sq["ref"]) / denom
        if not math.isfinite(deq_err):
            deq_err = math.inf
        metrics.update(deq_rel_err=deq_err, ref_deq_rel_err=ref_err)
        if first_hard is not None:
            i, got, want, val, lo_v, hi_v = first_hard
            results.append(CheckResult(
                False, metrics,
                f"codes: {n_hard} of {n} differ from the reference beyond a rounding tie, first at {i}: "
                f"{got:.6g} vs {want:.6g} (real value {val:.8g}, allowed {lo_v:.6g}..{hi_v:.6g} by the tie "
                f"window +-{tie_rel:.3g} relative)",
            ))
            return merge_checks(*results)
        bound = ref_err + 2 * tie_rel * math.sqrt(sq["y"]) / denom + 2 * scale_rtol + 1e-12
        if deq_err > bound:
            results.append(CheckResult(
                False, metrics, f"dequantized: norm-wise relative error {deq_err:.4g} > {bound:.4g} (reference's own {ref_err:.4g})"
            ))
        else:
            results.append(CheckResult(True, metrics))
        return merge_checks(*results)


FAMILY = QuantFamily()
