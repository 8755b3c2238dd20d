"""Names -> lazily imported implementations.

Ops and providers are looked up by name; their code is a ``"module:attr"`` string
imported only when a run needs it, so ``normbench list`` and ``validate`` never
import torch, vLLM or FlashInfer (the pattern of lm-eval's ``api/registry.py``).

Errors:
    UnknownNameError: an op or provider name that is not registered; the message
        has a did-you-mean and the known names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from normbench.errors import UnknownNameError
from normbench.ops import OPS, OpInfo

NORM_OPS = ("rms_norm", "fused_add_rms_norm")
QUANT_OPS = ("scaled_quant", "rms_norm_quant", "rms_norm_group_quant", "rms_norm_static_quant")
#: The ops an ``unfused: {norm: A, quant: B}`` composition serves (``kernels/providers/unfused.py``).
UNFUSED_OPS = ("rms_norm_quant", "rms_norm_group_quant", "rms_norm_static_quant")
#: FlashInfer's fp8 ``rmsnorm_quant`` / ``fused_add_rmsnorm_quant`` (static per-tensor scale).
FLASHINFER_QUANT_OPS = ("rms_norm_static_quant",)
NVFP4_OPS = ("rms_norm_nvfp4_quant", "fused_add_rms_norm_nvfp4_quant")
ALL_OPS = NORM_OPS + QUANT_OPS + NVFP4_OPS


@dataclass(frozen=True)
class ProviderEntry:
    """A provider's static facts.

    Attributes:
        name: the name suites use.
        target: ``"module:attr"`` of its ``normbench.kernels.base.Provider`` instance.
        ops: the ops it implements (checked against the instance by the tests).
        requires: import names of the packages it needs (found without importing).
        install: the command that installs them.
        summary: one line for ``list`` and the README.
        min_sm: op -> the lowest compute capability (e.g. 100 for SM100) it runs on.
    """

    name: str
    target: str
    ops: tuple[str, ...]
    requires: tuple[str, ...]
    install: str
    summary: str
    min_sm: dict[str, int] = field(default_factory=dict)

    def missing_package(self) -> str | None:
        """Why the provider cannot be imported here, from ``find_spec`` alone."""
        for pkg in self.requires:
            try:
                found = importlib.util.find_spec(pkg) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"{self.name} not installed: {self.install}"
        return None


_P = "normbench.kernels.providers"
PROVIDERS: dict[str, ProviderEntry] = {
    e.name: e
    for e in [
        ProviderEntry(
            "reference", f"{_P}.reference:PROVIDER", ALL_OPS, ("torch",),
            "pip install torch", "float64 oracle with the exact rounding rules (not timed by default)",
        ),
        ProviderEntry(
            "torch_naive", f"{_P}.torch_ops:NAIVE", ALL_OPS, ("torch",),
            "pip install torch", "eager PyTorch, HF LlamaRMSNorm formula, unfused",
        ),
        ProviderEntry(
            "torch_compile", f"{_P}.torch_ops:COMPILED", ALL_OPS, ("torch",),
            "pip install torch", "torch_naive under torch.compile",
        ),
        ProviderEntry(
            "torch_rms_norm", f"{_P}.torch_ops:F_RMS_NORM", NORM_OPS, ("torch",),
            "pip install torch", "torch.nn.functional.rms_norm",
        ),
        ProviderEntry(
            "triton", f"{_P}.triton:PROVIDER", ALL_OPS, ("torch", "triton"),
            "pip install triton", "normbench's own fused Triton kernels (kernels/)",
        ),
        ProviderEntry(
            "vllm", f"{_P}.vllm:PROVIDER",
            NORM_OPS + QUANT_OPS + NVFP4_OPS, ("torch", "vllm"),
            "pip install 'normbench[vllm]'",
            "vllm._custom_ops / torch.ops._C (kernel library checked at run time; NVFP4 needs SM100+)",
            # vLLM builds its NVFP4 kernels (scaled_fp4_quant) for SM100+ only.
            min_sm={op: 100 for op in NVFP4_OPS},
        ),
        ProviderEntry(
            "flashinfer", f"{_P}.flashinfer:PROVIDER", NORM_OPS + FLASHINFER_QUANT_OPS + NVFP4_OPS,
            ("torch", "flashinfer"), "pip install 'normbench[flashinfer]'",
            "flashinfer.norm (fp8 static quant needs SM89+, NVFP4 fusions SM100+)",
            min_sm={**{op: 89 for op in FLASHINFER_QUANT_OPS}, **{op: 100 for op in NVFP4_OPS}},
        ),
        ProviderEntry(
            "liger", f"{_P}.liger:PROVIDER", NORM_OPS, ("torch", "liger_kernel"),
            "pip install 'normbench[liger]'", "Liger-Kernel's Triton RMSNorm",
        ),
        ProviderEntry(
            "quack", f"{_P}.quack:PROVIDER", NORM_OPS, ("torch", "quack"),
            "pip install 'normbench[quack]'", "quack's CuTe-DSL RMSNorm",
        ),
    ]
}

#: The providers a composition ``unfused: {norm: A, quant: B}`` may name.
UNFUSED_TARGET = f"{_P}.unfused:compose"


def did_you_mean(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Known: {', '.join(known)}"


def op_info(name: str) -> OpInfo:
    try:
        return OPS[name]
    except KeyError:
        raise UnknownNameError(did_you_mean("op", name, sorted(OPS))) from None


def provider_entry(name: str) -> ProviderEntry:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownNameError(did_you_mean("provider", name, sorted(PROVIDERS))) from None


def load(target: str) -> Any:
    """Import ``"module:attr"`` and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
