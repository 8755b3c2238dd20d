"""PyTorch providers: eager (``torch_naive``), compiled (``torch_compile``), ``F.rms_norm``."""

from __future__ import annotations

import torch

from normbench.kernels.base import OpFn, Params
from normbench.kernels.providers._family import FamilyProvider

NAIVE = FamilyProvider("torch_naive")
F_RMS_NORM = FamilyProvider("torch_rms_norm")


class CompiledProvider(FamilyProvider):
    """``torch_naive``'s function for each op under ``torch.compile`` (default mode).

    Compilation happens on the first call, which the kernel runner makes during
    the correctness check, outside the timed region.
    """

    def __init__(self) -> None:
        super().__init__("torch_compile")

    @property
    def ops(self):  # type: ignore[override]
        return {op: self._compiled(factory) for op, factory in NAIVE.ops.items()}

    @staticmethod
    def _compiled(factory):
        def make(params: Params) -> OpFn:
            return torch.compile(factory(params))

        return make


COMPILED = CompiledProvider()
