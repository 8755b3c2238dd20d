"""Fusion evidence of the variants of one run (``compare_variants`` only; see
``normbench.compare``): what each variant's engine starts logged about vLLM's fusion passes,
and the flags. Pure: no torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from normbench.store import CaseRecord, RunRecord


def server_start_kinds() -> frozenset[str]:
    """Kinds whose records carry a server start's evidence: the end-to-end kinds that serve
    (``E2EKind.serves``; a latency engine's evidence is used only when a variant has none)."""
    from normbench.stages import KINDS, kind_of

    return frozenset(k for k in KINDS if getattr(kind_of(k), "serves", False))
FLAG_ZERO = "fusion requested, 0 patterns replaced"
FLAG_SAME = "same fusion passes and patterns replaced as the baseline: no fusion difference to measure"


@dataclass
class VariantEvidence:
    """What one variant's engine starts logged about fusion (from the records' ``evidence``).

    Attributes:
        starts: engine starts with evidence (one per server start and repeat).
        source: ``server`` or ``latency`` (engines of ``vllm bench latency``, used
            when the variant has no server start).
        fusion: the distinct ``{pass: patterns replaced}`` of the starts whose
            fusion is known, in repeat order (one entry when every start agrees).
        unknown: starts whose fusion could not be known; ``note`` says why (the
            first such start's note, e.g. ``no fusion pass on this platform``).
        fuse_norm_quant: the effective ``pass_config.fuse_norm_quant`` (None: not logged).
        enabled_fusions: vLLM's ``Enabled custom fusions`` (None: not logged).
        compile: how each start got its graph: ``compiled`` / ``cache`` (counts).
        flag: why this variant's deltas do not measure the fusion (see the module docstring), or None.
    """

    variant: str
    starts: int
    source: str
    fusion: list[dict[str, int]]
    unknown: int
    note: str | None
    fuse_norm_quant: bool | None
    enabled_fusions: list[str] | None
    compile: dict[str, int]
    flag: str | None = None

    @property
    def known(self) -> bool:
        """Every start's fusion is known (and there is at least one)."""
        return self.starts > 0 and self.unknown == 0


def _norm_quant_total(fusion: dict[str, int]) -> int | None:
    """Patterns the RMSNorm+quant passes replaced (None: no such pass ran)."""
    counts = [n for name, n in fusion.items() if "norm" in name.lower() and "quant" in name.lower()]
    return sum(counts) if counts else None


def _evidence_of(cases: list[CaseRecord]) -> list[dict[str, Any]]:
    """One evidence dict per engine start, in repeat order (cases of one server start share it)."""
    seen: dict[tuple, dict[str, Any]] = {}
    serving = server_start_kinds()
    for c in sorted(cases, key=lambda c: c.repeat):
        ev = c.evidence
        if not isinstance(ev, dict):
            continue
        server = c.server or {}
        key = (c.repeat, server.get("pid"), ev.get("source")) if c.kind in serving else (c.case_id,)
        seen.setdefault(key, ev)
    return list(seen.values())


def variant_evidence(run: RunRecord, variants: list[str], baseline: str) -> dict[str, VariantEvidence]:
    """Each variant's ``VariantEvidence`` (variants without any evidence are left out) with flags vs ``baseline``."""
    out: dict[str, VariantEvidence] = {}
    serving = server_start_kinds()
    for v in variants:
        cases = [c for c in run.cases if c.variant == v]
        evs, source = _evidence_of([c for c in cases if c.kind in serving]), "server"
        if not evs:
            evs, source = _evidence_of([c for c in cases if c.kind == "latency"]), "latency"
        if not evs:
            continue
        fusions: list[dict[str, int]] = []
        unknown, note = 0, None
        for ev in evs:
            f = ev.get("fusion")
            if isinstance(f, dict):
                f = {str(k): int(n) for k, n in f.items()}
                if f not in fusions:
                    fusions.append(f)
            else:
                unknown += 1
                note = note or ev.get("note")
        compiled: dict[str, int] = {}
        for ev in evs:
            compiled[ev.get("compile") or "unknown"] = compiled.get(ev.get("compile") or "unknown", 0) + 1
        last = evs[-1]
        out[v] = VariantEvidence(v, len(evs), source, fusions, unknown, note, last.get("fuse_norm_quant"),
                                 last.get("enabled_fusions"), compiled)
    base = out.get(baseline)

    def distinct(ev: VariantEvidence) -> set[str]:
        return {json.dumps(f, sort_keys=True) for f in ev.fusion}

    for v, ev in out.items():
        if not ev.known:
            continue
        if ev.fuse_norm_quant and any(not _norm_quant_total(f) for f in ev.fusion):
            ev.flag = FLAG_ZERO  # the baseline too: it then measures something else than it says
        elif v != baseline and base is not None and base.known and distinct(ev) == distinct(base):
            ev.flag = FLAG_SAME
    return out
