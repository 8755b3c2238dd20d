"""A case's profile in one line: what ``show`` and ``compare`` print next to a time or a delta. Pure: no torch.

A case may launch several kernels (an unfused composition, eager PyTorch); its
summary (``ProfileSummary``) folds them:

* ``time_us``: the kernels' durations summed, per profiled call of the case's callable;
* ``dram_pct`` and ``occupancy_pct``: averages weighted by each kernel's duration (a
  plain mean when a duration is missing), so a 1 us helper kernel does not hide the
  kernel that moves the bytes;
* ``registers``: the most registers per thread of any of its kernels;
* ``names``: the kernels' short names (``short_kernel_name``), in order.

``attach_profiles`` puts the summaries of both sides on a comparison's kernel rows
(``Row.extra["profile"] = {"base": {...}, "cand": {...}}``), where
``normbench.profile.render`` and ``--format json`` find them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence


@dataclass
class ProfileSummary:
    """One case's profile, folded over its kernels (see the module docstring).

    Attributes:
        tool: ``ncu`` or ``torch``.
        kernels: how many kernels were profiled (launches of them, for ncu).
        time_us: their durations summed per profiled call, in us (None: none known).
        dram_pct: DRAM throughput, % of peak, duration-weighted (ncu; None otherwise).
        occupancy_pct: achieved occupancy in %, duration-weighted (ncu; None otherwise).
        registers: the most registers per thread of its kernels (ncu; None otherwise).
        names: the kernels' short names, in launch (ncu) or time (torch) order.
        error: why profiling failed (the other fields are then empty).
    """

    tool: str
    kernels: int = 0
    time_us: float | None = None
    dram_pct: float | None = None
    occupancy_pct: float | None = None
    registers: int | None = None
    names: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _weighted(values: Sequence[tuple[float | None, float | None]]) -> float | None:
    """Mean of ``value`` over (value, weight) pairs, weighted where every weight is known and positive."""
    known = [(v, w) for v, w in values if v is not None]
    if not known:
        return None
    if all(w is not None and w > 0 for _, w in known):
        total = sum(w for _, w in known)  # type: ignore[misc]
        return sum(v * w for v, w in known) / total  # type: ignore[operator]
    return sum(v for v, _ in known) / len(known)


def summarize(profile: Mapping[str, Any] | None) -> ProfileSummary | None:
    """The summary of a case record's ``profile`` (``normbench.store.CaseProfile``), or None without one."""
    if not profile:
        return None
    tool = str(profile.get("tool") or "?")
    if profile.get("error"):
        return ProfileSummary(tool, error=str(profile["error"]))
    kernels = list(profile.get("kernels") or [])
    launches = profile.get("launches") or 1
    times = [_num(k.get("time_us")) for k in kernels]
    known = [t for t in times if t is not None]
    return ProfileSummary(
        tool=tool,
        kernels=len(kernels),
        time_us=(sum(known) / launches if tool == "ncu" else sum(known)) if known else None,
        dram_pct=_weighted([(_num(k.get("dram_pct")), t) for k, t in zip(kernels, times)]),
        occupancy_pct=_weighted([(_num(k.get("occupancy_pct")), t) for k, t in zip(kernels, times)]),
        registers=max((int(r) for k in kernels if (r := _num(k.get("registers"))) is not None), default=None),
        names=[short_kernel_name(str(k.get("name", "?"))) for k in kernels],
    )


# --------------------------------------------------------------------------- names
def _strip_brackets(text: str, open_: str, close: str) -> str:
    """``text`` without its top-level ``open_ ... close`` groups (nested ones go with them)."""
    out, depth = [], 0
    for ch in text:
        if ch == open_:
            depth += 1
        elif ch == close and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _cut_arguments(name: str) -> str:
    """A demangled signature without its argument list: the first ``(`` outside template brackets
    that does not open ``(anonymous namespace)``."""
    depth = 0
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == "(" and depth == 0:
            if name.startswith("(anonymous namespace)", i):
                i += len("(anonymous namespace)")
                continue
            return name[:i]
        i += 1
    return name


