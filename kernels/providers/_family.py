"""Providers assembled from the op families' implementation tables.

Each family module (``normbench.kernels.rmsnorm``, ``.quant``, ``.nvfp4``)
exports ``FAMILY`` (inputs, reference, check) and ``IMPLS``: provider name ->
op name -> factory(params) -> OpFn. A provider here gathers its ops from every
family, so an implementation lives next to its reference and a provider is just
a name, its availability and its capability rules.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from normbench.kernels.base import OpFn, Params, Provider

FAMILIES = ("normbench.kernels.rmsnorm", "normbench.kernels.quant", "normbench.kernels.nvfp4")


class Unsupported(Exception):
    """Raised by a factory for a case it cannot run here; the message is the reason.

    The kernel runner records the case as SKIPPED with that reason.
    """


def family_module(op: str):
    """The family module that serves ``op``."""
    from normbench.registry import op_info

    return importlib.import_module(op_info(op).family.partition(":")[0])


def family_of(op: str):
    """The ``OpFamily`` object that serves ``op``."""
    return family_module(op).FAMILY


class FamilyProvider(Provider):
    """A provider whose ops are the families' ``IMPLS[name]`` entries.

    Args:
        name: provider name (key into each family's ``IMPLS``).
        packages: import names that must import for it to be available.
        needs_cuda: True when it cannot run on a CPU device.
        probe: called after ``packages`` import; returns why the provider cannot run
            here (e.g. vLLM's kernel library did not load), or None.

    ``unsupported`` also applies the registry entry's ``min_sm`` (the same rule, and
    message, as ``normbench.expand.capability_skip``).
    """

    def __init__(
        self, name: str, packages: tuple[str, ...] = (), needs_cuda: bool = False,
        probe: Callable[[], str | None] | None = None,
    ):
        self.name = name
        self.packages = packages
        self.needs_cuda = needs_cuda
        self.probe = probe
        self._ops: dict[str, Callable[[Params], OpFn]] | None = None

    @property
    def ops(self) -> dict[str, Callable[[Params], OpFn]]:  # type: ignore[override]
        if self._ops is None:
            ops: dict[str, Callable[[Params], OpFn]] = {}
            for mod in FAMILIES:
                ops.update(importlib.import_module(mod).IMPLS.get(self.name, {}))
            self._ops = ops
        return self._ops

    def unavailable(self) -> str | None:
        for pkg in self.packages:
            try:
                importlib.import_module(pkg)
            except Exception as e:  # a broken install is as unavailable as a missing one
                return f"{self.name} unavailable: import {pkg} failed: {type(e).__name__}: {e}"
        if self.probe is not None:
            try:
                return self.probe()
            except Exception as e:
                return f"{self.name} unavailable: probe failed: {type(e).__name__}: {e}"
        return None

    def unsupported(self, op: str, params: Params, device: torch.device) -> str | None:
        if self.needs_cuda and device.type != "cuda":
            return "needs CUDA"
        why = super().unsupported(op, params, device)
        if why is None and device.type == "cuda":
            from normbench.registry import PROVIDERS

            entry = PROVIDERS.get(self.name)
            need = entry.min_sm.get(op) if entry is not None else None
            if need is not None:
                major, minor = torch.cuda.get_device_capability(device)
                if major * 10 + minor < need:
                    why = f"needs SM{need}+ (this GPU is SM{major}{minor})"
        return why
