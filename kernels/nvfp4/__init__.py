"""RMSNorm (optionally with a fused residual add) followed by NVFP4 quantization: the op family
``normbench.ops`` names ``normbench.kernels.nvfp4:FAMILY``.

Ops: ``rms_norm_nvfp4_quant`` and ``fused_add_rms_norm_nvfp4_quant`` (the latter
pins ``residual=True``). Both return ``(codes, block_scales)`` plus
``residual_out`` when ``params["residual"]``.

Format (vLLM's convention; sources below)
-----------------------------------------
Inputs: ``x`` [m, n] (bfloat16 / float16 / float32), ``weight`` [n] (same dtype),
optional ``residual`` [m, n], ``global_scale`` float32 [1]. The global scale
*multiplies*: ``global_scale = 448 * 6 / amax(normalized output)`` (static,
calibrated; ``make_inputs`` computes it from the float64 norm output).

For each block of 16 consecutive elements of a row of the normalized output
``y`` (``n % 16 == 0``, else ``normbench.ops`` rejects the case):

* ``s = amax(|y_block|) / 6 * global_scale``, rounded to FP8 E4M3
  (``torch.float8_e4m3fn``) to nearest, ties to even, saturating at 448;
* ``out_scale = 1 / (float(s_e4m3) * (1 / global_scale))`` in float32, and 0
  where ``s_e4m3 == 0`` (vLLM ``cvt_warp_fp16_to_fp4``:
  ``SFValue != 0 ? rcp(SFValue * rcp(SFScaleVal)) : 0``; vLLM uses
  ``rcp.approx.ftz``, we use IEEE reciprocals: at most an ulp apart, inside the
  tie band of ``check``);
* codes ``= E2M1(y * out_scale)`` (float32 product), E2M1 magnitudes
  {0, 0.5, 1, 1.5, 2, 3, 4, 6}, round to nearest, ties to even, saturating at 6
  (PTX ``cvt.rn.satfinite.e2m1x2.f32``). A code is 4 bits: sign in bit 3,
  magnitude index in bits 0-2. Small negative values that round to zero keep
  their sign (code 0x8, as the PTX instruction does); ``check`` treats 0x0 and
  0x8 as equal.
* Two codes per byte, **low nibble first**: element 2k in bits 0-3, element
  2k+1 in bits 4-7. ``codes`` is uint8 [m, n/2].
* Block scales are stored swizzled for the tensor cores: a float8_e4m3fn
  buffer of shape [round_up(m, 128), round_up(n/16, 4)] made of 128x4 tiles
  (512 bytes each) ordered row-tile major, then k-tile; inside a tile, scale
  (row, k) sits at ``(row % 32) * 16 + ((row % 128) // 32) * 4 + k % 4``, so
  the flat offset is ``(row // 128 * k_tiles + k // 4) * 512 + (row % 32) * 16
  + ((row % 128) // 32) * 4 + k % 4`` (``k_tiles = round_up(n/16, 4) / 4``).
  Padding rows and columns are zero (vLLM's fused kernel writes them as zeros;
  ours too). ``swizzle_scales`` / ``unswizzle_scales`` convert.

Zero handling: a block whose amax is 0 (a row of zeros, or a value so small
that ``s`` rounds to 0 in E4M3, i.e. below 2**-10) gets scale 0, out_scale 0
(the guard), codes 0: no NaN or Inf anywhere.

Norm rounding (one rule, the reference's): the residual sum is rounded once to
the input dtype (``residual_out``, also the norm's input, as vLLM and HF do);
the norm ``y = h / sqrt(mean(h^2) + eps) * weight`` is computed exactly
(float64) and **rounded once to the input dtype before quantization**. vLLM
quantizes a dtype norm output: its fused ``rms_norm_nvfp4_quant`` kernel (PR
#32957) quantizes ``compute_rms_norm(...)``, a ``PackedVec<scalar_t>``, and its
unfused path quantizes the stored ``rms_norm`` output. Orders that round
differently (HF and vLLM's other fused norm-quant kernels round ``x * rstd``
and then multiply by the weight in dtype; FlashInfer rounds ``x * w`` in dtype
and never rounds ``y``; our fast Triton path never rounds ``y``) land within
one dtype ulp of it, which the tie band of ``check`` absorbs.

Triton kernels (``triton_launch.rms_norm_nvfp4_quant_triton``)
---------------------------------------------------------------
Both are one pass over whole rows held in registers: residual add (+ store), sum
of squares, block amax, E4M3 scale, E2M1 codes, packed bytes, swizzled scale
bytes, and zeros in every padding byte of the scale buffer (allocated with
``torch.empty``). A thread owns whole 16-element blocks, so block amax and
scale math need no shuffles. Default (fast) norm order: ``y = x * w`` in
float32, rstd folded into the per-block multiplier, ``y`` never rounded
(FlashInfer's order).

* **Fast kernel** (``triton_fast._nvfp4_fast_kernel``; bf16/fp16, default norm order; the
  default for those dtypes on sm_89+ GPUs and under the interpreter): persistent
  (``programs_per_sm x SMs`` programs walk the rows), weight loaded once per
  program and kept as float32, optional prefetch of the next row, optional PDL.
  Rows are two tensors of 32-bit words [n/16, 4], the two 16-byte halves of each
  block (one thread: two 16-byte loads per block).
  Quantization runs on the block-scaled value ``v = y * c`` (``c = rstd * gs / s``,
  float32) rounded to float16: packed f16x2 PTX computes ``RNE(min(2a, a + 2,
  a/2 + 4))`` for ``a = min(|v|, 6)`` (magic 1024) and packs 8 codes per 32-bit
  word with shifts, two byte permutes for the signs and one constant; E4M3 by
  ``cvt.rn.satfinite.e4m3x2.f32``; the residual sum by one bf16x2/f16x2 add
  (one rounding). Under the interpreter the same arithmetic runs in float32
  (``_f16_code``; bit-identical, checked by ``fast_encoder_probe`` against
  ``fast_encoder_model``). The float16 rounding of ``v`` (2**-12 relative) sits
  far inside the tie band of ``check`` for bf16/fp16 inputs (not for fp32, which
  the generic kernel serves). ~12 SASS instructions per element on sm_90 at 32
  elements per thread (bf16, no residual, Triton 3.6; generic kernel: 26).
* **Generic kernel** (``triton_generic._rms_norm_nvfp4_kernel``; any dtype, ``round_norm``):
  ``rows_per_program`` rows per program, (even, odd) element pairs
  ``[rows, H, n/16, 8/H]``; both roundings in float arithmetic (E4M3 by adding
  ``2**(e+20)``, E2M1 as ``RNE(min(2v, v+2, v/2+4))`` via a ``2**23`` magic add);
  ``round_norm=True`` applies the reference's rule and is bit-exact with it. float32 rows
  are read by two strided loads (even, odd elements; ``strided_pairs``): the one split load
  compiled wrong on the H100 at 1 row x 2 warps per program.

Details, SASS counts and measurements: ``docs/kernels/nvfp4-notes.md``.

Correctness (``FAMILY.check``)
------------------------------
1. Shapes and dtypes. Swizzle padding: the padded k columns of real rows
   must be zero bytes (a GEMM meets them with the zero-filled K padding, and
   an E4M3 NaN there would poison real outputs); nonzero bytes in padded rows
   (row >= m, whose outputs a GEMM drops; older vLLM ``scaled_fp4_quant``
   leaves them as ``torch.empty`` garbage) are counted in
   ``scale_pad_rows_nonzero`` but do not fail.
2. Scales, unswizzled, compared as E4M3 bit patterns: equal, or one E4M3 step
   apart where the reference's pre-rounding value ``amax / 6 * global_scale``
   lies within ``delta`` (relative) of the midpoint between the two values.
3. Codes decoded with low nibble = even element. With the provider's
   (accepted) scale the reference recomputes ``v = y_ref * out_scale``; each
   code must equal the reference's, or differ by one magnitude step (same
   sign, or through zero) where ``|v|`` lies within ``delta`` (relative) of
   the E2M1 decision threshold between them (0.25, 0.75, 1.25, 1.75, 2.5, 3.5
   or 5). ``delta = 1.5 * eps(dtype) + 2**-16`` with ``eps`` the dtype's
   machine epsilon (2**-7 bf16, 2**-10 fp16, 2**-23 fp32): one dtype ulp of
   difference in the norm output from a different rounding order, plus float32
   arithmetic (reduction order, rsqrt, reciprocals). A failure that swapping
   the nibbles would fix is reported as such.
4. ``mismatch_rate`` (tolerated code flips / codes) and
   ``scale_mismatch_rate`` (tolerated scale flips / blocks) must not exceed
   ``tol.mismatch_rate`` (counts: at most ``rate * N + 3 * sqrt(rate * N) + 1``,
   so that tiny cases do not fail on one or two flips). Measured: bf16 about
   2% of scales and 0.4% of codes flip for implementations that round the norm
   differently (HF order, FlashInfer order); fp16 0.2% / 0.04%; fp32 none.
5. Dequantized ``e2m1 * scale / global_scale`` vs the float64 norm output:
   ``dequant_rel_err`` (norm-wise) must not exceed the reference's own
   ``ref_dequant_rel_err`` (the format's error) by more than ``tol.norm_rel``.
6. ``residual_out`` with ``check_close``.

Global-scale conventions: vLLM multiplies. FlashInfer's ``rmsnorm_fp4quant``
docstring says it divides, but the stored kernel source computes
``global_scale * amax / 6`` and ``global_scale / scale`` (multiplies); the
adapter (``kernels/providers/flashinfer.py``) probes the installed version.

Sources: vLLM ``csrc/quantization/fp4/nvfp4_utils.cuh``
(``cvt_warp_fp16_to_fp4``, ``cvt_quant_to_fp4_get_sf_out_offset``,
``fp32_vec_to_e2m1``), ``csrc/quantization/fp4/nvfp4_quant_kernels.cu``,
``csrc/quantization/fp4/rmsnorm_nvfp4_quant_kernels.cu`` (PR #32957),
``vllm/_custom_ops.py: scaled_fp4_quant``; FlashInfer
``flashinfer/cute_dsl/rmsnorm_fp4quant.py`` and ``add_rmsnorm_fp4quant.py``.
Modules: ``format`` (the format library), ``reference`` (inputs, float64 reference, check:
``FAMILY``), ``triton_generic`` / ``triton_fast`` / ``triton_launch`` (our kernels and their
launcher), ``configs`` (the fast kernel's ``LaunchConfig``, its formula and the tuned table
``kernels/tuned/nvfp4.json``; the generic kernel's ``nvfp4_config``), ``impls`` (the
implementations this family ships: ``reference``, ``torch_naive``, ``triton``). ``IMPLS`` adds
the peers' adapters (``vllm``, ``flashinfer``: ``kernels/providers/<peer>.py``), assembled on
first use.
"""

