"""Providers assembled from implementation tables: the families' own, or a peer's adapters.

Each family package (``normbench.kernels.rmsnorm``, ``.quant``, ``.nvfp4``) exports
``FAMILY`` (inputs, reference, check) and ``OWN_IMPLS``: provider name -> op name ->
factory(params) -> OpFn for the implementations it ships (``reference``, ``torch_naive``,
``torch_rms_norm``, ``triton``): such an implementation lives next to its reference.
A peer's adapters (vLLM, FlashInfer, Liger, quack) live in its own module,
``kernels/providers/<peer>.py``, as ``ADAPTERS`` (op name -> factory) for every family it
serves, next to nothing else: adding a provider is one ``ProviderEntry`` in
``normbench.registry`` and one adapter file.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Iterable

import torch

from normbench.kernels.base import OpFn, Params, Provider

FAMILIES = ("normbench.kernels.rmsnorm", "normbench.kernels.quant", "normbench.kernels.nvfp4")

Factory = Callable[[Params], OpFn]


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
    """A provider whose ops come from an implementation table.

    Args:
        name: provider name (key into each family's ``OWN_IMPLS``).
        packages: import names that must import for it to be available.
        needs_cuda: True when it cannot run on a CPU device.
        probe: called after ``packages`` import; returns why the provider cannot run
            here (e.g. vLLM's kernel library did not load), or None.
        adapters: a peer's op -> factory table (its ``ADAPTERS``); None gathers the
            families' ``OWN_IMPLS[name]`` instead (the implementations normbench ships).

    ``unsupported`` also applies the registry entry's ``min_sm`` (the same rule, and
    message, as ``normbench.expand.capability_skip``).
    """

    def __init__(
        self, name: str, packages: tuple[str, ...] = (), needs_cuda: bool = False,
        probe: Callable[[], str | None] | None = None, adapters: dict[str, Factory] | None = None,
    ):
        self.name = name
        self.packages = packages
        self.needs_cuda = needs_cuda
        self.probe = probe
        self.adapters = adapters
        self._ops: dict[str, Factory] | None = None

    @property
    def ops(self) -> dict[str, Factory]:  # type: ignore[override]
        if self._ops is None:
            if self.adapters is not None:
                self._ops = dict(self.adapters)
            else:
                ops: dict[str, Factory] = {}
                for mod in FAMILIES:
                    ops.update(importlib.import_module(mod).OWN_IMPLS.get(self.name, {}))
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


def peer_adapters() -> dict[str, dict[str, Factory]]:
    """Provider name -> ``ADAPTERS`` of every registered provider built from a peer's adapter table."""
    from normbench.registry import PROVIDERS, load

    out = {}
    for name, entry in PROVIDERS.items():
        adapters = getattr(load(entry.target), "adapters", None)
        if adapters:
            out[name] = adapters
    return out


def implementations(own: dict[str, dict[str, Factory]], ops: Iterable[str]) -> dict[str, dict[str, Factory]]:
    """Every implementation of ``ops`` by provider name: a family's ``own`` and the peers' adapters."""
    ops = set(ops)
    out = {name: dict(table) for name, table in own.items()}
    for name, adapters in peer_adapters().items():
        mine = {op: f for op, f in adapters.items() if op in ops}
        if mine and name not in out:
            out[name] = mine
    return out


def impls_attribute(module: str, own: dict[str, dict[str, Factory]], ops: Iterable[str]):
    """A module ``__getattr__`` (PEP 562) serving ``IMPLS``: ``implementations(own, ops)``,
    assembled on first use (the peers' modules import the family, so not at its import)."""
    ops = tuple(ops)

    def __getattr__(name: str):
        if name != "IMPLS":
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        impls = implementations(own, ops)
        setattr(sys.modules[module], "IMPLS", impls)
        return impls

    return __getattr__
