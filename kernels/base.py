"""Contracts between the kernel runner and the kernels/providers it measures.

An **op family** (one package per family: ``rmsnorm/``, ``quant/``, ``nvfp4/``) knows,
for every op it serves, how to make inputs, how to compute the float64 reference and how
to check a provider's outputs against it. A **provider**
(``providers/<name>.py``) says whether it can run here and builds, outside the
timed region, a callable that runs one op on one set of inputs.

Tensors are torch tensors; this module imports torch, so nothing on the CLI's
start-up path may import it (``normbench.ops`` and ``normbench.registry`` carry
the pure metadata).

Conventions every family and provider follows:

* ``inputs`` is a ``dict[str, torch.Tensor]`` made by ``OpFamily.make_inputs``
  (e.g. ``{"x": [num_tokens, hidden_size], "weight": [hidden_size],
  "residual": [num_tokens, hidden_size]}``); providers may write into them
  (vLLM-style in-place ops) and must return their outputs.
* outputs are a tuple in the order the op documents, e.g. ``rms_norm`` ->
  ``(out,)`` or ``(out, residual_out)`` when ``params["residual"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

Params = dict[str, Any]
Inputs = dict[str, torch.Tensor]
Outputs = tuple[torch.Tensor, ...]
OpFn = Callable[[Inputs], Outputs]

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Tolerance:
    """Acceptance thresholds of one dtype.

    Attributes:
        norm_rel: max ``||out - ref||_2 / ||ref||_2`` (norm-wise relative error).
        rtol, atol: element-wise: every ``|out - ref| <= atol + rtol * |ref|``.
        mismatch_rate: quantized ops: the largest fraction of codes allowed to
            differ by one step from the reference where the reference value lies
            within rounding of a tie (see each family's ``check``).
    """

    norm_rel: float
    rtol: float
    atol: float
    mismatch_rate: float = 0.0


@dataclass
class CheckResult:
    """Outcome of a correctness check.

    ``metrics`` are stored in the run record (e.g. ``rel_err``, ``max_abs_err``,
    ``mismatch_rate``); ``message`` says what failed, for people.
    """

    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


class OpFamily(Protocol):
    """The tensor side of the ops of one family (see module docstring)."""

    def make_inputs(self, op: str, params: Params, device: torch.device, seed: int) -> Inputs:
        """Fresh random inputs (never zeros) for one case, drawn from ``seed``."""

    def reference(self, op: str, params: Params, inputs: Inputs) -> Outputs:
        """The float64 oracle's outputs (quantized outputs in their stored dtypes)."""

    def check(
        self, op: str, params: Params, inputs: Inputs, out: Outputs, ref: Outputs, tol: Tolerance
    ) -> CheckResult:
        """Compare a provider's outputs with the reference's."""


class Provider:
    """A family of implementations under one name (``triton``, ``liger``, ...).

    Subclasses set ``name`` and ``ops`` (op name -> factory). A factory takes the
    case's params and returns an ``OpFn``; it runs outside the timed region, so
    compilation, autotuning and workspace allocation belong there.
    """

    name: str = ""
    #: op name -> factory(params) -> OpFn
    ops: dict[str, Callable[[Params], OpFn]] = {}

    def unavailable(self) -> str | None:
        """Why this provider cannot run on this machine at all, or None."""
        return None

    def unsupported(self, op: str, params: Params, device: torch.device) -> str | None:
        """Why this provider cannot run this case here (dtype, shape, SM), or None."""
        if op not in self.ops:
            return f"{self.name} has no {op}"
        return None

    def make(self, op: str, params: Params) -> OpFn:
        return self.ops[op](params)


def normal_draws(device: torch.device, seed: int) -> Callable[..., torch.Tensor]:
    """``randn(*shape)``: float32 N(0, 1) tensors on ``device``, drawn in turn from one
    ``torch.Generator`` seeded with ``seed`` (deterministic per seed and device; a CPU and a
    CUDA draw differ). The families' ``make_inputs`` draw from it."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

    return randn


class OutputBuffers:
    """Output buffers of one factory, allocated on first use per (name, shape, dtype, device).

    The harness calls a factory's fn on several rotating input sets of one shape; reusing an
    output keeps allocation out of the timed call, as vLLM's benchmarks allocate outside it.
    A later call overwrites the previous call's outputs. Buffers are contiguous.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def empty(self, name: str, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (name, tuple(shape), dtype, device)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = torch.empty(key[1], dtype=dtype, device=device)
        return buf

    def like(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """A contiguous buffer of ``x``'s shape, dtype and device."""
        return self.empty(name, x.shape, x.dtype, x.device)


def require_cuda(device: torch.device) -> str | None:
    return None if device.type == "cuda" else "needs CUDA"


def cuda_device() -> torch.device:
    """The current CUDA device, or the CPU where there is none (a peer's SM gate then says so)."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def require_sm(device: torch.device, major: int) -> str | None:
    if device.type != "cuda":
        return "needs CUDA"
    cap = torch.cuda.get_device_capability(device)
    if cap[0] < major:
        return f"needs SM{major}0+ (this GPU is SM{cap[0]}{cap[1]})"
    return None


def relative_errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(norm-wise relative error, max absolute error), both in float64."""
    o = out.to(torch.float64)
    r = ref.to(torch.float64)
    diff = o - r
    denom = torch.linalg.vector_norm(r).item()
    norm_rel = torch.linalg.vector_norm(diff).item() / denom if denom > 0 else torch.linalg.vector_norm(diff).item()
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    if not (math.isfinite(norm_rel) and math.isfinite(max_abs)):
        return math.inf, math.inf
    return norm_rel, max_abs


def check_close(name: str, out: torch.Tensor, ref: torch.Tensor, tol: Tolerance) -> CheckResult:
    """Norm-wise and element-wise comparison of one floating output with its reference.

    Fails on shape mismatch, NaN/Inf, ``norm_rel`` over ``tol.norm_rel`` or any
    element with ``|out - ref| > atol + rtol * |ref|``.
    """
    if tuple(out.shape) != tuple(ref.shape):
        return CheckResult(False, {}, f"{name}: shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    norm_rel, max_abs = relative_errors(out, ref)
    metrics = {f"{name}_rel_err": norm_rel, f"{name}_max_abs_err": max_abs}
    if not math.isfinite(norm_rel):
        return CheckResult(False, metrics, f"{name}: NaN or Inf in output")
    o = out.to(torch.float64)
    r = ref.to(torch.float64)
    bad = (o - r).abs() > tol.atol + tol.rtol * r.abs()
    n_bad = int(bad.sum().item())
    if norm_rel > tol.norm_rel:
        return CheckResult(False, metrics, f"{name}: norm-wise relative error {norm_rel:.3g} > {tol.norm_rel:g}")
    if n_bad:
        idx = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
        return CheckResult(
            False,
            metrics,
            f"{name}: {n_bad} elements outside atol={tol.atol:g} rtol={tol.rtol:g}, "
            f"first at {idx}: {o[idx].item():.6g} vs {r[idx].item():.6g}",
        )
    return CheckResult(True, metrics)


def merge_checks(*results: CheckResult) -> CheckResult:
    """All outputs must pass; metrics are merged, the first failure's message kept."""
    metrics: dict[str, float] = {}
    for r in results:
        metrics.update(r.metrics)
    failed = [r for r in results if not r.ok]
    return CheckResult(not failed, metrics, failed[0].message if failed else "")
