"""Run records stored compressed (``run.json.gz`` / ``run.json.xz``) or packed in a tarball.

Every command that reads runs (show, compare, export, noise, plot) must give the
same output for a compressed copy of the fixture runs as for the plain files, find
them by id, prefix, ``latest`` and path, and turn a damaged file into a one-line
error with exit code 2.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normbench import store
from normbench.cli import app
from normbench.errors import NormbenchError, RunNotFoundError

RUNS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runs"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
H200 = "rmsnorm-20260103T000000Z-cccccc"
E2E = "e2e-20260104T000000Z-eeeeee"

runner = CliRunner()
COMPRESS = {"gz": gzip.compress, "xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, preset=6)}


def cli(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one normbench command."""
    r = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def compressed_copy(dest: Path, suffix: str, only: tuple[str, ...] | None = None) -> Path:
    """The fixture runs copied under ``dest``, each record (or those in ``only``) as ``run.json.<suffix>``."""
    shutil.copytree(RUNS, dest)
    for d in dest.iterdir():
        if only is None or d.name in only:
            plain = d / "run.json"
            (d / f"run.json.{suffix}").write_bytes(COMPRESS[suffix](plain.read_bytes()))
            plain.unlink()
    return dest


@pytest.mark.parametrize("suffix", ["gz", "xz"])
def test_commands_read_compressed_records_as_plain(tmp_path: Path, suffix: str) -> None:
    packed = compressed_copy(tmp_path / "runs", suffix)
    assert not list(packed.glob("*/run.json")) and len(list(packed.glob(f"*/run.json.{suffix}"))) == 4
    commands = [
        ("show", BASE, "-f", "markdown"),
        ("show", E2E),
        ("compare", BASE, CAND, "-f", "markdown"),
        ("compare", BASE, CAND, "-f", "csv"),
        ("compare", "latest", "--variants", "-f", "markdown"),
        ("export", CAND, "-f", "csv"),
        ("noise", BASE),
    ]
    for args in commands:
        want = cli(*args, "--results-dir", str(RUNS))
        got = cli(*args, "--results-dir", str(packed))
        assert want[0] == 0 and want[1].strip(), args
        assert got == want, args


@pytest.mark.parametrize("suffix", ["gz", "xz"])
def test_resolve_by_id_prefix_latest_and_file_path(tmp_path: Path, suffix: str) -> None:
    packed = compressed_copy(tmp_path / "runs", suffix, only=(CAND, E2E))  # plain and compressed side by side
    assert [d.name for d in store.list_runs(packed)] == [BASE, CAND, H200, E2E]
    assert store.resolve_run("latest", packed) == packed / E2E
    assert store.resolve_run("rmsnorm-20260102", packed) == packed / CAND
    record_file = packed / CAND / f"run.json.{suffix}"
    assert store.resolve_run(str(record_file), tmp_path / "elsewhere") == packed / CAND
    assert store.resolve_run(str(packed / CAND), tmp_path / "elsewhere") == packed / CAND
    record = store.load_run(record_file)
    plain = store.load_run(RUNS / CAND)
    assert record.run_id == CAND and record.path == str(packed / CAND)
    assert record.model_dump() == plain.model_dump()
    code, out, _ = cli("show", str(record_file), "-f", "markdown")
    assert code == 0 and f"`{CAND}`" in out
    with pytest.raises(RunNotFoundError, match="no run.json, run.json.gz or run.json.xz"):
        store.load_run(tmp_path)


def test_plain_record_wins_over_compressed(tmp_path: Path) -> None:
    """A directory with both (a compressed record decompressed by hand, then edited) reads run.json."""
    d = tmp_path / CAND
    shutil.copytree(RUNS / CAND, d)
    text = (d / "run.json").read_text()
    (d / "run.json.xz").write_bytes(lzma.compress(text.replace(CAND, "stale-20260102T000000Z-bbbbbb").encode()))
    assert store.record_file(d) == d / "run.json"
    assert store.load_run(d).run_id == CAND
    assert store.load_run(d / "run.json.xz").run_id == "stale-20260102T000000Z-bbbbbb"


def test_journal_beside_compressed_record_is_merged(tmp_path: Path) -> None:
    d = compressed_copy(tmp_path / "runs", "xz", only=(CAND,)) / CAND
    record = store.load_run(d)
    extra = record.cases[0].model_copy(update={"case_id": "extra#0", "fingerprint": "extra"})
    (d / store.JOURNAL_FILE).write_text(extra.model_dump_json() + "\n")
    back = store.load_run(d)
    assert len(back.cases) == len(record.cases) + 1 and back.cases[-1].case_id == "extra#0"


