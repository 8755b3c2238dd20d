"""fp8 / int8 quantization and RMSNorm + quantization fusions: inputs, float64 reference,
check, Triton kernels, peer adapters.

Ops (``normbench.ops``), tensors row-major ``[num_tokens, hidden_size]`` (T x H):

* ``scaled_quant``: ``x`` (bfloat16 / float16 / float32) -> ``(codes [T, H], scale)``.
  ``static_scale``: the given fp32 ``inputs["scale"]`` ``[1]`` is used and returned;
  dynamic ``per_tensor``: one scale ``[1]`` from ``amax(|x|)``; dynamic ``per_token``:
  scales ``[T, 1]`` from each row's amax.
* ``rms_norm_quant``: ``y = rms_norm(x [+ residual]) * weight``, then dynamic per-token
  quantization -> ``(codes [T, H], scales fp32 [T, 1])`` plus ``residual_out`` (the
  dtype-rounded ``x + residual``) when ``params["residual"]``. With ``params["scale_ub"]``
  each row's amax is first clamped to the fp32 scalar ``inputs["scale_ub"]`` (vLLM's
  ``scale_ub``).
* ``rms_norm_group_quant``: the same norm, then one scale per ``group_size`` consecutive
  elements of a row -> ``(codes, scales fp32 [T, H / group_size], [residual_out])``.
  ``scale_layout=row_major``: ``scales`` is contiguous ``[T, G]``; ``col_major``: the
  storage is a contiguous ``[G, T]`` tensor and ``scales`` is its transposed ``[T, G]``
  view (strides ``(1, T)``), vLLM's ``rms_norm_per_block_quant(..., is_scale_transposed=True)``.
* ``rms_norm_static_quant``: the same norm, then quantization with a *static* per-tensor
  scale, the fp32 ``inputs["scale"]`` [1] (a calibrated activation scale of an FP8
  checkpoint) -> ``(codes [T, H], scale [1], [residual_out])``; the given scale is returned
  as is (as ``scaled_quant`` with ``static_scale``), nothing is computed or written for it.
  vLLM's ``torch.ops._C.rms_norm_static_fp8_quant`` /
  ``fused_add_rms_norm_static_fp8_quant``, the op its ``fuse_norm_quant`` pass
  (``RMSNormStaticQuantPattern`` / ``FusedAddRMSNormStaticQuantPattern`` in
  ``vllm/compilation/passes/fusion/rms_quant_fusion.py``) emits for static fp8 scales.
  Convention: codes = ``RNE(clamp(y / scale, -448, 448))``, i.e. the scale *divides* (it is
  the dequantization scale, ``y ~ codes * scale``). vLLM's CUDA kernel and FlashInfer's
  multiply by the fp32 reciprocal ``1.0f / scale`` (vLLM ``layernorm_quant_kernels.cu``
  ``scale_inv``, then ``scaled_fp8_conversion<true>``: multiply, clamp to +-448, RNE
  saturating conversion; its native ``QuantFP8.forward_native`` multiplies by
  ``scale.reciprocal()`` too), ours as well; the reference divides exactly in float64.
  The two differ by at most one fp32 rounding of ``1 / scale`` (2^-24 relative), which
  only moves values that lie at a rounding tie, accepted by ``check``. vLLM has no fused
  static int8 (it composes ``rms_norm`` and ``scaled_int8_quant``): ``quant_dtype=int8``
  runs on the reference, torch and Triton providers only.
* ``group_quant`` (internal, not a suite op): per-group quantization of a given ``x``
  (params ``quant_dtype``, ``group_size``, ``scale_layout``) -> ``(codes, scales)``: the
  standalone half of the unfused ``rms_norm_group_quant`` compositions
  (``normbench.kernels.providers.unfused``).

Quantization rules (the reference's, and every provider's up to rounding):

* fp8 = ``torch.float8_e4m3fn``, ``qmax = 448``; int8 symmetric, ``qmax = 127``.
* Dynamic scale of a block (tensor, row or group): ``scale = max(min(amax, scale_ub) / qmax,
  min_scale)`` stored as fp32, ``min_scale = 1 / (448 * 512)`` for fp8 and
  ``FLT_EPSILON = 2**-23`` for int8 (vLLM ``csrc/quantization/utils.cuh``
  ``min_scaling_factor``). A block of zeros (amax 0) thus gets ``min_scale`` and codes 0,
  never NaN. Differences from vLLM's standalone kernels, accepted by ``check`` because
  the codes are the same: ``dynamic_scaled_int8_quant`` writes scale 0 for a zero row
  (``scaled_quant.cu``), ``per_token_group_quant_fp8`` floors amax at 1e-10
  (scale ``1e-10 / 448``); vLLM's dynamic per-tensor fp8 has no floor (a whole zero
  tensor gives scale 0 and, there, NaN-derived codes, which ``check`` rejects).
* Codes: ``v = y / scale`` (real value), clamped to ``[-448, 448]`` (fp8) or
  ``[-128, 127]`` (int8), then rounded to nearest, ties to even: to the e4m3 grid, or to
  an integer (CUDA's ``cvt.rni.sat.s8.f32``, vLLM ``float_to_int8_rn``). vLLM's fp8
  kernels clamp first as well (``scaled_fp8_conversion``). Group scales are plain fp32
  (no power-of-two ``ue8m0`` rounding: vLLM's default ``use_ue8m0=False``).

Reference rounding rule (float64, ``reference``): ``r = x + residual`` is rounded to the
activation dtype once (what every fused kernel stores and the next layer reads; the
rmsnorm family's convention), ``y = r * rsqrt(mean(r**2) + eps) * weight`` is *not*
rounded (real-valued), the scale is computed from ``y``'s amax in float64 and rounded to
fp32, and the codes are ``RNE(clamp(y / scale32))`` computed exactly. Providers that
follow HuggingFace / vLLM rounding instead (``y = weight * (r * rstd).to(dtype)``, two
dtype roundings; vLLM's fused kernel also normalizes the unrounded fp32 sum) differ from
it only at rounding ties, which ``check`` accepts (rule in ``QuantFamily.check``).
Our Triton kernels keep ``y`` in fp32 and match the reference to fp32 rounding.

Sources: vLLM ``csrc/quantization/fused_kernels/layernorm_utils.cuh`` (per-token and
per-group scales, ``scale_ub``), ``fused_layernorm_dynamic_per_token_quant.cu``,
``quant_conversions.cuh``, ``csrc/quantization/w8a8/fp8/common.cu|.cuh``
(``scaled_fp8_quant``), ``csrc/quantization/w8a8/int8/scaled_quant.cu``,
``vllm/_custom_ops.py``, ``benchmarks/fused_kernels/layernorm_rms_benchmarks.py``.

Providers in ``IMPLS``: ``reference``, ``torch_naive`` (eager, unfused, compile-friendly;
``torch_compile`` compiles it), ``triton`` (ours: tiles of whole rows held in registers,
one read of the input, launch configs from the measured ``TUNED`` table), ``vllm``
(``vllm._custom_ops``, imported lazily; ``rms_norm_static_quant`` through ``torch.ops._C``),
``flashinfer`` (``rms_norm_static_quant`` only: ``flashinfer.norm.rmsnorm_quant`` /
``fused_add_rmsnorm_quant``).
"""

