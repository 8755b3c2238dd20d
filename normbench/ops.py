"""The ops normbench measures: their axes, validation rules and bytes-moved models.

Pure Python on purpose: ``list``, ``validate`` and ``compare`` use this module and
must not import torch. The tensor side of an op (inputs, float64 reference,
correctness check) lives in ``normbench.kernels.<family>`` and is named here by a
lazy ``"module:attr"`` string.

Params are plain dicts of one sweep point, e.g.
``{"num_tokens": 1024, "hidden_size": 4096, "dtype": "bfloat16", "residual": False,
"eps": 1e-6}``. Every op takes the common axes; op-specific axes are declared
per op with their allowed values and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Params = dict[str, Any]

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
QUANT_DTYPES = ("fp8", "int8", "nvfp4")

#: Axes every kernel op accepts, with their defaults.
COMMON_AXES: dict[str, Any] = {
    "num_tokens": None,  # required
    "hidden_size": None,  # required
    "dtype": "bfloat16",
    "eps": 1e-6,
}


@dataclass(frozen=True)
class Axis:
    """An op-specific sweep axis: allowed values (None = any) and the default."""

    default: Any
    choices: tuple[Any, ...] | None = None
    doc: str = ""


@dataclass(frozen=True)
class OpInfo:
    """Metadata of one op.

    Attributes:
        name: the op's name in suites, e.g. ``"rms_norm"``.
        summary: one line for ``normbench list`` and docs.
        family: ``"module:attr"`` of the tensor-side ``OpFamily`` object in
            ``normbench.kernels`` (imported only when a run needs it).
        axes: op-specific axes beyond ``COMMON_AXES``.
        fixed: axes pinned by the op itself (``fused_add_rms_norm`` pins
            ``residual=True``); a sweep that sets them to another value is an error.
        bytes_moved: params -> the fewest bytes a perfect kernel reads plus writes
            in device memory (each input read once, each output written once).
        validate: params -> an error message for a combination that can never
            run (e.g. ``hidden_size`` not a multiple of ``group_size``), else None.
        tolerance: per-dtype correctness defaults of this op, over the suite-wide
            ones (``normbench.suite.DEFAULT_TOLERANCE``); a suite's own
            ``tolerance:`` overrides both.
    """

    name: str
    summary: str
    family: str
    axes: dict[str, Axis]
    bytes_moved: Callable[[Params], int]
    validate: Callable[[Params], str | None] = lambda p: None
    fixed: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)

    def all_axes(self) -> list[str]:
        return list(COMMON_AXES) + list(self.axes)

    def complete(self, params: Params) -> Params:
        """Fill defaults and fixed values; the result is the case's full params."""
        out = {k: v for k, v in COMMON_AXES.items()}
        out.update({k: a.default for k, a in self.axes.items()})
        out.update(params)
        out.update(self.fixed)
        return out


# --------------------------------------------------------------------------- bytes models
def _act(p: Params) -> int:
    """Bytes of one [num_tokens, hidden_size] activation in the input dtype."""
    return p["num_tokens"] * p["hidden_size"] * DTYPE_BYTES[p["dtype"]]


def _weight(p: Params) -> int:
    return p["hidden_size"] * DTYPE_BYTES[p["dtype"]]


def _residual_rw(p: Params) -> int:
    """The residual is read and the updated residual written back: 2 activations."""
    return 2 * _act(p) if p.get("residual") else 0


def _rms_norm_bytes(p: Params) -> int:
    # x read, weight read, out written, residual read + written when fused.
    return _act(p) + _weight(p) + _act(p) + _residual_rw(p)


def _quant_code_bytes(p: Params) -> int:
    n = p["num_tokens"] * p["hidden_size"]
    return n // 2 if p["quant_dtype"] == "nvfp4" else n  # fp8/int8: 1 byte, e2m1: 1/2


def _rms_norm_quant_bytes(p: Params) -> int:
    scales = p["num_tokens"] * 4  # fp32 per token
    return _act(p) + _weight(p) + _residual_rw(p) + _quant_code_bytes(p) + scales


