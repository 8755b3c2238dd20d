"""Bad input, the input side (issue 13): suite files, their YAML, sizes, names and options.

Each bad input must be refused with exit code 2 and its message (``file:line:col:
field: message`` where there is a position), with no traceback, without
creating anything (no run directory, nothing at all under the test's folder),
within ``SECONDS`` and without the process growing by more than ``GROW_MB``.
The CLI runs in-process (``CliRunner``); FIFOs run in a subprocess with a
timeout, so that a regression blocks a child, not the test run.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from typer.testing import CliRunner

from normbench import store
from normbench.cli import app
from normbench.expand import Capabilities
from normbench.suite import NAME_RULE, SCHEMA_COMMENT, load_suite, parse_suite, suite_json_schema

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
SECONDS = 5.0
GROW_MB = 300

OK = """\
name: ok
stages:
  - kind: kernel
    op: rms_norm
    providers: [torch_naive]
    sweep: {num_tokens: [1, 2], hidden_size: 64}
    timing: {min_run_time_s: 0.001}
"""


def _kernel(sweep: str = "{num_tokens: [1, 2], hidden_size: 64}", extra: str = "", providers: str = "[torch_naive]",
            name: str = "s") -> str:
    return (f"name: {name}\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: {providers}\n"
            f"    sweep: {sweep}\n{extra}")


def _e2e(stage: str) -> str:
    return f"name: s\nserver: {{model: m}}\nvariants: {{a: {{}}, b: {{}}}}\nstages:\n  - {stage}\n"


def _seq(n: int, fmt: str = "{}") -> str:
    return "[" + ", ".join(fmt.format(i) for i in range(1, n + 1)) + "]"


def _bomb(where: str) -> str:
    """Ten levels of ten aliases each (10^10 leaves expanded) under ``where``'s mapping."""
    lines = ["      l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return where + "\n".join(lines) + "\n"


GEN_KWARGS_BOMB = _bomb("name: s\nserver: {model: m}\nstages:\n  - kind: accuracy\n    gen_kwargs:\n")
CONFIG_BOMB = _bomb("name: s\nserver: {model: m}\nstages:\n  - {kind: latency}\nvariants:\n  v:\n"
                    "    compilation_config:\n")
# l0 = 11 nodes, l1 = 111, ... l4 = 111,111: the first alias of l5 (*l4) crosses 200,000.


def _at(text: str, needle: str, nth: int = 1) -> str:
    """``line:col`` of the nth occurrence of ``needle`` in ``text``."""
    i = -1
    for _ in range(nth):
        i = text.index(needle, i + 1)
    line = text.count("\n", 0, i) + 1
    return f"{line}:{i - (text.rfind(chr(10), 0, i) + 1) + 1}"


RULE = f"a name is {NAME_RULE}"
LONG = "a" * 300
L37 = "a" * 37 + "..."

# (id, suite text or bytes (None: no file), args ({f} = the suite file, {d} = the test folder), expected line)
# The expected line is the whole line after "error: "; one ending in "..." is a prefix.
SUITES: list[tuple[str, Any, list[str], str]] = [
    # ---- syntax
    ("unclosed flow", "name: x\nstages: [\n", ["validate", "{f}"],
     "{f}:3:1: YAML syntax error: while parsing a flow node: expected the node content, but found '<stream end>'"),
    ("tab indentation", "name: x\nstages:\n\t- kind: kernel\n", ["validate", "{f}"],
     "{f}:3:1: YAML syntax error: while scanning for the next token: found character '\\t' that cannot start any token"),
    ("duplicate key", "name: x\nname: y\n", ["validate", "{f}"], "{f}:2:1: duplicate key 'name' (first at line 1, column 1)"),
    ("two documents", "name: x\n---\nname: y\n", ["validate", "{f}"],
     "{f}:2:1: YAML syntax error: expected a single document in the stream: but found another document"),
    ("undefined alias", "name: *nope\n", ["validate", "{f}"], "{f}:1:7: YAML syntax error: found undefined alias 'nope'"),
    ("python tag", "name: !!python/object/apply:os.system [ls]\n", ["validate", "{f}"],
     "{f}:1:7: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("list as a key", "name: x\n[a, b]: 1\n", ["validate", "{f}"],
     "{f}:2:1: a key must be a plain value (a name or a number), not a list"),
    ("mapping as a key", "name: x\n? {a: 1}\n: 1\n", ["validate", "{f}"],
     "{f}:2:3: a key must be a plain value (a name or a number), not a mapping"),
    ("int of 5000 digits", _kernel("{num_tokens: " + "7" * 5000 + ", hidden_size: 64}"), ["validate", "{f}"],
     "{f}:6:25: cannot read '7777777777777777777777777777777777777777': Exceeds the limit (4300 digits) for integer "
     "string conversion: value has 5000 digits"),
    ("bad timestamp", "name: 2001-13-45\n", ["validate", "{f}"], "{f}:1:7: cannot read '2001-13-45': month must be in 1..12"),
    ("empty", "", ["validate", "{f}"], "{f}: the file is empty; a suite needs at least 'name' and 'stages'"),
    ("only comments", "# nothing\n", ["validate", "{f}"],
     "{f}: the file holds no YAML document; a suite needs at least 'name' and 'stages'"),
    ("list document", "- name: x\n", ["validate", "{f}"], "{f}:1:1: a suite is a mapping (name:, stages:, ...), not a list"),
    # ---- nesting and bombs
    ("flow nesting 20000", "name: " + "[" * 20000, ["validate", "{f}"],
     "{f}:1:38: YAML nested more than 32 levels deep; a suite needs a few"),
    ("block nesting 400", "".join("  " * i + "a:\n" for i in range(400)) + "  " * 400 + "1\n", ["validate", "{f}"],
     "{f}:33:65: YAML nested more than 32 levels deep; a suite needs a few"),
    ("deep through an alias", "a: &a " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n",
     ["validate", "{f}"], "{f}:2:24: YAML nested more than 32 levels deep once aliases are expanded; a suite needs a few"),
    ("alias bomb in gen_kwargs", GEN_KWARGS_BOMB, ["validate", "{f}"],
     f"{{f}}:{_at(GEN_KWARGS_BOMB, '*l4')}: alias *l4 (111,111 nodes) takes the suite past the limit of 200,000 nodes "
     "(an alias bomb?); refused, not expanded"),
    ("alias bomb in compilation_config", CONFIG_BOMB, ["run", "{f}", "--results-dir", "{d}/runs"],
     f"{{f}}:{_at(CONFIG_BOMB, '*l4')}: alias *l4 (111,111 nodes) takes the suite past the limit of 200,000 nodes "
     "(an alias bomb?); refused, not expanded"),
    ("recursive alias", "name: &a [x, *a]\n", ["validate", "{f}"],
     "{f}:1:14: alias *a is inside the node it names (a recursive structure); a suite is a tree"),
    ("10001 aliases", "a: &a 1\nb: [" + "*a, " * 10001 + "]\n", ["validate", "{f}"],
     f"{{f}}:2:{5 + 4 * 10000}: more than 10,000 aliases; a suite uses a few"),
    ("200001 nodes", "name: [" + "1," * 200001 + "]\n", ["validate", "{f}"],
     "{f}:1:400002: more than 200,000 YAML nodes; a suite needs far fewer"),
    # ---- files and encodings
    ("over 1 MiB", "#" * (1 << 20) + "\n", ["validate", "{f}"],
     "{f}: 1,048,577 bytes; a suite file is at most 1,048,576 bytes"),
    ("latin-1", b"name: caf\xe9\n", ["validate", "{f}"],
     "{f}:1:10: not UTF-8 text (byte 0xe9 at offset 9); save the suite as UTF-8"),
    ("utf-16", "name: x\n".encode("utf-16"), ["validate", "{f}"],
     "{f}:1:1: not UTF-8 text (byte 0xff at offset 0); save the suite as UTF-8"),
    ("NUL byte", "name: x\x00\n", ["validate", "{f}"],
     "{f}:1:8: character 0x0000 is not allowed in YAML (special characters are not allowed)"),
    ("/dev/zero", None, ["validate", "/dev/zero"],
     "/dev/zero: is a character device, not a regular file; a suite file must be a regular file"),
    ("a directory", None, ["validate", "{d}"], "{d}: is a directory, not a suite file"),
    ("missing", None, ["validate", "{d}/nope.yaml"], "{d}/nope.yaml: no such file"),
    ("file name of 300", None, ["validate", "{d}/" + LONG + ".yaml"], "{d}/" + LONG + ".yaml: cannot read: File name too long"),
    # ---- sizes
    ("10^9-point sweep", _kernel(f"\n      num_tokens: {_seq(1000)}\n      hidden_size: {_seq(1000)}\n"
                                 f"      eps: {_seq(1000, '{}.0e-7')}\n"), ["validate", "{f}"],
     "{f}:6:5: stages[0].sweep: 1,000,000,000 cases (1,000 num_tokens x 1,000 hidden_size x 1,000 eps x 1 provider), "
     "over the limit of 200,000 cases per run; narrow the sweep, or raise the limit with --max-cases"),
    ("10^7-point sweep", _kernel(f"\n      num_tokens: {_seq(1000)}\n      hidden_size: {_seq(10000)}\n"),
     ["run", "{f}", "--results-dir", "{d}/runs"],
     "{f}:6:5: stages[0].sweep: 10,000,000 cases (1,000 num_tokens x 10,000 hidden_size x 1 provider), over the limit "
     "of 200,000 cases per run; narrow the sweep, or raise the limit with --max-cases"),
    ("--repeat over --max-cases", OK, ["run", "{f}", "--repeat", "600", "--max-cases", "1000", "--results-dir", "{d}/runs"],
     "{f}:6:5: stages[0].sweep: 1,200 cases (2 num_tokens x 1 provider x 600 repeats), over the limit of 1,000 cases "
     "per run; narrow the sweep, or raise the limit with --max-cases"),
    ("num_tokens 1e12 (runs here)", _kernel("{num_tokens: 1000000000000, hidden_size: 4096}"), ["validate", "{f}"],
     "{f}:6:13: stages[0].sweep.num_tokens: num_tokens=1,000,000,000,000 x hidden_size=4,096 bfloat16 needs about "
     "74,505.8 TiB (inputs, outputs and the float64 reference); over 1.0 TiB, more than any device has"),
    ("hidden_size 1e12 (skipped here)", _kernel("{num_tokens: 8, hidden_size: [64, 1000000000000]}", providers="[triton]"),
     ["validate", "{f}"],
     "{f}:6:46: stages[0].sweep.hidden_size[1]: num_tokens=8 x hidden_size=1,000,000,000,000 bfloat16 needs about "
     "147.3 TiB (inputs, outputs and the float64 reference); over 1.0 TiB, more than any device has"),
    ("eps .inf", _kernel("{num_tokens: 1, hidden_size: 64, eps: .inf}"), ["validate", "{f}"],
     "{f}:6:45: stages[0].sweep.eps: Input should be a finite number"),
    ("eps .nan", _kernel("{num_tokens: 1, hidden_size: 64, eps: [1.0e-6, .nan]}"), ["validate", "{f}"],
     "{f}:6:59: stages[0].sweep.eps[1]: Input should be a finite number"),
    ("min_run_time_s 1e9", OK.replace("0.001", "1.0e9"), ["validate", "{f}"],
     "{f}:7:14: stages[0].timing.min_run_time_s: Input should be less than or equal to 60"),
    ("rotate_bytes 1e15", _kernel(extra="    timing: {rotate_bytes: 1000000000000000}\n"), ["validate", "{f}"],
     "{f}:7:14: stages[0].timing.rotate_bytes: Input should be less than or equal to 1099511627776"),
    ("repetitions 1e9", _kernel(extra="    timing: {repetitions: 1000000000}\n"), ["validate", "{f}"],
     "{f}:7:14: stages[0].timing.repetitions: Input should be less than or equal to 100000"),
    ("e2e repeats 1e6", _e2e("{kind: latency, repeats: 1000000}"), ["validate", "{f}"],
     "{f}:5:21: stages[0].repeats: Input should be less than or equal to 1000"),
    ("exclude removes all", _kernel(extra="    exclude: [{provider: torch_naive}]\n"), ["validate", "{f}"],
     "{f}:7:5: stages[0].exclude: the include/exclude rules leave no case of this stage"),
    ("include matches none", _kernel(extra="    include: [{num_tokens: 3}]\n"),
     ["run", "{f}", "--results-dir", "{d}/runs"],
     "{f}:7:5: stages[0].include: the include/exclude rules leave no case of this stage"),
    ("duplicate sweep values", _kernel("{num_tokens: [1, 1, 1], hidden_size: 64}"), ["validate", "{f}"],
     "{f}:6:29: stages[0].sweep.num_tokens[1]: 1 is already listed at [0]; each value makes its cases once"),
    ("duplicate input_len", _e2e("{kind: latency, input_len: [16, 32, 16]}"), ["validate", "{f}"],
     "{f}:5:41: stages[0].input_len[2]: 16 is already listed at [0]; each value makes its cases once"),
    ("duplicate stage variants", _e2e("{kind: latency, variants: [a, b, a]}"), ["validate", "{f}"],
     "{f}:5:38: stages[0].variants[2]: 'a' is already listed at [0]; each value makes its cases once"),
    # ---- names
    ("suite name of 300", _kernel(name=LONG), ["validate", "{f}"], f"{{f}}:1:1: name: '{L37}' has 300 characters; {RULE}"),
    ("suite name ../x", _kernel(name="../x"), ["validate", "{f}"], f"{{f}}:1:1: name: '../x' is not a safe name; {RULE}"),
    ("suite name .hidden", _kernel(name=".hidden"), ["validate", "{f}"],
     f"{{f}}:1:1: name: '.hidden' is not a safe name; {RULE}"),
    ("stage name a/b", _kernel(extra="    name: a/b\n"), ["validate", "{f}"],
     f"{{f}}:7:5: stages[0].name: 'a/b' is not a safe name; {RULE}"),
    ("variant name with a space", "name: s\nserver: {model: m}\nvariants: {'my variant': {}}\nstages:\n"
     "  - {kind: latency}\n", ["validate", "{f}"],
     f"{{f}}:3:12: variants.my variant: 'my variant' is not a safe name; {RULE}"),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(res: Any, expected: str, before: set[str], root: Path, seconds: float, grew_mb: float) -> None:
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line[len("error: "):] for line in out.splitlines() if line.startswith("error: ")]
    if expected.endswith("..."):
        assert any(line.startswith(expected[:-3]) for line in lines), out
    else:
        assert expected in lines, out
    assert _snapshot(root) == before, "something was created"
    assert seconds < SECONDS, f"{seconds:.1f} s"
    assert grew_mb < GROW_MB, f"grew {grew_mb:.0f} MB"


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _invoke(args: list[str]) -> tuple[Any, float, float]:
    rss, t0 = _maxrss_mb(), time.monotonic()
    res = runner.invoke(app, args)
    return res, time.monotonic() - t0, _maxrss_mb() - rss


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder whose results directory (./runs) must stay absent."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NORMBENCH_RESULTS_DIR", str(tmp_path / "runs"))
    return tmp_path


