"""Compiled-kernel correctness on a CUDA GPU: every op x provider x dtype x odd shape, strided rows.

The other kernel tests run the Triton kernels under ``TRITON_INTERPRET=1`` in CI; compiled
code can differ (vectorization, integer specialization, instruction selection), so this
module checks the compiled kernels on the GPU itself, before any timing:

    python3 -m pytest -m gpu tests/kernels/test_gpu_kernels.py -q -rA --junitxml=$OUT/gpu_tests.xml

Without CUDA its ``gpu`` cases are *deselected* by ``tests/conftest.py`` (with one line in the
terminal summary), never skipped as passes; the tests of the case generator and of the harness
(``test_generator_*``, ``test_harness_*``) run on any machine.

Cases (``generate_cases``), each id ``op-provider-dtype-TxH[-axis...][-strided]``:

* ops: every op of ``normbench.ops.OPS`` (a newly added op is covered automatically), for the
  providers ``triton`` (ours) and, where installed, ``vllm`` and ``flashinfer`` (``GPU_PROVIDERS``);
  a provider takes an op only where its ``normbench.registry.PROVIDERS`` entry lists it and the
  GPU meets the entry's ``min_sm``.
* tier A, the op's default axes: every dtype (bfloat16, float16, float32) x every hidden size of
  ``HIDDEN_SIZES`` (16, 48, 1000, 2880, 5120, 13824, 65536), each with the token counts of its
  ``TIER_A_BUCKETS`` (1 | 7, 33 | 1024, 65537: every count at several sizes, all of them at 16),
  bounded by ``MAX_ELEMENTS`` = 2**26 elements per activation (1024 x 65536 is the largest;
  65537 tokens only with hidden <= 1000).
* tier B, every other value of every op axis (residual, quant_dtype, static_scale,
  scale_granularity, scale_ub, group_size, scale_layout, ...), one at a time, plus all of them
  at their last value together, at ``TIER_B_POINTS``: bfloat16 33 x the smallest hidden size
  the op accepts, float16 1024 x the first of 5120 / 13824 / 65536 it accepts, float32 1 x the
  smallest.
* tier S, strided rows: the default axes and the settings that add a residual, every dtype x
  33 tokens x the first of 1000 / 2880 / 5120 the op accepts: ``x`` and ``residual`` are
  row-slice views ``buffer[:, :H]`` of a ``[T, H + ROW_PAD]`` buffer whose padding holds NaN.
  Our Triton launchers take a row stride and must handle it; a peer may instead refuse it with
  an exception (reported, passes): never silently wrong, and no write may touch the padding.
* flashinfer (JIT-compiled per shape): tier A at ``PEER_REDUCED_HIDDEN`` x (7, 1024) only.

Dropped on purpose, to bound the Triton compiles (one per constexpr configuration: op path,
axes, dtype, hidden size, stride class, launch-config bucket of num_tokens): the full hidden x
token product in tier A and the full dtype x shape product in tier B; each would about double
the compiles. Combinations that an op's own ``validate`` forbids (e.g. hidden_size not a
multiple of group_size), that exceed ``MAX_ELEMENTS``, or whose provider is not installed / not
on this GPU are *not generated*; ``test_gpu_case_inventory`` prints them by reason.

Each case: fresh random inputs from the family's ``make_inputs`` seeded by the case id, the
float64 reference, the provider run once on a private copy with every allocation it makes
starting as 0xFF bytes (NaN in every float format; ``PoisonedAllocations``), then the family's
``check`` with the suites' default tolerance for the dtype (``KernelStage.tolerance_for``
without overrides). A failure names op, provider, shape, dtype, axes and the check's reason.
A provider that cannot run a case here (its factory raises ``Unsupported``, e.g. our quant
kernels above 32768 elements a row, vLLM's NVFP4 below SM100) is a skip with that reason.

Size: 441 triton cases (tier A 339, B 54, S 48) and as many per installed peer; about 312
distinct Triton compiles (counted on the CPU by recording each launch's specialization key;
``test_gpu_compile_count`` counts them on the GPU, ``COMPILE_BUDGET``). Compiling dominates the
run time, so before the first case ``warm_triton_cache`` compiles them in parallel worker
processes into Triton's on-disk cache (``NORMBENCH_GPU_WARM_WORKERS``, default cores - 2).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pytest
import torch

from normbench.ops import OPS
from normbench.registry import PROVIDERS

#: The modules that hold the families' Triton kernels.
FAMILY_MODULES = (
    "normbench.kernels.rmsnorm.triton_kernels", "normbench.kernels.quant.triton_kernels",
    "normbench.kernels.nvfp4.triton_generic", "normbench.kernels.nvfp4.triton_fast",
)
if torch.cuda.is_available():
    # Import (and so decorate) the kernels now, compiled, before a later test module of the
    # same session could set TRITON_INTERPRET; ``compiled_mode_problem`` checks it held.
    for _name in FAMILY_MODULES:
        importlib.import_module(_name)

HIDDEN_SIZES = (16, 48, 1000, 2880, 5120, 13824, 65536)
NUM_TOKENS = (1, 7, 33, 1024, 65537)
DTYPES = ("bfloat16", "float16", "float32")
#: Largest num_tokens x hidden_size of a case: one 2**26-element activation is 256 MiB in
#: float32 and 512 MiB as a float64 reference, so a case stays within a few GiB of GPU memory.
MAX_ELEMENTS = 2**26
#: Our kernels first, then the peers that are checked where installed.
GPU_PROVIDERS = ("triton", "vllm", "flashinfer")
#: Token counts in three launch-config buckets: one row, a few (a partial tile), many rows.
#: Within a bucket the kernels compile once (num_tokens is not specialized), so 7 and 33 or
#: 1024 and 65537 together cost one compile; each bucket at a hidden size costs one more.
TOKEN_BUCKETS = {"one": (1,), "few": (7, 33), "many": (1024, 65537)}
#: Tier A: the buckets each hidden size takes. Every hidden size gets at least one, every
#: token count appears at several sizes, 16 (one 16-element block per row, where an H100
#: found rms_norm_nvfp4_quant wrong in float32) takes all three. Dropped on purpose: the full
#: hidden x bucket product (21 buckets instead of 10), which about doubles the Triton compiles
#: (~400 for tier A alone) past the module's time budget.
TIER_A_BUCKETS = {
    16: ("one", "few", "many"),
    48: ("few",),
    1000: ("many",),
    2880: ("few",),
    5120: ("one", "many"),
    13824: ("few",),
    65536: ("many",),
}
#: Tier B: (dtype, num_tokens, "small" | "large" hidden size) points of every non-default axis
#: setting: each dtype and each bucket once, not their product (which would triple the
#: compiles of the ~18 axis variants).
TIER_B_POINTS = (("bfloat16", 33, "small"), ("float16", 1024, "large"), ("float32", 1, "small"))
TIER_B_LARGE = (5120, 13824, 65536)
STRIDED_TOKENS = 33
STRIDED_HIDDEN = (1000, 2880, 5120, 13824, 65536)
#: Padding (elements) after each row of a strided input: row stride = hidden_size + ROW_PAD.
ROW_PAD = 8
#: flashinfer compiles per shape (CuTe-DSL / JIT): a reduced grid bounds the time.
PEER_REDUCED = {"flashinfer"}
PEER_REDUCED_HIDDEN = (48, 1000, 5120)
#: Upper bound on distinct Triton kernels compiled by one run of this module on a GPU
#: (``test_gpu_compile_count``); compile time dominates the module's run time.
COMPILE_BUDGET = 360
#: Peers may refuse strided rows with an exception; ours must handle them.
MUST_HANDLE_STRIDES = {"triton"}


# ============================================================================ case generator


@dataclass(frozen=True)
class GpuCase:
    """One compiled-kernel correctness case.

    Attributes:
        op, provider: names in ``normbench.ops.OPS`` / ``normbench.registry.PROVIDERS``.
        params: the full params (``OpInfo.complete``) as sorted (axis, value) pairs.
        variant: the op axes whose value differs from the op's default, as (axis, value) pairs.
        strided: ``x`` / ``residual`` are row-slice views with row stride hidden_size + ROW_PAD.
        tier: ``"A"`` (default axes, full shape grid), ``"B"`` (other axis values), ``"S"`` (strided).
    """

    op: str
    provider: str
    params: tuple[tuple[str, Any], ...]
    variant: tuple[tuple[str, Any], ...]
    strided: bool
    tier: str

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def num_tokens(self) -> int:
        return int(self.param_dict["num_tokens"])

    @property
    def hidden_size(self) -> int:
        return int(self.param_dict["hidden_size"])

    @property
    def dtype(self) -> str:
        return str(self.param_dict["dtype"])

    @property
    def id(self) -> str:
        parts = [self.op, self.provider, self.dtype, f"{self.num_tokens}x{self.hidden_size}"]
        parts += [_axis_label(a, v) for a, v in self.variant]
        if self.strided:
            parts.append("strided")
        return "-".join(parts)

    @property
    def seed(self) -> int:
        return int.from_bytes(hashlib.sha256(self.id.encode()).digest()[:4], "little")

    def describe(self) -> str:
        axes = ", ".join(f"{a}={v}" for a, v in self.variant) or "default axes"
        layout = f"strided rows (row stride {self.hidden_size + ROW_PAD})" if self.strided else "contiguous"
        return (f"op={self.op} provider={self.provider} shape={self.num_tokens}x{self.hidden_size} "
                f"dtype={self.dtype} ({axes}; {layout})")


@dataclass(frozen=True)
class NotGenerated:
    """A combination the generator leaves out, and why."""

    op: str
    provider: str
    what: str
    reason: str


def _axis_label(axis: str, value: Any) -> str:
    if value is True:
        return axis
    if value is False:
        return f"no_{axis}"
    return f"{axis}={value}"


def op_variants(op: str) -> list[dict[str, Any]]:
    """The axis settings a case grid covers for ``op``: ``{}`` (defaults) first, then every
    non-default value of every free axis with choices, one at a time, then (where the op has
    two or more such axes) all of them at their last choice together. Fixed axes and axes
    without a list of choices keep their default."""
    info = OPS[op]
    free = {a: ax for a, ax in info.axes.items() if a not in info.fixed and ax.choices}
    variants: list[dict[str, Any]] = [{}]
    for axis, ax in free.items():
        variants += [{axis: v} for v in ax.choices if v != ax.default]
    combined = {a: ax.choices[-1] for a, ax in free.items() if ax.choices[-1] != ax.default}
    if len(combined) >= 2 and combined not in variants:
        variants.append(combined)
    return variants


def _valid(op: str, params: dict[str, Any]) -> str | None:
    return OPS[op].validate(params)


def _first_valid(op: str, variant: dict[str, Any], sizes: Iterable[int]) -> int | None:
    for h in sizes:
        if _valid(op, OPS[op].complete({"num_tokens": 1, "hidden_size": h, "dtype": "bfloat16", **variant})) is None:
            return h
    return None


def _points(op: str, variant: dict[str, Any], tier: str, provider: str) -> list[tuple[str, int, int]]:
    """(dtype, num_tokens, hidden_size) points of one tier, before validation and the bound."""
    if tier == "A":
        if provider in PEER_REDUCED:
            return [(d, t, h) for h in PEER_REDUCED_HIDDEN for t in (7, 1024) for d in DTYPES]
        return [(d, t, h) for h in HIDDEN_SIZES for b in TIER_A_BUCKETS[h] for t in TOKEN_BUCKETS[b] for d in DTYPES]
    if tier == "B":
        sizes = {"small": _first_valid(op, variant, HIDDEN_SIZES), "large": _first_valid(op, variant, TIER_B_LARGE)}
        return [(d, t, sizes[s]) for d, t, s in TIER_B_POINTS if sizes[s] is not None]
    h = _first_valid(op, variant, STRIDED_HIDDEN)
    return [] if h is None else [(d, STRIDED_TOKENS, h) for d in DTYPES]


def generate_cases(
    providers: Iterable[str] = GPU_PROVIDERS,
    ops: Iterable[str] | None = None,
    device_sm: int | None = None,
    installed: Callable[[str], str | None] | None = None,
) -> tuple[list[GpuCase], list[NotGenerated]]:
    """The GPU correctness cases (see the module docstring) and what was left out.

    Args:
        providers: provider names (``GPU_PROVIDERS`` by default).
        ops: op names; default every op of ``normbench.ops.OPS``.
        device_sm: the GPU's compute capability as ``10 * major + minor`` (e.g. 90 for an
            H100), for the providers' ``min_sm``; None generates as if every SM were met.
        installed: provider name -> why it is not installed here, or None; default: none missing.

    Returns:
        (cases in a stable order, not-generated combinations with their reasons).
    """
    cases: list[GpuCase] = []
    left: list[NotGenerated] = []
    for provider in providers:
        entry = PROVIDERS[provider]
        missing = installed(provider) if installed else None
        for op in (list(ops) if ops is not None else list(OPS)):
            if op not in entry.ops:
                left.append(NotGenerated(op, provider, "all cases", f"{provider} does not implement {op}"))
                continue
            if missing:
                left.append(NotGenerated(op, provider, "all cases", missing))
                continue
            need = entry.min_sm.get(op)
            if need is not None and device_sm is not None and device_sm < need:
                left.append(NotGenerated(op, provider, "all cases",
                                         f"{provider} {op} needs SM{need}+ (this GPU is SM{device_sm})"))
                continue
            info = OPS[op]
            variants = op_variants(op)
            plan = [("A", {}, False)]
            if provider not in PEER_REDUCED:
                plan += [("B", v, False) for v in variants[1:]]
                # Strided rows: the default axes, and the settings that add a strided input.
                plan += [("S", v, True) for v in variants if not v or v.get("residual") is True]
            for tier, variant, strided in plan:
                for dtype, t, h in _points(op, variant, tier, provider):
                    params = info.complete({"num_tokens": t, "hidden_size": h, "dtype": dtype, **variant})
                    what = f"{dtype} {t}x{h} {variant or 'default axes'}"
                    why = _valid(op, params)
                    if why is None and t * h > MAX_ELEMENTS:
                        why = f"num_tokens x hidden_size > MAX_ELEMENTS = 2**{int(math.log2(MAX_ELEMENTS))}"
                    if why:
                        left.append(NotGenerated(op, provider, what, why))
                        continue
                    full_variant = tuple((a, params[a]) for a in variant)
                    cases.append(GpuCase(op, provider, tuple(sorted(params.items())), full_variant, strided, tier))
    return cases, left


def summarize_not_generated(left: list[NotGenerated]) -> list[str]:
    """One line per (provider, op): the count per reason, numbers in reasons shown as ``#``."""
    groups: dict[tuple[str, str], Counter] = {}
    for n in left:
        groups.setdefault((n.provider, n.op), Counter())[re.sub(r"(?<=\s)\d+(?=[\s:,)]|$)", "#", n.reason)] += 1
    lines = []
    for (provider, op), reasons in groups.items():
        shown = "; ".join(f"{c} x {r}" for r, c in reasons.most_common())
        lines.append(f"{provider} {op}: {sum(reasons.values())} not generated: {shown}")
    return lines


