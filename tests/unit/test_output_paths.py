"""``-o`` / ``--out`` of every command that writes a report: files, folders, missing parents, every format.

A folder (one that exists, or a path ending in ``/``) gets a default file name
inside it; missing parent folders are created; an existing file is replaced;
``show -o`` writes rich output too; a path that cannot be written is a one-line
error with exit code 2, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normbench.cli import app

RUNS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runs"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
E2E = "e2e-20260104T000000Z-eeeeee"

runner = CliRunner()


def cli(*args: str):
    r = runner.invoke(app, [*args, "--results-dir", str(RUNS)], env={"COLUMNS": "80"})
    assert "Traceback" not in r.output
    return r


#: (command, its --format, the default file name written into a folder, a line the file must hold)
CASES = [
    (("show", CAND), "rich", f"{CAND}.txt", f"run {CAND} (complete)"),
    (("show", CAND), "markdown", f"{CAND}.md", f"## normbench run `{CAND}`"),
    (("compare", BASE, CAND), "rich", f"compare-{CAND}.txt", "1 faster, 1 slower, 3 within noise"),
    (("compare", BASE, CAND), "markdown", f"compare-{CAND}.md", f"## normbench: `{CAND}` vs `{BASE}`"),
    (("compare", BASE, CAND), "json", f"compare-{CAND}.json", '"run_id": "' + BASE),
    (("compare", BASE, CAND), "csv", f"compare-{CAND}.csv", "candidate,stage,kind,op,provider"),
    (("compare", E2E, "--variants"), "markdown", f"variants-{E2E}.md", "## normbench: variants `fused` vs `default`"),
    (("noise", BASE), "rich", f"noise-{BASE}.txt", "smallest effect this machine resolves"),
    (("noise", BASE), "json", f"noise-{BASE}.json", '"resolvable_p95_pct"'),
    (("export", BASE), "csv", f"{BASE}.csv", "run_id,case_id,fingerprint"),
    (("export", BASE), "json", f"{BASE}.json", '"run_id": "' + BASE),
]


@pytest.mark.parametrize("args, fmt, name, expect", CASES, ids=[f"{c[0][0]}-{c[1]}" for c in CASES])
def test_every_format_to_a_file_a_folder_and_a_missing_folder(tmp_path: Path, args, fmt, name, expect) -> None:
    # a file in folders that do not exist yet
    target = tmp_path / "a" / "b" / f"report.{fmt}"
    r = cli(*args, "-f", fmt, "-o", str(target))
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and f"wrote {target}" in r.stderr
    text = target.read_text(encoding="utf-8")
    assert expect in text
    if fmt == "json":
        json.loads(text)
    # an existing file is replaced
    target.write_text("old")
    assert cli(*args, "-f", fmt, "-o", str(target)).exit_code == 0
    assert target.read_text(encoding="utf-8") == text
    # an existing folder: the default name inside it
    folder = tmp_path / "reports"
    folder.mkdir()
    r = cli(*args, "-f", fmt, "-o", str(folder))
    assert r.exit_code == 0, r.output
    assert (folder / name).read_text(encoding="utf-8") == text
    # a folder that does not exist yet, written with a trailing slash
    r = cli(*args, "-f", fmt, "-o", str(tmp_path / "new" / "dir") + "/")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "new" / "dir" / name).read_text(encoding="utf-8") == text


def test_rich_output_to_a_file_has_no_colour_and_no_cut_cells(tmp_path: Path) -> None:
    out = tmp_path / "show.txt"
    assert cli("show", CAND, "-o", str(out)).exit_code == 0
    text = out.read_text(encoding="utf-8")
    assert "\x1b[" not in text and "…" not in text
    assert "1024x4096" in text and "INCORRECT" in text


def test_standing_to_a_folder(tmp_path: Path) -> None:
    r = cli("standing", BASE, "-p", "triton", "-o", str(tmp_path))
    assert r.exit_code == 0, r.output
    text = (tmp_path / "standing.md").read_text()
    assert text.startswith("`triton` against the fastest other provider") and "| rms_norm | <= 16 |" in text


def test_unwritable_targets_are_one_line_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("export", BASE, "-o", str(blocker / "sub" / "out.csv"))
    assert r.exit_code == 2
    assert r.stderr.startswith(f"error: -o {blocker / 'sub' / 'out.csv'}: cannot create the folder {blocker / 'sub'}")
    assert r.stderr.count("\n") == 1


def test_plot_out_file_folder_and_existing_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "deep" / "fig.png"
    r = cli("plot", BASE, "--out", str(png))
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 10_000 and str(png) in r.stdout.replace("\n", "")
    first = png.read_bytes()
    r = cli("plot", BASE, "--out", str(png))  # an existing .png is replaced, no FileExistsError
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == first[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("plot", BASE, "--out", str(tmp_path / "plots"))
    assert r.exit_code == 0 and len(list((tmp_path / "plots").glob("*.png"))) == 1
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    r = cli("plot", BASE, "--out", str(notes))
    assert r.exit_code == 2 and notes.read_text() == "keep"
    assert r.stderr == (f"error: --out {notes}: a file that is not a .png; give a folder for the PNGs or a .png "
                        "file name\n")