def short_kernel_name(name: str) -> str:
    """A kernel's name for a table: the function's own name, without return type, namespaces,
    template arguments or parameters.

    ``void vllm::rms_norm_kernel<c10::BFloat16, 8>(c10::BFloat16*, ...)`` -> ``rms_norm_kernel``;
    ``void at::native::vectorized_elementwise_kernel<4, ...>(int, ...)`` -> ``vectorized_elementwise_kernel``;
    a plain name (a Triton kernel, ``triton_red_fused_add_mean_0``) or a torch op (``aten::mul``) is kept.
    """
    text = " ".join(name.split())
    if "(" not in text and "<" not in text:
        return text
    text = _strip_brackets(_cut_arguments(text), "<", ">").strip()
    text = text.replace("(anonymous namespace)", "")
    if " " in text:  # a return type (void) or qualifiers before the name
        text = text.rsplit(" ", 1)[-1]
    text = text.rsplit("::", 1)[-1]
    return text or " ".join(name.split())


def names_text(names: Iterable[str], limit: int = 60) -> str:
    """Kernel names joined in order, repeats counted: ``reduce_kernel + vectorized_elementwise_kernel x4``;
    cut at about ``limit`` characters with ``(+N more)``."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    parts = [n if k == 1 else f"{n} x{k}" for n, k in counts.items()]
    out: list[str] = []
    used = 0
    for i, p in enumerate(parts):
        if out and used + 3 + len(p) > limit:
            rest = len(parts) - i
            return " + ".join(out) + f" (+{rest} more)"
        out.append(p)
        used += len(p) + (3 if len(out) > 1 else 0)
    return " + ".join(out)


# --------------------------------------------------------------------------- cells
def fmt_pct(x: float | None) -> str:
    """A percentage for a table cell: ``72.4``; ``-`` when unknown."""
    return "-" if x is None else f"{x:.1f}"


def fmt_regs(x: int | None) -> str:
    return "-" if x is None else str(x)


def fmt_us(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if x < 1000 else f"{x:,.0f}"


def pair(base: str, cand: str) -> str:
    """``base→cand``, or one value when both are the same."""
    return base if base == cand else f"{base}→{cand}"


# --------------------------------------------------------------------------- compare
def _profiled(cases: Iterable[Any]) -> dict[str, Any]:
    """Fingerprint -> the lowest-repeat case of that fingerprint that has a profile."""
    out: dict[str, Any] = {}
    for c in sorted(cases, key=lambda c: c.repeat):
        if getattr(c, "profile", None) and c.fingerprint not in out:
            out[c.fingerprint] = c
    return out


def attach_profiles(cmp: Any, baseline: Any, candidates: Sequence[Any]) -> int:
    """Put each side's ``ProfileSummary`` (as a dict, or None) on the kernel rows of ``cmp``
    (``Row.extra["profile"] = {"base": ..., "cand": ...}``) where either side has one.

    ``cmp`` is a run comparison (``normbench.compare.compare(baseline, candidates)``, same
    order); a variants comparison gets nothing. Returns the number of rows given a profile.
    """
    if getattr(cmp, "mode", None) != "runs":
        return 0
    base = _profiled(baseline.cases)
    sides = {s.label: _profiled(r.cases) for s, r in zip(cmp.candidates, candidates)}
    if not base and not any(sides.values()):
        return 0
    n = 0
    for row in cmp.rows:
        if row.kind != "kernel":
            continue
        fp = row.key.split(" @ ", 1)[0]  # a heterogeneous run's key carries " @ <gpu>"
        b = base.get(fp)
        c = sides.get(row.candidate, {}).get(fp)
        if b is None and c is None:
            continue
        sb, sc = summarize(b.profile) if b else None, summarize(c.profile) if c else None
        row.extra["profile"] = {"base": sb.as_dict() if sb else None, "cand": sc.as_dict() if sc else None}
        n += 1
    return n