from __future__ import annotations

import functools
import math
import types
import weakref
from dataclasses import dataclass, replace

import torch

from normbench.kernels.base import (
    CheckResult,
    Inputs,
    OpFn,
    Outputs,
    Params,
    Tolerance,
    TORCH_DTYPES,
    check_close,
    merge_checks,
)
from normbench.kernels.providers._family import Unsupported

try:
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
    try:  # programmatic dependent launch (SM90+); Triton >= 3.3
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

        _HAVE_GDC = True
    except ImportError:  # pragma: no cover - older Triton: PDL configs are refused
        _HAVE_GDC = False
except ImportError:  # pragma: no cover - triton is a Linux-only dependency (pyproject)
    # The reference and the torch providers must still import without Triton.
    triton = types.SimpleNamespace(jit=lambda fn=None, **kw: fn if fn is not None else (lambda f: f))
    tl = types.SimpleNamespace(constexpr=object)
    _HAVE_TRITON = False
    _HAVE_GDC = False

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


def _granularity(op: str, params: Params) -> str:
    """``"tensor"``, ``"token"`` or ``"group"``: the blocks that share one scale."""
    if op == STATIC_OP:
        return "tensor"
    if op == "scaled_quant":
        if params.get("static_scale") or params.get("scale_granularity") == "per_tensor":
            return "tensor"
        return "token"
    return "token" if op == "rms_norm_quant" else "group"


def _is_static(op: str, params: Params) -> bool:
    """Whether the case quantizes with the given fp32 ``inputs["scale"]`` [1]."""
    return op == STATIC_OP or (op == "scaled_quant" and bool(params.get("static_scale")))


def _has_residual(op: str, params: Params) -> bool:
    return op in NORM_OPS and bool(params.get("residual", False))


def _has_scale_ub(op: str, params: Params) -> bool:
    """``scale_ub`` is an axis of ``rms_norm_quant``; the unfused compositions also pass it
    to their per-token ``scaled_quant`` half (dynamic per-token only)."""
    return bool(params.get("scale_ub", False)) and _granularity(op, params) == "token"


def _col_major(params: Params) -> bool:
    return params.get("scale_layout", "row_major") == "col_major"


def _check_quant_dtype(params: Params) -> str:
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
        gran, group_size: the blocks (see ``_granularity``).
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
    qd = _check_quant_dtype(params)
    gran = _granularity(op, params)
    gs = int(params.get("group_size", 0) or 0)
    x = inputs["x"]
    res_out = None
    if op in NORM_OPS:
        y, res_out = _norm_f64(
            x, inputs["weight"], float(params["eps"]), inputs["residual"] if _has_residual(op, params) else None
        )
    else:
        y = x.to(torch.float64)
    amax = _block_amax(y, gran, gs)
    if _is_static(op, params):
        scale32 = inputs["scale"].to(torch.float32).reshape(1)
    else:
        a = amax
        if _has_scale_ub(op, params):
            a = torch.minimum(a, inputs["scale_ub"].to(torch.float64))
        scale32 = (a / QMAX[qd]).clamp(min=MIN_SCALE[qd]).to(torch.float32)
    parts = _RefParts(y, scale32.to(torch.float64), amax, gran, gs)
    t, h = y.shape
    codes = torch.empty((t, h), dtype=QUANT_TORCH_DTYPES[qd], device=y.device)
    for r0, r1 in _row_chunks(t, h):
        codes[r0:r1] = quantize_f64(parts.real_values(r0, r1), qd)
    if gran == "group" and _col_major(params):
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
        qd = _check_quant_dtype(params)
        t, h = int(params["num_tokens"]), int(params["hidden_size"])
        dtype = TORCH_DTYPES[params["dtype"]]
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

        if op in NORM_OPS:
            inputs = {"x": randn(t, h).to(dtype), "weight": (1.0 + 0.1 * randn(h)).to(dtype)}
            if _has_residual(op, params):
                inputs["residual"] = randn(t, h).to(dtype)
            if _has_scale_ub(op, params) or op == STATIC_OP:
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
        qd = _check_quant_dtype(params)
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
        if _granularity(op, params) == "group":
            t, g = scales.shape
            if _col_major(params) and t > 1 and g > 1 and scales.stride() != (1, t):
                return CheckResult(
                    False, {}, f"scales: strides {scales.stride()}, expected (1, {t}) (col_major: a [G, T] tensor transposed)"
                )
            if not _col_major(params) and t > 1 and g > 1 and scales.stride() != (g, 1):
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


# =========================================================================== torch_naive


def _naive_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None):
    """HF ``LlamaRMSNorm`` (fp32 statistics, round, weight product in the dtype) after a
    dtype residual add, as the rmsnorm family's ``torch_naive``."""
    res_out = None
    if residual is not None:
        x = x + residual
        res_out = x
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype), res_out