@pytest.mark.parametrize("text,args,expected", [s[1:] for s in SUITES], ids=[s[0] for s in SUITES])
def test_bad_suite_refused(here: Path, text: Any, args: list[str], expected: str) -> None:
    f = here / "s.yaml"
    if text is not None:
        f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    sub = {"{f}": str(f), "{d}": str(here)}

    def fill(s: str) -> str:
        for k, v in sub.items():
            s = s.replace(k, v)
        return s

    before = _snapshot(here)
    res, seconds, grew = _invoke([fill(a) for a in args])
    _refused(res, fill(expected), before, here, seconds, grew)


# --------------------------------------------------------------------------- options
OPTIONS: list[tuple[str, list[str], str]] = [
    ("--name ../escaped", ["run", "{f}", "--name", "../escaped"], f"--name: '../escaped' is not a safe name; {RULE}"),
    ("--name /abs/path", ["run", "{f}", "--name", "{d}/abs"], "--name: '{d37}...' is not a safe name; " + RULE),
    ("--name sub/dir", ["run", "{f}", "--name", "sub/dir"], f"--name: 'sub/dir' is not a safe name; {RULE}"),
    ("--name of 300", ["run", "{f}", "--name", LONG], f"--name: '{L37}' has 300 characters; {RULE}"),
    ("--name .hidden", ["run", "{f}", "--name", ".hidden"], f"--name: '.hidden' is not a safe name; {RULE}"),
    ("--repeat 1e8", ["run", "{f}", "--repeat", "100000000"], "Invalid value for '--repeat'"),
    ("--max-cases 0", ["validate", "{f}", "--max-cases", "0"], "Invalid value for '--max-cases'"),
    ("--suites-dir missing (list)", ["list", "--suites-dir", "{d}/nope"], "--suites-dir {d}/nope: no such directory"),
    ("--suites-dir missing (run)", ["run", "ok", "--suites-dir", "{d}/nope"], "--suites-dir {d}/nope: no such directory"),
    ("--suites-dir a file", ["validate", "{f}", "--suites-dir", "{f}"], "--suites-dir {f}: not a directory"),
    ("--filter unknown axis", ["run", "{f}", "--filter", "num_token=1"],
     "--filter num_token=1: unknown filter key 'num_token'. Did you mean 'num_tokens'? Known: op, provider, stage, "
     "dtype, eps, hidden_size, num_tokens, residual"),
    ("--filter misspelled provider", ["run", "{f}", "-k", "provider=torch_naiv"],
     "--filter provider=torch_naiv: unknown provider 'torch_naiv'. Did you mean 'torch_naive'? Known: torch_naive "
     "(in this plan)"),
    ("--filter misspelled op", ["run", "{f}", "-k", "op=rms_nrm"],
     "--filter op=rms_nrm: unknown op 'rms_nrm'. Did you mean 'rms_norm'? Known: rms_norm (in this plan)"),
    ("--filter value not in the sweep", ["run", "{f}", "-k", "num_tokens=1,1000"],
     "--filter num_tokens=1,1000: no case has num_tokens=1000 (this plan's num_tokens: 1, 2)"),
    ("--filter with --resume", ["run", "--resume", "latest", "--filter", "provider=x"],
     "--filter with --resume: a resumed run keeps the filters it started with; leave --filter out, or start a new run"),
    ("--repeat with --resume", ["run", "--resume", "latest", "--repeat", "2"],
     "--repeat with --resume: a resumed run keeps the repeats it started with; leave --repeat out, or start a new run"),
    ("--name with --resume", ["run", "--resume", "latest", "--name", "x"],
     "--name with --resume: a resumed run keeps the run id it started with; leave --name out, or start a new run"),
    ("--retry-failed alone", ["run", "{f}", "--retry-failed"], "--retry-failed goes with --resume RUN"),
    ("--results-dir a file", ["run", "{f}", "--results-dir", "{f}"], "results directory {f}: not a directory"),
    ("--results-dir under a file", ["run", "{f}", "--results-dir", "{f}/runs"],
     "results directory {f}/runs: cannot use it: Not a directory"),
    ("--results-dir of 300", ["run", "{f}", "--results-dir", LONG],
     f"results directory {LONG}: cannot use it: File name too long"),
    ("--resume of 300", ["run", "--resume", LONG], f"no run '{'a' * 77}...': File name too long"),
    ("suite ref of 300", ["run", LONG], f"unknown suite '{'a' * 57}...'. Known: e2e_cpu, fp8_fusion, fused_add_rmsnorm, "
     "nvfp4, quant, rmsnorm, rmsnorm_quant, rmsnorm_static_quant, smoke"),
]