def _rms_norm_group_quant_bytes(p: Params) -> int:
    scales = p["num_tokens"] * (p["hidden_size"] // p["group_size"]) * 4
    return _act(p) + _weight(p) + _residual_rw(p) + _quant_code_bytes(p) + scales


def _rms_norm_static_quant_bytes(p: Params) -> int:
    # x (+ residual) read, weight read, codes written (+ residual written); the fp32 static
    # scale is read (4 bytes) and no scale is written.
    return _act(p) + _weight(p) + _residual_rw(p) + _quant_code_bytes(p) + 4


def _round_up(a: int, b: int) -> int:
    return (a + b - 1) // b * b


def _nvfp4_bytes(p: Params) -> int:
    # Swizzled E4M3 block scales are padded to [round_up(m,128), round_up(n/16,4)];
    # the padding is written too. The fp32 global scale is 4 bytes.
    scales = _round_up(p["num_tokens"], 128) * _round_up(p["hidden_size"] // 16, 4)
    return _act(p) + _weight(p) + _residual_rw(p) + _quant_code_bytes(p) + scales + 4


def _scaled_quant_bytes(p: Params) -> int:
    # Dynamic scaling needs the amax before it can write codes; the fewest bytes
    # still read the input once (one-pass per-token kernels do).
    scales = 4 if p["static_scale"] or p["scale_granularity"] == "per_tensor" else p["num_tokens"] * 4
    return _act(p) + _quant_code_bytes(p) + scales


# --------------------------------------------------------------------------- validation
def _validate_group(p: Params) -> str | None:
    if p["hidden_size"] % p["group_size"]:
        return (
            f"hidden_size {p['hidden_size']} is not a multiple of group_size "
            f"{p['group_size']}: per-group scales need whole groups"
        )
    return None


def _validate_nvfp4(p: Params) -> str | None:
    if p["hidden_size"] % 16:
        return f"hidden_size {p['hidden_size']} is not a multiple of 16: NVFP4 scales blocks of 16 elements"
    return None


def _validate_fp_quant(p: Params) -> str | None:
    if p.get("quant_dtype") == "nvfp4":
        return "quant_dtype nvfp4 has its own ops: rms_norm_nvfp4_quant, fused_add_rms_norm_nvfp4_quant"
    return None


def _validate_static_scale_factor(p: Params) -> str | None:
    f = p.get("static_scale_factor")
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < float("inf"):
        return f"static_scale_factor {f!r}: must be a positive number"
    return None


def _all(*checks: Callable[[Params], str | None]) -> Callable[[Params], str | None]:
    def check(p: Params) -> str | None:
        for c in checks:
            msg = c(p)
            if msg:
                return msg
        return None

    return check


# --------------------------------------------------------------------------- the ops
RESIDUAL = Axis(False, (False, True), "add the residual first and return the updated residual")
QUANT_DTYPE = Axis("fp8", ("fp8", "int8"), "fp8 = torch.float8_e4m3fn; int8 symmetric")

#: NVFP4 (kernels/nvfp4/reference.py ``check``): ``norm_rel`` is the slack over the format's own
#: dequantization error, ``rtol``/``atol`` apply to ``residual_out``, ``mismatch_rate``
#: caps one-step code flips at rounding ties (HF-style double rounding in bf16 flips
#: a few percent of codes legitimately).
NVFP4_TOLERANCE = {
    "bfloat16": {"norm_rel": 1e-2, "rtol": 2.0**-7, "atol": 1e-6, "mismatch_rate": 5e-2},
    "float16": {"norm_rel": 1e-2, "rtol": 2.0**-10, "atol": 1e-6, "mismatch_rate": 1e-2},
    "float32": {"norm_rel": 1e-3, "rtol": 1e-6, "atol": 1e-7, "mismatch_rate": 1e-3},
}

_NORM = "normbench.kernels.rmsnorm:FAMILY"
_QUANT = "normbench.kernels.quant:FAMILY"
_NVFP4 = "normbench.kernels.nvfp4:FAMILY"

OPS: dict[str, OpInfo] = {
    op.name: op
    for op in [
        OpInfo(
            "rms_norm",
            "y = x / sqrt(mean(x^2) + eps) * weight (optionally x += residual first)",
            _NORM,
            {"residual": RESIDUAL},
            _rms_norm_bytes,
        ),
        OpInfo(
            "fused_add_rms_norm",
            "r = x + residual; y = rms_norm(r) * weight; returns (y, r) like vLLM's in-place op",
            _NORM,
            {"residual": RESIDUAL},
            _rms_norm_bytes,
            fixed={"residual": True},
        ),
        OpInfo(
            "scaled_quant",
            "x -> fp8/int8 codes with a static or dynamic (per-tensor / per-token) scale",
            _QUANT,
            {
                "quant_dtype": QUANT_DTYPE,
                "static_scale": Axis(False, (False, True), "a given per-tensor scale instead of a computed one"),
                "scale_granularity": Axis(
                    "per_token", ("per_token", "per_tensor"), "granularity of a dynamic scale"
                ),
            },
            _scaled_quant_bytes,
            _validate_fp_quant,
        ),
        OpInfo(
            "rms_norm_quant",
            "RMSNorm (optional residual add) then dynamic per-token fp8/int8 quantization",
            _QUANT,
            {
                "residual": RESIDUAL,
                "quant_dtype": QUANT_DTYPE,
                "scale_ub": Axis(False, (False, True), "clamp the per-token amax to an upper bound, as vLLM"),
            },
            _rms_norm_quant_bytes,
            _validate_fp_quant,
        ),
        OpInfo(
            "rms_norm_group_quant",
            "RMSNorm (optional residual add) then dynamic per-group fp8/int8 quantization",
            _QUANT,
            {
                "residual": RESIDUAL,
                "quant_dtype": QUANT_DTYPE,
                "group_size": Axis(128, (64, 128), "elements per scale along hidden_size"),
                "scale_layout": Axis(
                    "row_major",
                    ("row_major", "col_major"),
                    "col_major = vLLM's is_scale_transposed=True: scales stored [groups, num_tokens]",
                ),
            },
            _rms_norm_group_quant_bytes,
            _all(_validate_fp_quant, _validate_group),
        ),
        OpInfo(
            "rms_norm_static_quant",
            "RMSNorm (optional residual add) then fp8/int8 with a static per-tensor scale "
            "(vLLM's rms_norm_static_fp8_quant)",
            _QUANT,
            {
                "residual": RESIDUAL,
                "quant_dtype": QUANT_DTYPE,
                "static_scale_factor": Axis(
                    1.0,
                    None,
                    "the input scale is factor * amax(|norm output|) / qmax: 1 maps the largest "
                    "value to qmax (to fp32 rounding); below 1 the values above factor * amax saturate",
                ),
            },
            _rms_norm_static_quant_bytes,
            _all(_validate_fp_quant, _validate_static_scale_factor),
        ),
        OpInfo(
            "rms_norm_nvfp4_quant",
            "RMSNorm then NVFP4 (E2M1 codes, E4M3 block-16 scales swizzled 128x4, fp32 global scale)",
            _NVFP4,
            {"residual": RESIDUAL, "quant_dtype": Axis("nvfp4", ("nvfp4",))},
            _nvfp4_bytes,
            _validate_nvfp4,
            tolerance=NVFP4_TOLERANCE,
        ),
        OpInfo(
            "fused_add_rms_norm_nvfp4_quant",
            "r = x + residual, RMSNorm, then NVFP4; returns (codes, block scales, r)",
            _NVFP4,
            {"residual": RESIDUAL, "quant_dtype": Axis("nvfp4", ("nvfp4",))},
            _nvfp4_bytes,
            _validate_nvfp4,
            fixed={"residual": True},
            tolerance=NVFP4_TOLERANCE,
        ),
    ]
}