# ============================================================================ the harness


def _device_sm() -> int | None:
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor


def _installed(provider: str) -> str | None:
    return PROVIDERS[provider].missing_package()


def tolerance_for(op: str, dtype: str):
    """The suites' default tolerance for ``op`` and ``dtype`` (``KernelStage.tolerance_for``
    of a stage without a ``tolerance:`` of its own)."""
    from normbench.kernels.base import Tolerance
    from normbench.suite import DEFAULT_TOLERANCE

    merged = dict(DEFAULT_TOLERANCE[dtype])
    merged.update(OPS[op].tolerance.get(dtype, {}))
    return Tolerance(**merged)


#: The byte every poisoned allocation starts with: NaN in bf16 / fp16 / fp32 / fp8 e4m3fn,
#: -1 in int8 / int32, two -6 codes in a packed NVFP4 byte.
POISON_BYTE = 0xFF


class PoisonedAllocations:
    """Within ``with``, CUDA allocations start as ``POISON_BYTE`` bytes.

    A private ``torch.cuda.MemPool`` is filled once with poison (``large_bytes`` in the large
    pool, ``small_bytes`` in 1 MiB pieces in the small pool, allocations <= 1 MiB) and freed to
    that pool; allocations inside the context carve from it, so an output a kernel leaves
    unwritten reads as NaN / 0xFF instead of whatever the allocator held. Allocations larger
    than what is left come from new memory (not poisoned). Keep the object alive while its
    allocations are in use. Where this torch has no usable ``MemPool`` (``mode`` "global"), the
    poison is freed to the emptied global cache instead, which later allocations reuse first
    but not surely. Without CUDA it does nothing (``mode`` "off").
    """

    def __init__(self, device: torch.device, large_bytes: int, small_bytes: int = 8 << 20):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # use_mem_pool wants an index
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.large_bytes = max(int(large_bytes), 2 << 20)
        self.small_bytes = small_bytes
        self.mode = "pool" if self.device.type == "cuda" else "off"
        self.pool = None
        self._ctx = None

    def __enter__(self) -> "PoisonedAllocations":
        if self.mode == "off":
            return self
        try:
            self.pool = torch.cuda.MemPool()
            self._ctx = torch.cuda.use_mem_pool(self.pool, device=self.device)
            self._ctx.__enter__()
        except (AttributeError, RuntimeError, TypeError):
            self.pool, self._ctx, self.mode = None, None, "global"
            torch.cuda.empty_cache()
        try:
            big = torch.empty(self.large_bytes, dtype=torch.uint8, device=self.device).fill_(POISON_BYTE)
            small = [torch.empty(1 << 20, dtype=torch.uint8, device=self.device).fill_(POISON_BYTE)
                     for _ in range(max(1, self.small_bytes >> 20))]
            del big, small
        except BaseException:
            self.__exit__(None, None, None)  # stop routing this thread's allocations to the pool
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
            self._ctx = None


