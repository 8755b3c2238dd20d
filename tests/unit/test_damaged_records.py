"""Damaged run records: every kind of damage x every command that reads runs.

Each damaged copy of a fixture run must be refused by ``show``, ``compare`` (on
either side), ``export``, ``plot``, ``noise`` and ``run --resume`` with exit
code 2 and one line on stderr that names the file (and the case and field where
there is one), no traceback, nothing on stdout, nothing written into the run,
and quickly. ``store.load_run`` raises the same message.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from normbench import store
from normbench.cli import app
from normbench.errors import NormbenchError
from normbench.store.writer import _journal_header

RUNS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runs"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
SECONDS = 10.0  # per command; each takes well under a second

runner = CliRunner()


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def f(d: dict) -> None:
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return f


def _delete(path: list[Any]) -> Callable[[dict], None]:
    def f(d: dict) -> None:
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]
    return f


def _empty_metrics(d: dict) -> None:
    for c in d["cases"]:
        c["metrics"] = {}


#: name -> (what to do to the record's JSON (or the bytes to write instead), the message expected)
DAMAGE: dict[str, tuple[Any, str]] = {
    "status_weird": (_set(["cases", 12, "status"], "WEIRD"),
                     "run.json: case 12 (rms_norm/rms_norm/torch_naive/-/num_tokens=1024,hidden_size…): "
                     "status 'WEIRD' is not one of OK, INCORRECT, FAILED, SKIPPED"),
    "status_missing": (_delete(["cases", 3, "status"]), "run.json: case 3 (rms_norm/rms_norm/liger/"),
    "cases_not_a_list": (_set(["cases"], {"a": 1}), "run.json: cases is an object, not a list"),
    "run_id_missing": (_delete(["run_id"]), "run.json: run_id is missing"),
    "a_list": (lambda d: [], "run.json: not a run record (a JSON list, not an object)"),
    "not_utf8": (lambda d: b"\xff\xfe" + json.dumps(d).encode(), "run.json: not a UTF-8 text record"),
    "not_json": (lambda d: json.dumps(d).encode()[:-20], "not valid JSON"),
    "metrics_emptied": (_empty_metrics, "): status OK but metrics is empty"),
    "nan_sample": (_set(["cases", 0, "metrics", "time_us", "samples", 4], float("nan")),
                   "): metrics.time_us.samples[4] is nan: non-finite values are not measurements"),
    "inf_value": (_set(["cases", 1, "metrics", "time_us", "value"], float("inf")),
                  "): metrics.time_us.value is inf: non-finite values are not measurements"),
    "null_sample": (_set(["cases", 0, "metrics", "time_us", "samples", 2], None),
                    "case 0 (rms_norm/rms_norm/torch_naive/-/num_tokens=16,hidden_size=4…): "
                    "metrics.time_us.samples[2] is null, not a number"),
    "no_schema_version": (_delete(["schema_version"]), "run.json: no schema_version"),
    "negative_schema_version": (_set(["schema_version"], -5),
                                "run.json: schema_version -5 is not a version this normbench reads (1 to 2)"),
    "string_schema_version": (_set(["schema_version"], "1"),
                              "run.json: schema_version '1' is not a version this normbench reads (1 to 2)"),
    "newer_schema_version": (_set(["schema_version"], 99), "run.json: schema_version 99 is newer than this"),
}

#: journal damage: (what cases.jsonl holds, whether run.json is removed, the message expected)
JOURNAL_DAMAGE: dict[str, tuple[Callable[[store.RunRecord], str], bool, str]] = {
    "journal_middle_line": (
        lambda r: _journal_header(r) + "\n{not json\n" + r.cases[0].model_dump_json() + "\n", False,
        "cases.jsonl:2: damaged journal line: not valid JSON"),
    "journal_case_weird": (
        lambda r: _journal_header(r) + "\n" + r.cases[0].model_dump_json().replace('"OK"', '"WEIRD"') + "\n"
        + r.cases[1].model_dump_json() + "\n", False,
        "cases.jsonl:2: case (rms_norm/rms_norm/torch_naive/-/num_tokens=16,hidden_size=4…): status 'WEIRD' is not"),
    "journal_nan": (
        lambda r: r.cases[0].model_dump_json().replace('"samples":[', '"samples":[NaN,', 1) + "\n", False,
        "cases.jsonl:1: case (rms_norm/rms_norm/torch_naive/-/num_tokens=16,hidden_size=4…): "
        "metrics.time_us.samples[0] is nan"),
    "journal_only_without_header": (
        lambda r: r.cases[0].model_dump_json() + "\n", True,
        ": no run.json, and the journal cases.jsonl cannot rebuild the run: its 1 finished case lacks the run's suite"),
    "journal_only_empty": (lambda r: "", True, "cannot rebuild the run: it is empty"),
}


def _damaged(tmp_path: Path, kind: str) -> Path:
    """A copy of the CAND fixture run, damaged as ``kind`` says; returns its directory."""
    d = tmp_path / "runs" / f"{CAND[:-6]}dddddd"
    shutil.copytree(RUNS / CAND, d)
    f = d / "run.json"
    if kind in DAMAGE:
        data = json.loads(f.read_text())
        out = DAMAGE[kind][0](data)
        f.write_bytes(out if isinstance(out, bytes) else json.dumps(data if out is None else out).encode())
    else:
        make, remove, _ = JOURNAL_DAMAGE[kind]
        (d / store.JOURNAL_FILE).write_text(make(store.load_run(d)))
        if remove:
            f.unlink()
    return d


def _commands(d: Path, tmp_path: Path) -> list[list[str]]:
    good = str(RUNS / BASE)
    return [
        ["show", str(d)],
        ["show", "latest", "--results-dir", str(d.parent)],
        ["show", str(d), "-f", "markdown", "-o", str(tmp_path / "out")],
        ["compare", good, str(d)],
        ["compare", str(d), good, "-f", "json"],
        ["export", str(d)],
        ["plot", str(d), "--out", str(tmp_path / "plots")],
        ["noise", str(d)],
        ["run", "--resume", str(d), "--no-progress"],
    ]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


@pytest.mark.parametrize("kind", [*DAMAGE, *JOURNAL_DAMAGE])
def test_damage_is_one_line_exit_2_for_every_command(tmp_path: Path, kind: str) -> None:
    d = _damaged(tmp_path, kind)
    message = DAMAGE[kind][1] if kind in DAMAGE else JOURNAL_DAMAGE[kind][2]
    with pytest.raises(NormbenchError) as e:
        store.load_run(d)
    assert message in str(e.value) and "\n" not in str(e.value)
    before = _snapshot(d)
    for args in _commands(d, tmp_path):
        t0 = time.monotonic()
        r = runner.invoke(app, args, env={"COLUMNS": "80"})
        took = time.monotonic() - t0
        assert r.exit_code == 2, (args, r.output, r.exception)
        assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), (args, r.exception)
        err = r.stderr.strip()
        assert err.startswith("error: ") and err.count("\n") == 0, (args, r.stderr)
        assert message in err and str(d) in err, (args, err)
        assert r.stdout == "" and "Traceback" not in r.output, args
        assert took < SECONDS, (args, took)
    assert _snapshot(d) == before  # nothing was written into the damaged run (no --resume half-used it)
    assert not (tmp_path / "out").exists() and not (tmp_path / "plots").exists()


def test_a_folder_without_a_record_names_the_missing_file(tmp_path: Path) -> None:
    d = tmp_path / "runs" / "not-a-run"
    d.mkdir(parents=True)
    for args in (["show", str(d)], ["run", "--resume", str(d)], ["export", str(d)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2
        assert f"{d}: not a run: no run.json, run.json.gz or run.json.xz in it" in r.stderr, r.stderr


def test_non_finite_samples_are_refused_at_write_time(tmp_path: Path) -> None:
    record = store.load_run(RUNS / CAND)
    snap = store.SuiteSnapshot(name="t", path="t.yaml", sha256="0" * 64, spec={"name": "t", "stages": []})
    w = store.create_run(tmp_path, "t", snap, {}, [], planned=2)
    good = record.cases[0]
    w.add(good)
    bad = good.model_copy(deep=True)
    bad.case_id = "s/x#0"
    bad.metrics["time_us"].samples[3] = float("inf")
    with pytest.raises(store.NonFiniteError, match=r"^case s/x#0: metrics\.time_us\.samples\[3\] is inf: "
                                                    r"a non-finite measurement is not recorded$"):
        w.add(bad)
    w.finish("interrupted")
    back = store.load_run(w.dir)
    assert [c.case_id for c in back.cases] == [good.case_id]  # the refused case left no trace


def test_a_lost_run_json_is_rebuilt_from_the_journal(tmp_path: Path) -> None:
    """show says so; the rebuilt record has every journaled case and is 'interrupted'."""
    full = store.load_run(RUNS / CAND)
    w = store.create_run(tmp_path / "runs", "rmsnorm", full.suite, full.environment, ["normbench", "run"],
                         planned=len(full.cases))
    for c in full.cases[:5]:
        w.add(c)
    w._lock.close()  # the process dies: the kernel drops its lock, the journal stays
    (w.dir / "run.json").unlink()
    back = store.load_run(w.dir)
    assert back.recovered_from == str(w.dir / store.JOURNAL_FILE)
    assert back.status == "interrupted" and back.run_id == w.record.run_id
    assert [c.case_id for c in back.cases] == [c.case_id for c in full.cases[:5]]
    assert back.suite == full.suite and back.environment == full.environment
    r = runner.invoke(app, ["show", "latest", "--results-dir", str(tmp_path / "runs")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert (f"run {w.record.run_id} (interrupted, recovered from the journal cases.jsonl: its run.json was missing)"
            in r.stdout)
    assert f"{len(full.cases) - 5} not run (normbench run --resume {w.record.run_id})" in r.stdout


TINY = """\
name: tiny
stages:
  - kind: kernel
    op: rms_norm
    providers: [torch_naive]
    sweep: {num_tokens: [1, 7, 9], hidden_size: [96], residual: [false], dtype: [float32]}
    timing: {min_run_time_s: 0.001}
