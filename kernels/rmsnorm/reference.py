"""RMSNorm family: inputs, float64 reference and check (the semantics are in ``__init__``'s docstring)."""

import torch

from normbench.kernels.base import (
    CheckResult, Inputs, Outputs, Params, Tolerance, TORCH_DTYPES, check_close, merge_checks, normal_draws,
)

NORM_OPS = ("rms_norm", "fused_add_rms_norm")


def has_residual(op: str, params: Params) -> bool:
    """Whether this case adds a residual first (``fused_add_rms_norm`` always does)."""
    return op == "fused_add_rms_norm" or bool(params.get("residual", False))


# =========================================================================== family


class RMSNormFamily:
    """``OpFamily`` of ``rms_norm`` and ``fused_add_rms_norm`` (see the module docstring)."""

    ops = NORM_OPS

    def make_inputs(self, op: str, params: Params, device: torch.device, seed: int) -> Inputs:
        """Fresh inputs drawn from ``seed``: ``x`` and ``residual`` ~ N(0, 1), ``weight`` ~ 1 + 0.1 N(0, 1).

        Drawn in float32 from a ``torch.Generator`` on ``device`` (deterministic per seed
        and device; a CPU and a CUDA draw differ), then rounded to ``params["dtype"]``.
        ``residual`` is present only when the case adds one.
        """
        device = torch.device(device)
        n, h = int(params["num_tokens"]), int(params["hidden_size"])
        dtype = TORCH_DTYPES[params["dtype"]]
        randn = normal_draws(device, seed)

        inputs = {"x": randn(n, h).to(dtype), "weight": (1.0 + 0.1 * randn(h)).to(dtype)}
        if has_residual(op, params):
            inputs["residual"] = randn(n, h).to(dtype)
        return inputs

    def reference(self, op: str, params: Params, inputs: Inputs) -> Outputs:
        """Float64 ``(out,)`` or ``(out, r)``; ``r`` holds the dtype-rounded ``x + residual``."""
        x = inputs["x"]
        r = x.to(torch.float64)
        if has_residual(op, params):
            # One rounding of the exact sum, as every fused kernel stores r.
            r = (r + inputs["residual"].to(torch.float64)).to(x.dtype).to(torch.float64)
        rstd = torch.rsqrt(r.square().mean(dim=-1, keepdim=True) + float(params["eps"]))
        out = r * rstd * inputs["weight"].to(torch.float64)
        return (out, r) if has_residual(op, params) else (out,)

    def check(
        self, op: str, params: Params, inputs: Inputs, out: Outputs, ref: Outputs, tol: Tolerance
    ) -> CheckResult:
        """``base.check_close`` on ``out`` (and ``residual_out``), merged."""
        names = ("out", "residual_out")[: len(ref)]
        if not isinstance(out, (tuple, list)) or len(out) != len(ref):
            got = len(out) if isinstance(out, (tuple, list)) else type(out).__name__
            return CheckResult(False, {}, f"expected {len(ref)} outputs ({', '.join(names)}), got {got}")
        return merge_checks(*(check_close(n, o, r, tol) for n, o, r in zip(names, out, ref)))


FAMILY = RMSNormFamily()