from normbench.kernels._triton import device_facts
from normbench.kernels.nvfp4 import configs, format, impls, reference, triton_fast, triton_generic, triton_launch
from normbench.kernels.nvfp4.configs import TUNED, TUNING, LaunchConfig, default_config, formula_config, nvfp4_config
from normbench.kernels.nvfp4.format import (
    BLOCK_SIZE, DTYPE_EPS, E2M1_MAX, E2M1_THRESHOLDS, E2M1_VALUES, E4M3_MAX, decode_e2m1, encode_e2m1,
    output_scale_fp32, pack_codes, round_e4m3, round_to_format, round_up, scale_shape, swizzle_offset,
    swizzle_scales, unpack_codes, unswizzle_scales,
)
from normbench.kernels.nvfp4.impls import OWN_IMPLS, nvfp4_quantize_torch
from normbench.kernels.nvfp4.reference import DEFAULT_TOLERANCES, FAMILY, OPS, NVFP4Family, calibrated_global_scale
from normbench.kernels.nvfp4.triton_launch import (
    encoder_probe_values, fast_encoder_model, fast_encoder_probe, rms_norm_nvfp4_quant_triton,
    uses_fast_kernel,
)
from normbench.kernels.providers._family import impls_attribute

__all__ = [
    "BLOCK_SIZE", "DEFAULT_TOLERANCES", "DTYPE_EPS", "E2M1_MAX", "E2M1_THRESHOLDS", "E2M1_VALUES", "E4M3_MAX",
    "FAMILY", "NVFP4Family", "OPS", "OWN_IMPLS", "TUNED", "TUNING", "LaunchConfig", "calibrated_global_scale",
    "configs", "decode_e2m1", "default_config", "device_facts", "encode_e2m1", "encoder_probe_values",
    "fast_encoder_model", "fast_encoder_probe", "format", "formula_config", "impls", "nvfp4_config",
    "nvfp4_quantize_torch", "output_scale_fp32", "pack_codes", "reference", "rms_norm_nvfp4_quant_triton",
    "round_e4m3", "round_to_format", "round_up", "scale_shape", "swizzle_offset", "swizzle_scales", "triton_fast",
    "triton_generic", "triton_launch", "unpack_codes", "unswizzle_scales", "uses_fast_kernel",
]

#: ``IMPLS`` (provider -> op -> factory): ``OWN_IMPLS`` and the peers' adapters.
__getattr__ = impls_attribute(__name__, OWN_IMPLS, OPS)
