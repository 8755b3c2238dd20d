"""Suite -> Cases: the Cartesian sweep, variants, repeats, and capability skips.

Pure: no torch. What the machine can do comes in as ``Capabilities`` (built by
``Capabilities.detect()`` in the CLI, or by hand in tests), so ``validate``
shows the same skips a run would make.

Ordering: kernel cases are grouped by sweep point (inputs and the float64
reference are built once per point), and within a point repeats interleave
providers (p1 p2 p1 p2 ...) so that drift spreads over all of them.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field
from typing import Any

from normbench.ops import OPS
from normbench.registry import PROVIDERS
from normbench.suite import E2E_KINDS, KernelStage, Suite, Unfused, provider_name, stage_name


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

    @classmethod
    def detect(cls) -> "Capabilities":
        """Probe the machine (imports torch when it is installed)."""
        missing = {n: r for n, e in PROVIDERS.items() if (r := e.missing_package())}
        try:
            import torch
        except ImportError:
            return cls("cpu", None, None, missing)
        if torch.cuda.is_available():
            return cls("cuda", torch.cuda.get_device_capability(), torch.cuda.get_device_name(), missing)
        return cls("cpu", None, None, missing)


#: Providers that cannot run on a CPU device. (The Triton interpreter is for
#: tests, not timings; the peers are CUDA libraries.)
CUDA_ONLY = {"triton", "vllm", "flashinfer", "liger", "quack"}


@dataclass(frozen=True)
class Case:
    """One thing to measure.

    ``params`` holds the op's full params (defaults filled) for kernel cases, or
    the stage parameters for end-to-end cases. ``skip`` is the reason the case
    will not run here (it is recorded as SKIPPED, never dropped).
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
        return (self.stage_index, self.op, self.params)


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
    """Why ``provider`` cannot run ``op`` on this machine, or None (static facts only)."""
    entry = PROVIDERS.get(provider)
    if entry is None:  # an unfused composition: its parts decide
        return None
    if op not in entry.ops:
        return f"{provider} has no {op}"
    if provider in CUDA_ONLY and caps.device != "cuda":
        return "needs CUDA"
    need = entry.min_sm.get(op)
    if need is not None and caps.sm is not None and caps.sm[0] * 10 + caps.sm[1] < need:
        return f"needs SM{need}+ (this GPU is SM{caps.sm[0]}{caps.sm[1]})"
    if provider in caps.missing:
        return caps.missing[provider]
    return None


def _unfused_skip(p: Unfused, op: str, caps: Capabilities) -> str | None:
    for part in (p.unfused.norm, p.unfused.quant):
        if part in caps.missing:
            return f"{p.name}: {caps.missing[part]}"
        if part in CUDA_ONLY and caps.device != "cuda":
            return f"{p.name}: {part} needs CUDA"
    return None


def expand_kernel_stage(stage: KernelStage, index: int, caps: Capabilities, repeats: int = 1) -> list[Case]:
    info = OPS[stage.op]
    axes = stage.sweep.axes()
    name = stage_name(stage, index)
    cases: list[Case] = []
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)):
        params = info.complete(dict(zip(keys, combo)))
        invalid = info.validate(params)
        for r in range(repeats):
            for p in stage.providers:
                pname = provider_name(p)
                values = {**params, "provider": pname}
                if stage.include and not any(_matches(rule, values) for rule in stage.include):
                    continue
                if any(_matches(rule, values) for rule in stage.exclude):
                    continue
                skip = invalid or (
                    _unfused_skip(p, stage.op, caps) if isinstance(p, Unfused) else capability_skip(pname, stage.op, caps)
                )
                cases.append(Case(name, index, "kernel", stage.op, pname, None, tuple(params.items()), r, skip))
    return cases


def e2e_skip(suite: Suite, caps: Capabilities) -> str | None:
    """Why the suite's served model cannot run here (before any server starts)."""
    if suite.server is None:
        return None
    req = suite.server.requires
    if req.cuda and caps.device != "cuda":
        return f"{suite.server.model} needs a CUDA GPU"
    if req.min_sm is not None:
        if caps.sm is None:
            return f"{suite.server.model} needs SM{req.min_sm}+ (no CUDA GPU here)"
        have = caps.sm[0] * 10 + caps.sm[1]
        if have < req.min_sm:
            return f"{suite.server.model} needs SM{req.min_sm}+ (this GPU is SM{have})"
    if "vllm" in caps.missing:
        return f"end-to-end stages need vLLM: {caps.missing['vllm']}"
    return None


def _e2e_params(stage: Any) -> dict[str, Any]:
    skip = {"kind", "name", "description", "variants", "repeats"}
    return {k: v for k, v in stage.model_dump().items() if k not in skip}


def expand_e2e_stage(stage: Any, index: int, suite: Suite, caps: Capabilities) -> list[Case]:
    """One case per (variant, repeat[, input_len]); variants interleave A B B A per repeat."""
    name = stage_name(stage, index)
    variants = stage.variants or list(suite.variants) or ["default"]
    skip = e2e_skip(suite, caps)
    base = _e2e_params(stage)
    points: list[dict[str, Any]]
    if stage.kind == "latency":
        points = [{**{k: v for k, v in base.items() if k != "input_len"}, "input_len": n} for n in stage.input_len]
    else:
        points = [base]
    cases: list[Case] = []
    for r in range(stage.repeats):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for v in order:
            for pt in points:
                params = tuple((k, _hashable(x)) for k, x in pt.items())
                cases.append(Case(name, index, stage.kind, None, None, v, params, r, skip))
    return cases


def _hashable(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_hashable(i) for i in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return x


def expand(suite: Suite, caps: Capabilities, repeats: int = 1) -> list[Case]:
    """All cases of a suite, skips included (``Case.skip`` says why)."""
    cases: list[Case] = []
    for i, stage in enumerate(suite.stages):
        if stage.kind == "kernel":
            cases.extend(expand_kernel_stage(stage, i, caps, repeats))
        elif stage.kind in E2E_KINDS:
            cases.extend(expand_e2e_stage(stage, i, suite, caps))
    return cases


def sweep_size(suite: Suite) -> int:
    """Case count before capability filtering (cheap: for ``normbench list``)."""
    n = 0
    for stage in suite.stages:
        if stage.kind == "kernel":
            size = 1
            for values in stage.sweep.axes().values():
                size *= len(values)
            n += size * len(stage.providers)
        else:
            k = len(stage.variants or suite.variants or ["default"]) * stage.repeats
            n += k * (len(stage.input_len) if stage.kind == "latency" else 1)
    return n


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
                values = {**c.param_dict, "op": c.op, "provider": c.provider, "stage": c.stage, "variant": c.variant}
                if key not in values:
                    return False
                return any(fnmatch.fnmatchcase(str(values[key]), w.strip()) for w in wanted)

            out = [c for c in out if keep(c)]
        else:
            pattern = f if any(ch in f for ch in "*?[") else f"*{f}*"
            out = [c for c in out if fnmatch.fnmatchcase(c.case_id, pattern)]
    return out
