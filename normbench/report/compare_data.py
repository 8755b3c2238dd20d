"""A ``Comparison`` as data, for programs (``normbench compare --format json|csv``).

JSON is ``Comparison.to_dict()`` as it is. CSV has one line per row, every row of
every stage and candidate (secondary metrics and rows not compared included):
``candidate, stage, kind, op, provider, variant``, then the params as columns
(``flat_params``: ``param_<name>`` where a name collides with a fixed column, lists
as JSON), then the metric, both medians, the change, its interval, the verdict and
the reasons (``CSV_FIELDS``); empty cells for missing or non-finite values
(``pd.read_csv`` reads them as NaN). ``flat_params`` and ``write_csv`` also write
``normbench export``'s CSV (``report.export``).

Pure: no torch, no rich.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable

from normbench.compare import Comparison


def to_json(cmp: Comparison) -> str:
    return json.dumps(cmp.to_dict(), indent=2, ensure_ascii=False) + "\n"


CSV_FIELDS = [
    "candidate", "stage", "kind", "op", "provider", "variant", "metric", "unit", "higher_is_better",
    "derived_from", "status", "base_status", "cand_status", "base_value", "cand_value", "ratio", "speedup",
    "delta_pct", "ci_low_pct", "ci_high_pct", "p_value", "method", "verdict", "n_base", "n_cand", "note", "reason",
]


def flat_params(params: dict[str, Any], taken: Iterable[str]) -> dict[str, Any]:
    """Params as columns (``param_<k>`` where ``k`` collides with a fixed column); lists as JSON."""
    taken = set(taken)
    out = {}
    for k, v in params.items():
        col = f"param_{k}" if k in taken else k
        out[col] = json.dumps(v) if isinstance(v, (list, tuple, dict)) else v
    return out


def write_csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def to_csv(cmp: Comparison) -> str:
    """One line per row, params as columns (pandas: ``pd.read_csv``)."""
    param_cols: list[str] = []
    records = []
    for r in cmp.rows:
        rec = {k: getattr(r, k) for k in CSV_FIELDS}
        p = flat_params(r.params, CSV_FIELDS)
        for k in p:
            if k not in param_cols:
                param_cols.append(k)
        records.append({**rec, **p})
    fields = CSV_FIELDS[:6] + param_cols + CSV_FIELDS[6:]
    return write_csv(records, fields)