@pytest.mark.parametrize("args,expected", [o[1:] for o in OPTIONS], ids=[o[0] for o in OPTIONS])
def test_bad_option_refused(here: Path, args: list[str], expected: str) -> None:
    f = here / "ok.yaml"
    f.write_text(OK)
    fill = lambda s: s.replace("{f}", str(f)).replace("{d37}", str(here)[:37]).replace("{d}", str(here))  # noqa: E731
    before = _snapshot(here)
    res, seconds, grew = _invoke([fill(a) for a in args])
    expected = fill(expected)
    if expected.startswith("Invalid value"):  # click's own usage error: exit 2, in a box
        assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output, res.output
        assert _snapshot(here) == before and seconds < SECONDS
        return
    _refused(res, expected, before, here, seconds, grew)


# --------------------------------------------------------------------------- --resume against a stored run
def _stored_run(base: Path, suite_file: Path) -> Path:
    loaded = load_suite(suite_file)
    snap = store.SuiteSnapshot(name=loaded.suite.name, path=str(suite_file), sha256=loaded.sha256,
                               spec=loaded.suite.model_dump(mode="json"))
    writer = store.create_run(base, loaded.suite.name, snap, {}, ["normbench"], planned=2,
                              options={"filters": [], "repeat": 1})
    writer.finish("interrupted")
    return writer.dir


