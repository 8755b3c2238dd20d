"""Run records: round trip, crash safety (journal), resume, run lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from normbench import store
from normbench.errors import NormbenchError, RunNotFoundError
from normbench.store import CaseRecord, Metric, SuiteSnapshot


def _snapshot() -> SuiteSnapshot:
    return SuiteSnapshot(name="t", path="suites/t.yaml", sha256="0" * 64, spec={"name": "t", "stages": []})


def _case(i: int, status: str = "OK") -> CaseRecord:
    return CaseRecord(
        case_id=f"s/rms_norm/triton/-/num_tokens={i}#0", fingerprint=f"s/rms_norm/triton/-/num_tokens={i}",
        stage="s", kind="kernel", op="rms_norm", provider="triton", params={"num_tokens": i}, status=status,
        metrics={"time_us": Metric(value=1.5, unit="us", higher_is_better=False, samples=[1.4, 1.5, 1.6])},
    )


def test_round_trip(tmp_path: Path) -> None:
    w = store.create_run(tmp_path, "t", _snapshot(), {"gpu.name": "X"}, ["normbench", "run"], planned=2)
    w.add(_case(1))
    w.add(_case(2, "INCORRECT"))
    rec = w.finish("complete")
    assert not (w.dir / store.JOURNAL_FILE).exists()
    back = store.load_run(w.dir)
    assert back.status == "complete" and back.schema_version == store.SCHEMA_VERSION
    assert [c.status for c in back.cases] == ["OK", "INCORRECT"]
    assert back.cases[0].metrics["time_us"].samples == [1.4, 1.5, 1.6]
    assert back.environment == {"gpu.name": "X"} and back.run_id == rec.run_id
    assert w.dir.name.startswith("t-") and w.dir.parent == tmp_path


def test_crash_keeps_finished_cases_and_ignores_a_torn_line(tmp_path: Path) -> None:
    w = store.create_run(tmp_path, "t", _snapshot(), {}, [], planned=3)
    w.add(_case(1))
    w.add(_case(2))
    # the process dies: no finish() (the kernel drops its lock); the last line was half written
    w._lock.close()
    with open(w.dir / store.JOURNAL_FILE, "a") as f:
        f.write('{"case_id": "s/rms_norm/triton/-/num_tokens=3#0", "status": "O')
    back = store.load_run(w.dir)
    assert back.status == "interrupted"
    assert [c.params["num_tokens"] for c in back.cases] == [1, 2]


def test_resume_appends_and_compacts(tmp_path: Path) -> None:
    w = store.create_run(tmp_path, "t", _snapshot(), {}, [], planned=3, options={"filters": ["x"], "repeat": 2})
    w.add(_case(1))
    del w  # crash
    w2 = store.resume_run(store.resolve_run("latest", tmp_path))
    assert set(w2.record.case_map()) == {"s/rms_norm/triton/-/num_tokens=1#0"}
    assert w2.record.options == {"filters": ["x"], "repeat": 2}
    w2.add(_case(2))
    w2.add(_case(3))
    w2.finish("complete")
    data = json.loads((w2.dir / store.RUN_FILE).read_text())
    assert [c["params"]["num_tokens"] for c in data["cases"]] == [1, 2, 3]
    assert data["status"] == "complete"


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store.atomic_write_text(tmp_path / "a.json", "{}")
    store.atomic_write_text(tmp_path / "a.json", "[]")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "[]"


def test_resolve_by_id_prefix_path_latest(tmp_path: Path) -> None:
    a = store.create_run(tmp_path, "alpha", _snapshot(), {}, [], 0)
    a.finish("complete")
    b = store.create_run(tmp_path, "beta", _snapshot(), {}, [], 0)
    b.finish("complete")
    assert store.resolve_run(a.record.run_id, tmp_path) == a.dir
    assert store.resolve_run("alp", tmp_path) == a.dir
    assert store.resolve_run(str(b.dir), tmp_path) == b.dir
    assert store.resolve_run(str(b.dir / "run.json"), tmp_path) == b.dir
    with pytest.raises(RunNotFoundError, match="no run 'gamma'"):
        store.resolve_run("gamma", tmp_path)
    c = store.create_run(tmp_path, "alpha", _snapshot(), {}, [], 0)
    c.finish("complete")
    with pytest.raises(RunNotFoundError, match="matches 2 runs"):
        store.resolve_run("alpha", tmp_path)
    with pytest.raises(RunNotFoundError, match="no runs in"):
        store.resolve_run("latest", tmp_path / "empty")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(NormbenchError, match="newer than this normbench reads"):
        store.load_run(d)


def test_results_dir_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORMBENCH_RESULTS_DIR", raising=False)
    assert store.results_dir(None) == Path("runs")
    monkeypatch.setenv("NORMBENCH_RESULTS_DIR", "/x")
    assert store.results_dir(None) == Path("/x")
    assert store.results_dir("/y") == Path("/y")