def _damaged(tmp_path: Path) -> dict[str, Path]:
    """One run directory per kind of damage, under ``tmp_path / "runs"``."""
    raw = (RUNS / BASE / "run.json").read_bytes()
    xz = lzma.compress(raw, format=lzma.FORMAT_XZ)
    cases = {
        "truncated-20260101T000000Z-aaaaa1": ("run.json.xz", xz[: len(xz) // 2]),
        "garbage-20260101T000000Z-aaaaa2": ("run.json.xz", b"this is not xz data at all\n" * 4),
        "gzgarbage-20260101T000000Z-aaaaa3": ("run.json.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 64),
        "gztruncated-20260101T000000Z-aaaaa4": ("run.json.gz", gzip.compress(raw)[:300]),
        "notutf8-20260101T000000Z-aaaaa5": ("run.json.xz", lzma.compress(b"\xff\xfe" + raw)),
        "notjson-20260101T000000Z-aaaaa6": ("run.json.xz", lzma.compress(raw[:-40])),
    }
    out = {}
    for name, (fname, data) in cases.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / fname).write_bytes(data)
        out[name.split("-")[0]] = d
    return out


@pytest.mark.parametrize(
    "which, message",
    [
        ("truncated", "damaged or truncated compressed record"),
        ("garbage", "damaged or truncated compressed record"),
        ("gzgarbage", "damaged or truncated compressed record"),
        ("gztruncated", "damaged or truncated compressed record"),
        ("notutf8", "not a UTF-8 text record"),
        ("notjson", "not valid JSON"),
    ],
)
def test_damaged_record_is_a_one_line_error(tmp_path: Path, which: str, message: str) -> None:
    d = _damaged(tmp_path)[which]
    with pytest.raises(NormbenchError, match=message):
        store.load_run(d)
    for args in (("show", str(d)), ("show", d.name, "--results-dir", str(d.parent)),
                 ("compare", str(d), str(RUNS / CAND))):
        code, out, err = cli(*args)
        assert code == 2, args
        assert err.startswith("error: ") and message in err and str(d) in err.replace("\n", "")
        assert err.strip().count("\n") == 0 and "Traceback" not in out + err


def test_compressed_run_cannot_be_resumed(tmp_path: Path) -> None:
    packed = compressed_copy(tmp_path / "runs", "xz", only=(CAND,))
    with pytest.raises(NormbenchError, match=r"cannot be resumed; decompress it first \(xz -d "):
        store.resume_run(packed / CAND)
    code, _, err = cli("run", "--resume", CAND, "--results-dir", str(packed))
    assert code == 2 and "cannot be resumed" in err
    assert not (packed / CAND / "run.json").exists()  # nothing written beside the compressed record
    store.check_writable(packed / BASE)  # a plain one can


def _tarball(tmp_path: Path, mode: str, name: str) -> Path:
    """The fixture runs (two of them with compressed records) as a tarball of run directories."""
    src = compressed_copy(tmp_path / "src", "xz", only=(BASE, E2E))
    path = tmp_path / name
    with tarfile.open(path, mode) as tar:
        tar.add(src, arcname=".")
    return path


@pytest.mark.parametrize("mode, name", [("w:xz", "runs.tar.xz"), ("w:gz", "runs.tgz"), ("w", "runs.tar")])
def test_tarball_of_runs_as_results_dir(tmp_path: Path, mode: str, name: str) -> None:
    tarball = _tarball(tmp_path, mode, name)
    assert [d.name for d in store.list_runs(tarball)] == [BASE, CAND, H200, E2E]
    assert store.resolve_run("latest", tarball) == tarball / E2E
    assert store.resolve_run(str(tarball / CAND), tmp_path / "elsewhere") == tarball / CAND
    assert store.load_run(tarball / BASE).model_dump() == store.load_run(RUNS / BASE).model_dump()
    for args in (("compare", BASE, "rmsnorm-20260102", "-f", "markdown"), ("show", "latest"), ("export", H200)):
        assert cli(*args, "--results-dir", str(tarball)) == cli(*args, "--results-dir", str(RUNS)), args
    code, out, _ = cli("compare", str(tarball / BASE), str(RUNS / CAND), "-f", "markdown")
    assert code == 0 and out == cli("compare", BASE, CAND, "-f", "markdown", "--results-dir", str(RUNS))[1]
    code, _, err = cli("plot", BASE, "--results-dir", str(tarball))
    assert code == 2 and "inside a tarball: give --out" in err
    with pytest.raises(NormbenchError, match="inside a tarball cannot be resumed"):
        store.check_writable(tarball / CAND)
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        store.resolve_run("nope", tarball)


def test_damaged_tarball_is_a_one_line_error(tmp_path: Path) -> None:
    good = _tarball(tmp_path, "w:xz", "runs.tar.xz").read_bytes()
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(good[: len(good) // 2])
    junk = tmp_path / "junk.tar.xz"
    junk.write_bytes(b"not a tarball\n" * 10)
    for path in (bad, junk):
        code, out, err = cli("show", "latest", "--results-dir", str(path))
        assert code == 2 and err.startswith(f"error: {path.resolve()}: ")
        assert err.strip().count("\n") == 0 and "Traceback" not in out + err