RESUME: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("another suite's run", lambda d: ["run", str(d / "other.yaml"), "--resume", "{id}"],
     "--resume {id}: run {id} is of suite 'ok' ({d}/ok.yaml), not 'other' ({d}/other.yaml); leave the suite out to "
     "resume that run"),
    ("latest of a suite without runs", lambda d: ["run", str(d / "other.yaml"), "--resume", "latest"],
     "--resume latest: no run of suite 'other' in {d}/runs/ (latest run: {id}); leave the suite out to resume the "
     "latest run of any suite"),
    ("suite changed since", lambda d: ["run", str(d / "ok.yaml"), "--resume", "latest"], "--resume latest: {d}/ok.yaml "
     "changed since run {id} started (sha256 ..."),
]


@pytest.mark.parametrize("make_args,expected", [r[1:] for r in RESUME], ids=[r[0] for r in RESUME])
def test_resume_conflicts_refused(here: Path, make_args: Callable, expected: str) -> None:
    (here / "ok.yaml").write_text(OK)
    (here / "other.yaml").write_text(OK.replace("name: ok", "name: other"))
    run_dir = _stored_run(here / "runs", here / "ok.yaml")
    if "changed" in expected:
        (here / "ok.yaml").write_text(OK.replace("[1, 2]", "[1, 3]"))
    fill = lambda s: s.replace("{id}", run_dir.name).replace("{d}", str(here))  # noqa: E731
    before = _snapshot(here)
    res, seconds, grew = _invoke([fill(a) for a in make_args(here)])
    _refused(res, fill(expected), before, here, seconds, grew)