@dataclass
class Outcome:
    """What one case gave: ``ok``, ``fail`` (message says why), ``refused`` (a peer raised on
    strided input: allowed), or ``unsupported`` (the provider cannot run it here: a skip)."""

    status: str
    message: str = ""
    metrics: dict[str, float] | None = None


def make_trial(inputs: dict[str, torch.Tensor], strided: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A private copy of ``inputs`` for the provider, and the strided buffers behind it.

    Contiguous: clones. Strided: every 2-D input (x, residual) becomes ``buf[:, :H]`` of a
    ``[T, H + ROW_PAD]`` buffer whose padding columns hold NaN (a kernel that reads past a row
    poisons its output); 1-D / 0-D inputs (weight, scales) are cloned.

    Returns:
        (trial inputs, name -> the full padded buffer of each strided input).
    """
    trial: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    for name, t in inputs.items():
        if strided and t.dim() == 2:
            rows, cols = t.shape
            buf = torch.full((rows, cols + ROW_PAD), float("nan"), dtype=t.dtype, device=t.device)
            buf[:, :cols].copy_(t)
            trial[name] = buf[:, :cols]
            buffers[name] = buf
        else:
            trial[name] = t.clone()
    return trial, buffers


def _padding_intact(buf: torch.Tensor, cols: int) -> bool:
    return bool(torch.isnan(buf[:, cols:].float()).all())


def run_case(case: GpuCase, device: torch.device, factory: Callable[[dict], Callable] | None = None) -> Outcome:
    """Run one case (see the module docstring); ``factory`` overrides the provider's (tests).

    Never raises for a provider's failure: exceptions and wrong results become ``fail``
    outcomes whose message starts with ``case.describe()``.
    """
    from normbench.kernels.providers._family import Unsupported, family_of
    from normbench.registry import load

    op, params = case.op, case.param_dict
    where = case.describe()
    if factory is None:
        provider = load(PROVIDERS[case.provider].target)
        why = provider.unavailable() or provider.unsupported(op, params, device)
        if why:
            return Outcome("unsupported", why)

        def factory(p, _provider=provider):
            return _provider.make(op, p)

    family = family_of(op)
    inputs = family.make_inputs(op, params, device, case.seed)
    ref = family.reference(op, params, inputs)
    try:
        fn = factory(params)
    except Unsupported as e:
        return Outcome("unsupported", str(e))
    except Exception as e:  # noqa: BLE001 - reported as the case's failure
        return Outcome("fail", f"{where}: building the provider raised {type(e).__name__}: {e}")
    trial, buffers = make_trial(inputs, case.strided)
    poison = PoisonedAllocations(device, OPS[op].bytes_moved(params) + (16 << 20))
    try:
        with poison:
            out = fn(trial)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    except Unsupported as e:
        return Outcome("unsupported", str(e))
    except Exception as e:  # noqa: BLE001
        msg = f"{type(e).__name__}: {e}".strip()
        if case.strided and case.provider not in MUST_HANDLE_STRIDES and str(e).strip():
            return Outcome("refused", f"{where}: refused strided input: {msg}")
        return Outcome("fail", f"{where}: raised {msg}")
    for name, buf in buffers.items():
        if not _padding_intact(buf, case.hidden_size):
            return Outcome("fail", f"{where}: wrote into the row padding of strided input '{name}'")
    result = family.check(op, params, inputs, out, ref, tolerance_for(op, case.dtype))
    del out, poison
    if not result.ok:
        return Outcome("fail", f"{where}: {result.message}", result.metrics)
    return Outcome("ok", "", result.metrics)


# ============================================================================ collection

_DEVICE_SM = _device_sm()
CASES, NOT_GENERATED = generate_cases(device_sm=_DEVICE_SM, installed=_installed)

#: Peers' kernels seen wrong on a GPU, by (op, provider, hidden_size): each such case is a strict
#: xfail (it must still fail; when a peer fixes it, the test says so and the entry goes). Our own
#: kernels never go here: a wrong triton case is a bug to fix.
KNOWN_PEER_DEFECTS = {
    ("rms_norm_group_quant", "vllm", 65536): (
        "vLLM 0.25.1 rms_norm_per_block_quant leaves every group scale unwritten at hidden 65536 "
        "(all read back as the poison NaN; H100, 2026-12-07, every dtype)"),
}


def _marked(case: GpuCase) -> Any:
    reason = KNOWN_PEER_DEFECTS.get((case.op, case.provider, dict(case.params).get("hidden_size")))
    if reason is None:
        return case
    return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=reason, raises=AssertionError))


def _triton_kernels(interpreted: bool = False) -> list[Any]:
    """Every module-level Triton kernel object of the families: compiled ones (``JITFunction``)
    or, with ``interpreted``, those decorated under TRITON_INTERPRET (``InterpretedFunction``)."""
    from triton.runtime.jit import JITFunction

    found = []
    for name in FAMILY_MODULES:
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if interpreted and "Interpreted" in type(obj).__name__:
                found.append(obj)
            elif not interpreted and isinstance(obj, JITFunction):
                found.append(obj)
    return found


def compiled_mode_problem() -> str | None:
    """Why the GPU cases would not test the compiled kernels as they run in production, or None.

    ``TRITON_INTERPRET`` decides at decoration whether a kernel compiles, and the NVFP4
    launcher reads it at every call (1 SM, no PTX paths), so it must be unset on a GPU.
    """
    interpreted = _triton_kernels(interpreted=True)  # imports the families first
    env = os.environ.get("TRITON_INTERPRET", "0")
    if env not in ("", "0"):
        return (f"TRITON_INTERPRET={env} is set on a CUDA machine (a test module or the shell set it): "
                "the GPU cases would run interpreter code paths; unset it")
    if interpreted:
        return f"{len(interpreted)} family kernels were decorated under TRITON_INTERPRET (interpreted, not compiled)"
    return None


def compiled_kernel_count() -> int:
    """Distinct compiled variants held in the Triton kernels' in-memory caches (this process)."""
    n = 0
    for kernel in _triton_kernels():
        for entry in getattr(kernel, "device_caches", {}).values():
            cache = entry[0] if isinstance(entry, tuple) else entry
            n += len(cache)
    return n


# ============================================================================ parallel compile warm-up

#: Worker processes that compile the selected triton cases' kernels into Triton's on-disk
#: cache before the cases run (compiling is CPU-bound and serial within one process); 0
#: turns the warm-up off. Default: CPU cores - 2, at most 12.
WARM_WORKERS_ENV = "NORMBENCH_GPU_WARM_WORKERS"
WARM_TIMEOUT_S = 240


def warm_case(case: GpuCase, device: torch.device) -> None:
    """Launch ``case``'s provider once, exactly as ``run_case`` does (same inputs, same
    strides, so the same kernel specializations), without reference or check."""
    from normbench.kernels.providers._family import family_of
    from normbench.registry import load

    provider = load(PROVIDERS[case.provider].target)
    if provider.unavailable() or provider.unsupported(case.op, case.param_dict, device):
        return
    inputs = family_of(case.op).make_inputs(case.op, case.param_dict, device, case.seed)
    trial, _ = make_trial(inputs, case.strided)
    provider.make(case.op, case.param_dict)(trial)
    torch.cuda.synchronize(device)


def _warm_shard(case_ids: list[str]) -> None:
    """A warm-up worker's body: ``warm_case`` for each id; failures are left to the real run."""
    by_id = {c.id: c for c in CASES}
    device = torch.device("cuda")
    for cid in case_ids:
        try:
            warm_case(by_id[cid], device)
        except Exception:  # noqa: BLE001 - the case itself reports it
            pass
        torch.cuda.empty_cache()


def _warm_workers() -> int:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # xdist already spreads the compiles
        return 0
    env = os.environ.get(WARM_WORKERS_ENV)
    if env is not None:
        return max(0, int(env))
    return max(0, min(12, (os.cpu_count() or 2) - 2))


def warm_triton_cache(cases: list[GpuCase], workers: int, timeout_s: float = WARM_TIMEOUT_S) -> str:
    """Compile the triton cases' kernels in ``workers`` subprocesses (cases of one op, axes,
    dtype, hidden size and layout go to one worker, so no kernel compiles twice); returns a
    one-line account. Worker failures and a timeout only lose the warm-up, never a result."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    groups: dict[tuple, list[str]] = {}
    for c in cases:
        if c.provider == "triton":
            groups.setdefault((c.op.replace("fused_add_", ""), c.variant, c.dtype, c.hidden_size, c.strided), []).append(c.id)
    if workers <= 0 or not groups:
        return "warm-up off"
    shards: list[list[str]] = [[] for _ in range(min(workers, len(groups)))]
    for ids in sorted(groups.values(), key=len, reverse=True):
        min(shards, key=len).extend(ids)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    procs = []
    for shard in shards:
        p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--warm"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, env=env, text=True)
        p.stdin.write("\n".join(shard))
        p.stdin.close()
        procs.append(p)
    failed = 0
    for p in procs:
        try:
            failed += p.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0))) != 0
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            failed += 1
    return (f"warm-up: {sum(map(len, shards))} triton cases in {len(shards)} processes, "
            f"{time.monotonic() - t0:.0f} s, {failed} workers failed or timed out")


@pytest.fixture(scope="module")
def warmed(request) -> str:
    """Check that the kernels are compiled (``compiled_mode_problem``), then warm Triton's
    cache for the triton cases selected in this session, once."""
    problem = compiled_mode_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and isinstance(item.callspec.params.get("case"), GpuCase)]
    return warm_triton_cache(selected, _warm_workers())


# ============================================================================ GPU tests


@pytest.mark.gpu
@pytest.mark.parametrize("case", [_marked(c) for c in CASES], ids=[c.id for c in CASES])
def test_gpu_kernel(case: GpuCase, warmed: str):
    device = torch.device("cuda")
    try:
        outcome = run_case(case, device)
    finally:
        torch.cuda.empty_cache()
    if outcome.status == "unsupported":
        pytest.skip(f"{case.provider}: {outcome.message}")
    if outcome.status == "refused":
        print(outcome.message)  # shown by -rA; refusing strided rows is allowed for peers
        return
    assert outcome.status == "ok", outcome.message


@pytest.mark.gpu
def test_gpu_poison_reaches_fresh_allocations():
    """The poison the cases rely on: allocations inside the context read as 0xFF bytes."""
    dev = torch.device("cuda")
    poison = PoisonedAllocations(dev, 64 << 20)
    with poison:
        print(f"poison mode: {poison.mode}")
        small = torch.empty(300, dtype=torch.bfloat16, device=dev)
        large = torch.empty((1024, 5120), dtype=torch.float32, device=dev)
        codes = torch.empty((33, 8), dtype=torch.uint8, device=dev)
    assert bool(torch.isnan(small).all()) and bool(torch.isnan(large).all())
    assert bool((codes == POISON_BYTE).all())


@pytest.mark.gpu
def test_gpu_harness_catches_unwritten_outputs():
    """A provider that returns an output it never wrote fails its case (poison + check)."""
    case = next(c for c in CASES if c.op == "rms_norm" and c.provider == "triton" and not c.strided)

    def lazy(params):
        return lambda inputs: (torch.empty_like(inputs["x"], memory_format=torch.contiguous_format),)

    outcome = run_case(case, torch.device("cuda"), factory=lazy)
    assert outcome.status == "fail" and "op=rms_norm" in outcome.message, outcome


@pytest.mark.gpu
def test_gpu_case_inventory():
    """What this GPU run covers and what it does not (printed; shown by -rA)."""
    counts = Counter((c.provider, c.tier) for c in CASES)
    print(f"device SM{_DEVICE_SM}: {len(CASES)} cases: " + ", ".join(f"{p} tier {t}: {n}" for (p, t), n in sorted(counts.items())))
    for line in summarize_not_generated(NOT_GENERATED):
        print("not generated:", line)
    triton_ops = {c.op for c in CASES if c.provider == "triton"}
    assert triton_ops == set(OPS), f"ops without triton cases: {sorted(set(OPS) - triton_ops)}"


@pytest.mark.gpu
def test_gpu_compile_count(warmed: str):
    """Runs last: distinct Triton kernels compiled by the cases above (the run time's main cost)."""
    n = compiled_kernel_count()
    print(warmed)
    print(f"{n} distinct Triton kernel variants compiled or loaded in this process (budget {COMPILE_BUDGET})")
    assert n <= COMPILE_BUDGET, f"{n} Triton compiles > COMPILE_BUDGET {COMPILE_BUDGET}: trim the case grid"


# ============================================================================ CPU tests (any machine)


def _triton_grid():
    return generate_cases(providers=("triton",))


def test_generator_covers_every_op_dtype_and_size():
    cases, left = _triton_grid()
    by_key = {(c.op, c.dtype, c.hidden_size) for c in cases}
    forbidden = {(n.op, n.what.split()[0], int(n.what.split()[1].split("x")[1])): n.reason
                 for n in left if "MAX_ELEMENTS" not in n.reason and n.what.endswith("default axes")}
    for op in OPS:
        for dtype in DTYPES:
            for h in HIDDEN_SIZES:
                params = OPS[op].complete({"num_tokens": 1, "hidden_size": h, "dtype": dtype})
                if OPS[op].validate(params) is None:
                    assert (op, dtype, h) in by_key, f"{op} {dtype} hidden {h}: no case"
                else:
                    assert (op, dtype, h) in forbidden, f"{op} {dtype} hidden {h}: neither a case nor not-generated"
                    assert forbidden[(op, dtype, h)] == OPS[op].validate(params)
        # Every token count, except those that no hidden size the op accepts fits under the
        # element bound (65537 tokens needs hidden <= 1024: not a multiple of group_size 128).
        fits = {t for t in NUM_TOKENS for h in HIDDEN_SIZES if t * h <= MAX_ELEMENTS and OPS[op].validate(
            OPS[op].complete({"num_tokens": t, "hidden_size": h, "dtype": "bfloat16"})) is None}
        tokens = {c.num_tokens for c in cases if c.op == op}
        assert tokens == fits and {1, 7, 33, 1024} <= tokens, f"{op}: token counts {sorted(tokens)}"


def test_generator_bounds_elements_and_reports_the_rest():
    cases, left = _triton_grid()
    assert cases and all(c.num_tokens * c.hidden_size <= MAX_ELEMENTS for c in cases)
    big = [n for n in left if "MAX_ELEMENTS" in n.reason]
    assert big, "the bound must drop something (65537 tokens at large hidden sizes)"
    assert all(int(n.what.split()[1].split("x")[0]) * int(n.what.split()[1].split("x")[1]) > MAX_ELEMENTS for n in big)
    # 65537 tokens stays in the grid at small hidden sizes, and 1024 x 65536 sits exactly at the bound.
    assert any(c.num_tokens == 65537 for c in cases)
    assert any(c.num_tokens * c.hidden_size == MAX_ELEMENTS for c in cases)


def test_generator_covers_every_axis_value_and_strides():
    cases, _ = _triton_grid()
    for op, info in OPS.items():
        op_cases = [c for c in cases if c.op == op]
        for axis, ax in info.axes.items():
            if axis in info.fixed or not ax.choices:
                continue
            seen = {c.param_dict[axis] for c in op_cases}
            assert seen == set(ax.choices), f"{op}.{axis}: covered {seen}, choices {ax.choices}"
        strided = [c for c in op_cases if c.strided]
        assert {c.dtype for c in strided} == set(DTYPES), f"{op}: strided cases {len(strided)}"
        assert all(c.num_tokens > 1 for c in strided)


def test_generator_ids_are_unique_and_readable():
    cases, _ = _triton_grid()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    c = next(c for c in cases if c.op == "rms_norm_group_quant" and c.strided and c.variant)
    assert c.id.startswith(f"rms_norm_group_quant-triton-{c.dtype}-{c.num_tokens}x{c.hidden_size}-")
    assert c.id.endswith("-strided")
    assert "rms_norm-triton-float32-1x16" in ids
    assert "rms_norm_nvfp4_quant-triton-float32-1x16" in ids  # the case the H100 check caught
    assert len({c.seed for c in cases}) > 0.99 * len(cases)


def test_generator_respects_min_sm_and_missing_providers():
    cases, left = generate_cases(providers=("flashinfer", "vllm"), device_sm=90,
                                 installed=lambda p: "vllm not installed" if p == "vllm" else None)
    assert not [c for c in cases if c.provider == "vllm"]
    assert {n.op for n in left if n.provider == "vllm"} == set(OPS)
    for op, need in PROVIDERS["flashinfer"].min_sm.items():
        if need > 90:
            assert not [c for c in cases if c.provider == "flashinfer" and c.op == op]
            assert any(n.op == op and "needs SM" in n.reason for n in left)
    fi = [c for c in cases if c.provider == "flashinfer"]
    assert fi and {c.hidden_size for c in fi} <= set(PEER_REDUCED_HIDDEN)
    assert all(line.count(":") >= 2 for line in summarize_not_generated(left))


def test_generator_compile_keys_within_budget():
    """A proxy of the distinct compiles: (kernel path, axes, dtype, hidden size, stride class,
    num_tokens bucket), the residual ops sharing their plain op's kernels. The CPU count of
    real specialization keys was 312 for this grid; ``test_gpu_compile_count`` counts on a GPU."""
    bucket = {t: b for b, ts in TOKEN_BUCKETS.items() for t in ts}
    cases, _ = _triton_grid()
    keys = {(c.op.replace("fused_add_", ""), c.variant, c.dtype, c.hidden_size, c.strided, bucket[c.num_tokens])
            for c in cases}
    assert len(keys) <= COMPILE_BUDGET, len(keys)


def test_tolerance_matches_the_kernel_stage():
    from normbench.suite import KernelStage

    for op in OPS:
        stage = KernelStage(kind="kernel", op=op, providers=["triton"], sweep={"num_tokens": 1, "hidden_size": 64})
        for dtype in DTYPES:
            assert tolerance_for(op, dtype) == type(tolerance_for(op, dtype))(**stage.tolerance_for(dtype))


def test_compiled_mode_problem_flags_the_interpreter(monkeypatch):
    """On this CPU machine the kernels are interpreted: the GPU guard must say so, both ways."""
    assert "TRITON_INTERPRET=1" in (compiled_mode_problem() or "")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert "decorated under TRITON_INTERPRET" in (compiled_mode_problem() or "")


def test_warm_up_workers_start_and_finish():
    """The warm-up's subprocess plumbing (here its workers find no CUDA and launch nothing)."""
    cases = [c for c in _triton_grid()[0] if c.op == "rms_norm"][:3]
    assert warm_triton_cache(cases, workers=0) == "warm-up off"
    line = warm_triton_cache(cases, workers=2, timeout_s=120)
    assert line.startswith("warm-up: 3 triton cases in 2 processes") and line.endswith(", 0 workers failed or timed out"), line


def test_harness_strided_trial_keeps_values_and_nan_padding():
    x = torch.randn(5, 24, dtype=torch.bfloat16)
    w = torch.randn(24, dtype=torch.bfloat16)
    trial, buffers = make_trial({"x": x, "weight": w}, strided=True)
    assert trial["x"].stride() == (24 + ROW_PAD, 1) and torch.equal(trial["x"], x)
    assert trial["weight"].is_contiguous() and torch.equal(trial["weight"], w)
    assert _padding_intact(buffers["x"], 24)
    trial["x"].add_(1)  # writes through the view stay inside the rows
    assert _padding_intact(buffers["x"], 24)
    buffers["x"][2, 24] = 0
    assert not _padding_intact(buffers["x"], 24)


def _cpu_case(op: str, provider: str, tokens: int, hidden: int, dtype: str, strided: bool, **axes) -> GpuCase:
    params = OPS[op].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype, **axes})
    return GpuCase(op, provider, tuple(sorted(params.items())), tuple(axes.items()), strided, "S" if strided else "A")


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("op", ["rms_norm", "fused_add_rms_norm", "rms_norm_quant", "rms_norm_nvfp4_quant"])
def test_harness_passes_a_correct_provider_on_cpu(op, strided):
    """The harness end to end on the CPU with torch_naive (no CUDA needed): strided views in,
    the family's check, ok."""
    case = _cpu_case(op, "torch_naive", 7, 48, "float32", strided)
    outcome = run_case(case, torch.device("cpu"))
    assert outcome.status == "ok", outcome.message


