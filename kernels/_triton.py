"""What the three kernel families share: the Triton import guard, device facts, the launch-config base.

* **Import guard.** ``triton`` / ``tl`` are the real modules where Triton is installed; without
  it (Triton is a Linux-only dependency, see pyproject.toml) they are stand-ins that let the
  families' kernel modules import, so the float64 references and the torch providers still
  work; a kernel is then never launched (``HAVE_TRITON`` is False and the ``triton`` provider
  reports itself unavailable). ``gdc_wait`` / ``gdc_launch_dependents`` are Triton's
  programmatic-dependent-launch ops (``triton.language.extra.cuda``, Triton >= 3.3), or None
  with ``HAVE_GDC`` False: configs asking for PDL are then refused by the launchers.
* **Device facts.** ``device_facts(device)`` -> ``DeviceFacts`` (SM count, compute capability,
  L2 bytes, whether PDL and the sm_89+ conversion PTX are usable), cached per device. Under
  the interpreter (``TRITON_INTERPRET=1``), or on a CPU device, a device counts as
  ``INTERPRETER_SMS`` SMs with neither PDL nor PTX.
* **Launch configs.** ``LaunchConfig`` is the frozen base every family's launch config extends
  with its own knobs (``kernels/<family>/configs.py``): hashable (launch plans are cached by
  it), written to and read from the tuned tables as JSON objects (``as_dict`` /
  ``from_dict``, which refuses unknown fields and wrong types).

Nothing here launches a kernel or changes its arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
from typing import Any, ClassVar


class _Constexpr:
    """Stand-in for ``tl.constexpr`` without Triton: usable as an annotation and as a value wrapper."""

    def __init__(self, value: Any = None) -> None:
        self.value = value


def _jit_stub(fn=None, **kwargs):
    """Stand-in for ``triton.jit`` without Triton: returns the function undecorated."""
    return fn if fn is not None else (lambda f: f)


try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - triton is a Linux-only dependency (pyproject)
    triton = types.SimpleNamespace(jit=_jit_stub)
    tl = types.SimpleNamespace(constexpr=_Constexpr)
    HAVE_TRITON = False

gdc_wait = gdc_launch_dependents = None
HAVE_GDC = False
if HAVE_TRITON:
    try:  # programmatic dependent launch (SM90+); Triton >= 3.3
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401 - re-exported

        HAVE_GDC = True
    except ImportError:  # pragma: no cover - older Triton: PDL configs are refused
        pass

#: SMs a device counts as under the interpreter: 2, so that a persistent grid of
#: ``programs_per_sm=1`` still runs several programs and their strided loops are exercised.
INTERPRETER_SMS = 2


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` is set now (kernels decorated from now on are interpreted)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreted(kernel: Any) -> bool:
    """Whether ``kernel`` was decorated under ``TRITON_INTERPRET`` (an ``InterpretedFunction``)."""
    return "Interpreted" in type(kernel).__name__


def next_pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (n >= 1), as ``triton.next_power_of_2``, without Triton."""
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative integers."""
    return -(-int(a) // int(b))


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    """What the launchers and the tuner need to know about a device.

    Attributes:
        sms: streaming multiprocessors (persistent grids launch ``programs_per_sm x sms``).
        capability: (major, minor) compute capability; (0, 0) off CUDA.
        l2_bytes: L2 cache size in bytes (0 off CUDA); the suites rotate inputs over 2 x L2.
        pdl: programmatic dependent launch usable (SM90+ and Triton's gdc ops).
        ptx_fp8: the sm_89+ conversion PTX (``cvt.rn.satfinite.e4m3x2.f32``, packed f16x2
            arithmetic) that the NVFP4 fast kernel inlines.
    """

    sms: int
    capability: tuple[int, int] = (0, 0)
    l2_bytes: int = 0
    pdl: bool = False
    ptx_fp8: bool = False


INTERPRETER_FACTS = DeviceFacts(sms=INTERPRETER_SMS)


@functools.lru_cache(maxsize=16)
def device_facts(device) -> DeviceFacts:
    """``DeviceFacts`` of a torch device, queried once per device (CPU / interpreter: ``INTERPRETER_FACTS``)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or interpreting():
        return INTERPRETER_FACTS
    props = torch.cuda.get_device_properties(device)
    cap = (props.major, props.minor)
    return DeviceFacts(
        sms=props.multi_processor_count,
        capability=cap,
        l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0),
        pdl=HAVE_GDC and cap >= (9, 0),
        ptx_fp8=cap >= (8, 9),
    )


_FIELD_TYPES = {"int": (int,), "bool": (bool,), "bool | None": (bool, type(None)), "str": (str,)}


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Base of the families' launch configs (see the module docstring).

    Subclasses are frozen dataclasses whose fields are ``int``, ``bool``, ``bool | None`` or
    ``str``; every family's has ``num_warps``, ``programs_per_sm`` and ``pdl``. ``POSITIONAL``
    is how many leading fields ``literal`` writes positionally.
    """

    POSITIONAL: ClassVar[int] = 1

    def short(self) -> str:
        """A compact name for tables and logs (each family defines its own)."""
        raise NotImplementedError

    def literal(self) -> str:
        """Python source of this config: the ``POSITIONAL`` leading fields, then the non-default keywords."""
        fields = dataclasses.fields(self)
        head = [repr(getattr(self, f.name)) for f in fields[: self.POSITIONAL]]
        tail = [
            f"{f.name}={getattr(self, f.name)!r}" for f in fields[self.POSITIONAL:]
            if getattr(self, f.name) != f.default
        ]
        return f"{type(self).__name__}({', '.join(head + tail)})"

    def as_dict(self) -> dict[str, Any]:
        """Every field, by name (the tuned tables' JSON object)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any):
        """The config of a JSON object; fields left out take their defaults.

        Raises:
            ValueError: not an object, an unknown field, a missing field without default, or
                a value of the wrong type (e.g. ``"8"`` or ``true`` for an int).
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected an object of {cls.__name__} fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
        for name, f in fields.items():
            if name not in data:
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"missing field {name!r}")
                continue
            want = _FIELD_TYPES[f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))]
            value = data[name]
            if not isinstance(value, want) or (bool not in want and isinstance(value, bool)):
                raise ValueError(f"field {name!r}: expected {f.type}, got {value!r}")
        return cls(**data)