def test_resume_of_a_stored_suite_that_no_longer_validates(here: Path) -> None:
    (here / "ok.yaml").write_text(OK)
    run_dir = _stored_run(here / "runs", here / "ok.yaml")
    record = json.loads((run_dir / "run.json").read_text())
    record["suite"]["spec"]["stages"][0]["sweep"]["num_tokens"] = [1, 1]  # stored by an older, laxer normbench
    (run_dir / "run.json").write_text(json.dumps(record))
    before = _snapshot(here)
    res, seconds, grew = _invoke(["run", "--resume", "latest"])
    _refused(res, f"{run_dir}: the suite stored in run {run_dir.name} does not validate with this normbench (start a "
                  "new run): stages[0].sweep.num_tokens[1]: 1 is already listed at [0]; each value makes its cases once",
             before, here, seconds, grew)


def test_resume_latest_of_a_suite_picks_that_suites_run(here: Path) -> None:
    """With a suite, `--resume latest` is that suite's latest run even when another suite ran later."""
    (here / "ok.yaml").write_text(OK)
    (here / "other.yaml").write_text(OK.replace("name: ok", "name: other"))
    mine = _stored_run(here / "runs", here / "ok.yaml")
    time.sleep(1.1)  # run ids are stamped to the second
    _stored_run(here / "runs", here / "other.yaml")
    res = runner.invoke(app, ["run", "ok.yaml", "--resume", "latest", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "2 cases: 2 to run" in res.output
    from normbench.cli.run import _latest_of

    assert _latest_of("ok", here / "runs") == mine


# --------------------------------------------------------------------------- FIFOs (a child, with a timeout)
def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "normbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NORMBENCH_RESULTS_DIR": str(cwd / "runs"), "COLUMNS": "200"})
    assert time.monotonic() - t0 < 30, "blocked?"
    return proc


