"""``normbench export``: a run as flat rows, one per case and metric (pandas-friendly).

Columns: ``run_id, case_id, fingerprint, stage, kind, op, provider, variant,
repeat, status, reason``, then the case's params (``num_tokens``,
``hidden_size``, ``dtype``, ... as their own columns; a param whose name
collides with a fixed column becomes ``param_<name>``; list values are JSON),
then ``metric, value, unit, higher_is_better, derived_from, n_samples, p20,
p80``. A case without metrics (SKIPPED, INCORRECT, FAILED) is one row with an
empty metric, so ``pd.read_csv(...)`` sees every case. Samples themselves stay
in ``run.json``. Pure: no torch, no pandas.
"""

from __future__ import annotations

import json
from typing import Any

from normbench.report.compare_data import flat_params, write_csv
from normbench.store import RunRecord

HEAD = ["run_id", "case_id", "fingerprint", "stage", "kind", "op", "provider", "variant", "repeat", "status", "reason"]
TAIL = ["metric", "value", "unit", "higher_is_better", "derived_from", "n_samples", "p20", "p80"]


def export_rows(run: RunRecord) -> tuple[list[dict[str, Any]], list[str]]:
    """The flat rows of ``run`` and the column order (params between HEAD and TAIL)."""
    rows: list[dict[str, Any]] = []
    param_cols: list[str] = []
    for c in run.cases:
        base = {
            "run_id": run.run_id, "case_id": c.case_id, "fingerprint": c.fingerprint, "stage": c.stage,
            "kind": c.kind, "op": c.op, "provider": c.provider, "variant": c.variant, "repeat": c.repeat,
            "status": c.status, "reason": (c.reason or "").strip().splitlines()[0] if c.reason else None,
        }
        params = flat_params(c.params, HEAD + TAIL)
        for k in params:
            if k not in param_cols:
                param_cols.append(k)
        base.update(params)
        if not c.metrics:
            rows.append({**base, **{k: None for k in TAIL}})
            continue
        for name, m in c.metrics.items():
            rows.append({
                **base, "metric": name, "value": m.value, "unit": m.unit, "higher_is_better": m.higher_is_better,
                "derived_from": m.derived_from, "n_samples": len(m.samples),
                "p20": m.spread.get("p20"), "p80": m.spread.get("p80"),
            })
    return rows, HEAD + param_cols + TAIL


def to_csv(run: RunRecord) -> str:
    rows, fields = export_rows(run)
    return write_csv(rows, fields)


def to_json(run: RunRecord) -> str:
    """A JSON list of the same flat rows (``pd.DataFrame(json.load(f))``)."""
    rows, fields = export_rows(run)
    return json.dumps([{k: r.get(k) for k in fields} for r in rows], indent=1, ensure_ascii=False) + "\n"
