"""The A/A noise floor of one run (``normbench noise``): the spread between repeats of
identical cases. Pure: no torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from normbench import stats
from normbench.compare.environment import gpu_name
from normbench.compare.match import _groups, _pct
from normbench.store import RunRecord


@dataclass
class NoiseRow:
    """A/A spread of one case and metric.

    Attributes:
        repeats: repeats with a value; ``samples``: samples pooled over them.
        repeat_medians: per repeat (kernel: median of its samples; e2e: its value).
        spread_pct: ``100 * (max / min - 1)`` of the repeat medians (None with one repeat).
        aa_delta_pct: the A/A delta between the two halves (even vs odd repeats,
            or with one repeat even vs odd samples), and ``halfwidth_pct`` half
            the width of its bootstrap interval.
        resolves_pct: ``max(spread_pct, |aa_delta_pct| + halfwidth_pct)``: an
            effect smaller than this cannot be told from repeat-to-repeat drift.
        method: ``repeats`` or ``split samples`` (one repeat: within-run noise only).
    """

    stage: str
    kind: str
    op: str | None
    provider: str | None
    variant: str | None
    params: dict[str, Any]
    fingerprint: str
    metric: str
    unit: str
    repeats: int
    samples: int
    repeat_medians: list[float]
    spread_pct: float | None
    aa_delta_pct: float | None
    halfwidth_pct: float | None
    resolves_pct: float | None
    method: str


@dataclass
class NoiseReport:
    run_id: str
    gpu: str | None
    confidence: float
    rows: list[NoiseRow]

    def resolvable(self, q: float = 95.0) -> float:
        """The ``q``-th percentile over cases of ``resolves_pct`` (percent)."""
        return stats.percentile([r.resolves_pct for r in self.rows if r.resolves_pct is not None], q)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolvable_p95_pct"] = self.resolvable(95.0)
        d["resolvable_median_pct"] = self.resolvable(50.0)
        return _json_clean(d)


def _json_clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_clean(v) for v in x]
    return x


def noise(run: RunRecord, confidence: float = stats.DEFAULT_CONFIDENCE,
          resamples: int = 2000, seed: int = stats.DEFAULT_SEED) -> NoiseReport:
    """A/A spread between repeats of identical cases of one run (``normbench noise``).

    For each OK fingerprint and non-derived metric: the repeat medians, their
    max/min spread, and an A/A ratio test (``stats.ratio_test``) between even
    and odd repeats (kernel: pooled samples; end to end: per-repeat values,
    needs 4 repeats). A kernel case run once is split into even and odd
    samples instead, which sees within-run noise only (``normbench run
    --repeat N`` measures drift between repeats).
    """
    groups = _groups(run.cases, lambda c: c.fingerprint)
    rows: list[NoiseRow] = []
    for key, g in groups.items():
        st, _, _ = g.status()
        if st != "OK":
            continue
        ok = sorted(g.ok, key=lambda c: c.repeat)
        for name, m in g.metrics().items():
            if m.derived_from:
                continue
            per_repeat: list[list[float]] = []
            for c in ok:
                mm = c.metrics.get(name)
                if mm is None:
                    continue
                if g.first.kind == "kernel" and mm.samples:
                    per_repeat.append([float(x) for x in mm.samples])
                elif mm.value is not None:
                    per_repeat.append([float(mm.value)])
            if not per_repeat:
                continue
            medians = [stats.median(s) for s in per_repeat]
            spread = 100.0 * (max(medians) / min(medians) - 1.0) if len(medians) > 1 and min(medians) > 0 else None
            if len(per_repeat) >= 2 and (g.first.kind == "kernel" or len(per_repeat) >= 4):
                a = [x for s in per_repeat[0::2] for x in s]
                b = [x for s in per_repeat[1::2] for x in s]
                method = "repeats"
            elif len(per_repeat) == 1 and len(per_repeat[0]) >= 4:
                a, b = per_repeat[0][0::2], per_repeat[0][1::2]
                method = "split samples"
            else:
                a = b = []
                method = "repeats" if len(per_repeat) > 1 else "n=1"
            aa = hw = None
            if len(a) >= 2 and len(b) >= 2:
                ri = stats.ratio_test(a, b, confidence, resamples, seed)
                aa = _pct(ri.ratio)
                hw = 100.0 * ri.half_width if math.isfinite(ri.half_width) else None
            candidates = [x for x in (spread, (abs(aa) + hw) if aa is not None and hw is not None else None) if x is not None]
            resolves = max(candidates) if candidates else None
            rows.append(NoiseRow(
                g.first.stage, g.first.kind, g.first.op, g.first.provider, g.first.variant, dict(g.first.params),
                key, name, m.unit, len(per_repeat), sum(len(s) for s in per_repeat), medians,
                spread, aa, hw, resolves, method,
            ))
    return NoiseReport(run.run_id, gpu_name(run.environment), confidence, rows)