def test_fifo_suite_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.yaml")
    proc = _cli(["validate", "f.yaml"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: f.yaml: is a FIFO (named pipe), not a regular file; a suite file must be a regular file"


def test_list_shows_each_broken_suite_as_one_row(tmp_path: Path) -> None:
    """A FIFO, a syntax error, a bomb, nesting, a directory and an oversized file in --suites-dir:
    each is one row; the good suite is listed with its count."""
    d = tmp_path / "s"
    d.mkdir()
    (d / "good.yaml").write_text(OK.replace("name: ok", "name: good"))
    os.mkfifo(d / "fifo.yaml")
    (d / "syntax.yaml").write_text("name: x\nstages: [\n")
    (d / "bomb.yaml").write_text(GEN_KWARGS_BOMB)
    (d / "deep.yaml").write_text("name: " + "[" * 20000)
    (d / "dir.yaml").mkdir()
    (d / "big.yaml").write_text("#" * (2 << 20))
    proc = _cli(["list", "--suites-dir", str(d)], tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip() and not line[0].isspace()}
    assert rows["good"].split()[1:3] == ["kernel", "2"]
    problems = proc.stderr.splitlines()
    for stem, why in (("fifo", "is a FIFO (named pipe)"), ("syntax", "YAML syntax error"), ("bomb", "alias *l4 (111,111 nodes)"),
                      ("deep", "nested more than 32 levels"), ("dir", "is a directory"), ("big", "2,097,152 bytes")):
        assert "invalid: normbench validate" in rows[stem], proc.stdout
        assert any(line.startswith(f"{d / stem}.yaml") and why in line for line in problems), (stem, problems)
    assert "smoke" in rows  # the bundled suites are still listed


# --------------------------------------------------------------------------- accepted input
def test_merge_keys_are_accepted(here: Path) -> None:
    text = """\
name: merged
stages:
  - &base
    kind: kernel
    name: first
    op: rms_norm
    providers: [torch_naive]
    sweep: {num_tokens: [1, 2], hidden_size: 64}
  - <<: *base
    name: second
    sweep: {num_tokens: 3, hidden_size: 64}
"""
    (here / "m.yaml").write_text(text)
    res = runner.invoke(app, ["validate", "m.yaml"])
    assert res.exit_code == 0, res.output
    assert "3 cases: 3 to run, 0 skipped" in res.output
    second = parse_suite(text, "m.yaml").stages[1]
    assert second.name == "second" and second.op == "rms_norm" and second.sweep.num_tokens == [3]
    assert yaml.safe_load(text)["stages"][1]["providers"] == ["torch_naive"]  # as safe_load reads it


def test_a_filter_can_leave_a_case_too_large_out(here: Path) -> None:
    (here / "big.yaml").write_text(_kernel("{num_tokens: [1, 1000000000000], hidden_size: 64}"))
    res = runner.invoke(app, ["run", "big.yaml", "--dry-run", "-k", "num_tokens=1"])
    assert res.exit_code == 0 and "1 cases: 1 to run" in res.output, res.output
    res = runner.invoke(app, ["run", "big.yaml", "--dry-run"])
    assert res.exit_code == 2 and "stages[0].sweep.num_tokens[1]: num_tokens=1,000,000,000,000" in res.output


def test_cli_limits_are_the_documented_ones() -> None:
    from normbench import expand
    from normbench.cli import run as cli_run

    assert cli_run.MAX_CASES_OPT.default == expand.MAX_CASES == 200_000
    for command in (cli_run.run, cli_run.validate):
        repeat = inspect.signature(command).parameters["repeat"].default
        assert repeat.max == expand.MAX_REPEAT == 1000
    readme = (ROOT / "README.md").read_text()
    assert "| cases per run | 200,000" in readme and "at most 1 MiB" in readme
    assert "1 to 100 characters from `A-Z a-z 0-9 . _ -`, starting with a letter or a digit" in readme


def test_names_at_the_limit_are_accepted(here: Path) -> None:
    name = "a" * 100
    (here / "n.yaml").write_text(_kernel(name=name, extra="    name: B.2_x-y\n"))
    assert runner.invoke(app, ["validate", "n.yaml"]).exit_code == 0


# --------------------------------------------------------------------------- the end-to-end preflight
E2E = """\
name: e2e
server: {model: m}
variants:
  base: {}
  fused: {compilation_config: {pass_config: {enable_fusion: true}}}
stages:
  - {kind: latency, name: lat, input_len: 16}
"""


def test_e2e_preflight_runs_at_validate_and_before_the_run_dir(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from normbench.engines import vllm as vc

    monkeypatch.setattr(Capabilities, "detect", classmethod(lambda cls: cls("cpu", None, None, {}, None)))
    monkeypatch.setattr(vc, "installed", lambda: True)
    monkeypatch.setattr(vc, "compilation_fields", lambda: {"": {"pass_config"}, "pass_config": {"fuse_norm_quant"}})
    monkeypatch.setattr(vc, "introspect_fields", lambda: None)
    monkeypatch.setattr(vc, "vllm_version", lambda: "0.32.0")
    f = here / "e2e.yaml"
    f.write_text(E2E)
    want = (f"  {f}:5:46: variants.fused.compilation_config.pass_config.enable_fusion: vLLM 0.32.0 has no such "
            "field; it expects fuse_norm_quant")
    for args in (["validate", str(f)], ["run", str(f), "--results-dir", str(here / "runs")]):
        before = _snapshot(here)
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert "error: cannot run the end-to-end stages:" in res.output
        assert any(line.startswith(want) for line in res.output.splitlines()), res.output
        assert _snapshot(here) == before  # no empty run that would become `latest`


# --------------------------------------------------------------------------- the JSON Schema
def test_schema_file_is_the_generated_one(here: Path) -> None:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0
    committed = (ROOT / "suites" / "suite.schema.json").read_text()
    assert res.stdout == committed == suite_json_schema(), "regenerate: normbench schema -o suites/suite.schema.json"
    res = runner.invoke(app, ["schema", "-o", str(here / "out")])  # a missing folder is created
    assert res.exit_code == 0 and (here / "out").read_text() == committed
    (here / "dir").mkdir()
    assert runner.invoke(app, ["schema", "-o", str(here / "dir")]).exit_code == 0
    assert (here / "dir" / "suite.schema.json").read_text() == committed


def test_bundled_suites_validate_against_the_schema() -> None:
    import jsonschema

    schema = json.loads((ROOT / "suites" / "suite.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    suites = sorted((ROOT / "suites").glob("*.yaml"))
    assert len(suites) >= 9
    for f in suites:
        text = f.read_text()
        assert text.splitlines()[0] == SCHEMA_COMMENT, f
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
        assert errors == [], (f, errors)
        load_suite(f)
    # ... and the schema does refuse things: a misspelled dtype, a duplicate value, an unknown key
    for bad in ("{num_tokens: 1, hidden_size: 64, dtype: bf16}", "{num_tokens: [1, 1], hidden_size: 64}",
                "{num_tokens: 1, hidden_size: 64, tokens: 3}"):
        assert list(validator.iter_errors(yaml.safe_load(_kernel(bad)))), bad
    assert list(validator.iter_errors(yaml.safe_load(_kernel(name="../x"))))


def test_a_case_larger_than_this_machine_is_skipped_with_the_reason(tmp_path):
    """Under the 1 TiB cap but over this machine's memory: SKIPPED with the sizes, the rest still runs."""
    from normbench.cli import app
    from typer.testing import CliRunner

    f = tmp_path / "s.yaml"
    f.write_text(_kernel("{num_tokens: [8, 65536], hidden_size: 65536}"))
    res = CliRunner().invoke(app, ["validate", str(f)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "needs about 80.0 GiB (inputs, outputs and the float64 reference); this machine's RAM is" in flat
    assert "2 cases: 1 to run, 1 skipped" in flat
