"""The ``--fail-on`` gates (``parse_fail_on`` / ``check_gates``; see ``normbench.compare``):
which rows of a comparison fail a regression threshold. Pure: no torch."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Sequence

from normbench.compare.model import NOT_OK, Comparison, Row
from normbench.errors import NormbenchError


@dataclass(frozen=True)
class Gate:
    """One ``--fail-on`` rule.

    Attributes:
        metric: a metric name, or None for ``median`` (every non-derived metric).
        threshold_pct: the change (percent, > 0) beyond which a regression fails.
        sign: +1 / -1 if the spec gave one (the failing direction in the
            metric's own terms), 0 for "the metric's worse direction".
        text: the spec as written.
    """

    metric: str | None
    threshold_pct: float
    sign: int
    text: str


@dataclass
class GateFailure:
    gate: Gate
    row: Row
    why: str


_GATE_RE = re.compile(r"^\s*(?P<metric>.+?)\s*:\s*(?P<sign>[+-]?)\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_fail_on(specs: str | Sequence[str] | None) -> list[Gate]:
    """Parse ``--fail-on`` specs: ``median:+5%``, ``time_us:+5%``, ``output_throughput:-3%``.

    Several rules may be given as repeated options or separated by ``;`` or by
    a comma after the ``%`` (metric names such as ``exact_match,strict-match``
    contain commas). ``median`` (or ``*``) covers every non-derived metric in
    its worse direction.

    Raises:
        NormbenchError: a rule that does not parse (exit code 2).
    """
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    gates = []
    for spec in specs:
        for part in re.split(r"(?<=%)\s*[,;]\s*|;", spec):
            if not part.strip():
                continue
            m = _GATE_RE.match(part)
            if not m:
                raise NormbenchError(
                    f"--fail-on '{part.strip()}': expected METRIC:[+|-]N% (e.g. median:+5%, time_us:+5%, "
                    "output_throughput:-3%)"
                )
            threshold = float(m["num"])
            if threshold <= 0:
                raise NormbenchError(f"--fail-on '{part.strip()}': the threshold must be above 0%")
            metric = m["metric"].strip()
            sign = {"+": 1, "-": -1, "": 0}[m["sign"]]
            if metric.lower() in ("median", "*"):
                gates.append(Gate(None, threshold, sign, part.strip()))
            else:
                gates.append(Gate(metric, threshold, sign, part.strip()))
    return gates


def check_gates(cmp: Comparison, gates: Sequence[Gate]) -> list[GateFailure]:
    """The rows that fail the gates (empty: pass).

    A compared row fails when its verdict is ``slower``/``worse`` (significant
    at the comparison's confidence and at least ``min_effect``) and its change
    is beyond the threshold in the gated direction. A case OK in the baseline
    and INCORRECT or FAILED in the candidate fails a gate that covers one of its
    metrics. ``within noise``, ``n=1, no verdict`` and throttled cases (status
    ``THROTTLED``: no verdict) never fail.

    Raises:
        NormbenchError: a gate names a metric no row has (with did-you-mean), or
            gives a sign that is the metric's better direction.
    """
    failures: list[GateFailure] = []
    metrics = {r.metric: r for r in cmp.rows if r.metric}
    for gate in gates:
        if gate.metric is not None and gate.metric not in metrics:
            known = sorted(m for m in metrics if m)
            close = difflib.get_close_matches(gate.metric, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise NormbenchError(f"--fail-on '{gate.text}': no metric '{gate.metric}' in these runs.{hint} Metrics: {', '.join(known)}")
        if gate.metric is not None and gate.sign:
            ref = metrics[gate.metric]
            worse = -1 if ref.higher_is_better else 1
            if gate.sign != worse:
                direction = "higher" if ref.higher_is_better else "lower"
                want = "-" if ref.higher_is_better else "+"
                raise NormbenchError(
                    f"--fail-on '{gate.text}': {gate.metric} is {direction}-is-better, so a regression is "
                    f"{'a decrease' if ref.higher_is_better else 'an increase'}: write {gate.metric}:{want}{gate.threshold_pct:g}%"
                )
        if gate.metric is None and gate.sign < 0:
            raise NormbenchError(
                f"--fail-on '{gate.text}': 'median' gates every metric in its worse direction; write median:+{gate.threshold_pct:g}%"
            )
        for row in cmp.rows:
            if row.status == NOT_OK:
                if row.base_status == "OK" and row.cand_status in ("INCORRECT", "FAILED"):
                    covered = gate.metric is None or gate.metric in row.extra.get("metrics", [])
                    if covered:
                        failures.append(GateFailure(gate, row, f"{row.cand_status} in candidate"))
                continue
            if not row.compared or row.metric is None:
                continue
            if gate.metric is None and row.derived_from:
                continue  # judged through its source metric
            if gate.metric is not None and row.metric != gate.metric:
                continue
            v = row.verdict_enum
            if v is None or not v.is_regression or row.delta_pct is None:
                continue
            if abs(row.delta_pct) > gate.threshold_pct:
                failures.append(GateFailure(
                    gate, row, f"{row.metric} {row.delta_pct:+.1f}% ({v.value}, beyond {gate.threshold_pct:g}%)"
                ))
    return failures
