"""fp8 / int8 quantization and RMSNorm + quantization fusions: the op family ``normbench.ops``
names ``normbench.kernels.quant:FAMILY``.


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

Modules: ``reference`` (the rules above, inputs, float64 reference, check: ``FAMILY``),
``triton_kernels`` and ``triton_launch`` (ours: tiles of whole rows held in registers, one
read of the input; ``triton_*``), ``configs`` (``LaunchConfig``, the formula and the tuned
table ``kernels/tuned/quant.json``), ``impls`` (the implementations this family ships:
``reference``, ``torch_naive`` (eager, unfused, compile-friendly; ``torch_compile`` compiles
it), ``triton``). ``IMPLS`` adds the peers' adapters, assembled on first use: ``vllm``
(``vllm._custom_ops``; ``rms_norm_static_quant`` through ``torch.ops._C``) and ``flashinfer``
(``rms_norm_static_quant`` only), in ``kernels/providers/<peer>.py``.
"""

from normbench.kernels._triton import device_facts
from normbench.kernels.providers._family import impls_attribute
from normbench.kernels.quant import configs, impls, reference, triton_kernels, triton_launch
from normbench.kernels.quant.configs import (
    KINDS, MAX_BLOCK, TUNED, TUNING, LaunchConfig, default_config, formula_config,
)
from normbench.kernels.quant.impls import ALL_OPS, OWN_IMPLS
from normbench.kernels.quant.reference import (
    FAMILY, FP32_SLACK, GROUP_QUANT, MIN_SCALE, NORM_OPS, QMAX, QMIN, QUANT_TORCH_DTYPES, STATIC_OP,
    SUITE_OPS, UNIT_ROUNDOFF, QuantFamily, quantize_f64, round_e4m3,
)
from normbench.kernels.quant.triton_launch import (
    triton_group_quant, triton_rms_norm_group_quant, triton_rms_norm_quant, triton_rms_norm_static_quant,
    triton_scaled_quant,
)

__all__ = [
    "ALL_OPS", "FAMILY", "FP32_SLACK", "GROUP_QUANT", "KINDS", "MAX_BLOCK", "MIN_SCALE", "NORM_OPS", "OWN_IMPLS",
    "QMAX", "QMIN", "QUANT_TORCH_DTYPES", "STATIC_OP", "SUITE_OPS", "TUNED", "TUNING", "UNIT_ROUNDOFF",
    "LaunchConfig", "QuantFamily", "configs", "default_config", "device_facts", "formula_config", "impls",
    "quantize_f64", "reference", "round_e4m3", "triton_group_quant", "triton_kernels", "triton_launch",
    "triton_rms_norm_group_quant", "triton_rms_norm_quant", "triton_rms_norm_static_quant", "triton_scaled_quant",
]

#: ``IMPLS`` (provider -> op -> factory): ``OWN_IMPLS`` and the peers' adapters.
__getattr__ = impls_attribute(__name__, OWN_IMPLS, ALL_OPS)