def test_harness_runs_our_triton_kernel_under_the_interpreter():
    """The same path the GPU cases take, with our Triton kernel (interpreted on the CPU)."""
    import importlib

    case = _cpu_case("rms_norm", "triton", 7, 48, "float32", True, residual=True)
    impl = importlib.import_module("normbench.kernels.rmsnorm").IMPLS["triton"]["rms_norm"]
    outcome = run_case(case, torch.device("cpu"), factory=impl)
    assert outcome.status == "ok", outcome.message


def test_harness_reports_wrong_results_with_the_case():
    case = _cpu_case("rms_norm", "torch_naive", 7, 48, "bfloat16", False)

    def off_by_a_bit(params):
        return lambda inputs: (inputs["x"] * 1.5,)

    outcome = run_case(case, torch.device("cpu"), factory=off_by_a_bit)
    assert outcome.status == "fail"
    for part in ("op=rms_norm", "provider=torch_naive", "shape=7x48", "dtype=bfloat16", "norm-wise"):
        assert part in outcome.message, outcome.message


def test_harness_catches_writes_into_row_padding():
    case = _cpu_case("rms_norm", "torch_naive", 7, 48, "float32", True)

    def spills(params):
        def fn(inputs):
            x = inputs["x"]
            out = x * 1.0
            x.as_strided((x.shape[0], x.shape[1] + 1), x.stride()).fill_(0)  # one element past each row
            return (out,)

        return fn

    outcome = run_case(case, torch.device("cpu"), factory=spills)
    assert outcome.status == "fail" and "row padding" in outcome.message, outcome


