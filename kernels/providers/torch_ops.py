"""PyTorch providers: eager (``torch_naive``), compiled (``torch_compile``), ``F.rms_norm``."""

from __future__ import annotations

from typing import Any

import torch

from normbench.kernels.base import OpFn, Params
from normbench.kernels.providers._family import FamilyProvider

NAIVE = FamilyProvider("torch_naive")
F_RMS_NORM = FamilyProvider("torch_rms_norm")


def _lift_recompile_limits() -> None:
    """Dynamo falls back to eager, silently, once a function recompiles too often.

    A sweep compiles the same code object for many (hidden_size, dtype, ...)
    keys, so the default limit (8) would turn later cases into eager timings
    labelled ``torch_compile``.
    """
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 4096))


class CompiledProvider(FamilyProvider):
    """``torch_naive``'s function for each op under ``torch.compile`` (default mode).

    One compiled function per (op, params without ``num_tokens``): dynamo
    specializes the first ``num_tokens`` and, on the next one, recompiles with a
    dynamic token dimension, which is how vLLM compiles its models (dynamic
    batch, static hidden size). Compilation happens on the first call, which
    the kernel runner makes during the correctness check, outside the timed region.
    """

    def __init__(self) -> None:
        super().__init__("torch_compile")
        self._compiled: dict[tuple, Any] = {}

    @property
    def ops(self):  # type: ignore[override]
        return {op: self._maker(op, factory) for op, factory in NAIVE.ops.items()}

    def _maker(self, op: str, factory):
        def make(params: Params) -> OpFn:
            key = (op, tuple(sorted((k, v) for k, v in params.items() if k != "num_tokens")))
            if key not in self._compiled:
                _lift_recompile_limits()
                self._compiled[key] = torch.compile(factory(params))
            return self._compiled[key]

        return make


COMPILED = CompiledProvider()
