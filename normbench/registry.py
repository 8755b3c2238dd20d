"""Names -> lazily imported implementations, and each provider's facts, declared once.

Ops and providers are looked up by name; their code is a ``"module:attr"`` string
imported only when a run needs it, so ``normbench list`` and ``validate`` never
import torch, vLLM or FlashInfer (the pattern of lm-eval's ``api/registry.py``).

**One source of truth per provider.** A ``ProviderEntry`` declares, once, what a provider
serves and needs: its ops, the modules its availability check imports, the pip
distributions whose versions a run records, the install extra, ``needs_cuda`` and the
minimum SM per op, and (``target``) the module its adapters live in. Derived from it and
listed nowhere else:

* ``normbench.env.recorded_packages``: the versions stored with every run;
* ``normbench.env.footer_packages``: the versions in the compare / report footers and the
  environment keys ``compare`` lists first (``compare.important_env_keys``);
* ``normbench.expand.capability_skip``: the skip reasons of ``validate`` and ``run``;
* ``provider_table``: the README's provider table (``tests/unit/test_registry.py`` keeps
  the two equal; ``python -m normbench.registry`` prints it).

**Outside providers.** A package adds a provider with an entry point in the group
``normbench.providers`` (``ENTRY_POINT_GROUP``), named as the provider, whose value is a
``ProviderEntry`` or a callable returning one, e.g. in its ``pyproject.toml``::

    [project.entry-points."normbench.providers"]
    sgl = "nb_sgl.entry:ENTRY"

Names are read from the installed metadata when ``PROVIDERS`` is first iterated or asked
for a name it does not hold; the object is imported only when that provider's entry is
needed (so the module named there should import neither torch nor its kernels: its
``target`` does that, at run time). A built-in name always wins over an entry point.

Errors:
    UnknownNameError: an op or provider name that is not registered; the message
        has a did-you-mean and the known names (or, for an outside provider whose entry
        point failed to load, why).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import warnings
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
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

#: ``ProviderEntry.compiles`` values: per sweep point, per launch configuration, or nothing.
COMPILES = ("shape", "config", None)
#: The entry-point group outside packages register providers in.
ENTRY_POINT_GROUP = "normbench.providers"
#: What every provider imports: its ops take and return torch tensors.
RUNTIME_IMPORTS = ("torch",)
#: Distributions every normbench install has: torch (installed first, README "Set up") and
#: triton (a dependency on Linux). The README says "with torch" rather than a command.
BUNDLED = ("torch", "triton")


@dataclass(frozen=True)
class ProviderEntry:
    """A provider's static facts: the one place they are written.

    The first six fields may be given by position (name, target, ops, imports, install,
    summary); the others by keyword.

    Attributes:
        name: the name suites use.
        target: ``"module:attr"`` of its ``normbench.kernels.base.Provider`` instance; the
            module is where its adapters live (a peer's: ``kernels/providers/<peer>.py``).
        ops: the ops it implements (names in ``normbench.ops.OPS``; the tests check them
            against the instance's adapters).
        imports: the modules its availability check imports, beyond torch (which every
            provider needs), e.g. ``("vllm._custom_ops",)``. ``missing_package`` looks up
            their top-level packages without importing anything; the provider object
            imports them in full at run time.
        install: the command that installs it, when neither ``extra`` nor
            ``distributions`` says (empty: derived, see ``install_hint``).
        summary: one line for the README table (Markdown; no ``|``).
        min_sm: op -> the lowest compute capability (e.g. 100 for SM100) it runs on.
        distributions: pip distribution names whose versions every run records
            (``importlib.metadata.version``), e.g. ``("quack-kernels", "nvidia-cutlass-dsl")``.
        extra: the ``normbench[extra]`` that installs it (``pyproject.toml``
            ``[project.optional-dependencies]``), or None.
        needs_cuda: True when it cannot run on a CPU device: ``validate`` and ``run`` skip
            its cases there with ``needs CUDA``.
        compiles: what its first call at a sweep point compiles, for scheduling
            (``normbench.executors.unit_cost``): ``"shape"``, code for every new point
            (``torch.compile(dynamic=False)``); ``"config"``, a kernel per launch
            configuration, reused across token counts (Triton, CuTe-DSL and JIT-built
            kernels: the first point of each hidden size, dtype, residual, ...); None,
            nothing (eager or precompiled).

    Raises:
        ValueError: an op that is not in ``normbench.ops.OPS``, a ``min_sm`` for an op it
            does not declare, a ``|`` in the summary, or ``compiles`` not one of
            ``COMPILES``.
    """

    name: str
    target: str
    ops: tuple[str, ...]
    imports: tuple[str, ...] = ()
    install: str = ""
    summary: str = ""
    min_sm: dict[str, int] = field(default_factory=dict)
    distributions: tuple[str, ...] = ()
    extra: str | None = None
    needs_cuda: bool = False
    compiles: str | None = None

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"provider {self.name!r}: unknown ops {unknown} (known: {', '.join(OPS)})")
        stray = [op for op in self.min_sm if op not in self.ops]
        if stray:
            raise ValueError(f"provider {self.name!r}: min_sm for ops it does not declare: {stray}")
        if "|" in self.summary:
            raise ValueError(f"provider {self.name!r}: the summary is a Markdown table cell: no '|'")
        if self.compiles not in COMPILES:
            raise ValueError(f"provider {self.name!r}: compiles must be one of {COMPILES}, not {self.compiles!r}")

    @property
    def module(self) -> str:
        """The module of ``target``: where the provider object and its adapters live."""
        return self.target.partition(":")[0]

    @property
    def install_hint(self) -> str:
        """How to install it: ``install``, else ``pip install 'normbench[<extra>]'``, else
        ``pip install <distributions>``."""
        if self.install:
            return self.install
        if self.extra:
            return f"pip install 'normbench[{self.extra}]'"
        return "pip install " + " ".join(self.distributions or RUNTIME_IMPORTS)

    def missing_package(self) -> str | None:
        """Why the provider cannot be imported here, from ``find_spec`` of the top-level
        packages of torch and ``imports`` alone (nothing is imported: finding
        ``vllm._custom_ops`` itself would import ``vllm``), or None."""
        for pkg in (*RUNTIME_IMPORTS, *self.imports):
            top = pkg.partition(".")[0]
            try:
                found = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                if top in RUNTIME_IMPORTS and top not in self.imports:
                    return f"{self.name} needs {top}, which is not installed (install the build for this machine first)"
                return f"{self.name} not installed: {self.install_hint}"
        return None


_P = "normbench.kernels.providers"
#: The providers normbench ships (in this order in the README table and the version lists).
BUILTIN_PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry(
        "reference", f"{_P}.reference:PROVIDER", ALL_OPS,
        summary="the float64 oracle itself, with the exact rounding rules (timed only if listed)",
        distributions=("torch",),
    ),
    ProviderEntry(
        "torch_naive", f"{_P}.torch_ops:NAIVE", ALL_OPS,
        summary="eager PyTorch, HuggingFace LlamaRMSNorm formula, unfused",
        distributions=("torch",),
    ),
    ProviderEntry(
        "torch_compile", f"{_P}.torch_ops:COMPILED", ALL_OPS,
        summary="`torch_naive` under `torch.compile`, compiled per shape (`dynamic=False`: its best case)",
        distributions=("torch",), compiles="shape",
    ),
    ProviderEntry(
        "torch_rms_norm", f"{_P}.torch_ops:F_RMS_NORM", NORM_OPS,
        summary="`torch.nn.functional.rms_norm`",
        distributions=("torch",),
    ),
    ProviderEntry(
        "triton", f"{_P}.triton:PROVIDER", ALL_OPS, imports=("triton",),
        summary="normbench's own fused Triton kernels (`kernels/`)",
        distributions=("triton",), needs_cuda=True, compiles="config",
    ),
    ProviderEntry(
        "vllm", f"{_P}.vllm:PROVIDER", NORM_OPS + QUANT_OPS + NVFP4_OPS, imports=("vllm._custom_ops",),
        summary="vLLM's CUDA kernels (`vllm._custom_ops`, `torch.ops._C`; the kernel library is checked "
        "at run time); version pinned in `pyproject.toml`",
        # vLLM builds its NVFP4 kernels (scaled_fp4_quant) for SM100+ only.
        min_sm={op: 100 for op in NVFP4_OPS},
        distributions=("vllm",), extra="vllm", needs_cuda=True,
    ),
    ProviderEntry(
        "flashinfer", f"{_P}.flashinfer:PROVIDER", NORM_OPS + FLASHINFER_QUANT_OPS + NVFP4_OPS,
        imports=("flashinfer",),
        summary="`flashinfer.norm`: `rmsnorm`, static-FP8 `rmsnorm_quant`, NVFP4 `rmsnorm_fp4quant`",
        # FP8 conversion needs SM89+; the CuTe-DSL NVFP4 fusions are built for SM100+.
        min_sm={**{op: 89 for op in FLASHINFER_QUANT_OPS}, **{op: 100 for op in NVFP4_OPS}},
        distributions=("flashinfer-python",), extra="flashinfer", needs_cuda=True, compiles="config",
    ),
    ProviderEntry(
        "liger", f"{_P}.liger:PROVIDER", NORM_OPS, imports=("liger_kernel",),
        summary="Liger-Kernel's Triton RMSNorm",
        distributions=("liger-kernel",), extra="liger", needs_cuda=True, compiles="config",
    ),
    ProviderEntry(
        "quack", f"{_P}.quack:PROVIDER", NORM_OPS, imports=("quack",),
        summary="quack's CuTe-DSL RMSNorm",
        # quack-kernels runs on NVIDIA's CuTe DSL (nvidia-cutlass-dsl): both versions matter.
        distributions=("quack-kernels", "nvidia-cutlass-dsl"), extra="quack", needs_cuda=True, compiles="config",
    ),
)


def _from_entry_point(ep: EntryPoint) -> ProviderEntry:
    """The ``ProviderEntry`` an entry point names (the object, or what calling it returns).

    Raises:
        TypeError: it is neither a ``ProviderEntry`` nor a callable returning one.
        ValueError: the entry's name is not the entry point's.
        Exception: whatever importing its module raises.
    """
    obj = ep.load()
    if not isinstance(obj, ProviderEntry) and callable(obj):
        obj = obj()
    if not isinstance(obj, ProviderEntry):
        raise TypeError(f"it is of type {type(obj).__name__}, not a ProviderEntry or a callable returning one")
    if obj.name != ep.name:
        raise ValueError(f"its ProviderEntry is named {obj.name!r}, the entry point {ep.name!r}")
    return obj


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    who = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point '{ep.name} = {ep.value}'{who} (group {ENTRY_POINT_GROUP})"


class ProviderRegistry(MutableMapping):
    """Provider name -> ``ProviderEntry``: the built-in entries, then the outside ones.

    Outside entries come from the entry points of ``group``: their names are read on the
    first iteration (or lookup of a name not held), each object is imported on its first
    lookup. One that fails to load is dropped with a warning, and ``load_errors`` keeps
    why (``provider_entry`` reports it). ``items()`` and ``values()`` return lists of the
    entries that load. Setting and deleting names is for tests (``monkeypatch.setitem``).
    """

    def __init__(self, builtin: Iterable[ProviderEntry], group: str = ENTRY_POINT_GROUP):
        self._slots: dict[str, ProviderEntry | EntryPoint] = {e.name: e for e in builtin}
        self._group = group
        self._discovered = False
        self._outside: set[str] = set()
        self.load_errors: dict[str, str] = {}

    def discover(self, refresh: bool = False) -> None:
        """Read the entry points' names (nothing is imported). ``refresh``: forget the
        outside providers found before and read again (after ``sys.path`` changed)."""
        if self._discovered and not refresh:
            return
        if refresh:
            for name in self._outside:
                self._slots.pop(name, None)
                self.load_errors.pop(name, None)
            self._outside.clear()
        self._discovered = True
        for ep in entry_points(group=self._group):
            if ep.name in self._slots:
                if ep.name not in self._outside:
                    warnings.warn(f"{_origin(ep)} ignored: '{ep.name}' is a built-in provider", stacklevel=3)
                continue
            self._slots[ep.name] = ep
            self._outside.add(ep.name)

    def outside(self) -> list[str]:
        """The names that came from entry points, in discovery order."""
        self.discover()
        return [n for n in self._slots if n in self._outside]

    def __getitem__(self, name: str) -> ProviderEntry:
        slot = self._slots.get(name)
        if slot is None and not self._discovered:
            self.discover()
            slot = self._slots.get(name)
        if slot is None:
            raise KeyError(name)
        if isinstance(slot, ProviderEntry):
            return slot
        try:
            entry = _from_entry_point(slot)
        except Exception as e:  # an outside package's bug must not stop every suite
            why = f"provider '{name}' from {_origin(slot)} could not be loaded: {type(e).__name__}: {e}"
            self.load_errors[name] = why
            del self._slots[name]
            warnings.warn(why, stacklevel=2)
            raise KeyError(name) from None
        self._slots[name] = entry
        return entry

    def __setitem__(self, name: str, entry: ProviderEntry) -> None:
        self._slots[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._slots[name]

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(list(self._slots))

    def __len__(self) -> int:
        self.discover()
        return len(self._slots)

    def items(self) -> list[tuple[str, ProviderEntry]]:  # type: ignore[override]
        out = []
        for name in list(self):
            try:
                out.append((name, self[name]))
            except KeyError:  # failed to load: warned, and in load_errors
                continue
        return out

    def values(self) -> list[ProviderEntry]:  # type: ignore[override]
        return [e for _, e in self.items()]

    def __repr__(self) -> str:
        return f"ProviderRegistry({list(self._slots)})"


PROVIDERS: ProviderRegistry = ProviderRegistry(BUILTIN_PROVIDERS)

#: The providers a composition ``unfused: {norm: A, quant: B}`` may name.
UNFUSED_TARGET = f"{_P}.unfused:compose"


def provider_distributions(entries: Iterable[ProviderEntry] | None = None) -> tuple[str, ...]:
    """The pip distributions of ``entries`` (default: every provider), in order, each once."""
    entries = PROVIDERS.values() if entries is None else entries
    return tuple(dict.fromkeys(d for e in entries for d in e.distributions))


def _ops_cell(ops: Iterable[str]) -> str:
    ops = tuple(ops)
    return "all" if set(ops) == set(OPS) else ", ".join(f"`{op}`" for op in ops)


def _runs_on_cell(e: ProviderEntry) -> str:
    parts = ["CUDA" if e.needs_cuda else "CPU, CUDA"]
    by_sm: dict[int, list[str]] = {}
    for op, sm in e.min_sm.items():
        by_sm.setdefault(sm, []).append(op)
    parts += [f"SM{sm}+ for {_ops_cell(ops)}" for sm, ops in sorted(by_sm.items())]
    return "; ".join(parts)


def _install_cell(e: ProviderEntry) -> str:
    dists = e.distributions or RUNTIME_IMPORTS
    if not (e.install or e.extra) and set(dists) <= set(BUNDLED):
        return "with " + ", ".join(dists)
    return f"`{e.install_hint}`"


def provider_table(entries: Iterable[ProviderEntry] = BUILTIN_PROVIDERS) -> str:
    """The README's provider table (Markdown, no trailing newline), one row per entry in
    order, then the ``unfused`` composition.

    Columns: provider, what (``summary``), ops (``all`` when every op of ``OPS``), runs on
    (``needs_cuda``, then ``min_sm`` grouped by SM), install (``install_hint`` in code, or
    ``with torch`` / ``with triton`` for a provider of ``BUNDLED`` distributions only).
    """
    lines = ["| provider | what | ops | runs on | install |", "|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| `{e.name}` | {e.summary} | {_ops_cell(e.ops)} | {_runs_on_cell(e)} | {_install_cell(e)} |")
    lines.append(
        "| `{unfused: {norm: A, quant: B}}` | norm by A, then a separate quantization by B | "
        f"{_ops_cell(UNFUSED_OPS)} | as A and B | as A and B |"
    )
    return "\n".join(lines)


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
        if name in PROVIDERS.load_errors:
            raise UnknownNameError(PROVIDERS.load_errors[name]) from None
        raise UnknownNameError(did_you_mean("provider", name, sorted(PROVIDERS))) from None


def load(target: str) -> Any:
    """Import ``"module:attr"`` and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


if __name__ == "__main__":
    print(provider_table())
