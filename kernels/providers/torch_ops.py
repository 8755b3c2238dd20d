"""PyTorch providers: eager (``torch_naive``), compiled (``torch_compile``), ``F.rms_norm``."""

from __future__ import annotations

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

    Compiled once per case, with static shapes (``dynamic=False``): the best case
    for torch.compile, and the method of the anchor measurements. (With a dynamic
    token dimension, as a served model compiles, normbench measured 53% of copy
    bandwidth at 65536x8192 on an H200: docs/results/h200/REPORT.md.) Compilation
    happens on the first call, which the kernel runner makes during the
    correctness check, outside the timed region.
    """

    def __init__(self) -> None:
        super().__init__("torch_compile")

    @property
    def ops(self):  # type: ignore[override]
        return {op: self._maker(factory) for op, factory in NAIVE.ops.items()}

    @staticmethod
    def _maker(factory):
        def make(params: Params) -> OpFn:
            _lift_recompile_limits()
            return torch.compile(factory(params), dynamic=False)

        return make


COMPILED = CompiledProvider()
