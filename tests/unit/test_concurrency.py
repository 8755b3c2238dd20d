"""One writer per run: the run's lock (``flock`` on ``run.lock``) between two processes.

A helper process (tests/fixtures/hold_run_lock.py) reopens a stored run as
``--resume`` does and holds its lock; meanwhile a second writer is refused with
exit 2 and the holder's pid, ``show`` calls the run "running", and once the
holder is gone (finished or killed) the run can be resumed again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normbench import store
from normbench.cli import app

ROOT = Path(__file__).resolve().parents[2]
HOLDER = ROOT / "tests" / "fixtures" / "hold_run_lock.py"
RUNS = ROOT / "tests" / "fixtures" / "runs"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"

runner = CliRunner()


def _stored_run(base: Path) -> Path:
    """A finished, interrupted run with two cases, written by this process (its lock released)."""
    full = store.load_run(RUNS / CAND)
    w = store.create_run(base, "rmsnorm", full.suite, full.environment, ["normbench", "run"], planned=4)
    for c in full.cases[:2]:
        w.add(c)
    w.finish("interrupted")
    return w.dir


def _hold(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(HOLDER), str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line == f"locked {proc.pid}\n", (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
    return proc


def _show(run_dir: Path) -> str:
    r = runner.invoke(app, ["show", str(run_dir)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return _stored_run(tmp_path / "runs")


def test_a_second_writer_is_refused_with_the_holders_pid(run_dir: Path) -> None:
    proc = _hold(run_dir)
    try:
        assert store.lock_holder(run_dir) == f"pid {proc.pid}"
        before = (run_dir / "run.json").read_bytes()
        t0 = time.monotonic()
        r = runner.invoke(app, ["run", "--resume", str(run_dir), "--no-progress"])
        assert r.exit_code == 2 and time.monotonic() - t0 < 10
        assert r.stderr == (f"error: {run_dir}: another normbench process (pid {proc.pid}) is writing this run; "
                            "wait for it to end, or stop it, then try again\n")
        assert "Traceback" not in r.output and (run_dir / "run.json").read_bytes() == before
        with pytest.raises(store.RunLockedError, match=f"pid {proc.pid}"):
            store.resume_run(run_dir)
        # a reader is not a writer: show works, and calls the run running (not interrupted)
        assert f"run {run_dir.name} (running)" in _show(run_dir)
        assert store.load_run(run_dir).status == "running"
        proc.stdin.write("finish\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.stdout.readline() == "finished\n"  # type: ignore[union-attr]
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    record = store.load_run(run_dir)
    assert record.status == "complete" and len(record.cases) == 3
    assert store.lock_holder(run_dir) is None
    assert f"run {run_dir.name} (complete)" in _show(run_dir)
    store.resume_run(run_dir).finish("complete")  # the lock is free again


def test_a_killed_writer_leaves_an_interrupted_run_that_resumes(run_dir: Path) -> None:
    proc = _hold(run_dir)
    assert store.load_run(run_dir).status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert store.lock_holder(run_dir) is None  # the kernel dropped the dead process's lock
    assert (run_dir / store.JOURNAL_FILE).exists()  # it died before finish()
    assert f"run {run_dir.name} (interrupted)" in _show(run_dir)
    w = store.resume_run(run_dir)
    assert len(w.record.cases) == 2
    w.finish("complete")
    assert store.load_run(run_dir).status == "complete"


def test_a_running_record_without_a_writer_is_interrupted(tmp_path: Path) -> None:
    """A record left saying "running" (its process died before the journal existed) is interrupted."""
    d = _stored_run(tmp_path)
    text = (d / "run.json").read_text().replace('"status": "interrupted"', '"status": "running"')
    (d / "run.json").write_text(text)
    assert store.load_run(d).status == "interrupted"


def test_files_are_created_0644_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        full = store.load_run(RUNS / CAND)
        w = store.create_run(tmp_path, "t", full.suite, {}, [], planned=1)
        w.add(full.cases[0])
        modes = {p.name: p.stat().st_mode & 0o777 for p in w.dir.iterdir() if p.is_file()}
        assert modes == {"run.json": 0o644, "cases.jsonl": 0o644, "run.lock": 0o644}
        w.finish("complete")
        assert (w.dir / "run.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        store.atomic_write_text(tmp_path / "x.json", "{}")
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