def _naive_quant(
    y: torch.Tensor, quant_dtype: str, gran: str, group_size: int = 0,
    scale: torch.Tensor | None = None, scale_ub: torch.Tensor | None = None, col_major: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``y`` [T, H] with torch ops; no host syncs (``torch.compile`` friendly)."""
    qmax, qmin = QMAX[quant_dtype], QMIN[quant_dtype]
    yf = y.to(torch.float32)
    t, h = yf.shape
    if gran == "group":
        yf = yf.view(t, h // group_size, group_size)
    if scale is None:
        if gran == "tensor":
            amax = yf.abs().amax().reshape(1)
        else:
            amax = yf.abs().amax(dim=-1, keepdim=gran == "token")
        if scale_ub is not None:
            amax = torch.minimum(amax, scale_ub)
        scale = (amax / qmax).clamp(min=MIN_SCALE[quant_dtype])
    s_b = scale.unsqueeze(-1) if gran == "group" else scale
    v = (yf / s_b).clamp(qmin, qmax)
    if quant_dtype == "int8":
        v = torch.round(v)
    codes = v.to(QUANT_TORCH_DTYPES[quant_dtype]).view(t, h)
    if gran == "group" and col_major:
        scale = scale.t().contiguous().t()
    return codes, scale


def _naive_factory(op: str):
    def factory(params: Params) -> OpFn:
        qd = _check_quant_dtype(params)
        gran = _granularity(op, params)
        gs = int(params.get("group_size", 0) or 0)
        col = _col_major(params)
        res, ub = _has_residual(op, params), _has_scale_ub(op, params)
        static = _is_static(op, params)
        eps = float(params.get("eps", 1e-6))

        def fn(inputs: Inputs) -> Outputs:
            x = inputs["x"]
            res_out = None
            if op in NORM_OPS:
                x, res_out = _naive_norm(x, inputs["weight"], eps, inputs["residual"] if res else None)
            codes, scales = _naive_quant(
                x, qd, gran, gs, inputs["scale"] if static else None, inputs["scale_ub"] if ub else None, col
            )
            return (codes, scales, res_out) if res_out is not None else (codes, scales)

        return fn

    return factory


def _reference_factory(op: str):
    def factory(params: Params) -> OpFn:
        _check_quant_dtype(params)

        def fn(inputs: Inputs) -> Outputs:
            return FAMILY.reference(op, params, inputs)

        return fn

    return factory


# =========================================================================== Triton kernels
#
# v4 (see docs/kernels/quant-notes.md). A program quantizes a tile of ROWS whole rows held in
# registers as a [ROWS, BLOCK_G, GS] tensor (per-token: [ROWS, 1, next_pow2(H)]; per-group:
# [ROWS, next_pow2(G), group_size], so a group amax is a reduction along axis 2). All ROWS
# rows are loaded at once (more bytes in flight per program than one row after the other).
# Grid: one program per tile, or with PERSISTENT a grid of programs_per_sm x SMs walking
# tiles pid, pid + nprog, ... (the weight loaded once per program; STAGES > 1 pipelines the
# next tile's loads behind this tile's math, ``tl.range(num_stages=...)``). With PDL the
# kernel waits for the previous grid before its first load, then lets the next grid launch.
#
# fp32 math; the input is read once (evict_first), the weight kept in L2 (evict_last). The
# residual sum is rounded to the dtype, stored in place (vLLM's convention) and normalized
# as rounded (the reference's). amax(|y|) = rstd * amax(|x w|) and the codes are
# ``x w * (rstd / s)``: one reduction phase and one multiply per element.
#
# Code conversion. HW_CVT (compiled default): fp8 through the hardware conversion,
# ``cvt.rn.satfinite.e4m3x2.f32`` (round to nearest even, saturating at +-448: the clamp
# comes for free); bf16/fp16 residual sums through ``cvt.rn``. Without HW_CVT (the
# interpreter, whose fp32 -> fp8 conversion is not round-to-nearest: -31.37 -> -16 with
# Triton 3.9, and whose fp32 -> bf16 truncates): codes are rounded to nearest-even *in fp32 arithmetic* first, so the
# conversion is exact: for e4m3 by adding and subtracting 1.5 * 2**20 times the value's
# power-of-two binade (floored at 2**-6, the subnormal quantum 2**-9), which makes the ulp
# of the sum equal to the e4m3 quantum of that binade. int8 is the same on both paths:
# ``v + 1.5 * 2**23`` holds round-to-nearest-even(v) in its low mantissa bits (|v| < 2**22),
# so its low byte *is* the two's-complement code (a bitcast and a truncation, no float ->
# int conversion); the clamp to [-128, 127] is needed only where |v| may exceed 127.5
# (scale_ub, static or per-tensor scales): a dynamic scale bounds |v| by 127 (1 + a few ulp).


@triton.jit
def _rne_bf16_grid(v):
    """fp32 ``v`` rounded to the nearest bfloat16 value (ties to even), still fp32.

    Same trick as the codes: 1.5 * 2**16 times the binade (floored at the smallest normal,
    where bf16 subnormals share fp32's exponent) has an ulp equal to bf16's quantum. Used
    without HW_CVT because the Triton interpreter truncates fp32 -> bf16 (the GPU rounds to
    nearest even, so there the conversion after this is exact either way).
    """
    binade = (v.to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
    magic = tl.maximum(binade, 1.1754943508222875e-38) * 98304.0
    return (v + magic) - magic


@triton.jit
def _sum_and_max(a0, a1, b0, b1):
    return a0 + b0, tl.maximum(a1, b1)


@triton.jit
def _quant_tile(
    tile, x_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, w, k_fixed,
    n_rows, n_cols, n_groups,
    stride_x, stride_res, stride_q, stride_s_row, stride_s_grp,
    eps, qmax, qmin, min_scale,
    BLOCK_G: tl.constexpr, GS: tl.constexpr,
    NORM: tl.constexpr, HAS_RES: tl.constexpr, HAS_UB: tl.constexpr, SCALE_MODE: tl.constexpr,
    IS_FP8: tl.constexpr, ROWS: tl.constexpr, RES_BF16: tl.constexpr, TUPLE_REDUCE: tl.constexpr,
    Q_VEC: tl.constexpr, HW_CVT: tl.constexpr,
):
    """Quantize rows [tile * ROWS, tile * ROWS + ROWS) (see ``_rowquant_kernel``)."""
    g_idx = tl.arange(0, BLOCK_G)
    cols = (g_idx[:, None] * GS + tl.arange(0, GS)[None, :])[None, :, :]  # [1, BG, GS]
    rows = tile * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    # The row mask is constant along the columns, so the mask keeps the column mask's
    # 16-element constancy (16-byte vector loads and stores).
    m = (cols < n_cols) & row_ok[:, None, None]
    rows64 = rows.to(tl.int64)  # num_tokens * hidden_size may pass 2**31
    x = tl.load(x_ptr + rows64[:, None, None] * stride_x + cols, mask=m, other=0.0,
                eviction_policy="evict_first").to(tl.float32)
    if HAS_RES:
        rp = res_ptr + rows64[:, None, None] * stride_res + cols
        x = x + tl.load(rp, mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
        if RES_BF16 and not HW_CVT:
            x = _rne_bf16_grid(x)
        rsum = x.to(res_ptr.dtype.element_ty)
        tl.store(rp, rsum, mask=m)
        x = rsum.to(tl.float32)
    if NORM:
        # amax(|y|) = rstd * amax(|x * w|) (rstd > 0): the sum of squares and the amax come
        # out of one reduction phase instead of two dependent ones.
        # A given scale (SCALE_MODE 1, rms_norm_static_quant) needs the sum of squares only.
        xw = x * w
        if SCALE_MODE != 0:
            ss = tl.sum(tl.sum(x * x, axis=2), axis=1)
        elif TUPLE_REDUCE:  # one two-operand reduction (one cross-warp exchange)
            ss, amax = tl.reduce((x * x, tl.abs(xw)), 2, _sum_and_max)
            ss = tl.sum(ss, axis=1)
        else:
            amax = tl.max(tl.abs(xw), axis=2)
            ss = tl.sum(tl.sum(x * x, axis=2), axis=1)
        rstd = tl.rsqrt(ss / n_cols + eps)  # [ROWS]
        if SCALE_MODE == 0:
            amax = amax * rstd[:, None]  # [ROWS, BG]: amax of y = x w rstd
        x = xw
    else:
        rstd = tl.full([ROWS], 1.0, tl.float32)
        if SCALE_MODE == 0:
            amax = tl.max(tl.abs(x), axis=2)
    if SCALE_MODE == 0:
        if HAS_UB:
            amax = tl.minimum(amax, tl.load(ub_ptr))
        s = tl.maximum(amax / qmax, min_scale)  # [ROWS, BG]
        s_mask = (g_idx < n_groups)[None, :] & row_ok[:, None]
        tl.store(s_ptr + rows64[:, None] * stride_s_row + g_idx[None, :] * stride_s_grp, s, mask=s_mask)
        k = rstd[:, None] / s  # codes = x w * rstd / s: one multiply per element
        v = x * k[:, :, None]
    else:
        v = x * (rstd * k_fixed)[:, None, None]
    if IS_FP8:
        if not HW_CVT:
            v = tl.minimum(tl.maximum(v, qmin), qmax)
            binade = (v.to(tl.int32, bitcast=True) & 0x7F800000).to(tl.float32, bitcast=True)
            magic = tl.maximum(binade, 0.015625) * 1572864.0
            v = (v + magic) - magic
        codes = v.to(q_ptr.dtype.element_ty)
    else:
        if HAS_UB or SCALE_MODE != 0:
            v = tl.minimum(tl.maximum(v, qmin), qmax)
        codes = (v + 12582912.0).to(tl.int32, bitcast=True).to(q_ptr.dtype.element_ty)
    if Q_VEC > 0:
        # Codes addressed with a Q_VEC-element contiguity (the residual's 16-byte vector):
        # Triton then lays the whole row out Q_VEC elements per thread, as the residual
        # store wants, instead of converting the residual through shared memory.
        q_cols = (cols // Q_VEC) * Q_VEC + cols % Q_VEC
    else:
        q_cols = cols
    tl.store(q_ptr + rows64[:, None, None] * stride_q + q_cols, codes, mask=m)


@triton.jit(do_not_specialize=["n_rows"])
def _rowquant_kernel(
    x_ptr, w_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, sin_ptr,
    n_rows, n_cols, n_groups,
    stride_x, stride_res, stride_q, stride_s_row, stride_s_grp,
    eps, qmax, qmin, min_scale,
    BLOCK_G: tl.constexpr, GS: tl.constexpr,
    NORM: tl.constexpr, HAS_RES: tl.constexpr, HAS_UB: tl.constexpr,
    SCALE_MODE: tl.constexpr,  # 0: dynamic per block, 1: static scale at sin_ptr, 2: from the amax at sin_ptr
    IS_FP8: tl.constexpr, ROWS: tl.constexpr, RES_BF16: tl.constexpr, TUPLE_REDUCE: tl.constexpr,
    Q_VEC: tl.constexpr, HW_CVT: tl.constexpr, PERSISTENT: tl.constexpr, STAGES: tl.constexpr,
    PDL: tl.constexpr,
):
    pid = tl.program_id(0)
    if PDL:
        gdc_wait()  # every global read below may depend on the previous grid
        gdc_launch_dependents()
    g_idx = tl.arange(0, BLOCK_G)
    cols = (g_idx[:, None] * GS + tl.arange(0, GS)[None, :])[None, :, :]
    if NORM:
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0, eviction_policy="evict_last").to(tl.float32)
    else:
        w = 0.0
    k_fixed = 1.0
    if SCALE_MODE == 1:
        k_fixed = 1.0 / tl.load(sin_ptr)
    if SCALE_MODE == 2:
        s_fixed = tl.maximum(tl.load(sin_ptr) / qmax, min_scale)
        k_fixed = 1.0 / s_fixed
        tl.store(s_ptr, s_fixed, mask=pid == 0)
    if PERSISTENT:
        for tile in tl.range(pid, tl.cdiv(n_rows, ROWS), tl.num_programs(0), num_stages=STAGES):
            _quant_tile(
                tile, x_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, w, k_fixed, n_rows, n_cols, n_groups,
                stride_x, stride_res, stride_q, stride_s_row, stride_s_grp, eps, qmax, qmin, min_scale,
                BLOCK_G, GS, NORM, HAS_RES, HAS_UB, SCALE_MODE, IS_FP8, ROWS, RES_BF16, TUPLE_REDUCE, Q_VEC, HW_CVT,
            )
    else:
        _quant_tile(
            pid, x_ptr, res_ptr, q_ptr, s_ptr, ub_ptr, w, k_fixed, n_rows, n_cols, n_groups,
            stride_x, stride_res, stride_q, stride_s_row, stride_s_grp, eps, qmax, qmin, min_scale,
            BLOCK_G, GS, NORM, HAS_RES, HAS_UB, SCALE_MODE, IS_FP8, ROWS, RES_BF16, TUPLE_REDUCE, Q_VEC, HW_CVT,
        )


@triton.jit
def _amax_kernel(x_ptr, amax_ptr, n_rows, n_cols, stride_x, BLOCK: tl.constexpr):
    """Pass 1 of dynamic per-tensor quantization: max |x| into ``amax_ptr`` (zeroed, fp32)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK)
    cmask = cols < n_cols
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    row_ptr = x_ptr + pid.to(tl.int64) * stride_x
    step = nprog.to(tl.int64) * stride_x
    for _ in range(pid, n_rows, nprog):
        # evict_last: the quantize pass reads the same bytes next (an L2 hit when they fit).
        x = tl.load(row_ptr + cols, mask=cmask, other=0.0, eviction_policy="evict_last")
        acc = tl.maximum(acc, tl.abs(x.to(tl.float32)))
        row_ptr += step
    tl.atomic_max(amax_ptr, tl.max(acc, axis=0))


@dataclass(frozen=True)
class LaunchConfig:
    """Launch parameters of ``_rowquant_kernel``.

    Attributes:
        num_warps: warps per program.
        rows_per_program: rows of one tile (a power of two), loaded and reduced together.
        tuple_reduce: per-token norm ops: the sum of squares and the amax in one
            two-operand ``tl.reduce`` (one cross-warp exchange instead of two). None = on
            when compiled, off under the interpreter, which runs custom-combine reductions
            element by element in Python (about 100x slower); the math is the same.
        programs_per_sm: 0 launches one program per tile; k > 0 launches at most
            k x SM-count programs that loop over the tiles (persistent grid, weight loaded once).
        stages: persistent grid only: > 1 software-pipelines the loop over tiles
            (``tl.range(num_stages=stages)``: the next tile's loads are issued early).
        pdl: programmatic dependent launch (SM90+, Triton ``launch_pdl``).
        hw_cvt: codes (and bf16 residual sums) through the hardware conversion, which
            rounds to nearest even and saturates; False rounds in fp32 arithmetic first (v3's
            path, exact on every backend). None = on when compiled, off under the interpreter.
    """

    num_warps: int
    rows_per_program: int = 1
    tuple_reduce: bool | None = None
    programs_per_sm: int = 0
    stages: int = 1
    pdl: bool = False
    hw_cvt: bool | None = None

    def short(self) -> str:
        """Compact name: ``w8.r2[.p4[.s2]][.pdl][.two_red][.sw_cvt]``."""
        s = f"w{self.num_warps}.r{self.rows_per_program}"
        if self.programs_per_sm:
            s += f".p{self.programs_per_sm}" + (f".s{self.stages}" if self.stages > 1 else "")
        if self.pdl:
            s += ".pdl"
        if self.tuple_reduce is False:
            s += ".two_red"
        if self.hw_cvt is False:
            s += ".sw_cvt"
        return s

    def literal(self) -> str:
        """Python source: ``LaunchConfig(w, r)`` then the non-default keywords."""
        tail = "".join(
            f", {k}={getattr(self, k)!r}" for k in ("tuple_reduce", "programs_per_sm", "stages", "pdl", "hw_cvt")
            if getattr(self, k) != LaunchConfig.__dataclass_fields__[k].default
        )
        return f"LaunchConfig({self.num_warps}, {self.rows_per_program}{tail})"


_INTERPRETED = "Interpreted" in type(_rowquant_kernel).__name__

#: Largest tile (elements, all rows) one program keeps in registers.
MAX_BLOCK = 32768
#: Kernel kinds of the tuned table: per-token norm, per-group norm, standalone quantization
#: (dynamic per-token measured; static, per-tensor and ``group_quant`` borrow it).
KINDS = ("rms_norm_quant", "rms_norm_group_quant", "scaled_quant")


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


#: Measured launch configs, bfloat16 (2-byte activations), keyed by (kind, residual,
#: next_pow2(hidden_size)): ascending (max num_tokens, LaunchConfig) rows, the first row
#: whose bound is >= num_tokens wins (bounds are geometric midpoints between the measured
#: token counts 1, 16, 128, 1024, 4096, 16384). ``scripts/tune_quant.py`` prints this block
#: (from its Source line to the closing brace): paste it over the one below. Shapes not
#: covered fall back to ``formula_config`` (see ``default_config``). A "kernel v3" source
#: is v3's H200 tuning (one program per row, no PDL candidates; ``--table-from
#: docs/results/h200/tune_quant.json``).
#: Source: scripts/tune_quant.py, kernel v4, NVIDIA H200, triton 3.6.0 (tune_quant.json; fp8 and int8 scored together).
TUNED: dict[tuple[str, bool, int], tuple[tuple[int, LaunchConfig], ...]] = {
    ('rms_norm_group_quant', False, 1024): (
        (45, LaunchConfig(4, 1, pdl=True)),
        (362, LaunchConfig(1, 1, pdl=True)),
        (2048, LaunchConfig(4, 4, pdl=True)),
        (8192, LaunchConfig(4, 2, pdl=True)),
        (2147483647, LaunchConfig(4, 4, pdl=True)),
    ),
    ('rms_norm_group_quant', False, 2048): (
        (4, LaunchConfig(8, 1, pdl=True)),
        (362, LaunchConfig(4, 1, pdl=True)),
        (2048, LaunchConfig(4, 2, pdl=True)),
        (2147483647, LaunchConfig(4, 1, pdl=True)),
    ),
    ('rms_norm_group_quant', False, 4096): (
        (2147483647, LaunchConfig(8, 1, pdl=True)),
    ),
    ('rms_norm_group_quant', False, 8192): (
        (362, LaunchConfig(16, 1, pdl=True)),
        (2048, LaunchConfig(8, 1, pdl=True)),
        (2147483647, LaunchConfig(16, 1, pdl=True)),
    ),
    ('rms_norm_group_quant', True, 1024): (
        (362, LaunchConfig(4, 1, pdl=True)),
        (2048, LaunchConfig(4, 4, pdl=True)),
        (8192, LaunchConfig(1, 1, pdl=True)),
        (2147483647, LaunchConfig(4, 1, pdl=True)),
    ),
    ('rms_norm_group_quant', True, 2048): (
        (2147483647, LaunchConfig(8, 1, pdl=True)),
    ),
    ('rms_norm_group_quant', True, 4096): (
        (4, LaunchConfig(8, 1, pdl=True)),
        (2048, LaunchConfig(16, 1, pdl=True)),
        (2147483647, LaunchConfig(4, 1, pdl=True)),
    ),
    ('rms_norm_group_quant', True, 8192): (
        (4, LaunchConfig(8, 1, pdl=True)),
        (362, LaunchConfig(16, 1, pdl=True)),
        (2048, LaunchConfig(4, 1, pdl=True)),
        (2147483647, LaunchConfig(32, 1, pdl=True)),
    ),
    ('rms_norm_quant', False, 1024): (
        (45, LaunchConfig(4, 1, pdl=True)),
        (362, LaunchConfig(1, 1, pdl=True)),
        (2048, LaunchConfig(2, 2, pdl=True)),
        (8192, LaunchConfig(4, 2, pdl=True)),
        (2147483647, LaunchConfig(4, 4, pdl=True)),
    ),
    ('rms_norm_quant', False, 2048): (
        (362, LaunchConfig(8, 1, pdl=True)),
        (2048, LaunchConfig(2, 1, pdl=True)),
        (8192, LaunchConfig(4, 1, pdl=True)),
        (2147483647, LaunchConfig(2, 1, pdl=True)),
    ),
    ('rms_norm_quant', False, 4096): (
        (2048, LaunchConfig(8, 1, pdl=True)),
        (8192, LaunchConfig(4, 1, pdl=True)),
        (2147483647, LaunchConfig(8, 1, pdl=True)),
    ),
    ('rms_norm_quant', False, 8192): (
        (45, LaunchConfig(8, 1, pdl=True)),
        (362, LaunchConfig(16, 1, pdl=True)),
        (8192, LaunchConfig(8, 1, pdl=True)),
        (2147483647, LaunchConfig(16, 1, pdl=True)),
    ),
    ('rms_norm_quant', True, 1024): (
        (362, LaunchConfig(4, 1, pdl=True)),
        (2048, LaunchConfig(1, 1, pdl=True)),
        (8192, LaunchConfig(2, 2, pdl=True)),
        (2147483647, LaunchConfig(4, 1, pdl=True)),
    ),
    ('rms_norm_quant', True, 2048): (
        (362, LaunchConfig(8, 1, pdl=True)),
        (2048, LaunchConfig(2, 2, pdl=True)),
        (2147483647, LaunchConfig(8, 1, pdl=True)),
    ),
    ('rms_norm_quant', True, 4096): (
        (362, LaunchConfig(16, 1, pdl=True)),
        (2048, LaunchConfig(8, 2, pdl=True)),
        (8192, LaunchConfig(16, 1, pdl=True)),
        (2147483647, LaunchConfig(4, 1, pdl=True)),
    ),
    ('rms_norm_quant', True, 8192): (
        (362, LaunchConfig(16, 1, pdl=True)),
        (2048, LaunchConfig(4, 1, pdl=True)),
        (2147483647, LaunchConfig(32, 1, pdl=True)),
    ),
    ('scaled_quant', False, 1024): (
        (4, LaunchConfig(4, 1, pdl=True)),
        (2048, LaunchConfig(1, 1, pdl=True)),
        (2147483647, LaunchConfig(4, 2, pdl=True)),
    ),
    ('scaled_quant', False, 2048): (
        (4, LaunchConfig(4, 1, pdl=True)),
        (45, LaunchConfig(8, 1, pdl=True)),
        (8192, LaunchConfig(4, 2, pdl=True)),
        (2147483647, LaunchConfig(4, 1, pdl=True)),
    ),
    ('scaled_quant', False, 4096): (
        (8192, LaunchConfig(8, 1, pdl=True)),
        (2147483647, LaunchConfig(16, 2, pdl=True)),
    ),
    ('scaled_quant', False, 8192): (
        (4, LaunchConfig(4, 1, pdl=True)),
        (8192, LaunchConfig(16, 1, pdl=True)),
        (2147483647, LaunchConfig(8, 2, programs_per_sm=4, stages=2, pdl=True)),
    ),
}


def formula_config(num_tokens: int, hidden_size: int, elem_bytes: int, pdl: bool = False) -> LaunchConfig:
    """The untuned rule, fitted to the H200 measurements: 16 elements per thread up to 1024
    tokens (latency: more warps per row), 32 above (fewer instructions per element and
    more rows per SM), i.e. num_warps = next_pow2(H) / (32 x that), clamped to [2, 32]; one
    row per program; PDL where supported. ``elem_bytes`` is unused (registers hold fp32)."""
    del elem_bytes
    per_thread = 16 if num_tokens <= 1024 else 32
    nw = min(32, max(2, _pow2(hidden_size) // (32 * per_thread)))
    return LaunchConfig(nw, 1, pdl=pdl)


def _tuned_rows(kind: str, residual: bool, bucket: int) -> tuple[tuple[int, LaunchConfig], ...]:
    rows = TUNED.get((kind, residual, bucket))
    if rows is None and kind == "rms_norm_group_quant":  # same bytes and reductions per row
        rows = TUNED.get(("rms_norm_quant", residual, bucket))
    return rows or ()


def default_config(
    num_tokens: int, hidden_size: int, elem_bytes: int, kind: str = "rms_norm_quant",
    residual: bool = False, pdl: bool = False,
) -> LaunchConfig:
    """The launch config used when none is given: the tuned table for 2-byte activations
    where it covers (kind, residual, next_pow2(hidden_size)), else ``formula_config``.

    Args:
        kind: one of ``KINDS``. residual: whether the residual is added.
        pdl: whether the device supports programmatic dependent launch (a tuned row keeps
            its measured choice where it does; the formula uses it wherever supported).
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    if elem_bytes == 2:
        for bound, cfg in _tuned_rows(kind, residual, _pow2(hidden_size)):
            if num_tokens <= bound:
                return replace(cfg, pdl=cfg.pdl and pdl)
    return formula_config(num_tokens, hidden_size, elem_bytes, pdl)


@functools.lru_cache(maxsize=None)
def device_facts(device: torch.device) -> tuple[int, bool]:
    """(SM count, PDL supported) of a device; the interpreter (CPU) counts as 2 SMs, no PDL."""
    if device.type != "cuda":
        return 2, False
    props = torch.cuda.get_device_properties(device)
    return props.multi_processor_count, _HAVE_GDC and props.major >= 9


def _tile(hidden_size: int, group_size: int) -> tuple[int, int, int]:
    """(BLOCK_G, GS, n_groups) of a row: per-token [1, next_pow2(H)], per-group [next_pow2(G), gs]."""
    if group_size:
        if hidden_size % group_size:
            raise Unsupported(f"hidden_size {hidden_size} is not a multiple of group_size {group_size}")
        if group_size & (group_size - 1):
            raise Unsupported(f"group_size {group_size} is not a power of two")
        n_groups = hidden_size // group_size
        bg, gs = _pow2(n_groups), group_size
    else:
        bg, gs, n_groups = 1, _pow2(hidden_size), 1
    if bg * gs > MAX_BLOCK:
        raise Unsupported(f"hidden_size {hidden_size} exceeds the one-row-in-registers kernel's {MAX_BLOCK} elements")
    return bg, gs, n_groups


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
            amax in ``scale_in`` (program 0 writes ``scales[0]``).
        config: overrides ``default_config``.
    """
    t, h = x.shape
    if t == 0:
        return
    bg, gs, n_groups = _tile(h, group_size)
    sms, pdl_ok = device_facts(x.device)
    cfg = config or default_config(t, h, x.element_size(), _kind(weight, group_size), residual is not None, pdl_ok)
    rows = int(cfg.rows_per_program)
    if rows < 1 or rows & (rows - 1):
        raise ValueError(f"{cfg}: rows_per_program must be a power of two")
    if rows * bg * gs > MAX_BLOCK:
        raise ValueError(f"{cfg}: a tile of {rows} rows x {bg * gs} elements exceeds {MAX_BLOCK} elements")
    if cfg.pdl and not pdl_ok:
        raise ValueError(f"{cfg}: programmatic dependent launch needs an SM90+ GPU and Triton >= 3.3")
    if cfg.stages > 1 and not cfg.programs_per_sm:
        raise ValueError(f"{cfg}: stages > 1 pipelines the persistent loop: set programs_per_sm")
    tiles = triton.cdiv(t, rows)
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
    scales [T, 1], optional ``scale_ub``) or per tensor (two passes: an amax kernel with one
    atomic max per program, then quantization; scale [1]).
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
    amax = torch.zeros(1, dtype=torch.float32, device=x.device)
    scales = torch.empty(1, dtype=torch.float32, device=x.device)
    if t:
        _, gs, _ = _tile(h, 0)
        n_sm = device_facts(x.device)[0]
        cfg = config or default_config(t, h, x.element_size(), "scaled_quant")
        _amax_kernel[(min(t, 4 * n_sm),)](x, amax, t, h, x.stride(0), BLOCK=gs, num_warps=int(cfg.num_warps))
    _launch_rowquant(x, codes, scales, quant_dtype, scale_mode=2, scale_in=amax, config=config)
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


def _triton_factory(op: str):
    def factory(params: Params) -> OpFn:
        if not _HAVE_TRITON:
            raise Unsupported("triton is not installed")
        qd = _check_quant_dtype(params)
        gs = int(params.get("group_size", 0) or 0)
        if gs:
            _tile(int(params["hidden_size"]), gs)
        elif op != GROUP_QUANT:
            _tile(int(params["hidden_size"]), 0)
        col = _col_major(params)
        res, ub = _has_residual(op, params), _has_scale_ub(op, params)
        eps = float(params.get("eps", 1e-6))
        static = bool(params.get("static_scale"))
        per_token = params.get("scale_granularity", "per_token") == "per_token"
        cfg = params.get("launch_config")  # optional LaunchConfig override (tuning)

        def fn(inputs: Inputs) -> Outputs:
            x = inputs["x"]
            if op == "rms_norm_quant":
                r = inputs["residual"] if res else None
                codes, scales = triton_rms_norm_quant(
                    x, inputs["weight"], eps, qd, r, inputs["scale_ub"] if ub else None, config=cfg
                )
                return (codes, scales, r) if res else (codes, scales)
            if op == "rms_norm_group_quant":
                r = inputs["residual"] if res else None
                codes, scales = triton_rms_norm_group_quant(x, inputs["weight"], eps, qd, gs, col, r, config=cfg)
                return (codes, scales, r) if res else (codes, scales)
            if op == STATIC_OP:
                r = inputs["residual"] if res else None
                codes, scale = triton_rms_norm_static_quant(x, inputs["weight"], inputs["scale"], eps, qd, r, config=cfg)
                return (codes, scale, r) if res else (codes, scale)
            if op == GROUP_QUANT:
                return triton_group_quant(x, qd, gs, col, config=cfg)
            return triton_scaled_quant(
                x, qd, inputs["scale"] if static else None, per_token, inputs["scale_ub"] if ub else None, config=cfg
            )

        return fn

    return factory


# =========================================================================== vLLM adapters


def _vllm_factory(op: str):
    """vLLM 0.25.1's ``vllm._custom_ops`` wrappers (and its per-token-group quant helpers for
    ``group_quant``); every call below is bound, on the CPU, against a fake with 0.25.1's
    exact Python signatures (``tests/unit/test_vllm_adapters.py``).

    * ``scaled_quant`` fp8: ``scaled_fp8_quant(input, scale=None, num_token_padding=None,
      scale_ub=None, use_per_token_if_dynamic=False, output=None, group_shape=None)`` ->
      ``(codes, scale)``: static (the given [1] scale, returned as is), dynamic per-token
      (scales [T, 1], optional ``scale_ub``) or dynamic per-tensor (scale [1]).
    * ``scaled_quant`` int8: ``scaled_int8_quant(input, scale=None, azp=None,
      symmetric=True)`` -> ``(codes, scale, azp)`` (azp None when symmetric); static
      per-tensor or dynamic per-token. vLLM has no dynamic per-tensor int8.
    * ``rms_norm_quant``: ``rms_norm_dynamic_per_token_quant(input, weight, epsilon,
      quant_dtype, scale_ub=None, residual=None)`` -> ``(codes, scales [T, 1])``;
      ``residual`` is updated in place to ``input + residual``; ``scale_ub`` is fp8 only.
    * ``rms_norm_group_quant``: ``rms_norm_per_block_quant(input, weight, epsilon,
      quant_dtype, group_size=[1, g], scale_ub=None, residual=None,
      is_scale_transposed=False, tma_alignment=0)`` -> ``(codes, scales [T, H/g])``;
      ``is_scale_transposed=True`` gives the transposed view of a contiguous [H/g, T]
      tensor (``scale_layout=col_major``); ``tma_alignment`` stays 0 (unpadded).
    * ``group_quant``: ``fp8_utils.per_token_group_quant_fp8(x, group_size, eps=1e-10,
      dtype=None, column_major_scales=False, tma_aligned_scales=False, out_q=None,
      use_ue8m0=None)`` with ``use_ue8m0=False`` (plain fp32 scales) /
      ``int8_utils.per_token_group_quant_int8(x, group_size, eps=1e-10, dtype=torch.int8)``
      (row-major scales only). Both floor the group amax at ``eps`` = 1e-10.

    Each factory first checks (``providers.vllm.custom_ops``) that ``torch.ops._C`` has the
    kernel its wrapper launches, so a build without it is SKIPPED, not FAILED.

    Raises:
        Unsupported: a combination vLLM lacks (before importing vLLM), or a missing kernel.
    """

    def factory(params: Params) -> OpFn:
        qd = _check_quant_dtype(params)
        qdtype = QUANT_TORCH_DTYPES[qd]
        eps = float(params.get("eps", 1e-6))
        res, ub = _has_residual(op, params), _has_scale_ub(op, params)
        gs = int(params.get("group_size", 0) or 0)
        col = _col_major(params)
        static = bool(params.get("static_scale"))
        per_token = params.get("scale_granularity", "per_token") == "per_token"
        # Combinations vLLM lacks, refused before importing it.
        if ub and qd != "fp8":
            raise Unsupported("vLLM's scale_ub is fp8 only")
        if op == "scaled_quant" and qd == "int8" and not static and not per_token:
            raise Unsupported("vLLM has no dynamic per-tensor int8 quantization")
        if op == GROUP_QUANT and qd == "int8" and col:
            raise Unsupported("vLLM's per_token_group_quant_int8 writes row-major scales only")
        from normbench.kernels.providers.vllm import custom_ops

        if op == "scaled_quant":
            if qd == "int8":
                vops = custom_ops("static_scaled_int8_quant" if static else "dynamic_scaled_int8_quant")

                def fn(inputs: Inputs) -> Outputs:
                    codes, scale, _azp = vops.scaled_int8_quant(inputs["x"], inputs["scale"] if static else None)
                    return codes, scale

                return fn

            if static:
                kernel = "static_scaled_fp8_quant"
            else:
                kernel = "dynamic_per_token_scaled_fp8_quant" if per_token else "dynamic_scaled_fp8_quant"
            vops = custom_ops(kernel)

            def fn(inputs: Inputs) -> Outputs:
                codes, scale = vops.scaled_fp8_quant(
                    inputs["x"], inputs["scale"] if static else None,
                    scale_ub=inputs["scale_ub"] if ub else None, use_per_token_if_dynamic=per_token,
                )
                return codes, scale

            return fn

        if op == "rms_norm_quant":
            vops = custom_ops("rms_norm_dynamic_per_token_quant")

            def fn(inputs: Inputs) -> Outputs:
                r = inputs["residual"] if res else None
                codes, scales = vops.rms_norm_dynamic_per_token_quant(
                    inputs["x"], inputs["weight"], eps, qdtype,
                    scale_ub=inputs["scale_ub"] if ub else None, residual=r,
                )
                return (codes, scales, r) if res else (codes, scales)

            return fn

        if op == "rms_norm_group_quant":
            vops = custom_ops("rms_norm_per_block_quant")
            if not hasattr(vops, "rms_norm_per_block_quant"):
                raise Unsupported("this vLLM has no rms_norm_per_block_quant")

            def fn(inputs: Inputs) -> Outputs:
                r = inputs["residual"] if res else None
                codes, scales = vops.rms_norm_per_block_quant(
                    inputs["x"], inputs["weight"], eps, qdtype, [1, gs],
                    scale_ub=None, residual=r, is_scale_transposed=col,
                )
                return (codes, scales, r) if res else (codes, scales)

            return fn

        # group_quant
        if qd == "fp8":
            custom_ops("per_token_group_fp8_quant")
            from vllm.model_executor.layers.quantization.utils.fp8_utils import per_token_group_quant_fp8

            def fn(inputs: Inputs) -> Outputs:
                codes, scales = per_token_group_quant_fp8(
                    inputs["x"], gs, dtype=qdtype, column_major_scales=col, use_ue8m0=False
                )
                return codes, scales

            return fn
        custom_ops("per_token_group_quant_int8")
        from vllm.model_executor.layers.quantization.utils.int8_utils import per_token_group_quant_int8

        def fn(inputs: Inputs) -> Outputs:
            codes, scales = per_token_group_quant_int8(inputs["x"], gs)
            return codes, scales

        return fn

    return factory


# =========================================================================== rms_norm_static_quant peers


class _CodesBuffers:
    """Code outputs of one factory, allocated on first use per (shape, dtype, device) and
    reused by later calls (as vLLM's benchmarks allocate outside the timed call): a later
    call overwrites the previous call's codes."""

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (tuple(shape), dtype, device)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = torch.empty(key[0], dtype=dtype, device=device)
        return buf


def _vllm_static_factory(params: Params) -> OpFn:
    """vLLM's fused static-scale fp8 kernels (``csrc/layernorm_quant_kernels.cu``).

    vLLM 0.25.1 exposes them only as ``torch.ops._C`` ops (``vllm._custom_ops`` has no
    wrapper; importing it loads the kernel library), schemas from ``csrc/torch_bindings.cpp``:

    * ``rms_norm_static_fp8_quant(Tensor! result, Tensor input, Tensor weight, Tensor scale,
      float epsilon) -> ()``;
    * ``fused_add_rms_norm_static_fp8_quant(Tensor! result, Tensor input, Tensor! residual,
      Tensor weight, Tensor scale, float epsilon) -> ()``: ``residual`` becomes ``input +
      residual`` in place, ``input`` is left as is.

    ``result`` (contiguous fp8 [T, H]) is reused across calls. The kernels compute
    ``(scalar_t)(x * rstd) * weight`` (HF's double rounding) and multiply by
    ``1.0f / *scale`` before the saturating e4m3 conversion: the module's convention.
    Outputs ``(codes, scale[, residual])``.

    Raises:
        Unsupported: ``quant_dtype=int8`` (vLLM has no fused static int8), or a vLLM
            build without these ops.
    """
    qd = _check_quant_dtype(params)
    if qd != "fp8":
        raise Unsupported("vLLM has no fused static int8 RMSNorm quantization (it runs rms_norm, then scaled_int8_quant)")
    res = _has_residual(STATIC_OP, params)
    eps = float(params.get("eps", 1e-6))
    from normbench.kernels.providers.vllm import custom_ops

    name = "fused_add_rms_norm_static_fp8_quant" if res else "rms_norm_static_fp8_quant"
    custom_ops(name)  # imports vllm._custom_ops (which loads the kernel library); Unsupported if it lacks the op
    kernel = getattr(torch.ops._C, name)
    bufs = _CodesBuffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w, scale = inputs["x"], inputs["weight"], inputs["scale"]
        out = bufs.get(x.shape, torch.float8_e4m3fn, x.device)
        if res:
            r = inputs["residual"]
            kernel(out, x, r, w, scale, eps)
            return out, scale, r
        kernel(out, x, w, scale, eps)
        return out, scale

    return fn


def _flashinfer_static_factory(params: Params) -> OpFn:
    """FlashInfer's ``flashinfer.norm.rmsnorm_quant(out, input, weight, scale, eps=1e-6,
    enable_pdl=None)`` / ``fused_add_rmsnorm_quant(out, input, residual, weight, scale,
    eps=1e-6, enable_pdl=None)`` (0.7.x ``flashinfer/norm/__init__.py``; CuTe-DSL kernels, or
    the CUDA ones of ``include/flashinfer/norm.cuh`` with ``FLASHINFER_USE_CUDA_NORM=1``).

    ``out`` is a preallocated fp8 tensor (reused across calls), ``scale`` an fp32 tensor of
    shape (1,); ``residual`` becomes ``input + residual`` in place. Convention: both kernels
    compute ``y * (1 / scale)`` in fp32 (``scale_inv = 1.0f / scale``; the CuTe kernel an
    approximate reciprocal), clamp to +-448 and convert with round-to-nearest-even: the scale
    divides, as vLLM's and ours, so the adapter passes it unchanged. The fused-add CUDA
    kernel normalizes the unrounded fp32 sum (it stores the rounded one), within ``check``'s
    tie rule. FP8 conversion needs SM89+ (``registry``: ``min_sm``).

    Raises:
        Unsupported: int8 (FlashInfer writes e4m3 / e5m2 only), float32 inputs (its norm
            kernels take fp16 / bf16), or a FlashInfer without ``rmsnorm_quant``.
    """
    qd = _check_quant_dtype(params)
    if qd != "fp8":
        raise Unsupported("flashinfer's rmsnorm_quant writes fp8 only")
    if params["dtype"] == "float32":
        raise Unsupported("flashinfer.norm takes float16 and bfloat16 only")
    res = _has_residual(STATIC_OP, params)
    eps = float(params.get("eps", 1e-6))
    import flashinfer.norm as fi_norm

    if not hasattr(fi_norm, "fused_add_rmsnorm_quant" if res else "rmsnorm_quant"):
        raise Unsupported("this flashinfer has no rmsnorm_quant / fused_add_rmsnorm_quant")
    bufs = _CodesBuffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w, scale = inputs["x"], inputs["weight"], inputs["scale"]
        out = bufs.get(x.shape, torch.float8_e4m3fn, x.device)
        if res:
            r = inputs["residual"]
            fi_norm.fused_add_rmsnorm_quant(out, x, r, w, scale, eps)
            return out, scale, r
        fi_norm.rmsnorm_quant(out, x, w, scale, eps)
        return out, scale

    return fn


_ALL = SUITE_OPS + (GROUP_QUANT,)
#: The ops of ``_vllm_factory``; ``rms_norm_static_quant`` has its own adapter.
_VLLM_OPS = tuple(op for op in _ALL if op != STATIC_OP)

IMPLS = {
    "reference": {op: _reference_factory(op) for op in _ALL},
    "torch_naive": {op: _naive_factory(op) for op in _ALL},
    "triton": {op: _triton_factory(op) for op in _ALL},
    "vllm": {**{op: _vllm_factory(op) for op in _VLLM_OPS}, STATIC_OP: _vllm_static_factory},
    "flashinfer": {STATIC_OP: _flashinfer_static_factory},
}
