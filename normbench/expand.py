"""Suite -> Cases: the Cartesian sweep, variants, repeats, and capability skips.

Each stage kind expands its own stages (``normbench.stages``: ``kind_of(kind).expand``);
every case carries what running it needs (``Case.ref``, ``Case.params``,
``Case.settings``), so runners and executors never read the suite's stages.

Pure: no torch. What the machine can do comes in as ``Capabilities`` (built by
``Capabilities.detect()`` in the CLI, or by hand in tests), so ``validate``
shows the same skips a run would make.

Ordering: kernel cases are grouped by sweep point (inputs and the float64
reference are built once per point), and within a point repeats interleave
providers (p1 p2 p1 p2 ...) so that drift spreads over all of them.

Limits, checked before anything is measured or created (``check_size`` before
expansion; ``check_rules``, ``check_filters`` and ``check_memory`` after it):

* a run has at most ``MAX_CASES`` (200,000) cases, ``--repeat`` included, unless
  ``--max-cases`` raises it; the count multiplies axis lengths, it never enumerates;
* ``--repeat`` is at most ``MAX_REPEAT`` (1,000);
* one kernel case needs about ``case_bytes`` of memory, which must fit the
  device (``Capabilities.memory_bytes``: the GPU's, else the machine's RAM) for
  a case that runs here, and ``MAX_CASE_BYTES`` (1 TiB) for any case;
* include/exclude rules may not remove every case of a stage.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, replace
from typing import Any

from normbench.errors import NormbenchError
from normbench.ops import OPS
from normbench.registry import PROVIDERS, did_you_mean
from normbench.suite import KernelStage, LoadedSuite, ProviderRef, Suite, refuse

#: Cases per run (``--repeat`` included) unless ``--max-cases`` raises it.
MAX_CASES = 200_000
#: ``--repeat`` at most.
MAX_REPEAT = 1_000
#: No kernel case may need more memory than this (1 TiB), whatever the machine.
MAX_CASE_BYTES = 1 << 40


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers the runners.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        sm: compute capability ``(major, minor)`` on CUDA.
        gpu_name: e.g. ``"NVIDIA H100 80GB HBM3"``.
        missing: provider name -> why its package is missing (from find_spec).
    """

    device: str = "cpu"
    sm: tuple[int, int] | None = None
    gpu_name: str | None = None
    missing: dict[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None

    @classmethod
    def detect(cls) -> "Capabilities":
        """Probe the machine (imports torch when it is installed).

        ``memory_bytes`` is the first GPU's total memory on CUDA, else the
        machine's physical RAM (``sysconf``), else None (unknown).
        """
        missing = {n: r for n, e in PROVIDERS.items() if (r := e.missing_package())}
        try:
            import torch
        except ImportError:
            return cls("cpu", None, None, missing, _ram_bytes())
        if torch.cuda.is_available():
            return cls("cuda", torch.cuda.get_device_capability(), torch.cuda.get_device_name(), missing,
                       torch.cuda.get_device_properties(0).total_memory)
        return cls("cpu", None, None, missing, _ram_bytes())


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class KernelSettings:
    """What a kernel case needs from its stage, carried by the case (``Case.settings``).

    Attributes:
        seed: the stage's ``seed`` (the per-point input seed derives from it).
        tolerance: the correctness tolerance for the case's dtype, resolved
            (``KernelStage.tolerance_for``): ``(("norm_rel", x), ("rtol", x), ...)``.
        mode, warmup, repetitions, rotate_bytes, min_run_time_s: the stage's
            ``timing`` (``normbench.suite.Timing``; ``warmup`` / ``repetitions`` in calls
            and samples, ``rotate_bytes`` in bytes, ``min_run_time_s`` in seconds).
    """

    seed: int = 0
    tolerance: tuple[tuple[str, float], ...] = ()
    mode: str = "auto"
    warmup: int = 10
    repetitions: int = 50
    rotate_bytes: int | None = None
    min_run_time_s: float = 0.2

    @classmethod
    def of(cls, stage: KernelStage, dtype: str) -> "KernelSettings":
        t = stage.timing
        return cls(stage.seed, tuple(stage.tolerance_for(dtype).items()), t.mode, t.warmup, t.repetitions,
                   t.rotate_bytes, t.min_run_time_s)

    @property
    def tolerance_dict(self) -> dict[str, float]:
        return dict(self.tolerance)


@dataclass(frozen=True)
class E2ESettings:
    """What an end-to-end case needs from its stage: ``client``, the validated stage
    model itself (``ThroughputStage`` / ``LatencyStage`` / ``AccuracyStage`` /
    ``StartupStage``: the client, its load and the tool arguments)."""

    client: Any


@dataclass(frozen=True)
class Case:
    """One thing to measure, carrying everything needed to run it.

    ``params`` holds the op's full params (defaults filled) for kernel cases, or
    the stage parameters for end-to-end cases. ``skip`` is the reason the case
    will not run here (it is recorded as SKIPPED, never dropped). ``ref`` is the
    kernel case's provider (``provider`` is its label); ``settings`` the stage's
    settings (``KernelSettings`` or ``E2ESettings``): runners read these, never the
    suite's stages. Both stay out of equality and hashing (the identity is the
    fingerprint's), and both pickle (local workers and Ray send cases as pickles).

    Raises:
        ValueError: ``provider`` given and not ``ref.label``.
    """

    stage: str
    stage_index: int
    kind: str
    op: str | None
    provider: str | None
    variant: str | None
    params: tuple[tuple[str, Any], ...]
    repeat: int = 0
    skip: str | None = None
    ref: ProviderRef | None = field(default=None, compare=False)
    settings: KernelSettings | E2ESettings | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.ref is not None:
            if self.provider is None:
                object.__setattr__(self, "provider", self.ref.label)
            elif self.provider != self.ref.label:
                raise ValueError(f"Case: provider {self.provider!r} is not its ref's label {self.ref.label!r}")

    @property
    def provider_ref(self) -> ProviderRef | None:
        """``ref``, else a plain registry name's ref (a case built by hand with ``provider="torch_naive"``)."""
        if self.ref is not None or self.provider is None:
            return self.ref
        return ProviderRef(name=self.provider)

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def fingerprint(self) -> str:
        """What was measured, readable and stable across runs (no repeat index)."""
        head = [self.stage, self.op or self.kind, self.provider or "-", self.variant or "-"]
        tail = ",".join(f"{k}={v}" for k, v in self.params)
        return "/".join(head) + "/" + tail

    @property
    def case_id(self) -> str:
        return f"{self.fingerprint}#{self.repeat}"

    def shape_key(self) -> tuple:
        """Cases that share inputs and reference: same stage (names are unique in a suite), op and params."""
        return (self.stage, self.op, self.params)


def _matches(rule: dict[str, Any], values: dict[str, Any]) -> bool:
    for key, want in rule.items():
        have = values.get(key)
        options = want if isinstance(want, list) else [want]
        if isinstance(have, str) and any(isinstance(o, str) and fnmatch.fnmatchcase(have, o) for o in options):
            continue
        if have not in options:
            return False
    return True


def capability_skip(provider: str, op: str, caps: Capabilities) -> str | None:
    """Why ``provider`` cannot run ``op`` on this machine, or None (static facts only).

    The facts are its ``normbench.registry.ProviderEntry``'s: ``ops``, ``needs_cuda`` (the
    Triton interpreter is for tests, not timings; the peers are CUDA libraries), ``min_sm``,
    and (``caps.missing``) its packages.
    """
    entry = PROVIDERS.get(provider)
    if entry is None:  # an unfused composition: its parts decide
        return None
    if op not in entry.ops:
        return f"{provider} has no {op}"
    if entry.needs_cuda and caps.device != "cuda":
        return "needs CUDA"
    need = entry.min_sm.get(op)
    if need is not None and caps.sm is not None and caps.sm[0] * 10 + caps.sm[1] < need:
        return f"needs SM{need}+ (this GPU is SM{caps.sm[0]}{caps.sm[1]})"
    if provider in caps.missing:
        return caps.missing[provider]
    return None


def _unfused_skip(p: ProviderRef, op: str, caps: Capabilities) -> str | None:
    for part in p.parts:
        if part in caps.missing:
            return f"{p.label}: {caps.missing[part]}"
        entry = PROVIDERS.get(part)
        if entry is not None and entry.needs_cuda and caps.device != "cuda":
            return f"{p.label}: {part} needs CUDA"
    return None


def expand(suite: Suite, caps: Capabilities, repeats: int = 1) -> list[Case]:
    """All cases of a suite, skips included (``Case.skip`` says why)."""
    from normbench.stages import kind_of

    cases: list[Case] = []
    for i, stage in enumerate(suite.stages):
        cases.extend(kind_of(stage.kind).expand(stage, i, suite, caps, repeats))
    return cases


def stage_sizes(suite: Suite, repeats: int = 1) -> list[int]:
    """Each stage's case count before rules and capability skips, by multiplying
    axis lengths (never by enumerating: a 10^12-point sweep costs nothing)."""
    from normbench.stages import kind_of

    return [kind_of(stage.kind).size(stage, suite, repeats) for stage in suite.stages]


def sweep_size(suite: Suite, repeats: int = 1) -> int:
    """Case count before rules and capability filtering (cheap: for ``normbench list``)."""
    return sum(stage_sizes(suite, repeats))


def check_size(loaded: LoadedSuite, repeats: int = 1, max_cases: int = MAX_CASES) -> None:
    """Refuse a plan over ``max_cases`` cases (``--repeat`` included) before it is expanded.

    Raises:
        NormbenchError: ``repeats`` outside 1..``MAX_REPEAT``.
        SuiteError: over the limit, at the largest stage (``file:line:col: stages[i].sweep: ...``).
    """
    if not 1 <= repeats <= MAX_REPEAT:
        raise NormbenchError(f"--repeat {repeats}: between 1 and {MAX_REPEAT:,}")
    suite = loaded.suite
    sizes = stage_sizes(suite, repeats)
    total = sum(sizes)
    if total <= max_cases:
        return
    i = max(range(len(sizes)), key=lambda k: sizes[k])
    from normbench.stages import kind_of

    stage = suite.stages[i]
    loc, why = kind_of(stage.kind).size_reason(stage, i, repeats)
    whole = f"; the suite has {total:,}" if total != sizes[i] else ""
    raise refuse(loaded, [(loc, f"{sizes[i]:,} cases ({why}){whole}, over the limit of {max_cases:,} cases per "
                                f"run; narrow the sweep, or raise the limit with --max-cases")])


def case_bytes(op: str, params: dict[str, Any], rotate_bytes: int | None) -> int:
    """About the memory one kernel case of ``op`` needs (bytes): its tensors (the op's bytes-moved
    model: inputs and outputs once), float64 copies of the activation, the output and
    the residual for the reference (8 bytes per element each), and the rotated input
    copies (the stage's ``timing.rotate_bytes``). A lower bound; used to refuse absurd sizes early."""
    n = params["num_tokens"] * params["hidden_size"]
    acts = 3 if params.get("residual") else 2
    return OPS[op].bytes_moved(params) + 8 * n * acts + (rotate_bytes or 0)


def _fmt_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def check_rules(loaded: LoadedSuite, cases: list[Case]) -> None:
    """Refuse a kernel stage whose include/exclude rules leave no case (``cases``: the whole plan).

    Raises:
        SuiteError: at the stage's ``exclude`` (else ``include``).
    """
    have = {c.stage_index for c in cases}
    problems: list[tuple[tuple[Any, ...], str]] = []
    for i, stage in enumerate(loaded.suite.stages):
        include, exclude = getattr(stage, "include", None), getattr(stage, "exclude", None)
        if i not in have and (include or exclude):  # only kernel stages have rules
            which = "exclude" if exclude else "include"
            problems.append((("stages", i, which), "the include/exclude rules leave no case of this stage"))
    if problems:
        raise refuse(loaded, problems)


def check_memory(loaded: LoadedSuite, cases: list[Case], caps: Capabilities) -> list[Case]:
    """Refuse a kernel case too large for any device (``MAX_CASE_BYTES``); a case that would
    run here but needs more than this device's memory (``caps.memory_bytes``) becomes SKIPPED
    with the reason, like any case this device cannot run. ``cases``: the cases to run (after
    ``--filter``). Returns them, with those skips filled in.

    Raises:
        SuiteError: the first absurd case of each stage, at the axis value that makes it large
            (``num_tokens`` or ``hidden_size``, whichever is larger).
    """
    from normbench.stages import kind_of

    suite = loaded.suite
    problems: list[tuple[tuple[Any, ...], str]] = []
    flagged: set[int] = set()
    out: list[Case] = []
    for c in cases:
        need = kind_of(c.kind).case_bytes(c)
        if need is None:  # nothing of this case's size lives on the device (end-to-end)
            out.append(c)
            continue
        stage = suite.stages[c.stage_index]
        params = c.param_dict
        size = (f"num_tokens={params['num_tokens']:,} x hidden_size={params['hidden_size']:,} {params['dtype']} "
                f"needs about {_fmt_bytes(need)} (inputs, outputs and the float64 reference)")
        if need > MAX_CASE_BYTES:
            if c.stage_index not in flagged:
                flagged.add(c.stage_index)
                axis = "num_tokens" if params["num_tokens"] >= params["hidden_size"] else "hidden_size"
                loc = ("stages", c.stage_index, "sweep", axis, stage.sweep.axes()[axis].index(params[axis]))
                problems.append((loc, f"{size}; over {_fmt_bytes(MAX_CASE_BYTES)}, more than any device has"))
        elif c.skip is None and caps.memory_bytes and need > caps.memory_bytes:
            what = f"{caps.gpu_name}'s memory" if caps.device == "cuda" and caps.gpu_name else (
                "the GPU's memory" if caps.device == "cuda" else "this machine's RAM")
            c = replace(c, skip=f"{size}; {what} is {_fmt_bytes(caps.memory_bytes)}")
        out.append(c)
    if problems:
        raise refuse(loaded, problems)
    return out


_NAMED = ("op", "provider", "stage", "variant")


def _filter_values(c: Case) -> dict[str, Any]:
    return {**c.param_dict, "op": c.op, "provider": c.provider, "stage": c.stage, "variant": c.variant}


def check_filters(cases: list[Case], filters: list[str]) -> None:
    """Refuse a ``key=value`` filter that can match nothing in ``cases`` (the whole plan).

    A key must be an axis of some case, or op/provider/stage/variant
    (did-you-mean otherwise); each value without glob characters must be one
    that some case has (did-you-mean for names, the values there are for axes).

    Raises:
        NormbenchError: ``--filter <f>: unknown filter key 'num_token'. Did you mean 'num_tokens'? ...``.
    """
    present: dict[str, set[str]] = {}
    for c in cases:
        for k, v in _filter_values(c).items():
            if v is not None:
                present.setdefault(k, set()).add(str(v))
    for f in filters:
        if "=" not in f:
            continue
        key, _, raw = f.partition("=")
        key = key.strip()
        if key not in present:
            known = sorted(present, key=lambda k: (k not in _NAMED, k))
            raise NormbenchError(f"--filter {f}: {did_you_mean('filter key', key, known)}")
        for want in (w.strip() for w in raw.split(",")):
            if any(ch in want for ch in "*?[") or want in present[key]:
                continue
            have = sorted(present[key], key=lambda v: (len(v), v) if v.isdigit() else (0, v))
            if key in _NAMED:
                raise NormbenchError(f"--filter {f}: {did_you_mean(key, want, have)} (in this plan)")
            raise NormbenchError(f"--filter {f}: no case has {key}={want} (this plan's {key}: {', '.join(have)})")


def apply_filters(cases: list[Case], filters: list[str]) -> list[Case]:
    """Keep cases matching every filter.

    A filter ``key=value[,value...]`` matches a param, ``op``, ``provider``,
    ``stage`` or ``variant`` (values may be globs); any other filter is a glob
    matched against the case id (``*`` added around it).
    """
    out = cases
    for f in filters:
        if "=" in f:
            key, _, raw = f.partition("=")
            wanted = raw.split(",")

            def keep(c: Case, key=key.strip(), wanted=wanted) -> bool:
                values = _filter_values(c)
                if key not in values:
                    return False
                return any(fnmatch.fnmatchcase(str(values[key]), w.strip()) for w in wanted)

            out = [c for c in out if keep(c)]
        else:
            pattern = f if any(ch in f for ch in "*?[") else f"*{f}*"
            out = [c for c in out if fnmatch.fnmatchcase(c.case_id, pattern)]
    return out
