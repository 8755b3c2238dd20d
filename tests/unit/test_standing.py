"""normbench standing: where a provider stands against the fastest other one, per op and band."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normbench.cli import app
from normbench.report import standing as st
from normbench.store import load_run

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
RUN_A = RUNS / "rmsnorm-20260101T000000Z-aaaaaa"


def _expected(record, ours="triton", tol=0.03):
    """The same counts, computed directly from the record's cases."""
    by_point: dict = {}
    for c in record.cases:
        if c.status == "OK" and c.kind == "kernel" and c.provider != "reference":
            key = (c.op, tuple(sorted(c.params.items())))
            times = by_point.setdefault(key, {})  # repeats: the fastest repeat's median
            times[c.provider] = min(times.get(c.provider, float("inf")), c.metrics["time_us"].value)
    out: dict = {}
    for (op, items), times in by_point.items():
        peers = [t for p, t in times.items() if ours not in p]
        if ours not in times or not peers:
            continue
        band = st.band_of(dict(items)["num_tokens"])
        ratio = times[ours] / min(peers)
        n, fastest, within, worst = out.get((op, band), (0, 0, 0, 0.0))
        out[(op, band)] = (n + 1, fastest + (ratio <= 1), within + (ratio <= 1 + tol), max(worst, ratio))
    return out


@pytest.mark.parametrize("ours", ["triton", "torch_compile"])
def test_counts_match_the_cases(ours):
    record = load_run(RUN_A)
    rows = st.standing([record], ours)
    got = {(r.op, r.band): (r.points, r.fastest, r.within, round(r.worst_ratio, 12)) for r in rows}
    want = {k: (*v[:3], round(v[3], 12)) for k, v in _expected(record, ours).items()}
    assert got == want and got


def test_a_slowed_provider_misses_and_is_listed_first(tmp_path):
    data = json.loads((RUN_A / "run.json").read_text())
    for c in data["cases"]:
        if c["provider"] == "triton" and c["params"]["num_tokens"] == 1024:
            c["metrics"]["time_us"]["value"] *= 10.0
    path = tmp_path / "slowed" / "run.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    rows = st.standing([load_run(path.parent)], "triton")
    assert rows[0].misses > 0 and rows[0].band == "17-2048" and rows[0].worst_ratio > 5
    assert all(r.misses == 0 for r in rows[1:])
    md = st.to_markdown(rows)
    assert md.splitlines()[4].startswith(f"| {rows[0].op} | 17-2048 |") and "**miss**" in md


def test_bands():
    assert [st.band_of(n) for n in (1, 16, 17, 2048, 2049, 65536)] == [
        "<= 16", "<= 16", "17-2048", "17-2048", ">= 2049", ">= 2049"]


def test_cli_writes_markdown_and_refuses_a_provider_with_no_points(tmp_path):
    out = tmp_path / "standing.md"
    res = CliRunner().invoke(app, ["standing", str(RUN_A), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "| op | tokens | points |" in out.read_text()
    res = CliRunner().invoke(app, ["standing", str(RUN_A), "--provider", "quack"])
    assert res.exit_code == 2 and "no kernel sweep point has both 'quack'" in res.output