"""


def test_resume_completes_a_run_rebuilt_from_its_journal(tmp_path: Path) -> None:
    """A real run killed after one case, then its run.json lost: --resume finishes it from the journal."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["run", str(suite), "--results-dir", str(runs), "--no-progress"])
    assert r.exit_code == 0, r.output
    d = store.resolve_run("latest", runs)
    done = store.load_run(d)
    assert len(done.cases) == 3
    # as the process left it when killed after its first case (header + one case), then run.json deleted
    head = done.model_copy(update={"status": "running", "finished_at": None})
    (d / store.JOURNAL_FILE).write_text(_journal_header(head) + "\n" + done.cases[0].model_dump_json() + "\n")
    (d / "run.json").unlink()
    r = runner.invoke(app, ["run", "--resume", "latest", "--results-dir", str(runs), "--no-progress"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert f"resuming {done.run_id}: 1 cases stored, 2 to go" in r.stdout
    back = store.load_run(d)
    assert back.status == "complete" and back.recovered_from is None and (d / "run.json").is_file()
    assert [c.case_id for c in back.cases] == [c.case_id for c in done.cases]
    assert back.cases[0] == done.cases[0] and not (d / store.JOURNAL_FILE).exists()


@pytest.mark.parametrize("command", ["show", "compare", "export", "noise"])
def test_a_reference_the_file_system_refuses_is_a_one_line_error(command, tmp_path):
    """A 300-character run reference (longer than a file name may be) is 'no run', not an OSError."""
    from normbench.cli import app
    from typer.testing import CliRunner

    ref = "r" * 300
    args = [command, ref] + (["latest"] if command == "compare" else []) + ["--results-dir", str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "no run 'rrrr" in res.output and "File name too long" in res.output and "Traceback" not in res.output
