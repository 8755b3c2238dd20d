"""Where one provider stands against the fastest other provider, per op and shape band.

The summary a kernel author pastes first: for each op and each band of ``num_tokens``
(``<= 16``: launch-bound; ``17-2048``: partly bound; ``>= 2049``: bandwidth-bound), at how
many sweep points ``ours`` (default ``triton``) is the fastest, within ``tolerance``
(default 3%) of the fastest other provider, and the worst point with its ratio and the
peer that beat it. Rows with a miss come first. Inputs are run records (any number: one
per suite); only OK kernel cases count, and a point counts only where ``ours`` and at
least one peer are OK. Providers whose name contains ``ours`` (its own unfused
compositions, e.g. ``unfused[norm=triton,quant=triton]``) and ``reference`` are not
peers. ``% of copy`` is ``ours``' ``pct_peak`` range over the band's points.

Pure: records in, rows out; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from normbench.report.labels import case_label
from normbench.store import CaseRecord, RunRecord

BANDS = ((16, "<= 16"), (2048, "17-2048"), (None, ">= 2049"))


def band_of(num_tokens: int) -> str:
    for upper, label in BANDS:
        if upper is None or num_tokens <= upper:
            return label
    raise AssertionError("unreachable")


@dataclass
class StandingRow:
    """One op x band. Times in microseconds; ratio = ours / fastest peer (> 1: slower)."""

    op: str
    band: str
    points: int = 0
    fastest: int = 0
    within: int = 0
    worst_ratio: float = 0.0
    worst_point: str = ""
    worst_peer: str = ""
    worst_us: tuple[float, float] = (0.0, 0.0)
    pct_copy: list[float] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)

    @property
    def misses(self) -> int:
        return self.points - self.within


def _point_key(case: CaseRecord) -> tuple:
    return (case.stage, case.op, tuple(sorted(case.params.items())))


#: The axes a worst point names, in this order (``dtype`` only when it is not bfloat16).
POINT_AXES = ("residual", "quant_dtype", "group_size", "scale_layout", "scale_ub", "static_scale",
              "scale_granularity", "dtype")


def _label(params: dict) -> str:
    """The worst point: ``labels.case_label`` of ``POINT_AXES`` (``4096x8192 +residual fp8 g128``)."""
    axes = [k for k in POINT_AXES if params.get(k) is not None and not (k == "dtype" and params[k] == "bfloat16")]
    return case_label(params, axes)


def standing(records: Iterable[RunRecord], ours: str = "triton", tolerance: float = 0.03) -> list[StandingRow]:
    """Rows per (op, band), misses first, then by op and band order.

    Raises:
        ValueError: ``tolerance`` is negative.
    """
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    points: dict[tuple, dict[str, float]] = {}
    pct: dict[tuple, float] = {}
    params_of: dict[tuple, dict] = {}
    for rec in records:
        for case in rec.cases:
            if case.kind != "kernel" or case.status != "OK" or case.provider in (None, "reference"):
                continue
            metric = case.metrics.get("time_us")
            if metric is None or metric.value is None:
                continue
            key = _point_key(case)
            params_of[key] = case.params
            # with --repeat, the fastest repeat's median (each is a median of many replays)
            prev = points.setdefault(key, {}).get(case.provider)
            points[key][case.provider] = metric.value if prev is None else min(prev, metric.value)
            if case.provider == ours and "pct_peak" in case.metrics and case.metrics["pct_peak"].value is not None:
                pct[key] = case.metrics["pct_peak"].value
    rows: dict[tuple[str, str], StandingRow] = {}
    for key, times in points.items():
        if ours not in times:
            continue
        peers = {p: t for p, t in times.items() if ours not in p}
        if not peers:
            continue
        params = params_of[key]
        row = rows.setdefault((key[1], band_of(params["num_tokens"])), StandingRow(key[1], band_of(params["num_tokens"])))
        best_peer = min(peers, key=peers.get)
        ratio = times[ours] / peers[best_peer]
        row.points += 1
        row.peers |= set(peers)
        row.fastest += ratio <= 1.0
        row.within += ratio <= 1.0 + tolerance
        if ratio > row.worst_ratio:
            row.worst_ratio, row.worst_point, row.worst_peer = ratio, _label(params), best_peer
            row.worst_us = (times[ours], peers[best_peer])
        if key in pct:
            row.pct_copy.append(pct[key])
    order = {label: i for i, (_, label) in enumerate(BANDS)}
    return sorted(rows.values(), key=lambda r: (r.misses == 0, r.op, order[r.band]))


def to_markdown(rows: list[StandingRow], ours: str = "triton", tolerance: float = 0.03) -> str:
    """A Markdown table; the misses (points beyond ``tolerance`` of the fastest peer) first."""
    lines = [
        f"`{ours}` against the fastest other provider at each sweep point (median time); "
        f"within = at most {tolerance:.0%} slower. Worst = {ours}'s largest time ratio to the fastest peer.",
        "",
        "| op | tokens | points | fastest | within | worst ratio | worst point (us: ours / peer) | % of copy | peers |",
        "|---|---|--:|--:|--:|--:|---|---|---|",
    ]
    for r in rows:
        pct = f"{min(r.pct_copy):.1f}-{max(r.pct_copy):.1f}" if r.pct_copy else "-"
        worst = f"{r.worst_point} vs {r.worst_peer} ({r.worst_us[0]:.2f} / {r.worst_us[1]:.2f})"
        flag = " **miss**" if r.misses else ""
        lines.append(
            f"| {r.op} | {r.band} | {r.points} | {r.fastest} | {r.within}{flag} | {r.worst_ratio:.3f} | {worst} "
            f"| {pct} | {', '.join(sorted(r.peers))} |"
        )
    return "\n".join(lines) + "\n"