def test_harness_strided_refusal_is_allowed_for_peers_only():
    def refuses(params):
        def fn(inputs):
            if not inputs["x"].is_contiguous():
                raise RuntimeError("input must be contiguous")
            raise AssertionError("unreachable: the case is strided")

        return fn

    peer = run_case(_cpu_case("rms_norm", "vllm", 7, 48, "float32", True), torch.device("cpu"), factory=refuses)
    ours = run_case(_cpu_case("rms_norm", "triton", 7, 48, "float32", True), torch.device("cpu"), factory=refuses)
    assert peer.status == "refused" and "contiguous" in peer.message
    assert ours.status == "fail" and "provider=triton" in ours.message


if __name__ == "__main__":  # a warm-up worker (warm_triton_cache): case ids on stdin
    import sys

    if sys.argv[1:] == ["--warm"]:
        _warm_shard(sys.stdin.read().split())


def test_known_peer_defects_name_generated_peer_cases_and_mark_only_those():
    """Each entry matches cases a Hopper GPU with every peer installed runs (a stale or mistyped
    entry would silently mark nothing), never one of ours, and only its cases become xfails."""
    cases, _ = generate_cases(device_sm=90, installed=lambda p: None)
    for (op, provider, hidden), reason in KNOWN_PEER_DEFECTS.items():
        assert provider != "triton" and reason
        hit = [c for c in cases if (c.op, c.provider, c.hidden_size) == (op, provider, hidden)]
        assert hit, f"no generated case for {(op, provider, hidden)}"
        for c in hit:
            marks = _marked(c).marks
            assert [m.kwargs["strict"] for m in marks] == [True]
    plain = next(c for c in cases if (c.op, c.provider) == ("rms_norm_group_quant", "vllm") and c.hidden_size != 65536)
    assert _marked(plain) is plain
