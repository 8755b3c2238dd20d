"""Golden output of `normbench run`/`show` tables (rich and Markdown) from fixture runs.

Regenerate after an intended change: NORMBENCH_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_run_table.py
"""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path

from rich.console import Console

from normbench.report.run_table import kernel_grid, render_run, run_markdown
from normbench.store import load_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _check(name: str, text: str) -> None:
    norm = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    path = GOLDEN / name
    if os.environ.get("NORMBENCH_UPDATE_GOLDEN"):
        path.write_text(norm, encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: NORMBENCH_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    assert norm == path.read_text(encoding="utf-8")


def _rich(record) -> str:
    buf = StringIO()
    render_run(record, Console(file=buf, width=100, color_system=None))
    return buf.getvalue()


def test_kernel_run_rich_and_markdown() -> None:
    record = load_run(FIXTURES / "rmsnorm-20260102T000000Z-bbbbbb")
    _check("run_kernel.txt", _rich(record))
    _check("run_kernel.md", run_markdown(record))


def test_e2e_run_rich_and_markdown() -> None:
    record = load_run(FIXTURES / "e2e-20260104T000000Z-eeeeee")
    _check("run_e2e.txt", _rich(record))
    _check("run_e2e.md", run_markdown(record))


def test_fastest_provider_is_marked_and_skips_are_grouped() -> None:
    record = load_run(FIXTURES / "rmsnorm-20260102T000000Z-bbbbbb")
    grid = kernel_grid(record.cases[0].stage, [c for c in record.cases if c.stage == record.cases[0].stage])
    for row in grid.rows:
        timed = [(float(c.text.split()[0].replace(",", "")), c) for c in row[1:] if c.text and c.text[0].isdigit()]
        if len(timed) > 1:
            best = min(timed, key=lambda t: t[0])[1]
            assert best.style == "bold green"
            assert sum(1 for _, c in timed if c.style == "bold green") == 1


def test_show_prints_the_runs_cold_l2_check(tmp_path) -> None:
    """The environment's rotation cross-check (normbench.env.cold_l2_check) reaches `show`, rich and
    Markdown, and a disagreement is a warning."""
    from typer.testing import CliRunner

    from normbench.cli import app

    src = Path(__file__).resolve().parents[2] / "docs/results/h100/runs"
    record = load_run(next(src.glob("quant-*")))
    for agree, word in ((True, "agree"), (False, "DISAGREE")):
        record.environment.update({"cold_l2_check.graph_us": 16.41, "cold_l2_check.events_us": 16.9,
                                   "cold_l2_check.noise_floor": 0.035, "cold_l2_check.agree": agree})
        path = tmp_path / f"r-{agree}" / "run.json"
        path.parent.mkdir()
        path.write_text(record.model_dump_json())
        for fmt, ext in (("rich", "txt"), ("markdown", "md")):
            target = tmp_path / f"show-{agree}.{ext}"
            out = CliRunner().invoke(app, ["show", str(path.parent), "-f", fmt, "-o", str(target)])
            assert out.exit_code == 0, out.output
            text = target.read_text()
            line = f"cold-L2 check: graph replay 16.41 vs events + flush 16.90 us per call, {word} within 3.5%"
            assert line in text
            if not agree and fmt == "markdown":
                assert f"⚠ {line}" in text


def test_the_cold_l2_fact_shows_the_events_median_less_its_overhead() -> None:
    from normbench.report.run_table import cold_l2_fact

    env = {"cold_l2_check.graph_us": 18.88, "cold_l2_check.events_us": 22.32, "cold_l2_check.noise_floor": 0.078,
           "cold_l2_check.agree": True, "cold_l2_check.events_overhead_us": 3.1}
    assert cold_l2_fact(env) == ("cold-L2 check: graph replay 18.88 vs events + flush 19.22 (less 3.10 event "
                                 "overhead) us per call, agree within 7.8%")
    del env["cold_l2_check.events_overhead_us"]  # a record from before the correction
    assert "vs events + flush 22.32 us per call" in cold_l2_fact(env)


def test_a_failed_servers_reason_names_the_last_error_in_its_log_tail() -> None:
    """The H100's fp8_fusion reasons: the first line says the server exited, the log tail's last
    exception line says why; show puts both on one line. A reason without a traceback is unchanged."""
    from normbench.process import reason_line as _why

    reason = ("variant default: vllm serve exited with code 1 before becoming healthy (log: /tmp/x.log)\n"
              "--- last 40 log lines ---\n"
              "Traceback (most recent call last):\n"
              '  File "/tmp/vllm-site/xgrammar/load_binding.py", line 15, in <module>\n'
              "    LIB = load_lib_module(\"xgrammar\", \"xgrammar_bindings\", extra_lib_paths=package_paths)\n"
              "TypeError: load_lib_module() got an unexpected keyword argument 'extra_lib_paths'\n"
              "(APIServer pid=12) INFO 12-07 11:49:02 shutting down\n")
    assert _why(reason) == ("variant default: vllm serve exited with code 1 before becoming healthy (log: /tmp/x.log); "
                            "error in its log: TypeError: load_lib_module() got an unexpected keyword argument "
                            "'extra_lib_paths'")
    assert _why("torch.OutOfMemoryError: CUDA out of memory\nmore") == "torch.OutOfMemoryError: CUDA out of memory"
    assert _why("vllm serve did not become healthy within 900 s\nINFO loading weights") == \
        "vllm serve did not become healthy within 900 s"
    assert _why(None) == ""


def test_a_failed_engines_reason_names_the_root_cause_above_its_tail(tmp_path) -> None:
    """The H100's third fp8_fusion run: the engine core died of ModuleNotFoundError far above the
    30 lines the front end printed while shutting down, each behind a process and logger prefix.
    ``tail`` heads the tail with that first exception line, and show names it, not the wrapper."""
    from normbench.process import FIRST_EXCEPTION, TAIL_LINES, tail
    from normbench.process import reason_line as _why

    log = tmp_path / "server.log"
    lines = ["(APIServer pid=9) INFO 12-07 14:53:01 [api_server.py:1] starting"]
    lines += ["(EngineCore pid=10) ERROR 12-07 14:53:48 [core.py:1231] Traceback (most recent call last):",
              "(EngineCore pid=10) ERROR 12-07 14:53:48 [core.py:1231]   File \"x.py\", line 1, in <module>",
              "(EngineCore pid=10) ERROR 12-07 14:53:48 [core.py:1231] ModuleNotFoundError: No module named 'flashinfer'"]
    lines += [f"(APIServer pid=9)   frame {i}" for i in range(TAIL_LINES)]
    lines += ["(APIServer pid=9) RuntimeError: Engine core initialization failed. See root cause above."]
    log.write_text("\n".join(lines) + "\n")
    text = tail(log)
    assert text.splitlines()[0] == FIRST_EXCEPTION + "ModuleNotFoundError: No module named 'flashinfer'"
    assert text.splitlines()[1:] == lines[-TAIL_LINES:]
    reason = f"variant default: vllm serve exited with code 1\n--- last {TAIL_LINES} log lines ---\n{text}"
    assert _why(reason) == ("variant default: vllm serve exited with code 1; "
                            "error in its log: ModuleNotFoundError: No module named 'flashinfer'")
    # the root cause inside the tail: no header, and show takes the tail's last (prefixed) exception
    short = tmp_path / "short.log"
    short.write_text("\n".join(lines[-5:]) + "\n")
    assert tail(short) == "\n".join(lines[-5:])
    assert _why("died\n" + tail(short)).endswith("error in its log: RuntimeError: Engine core initialization failed. "
                                                  "See root cause above.")


def test_an_e2e_stage_where_every_case_failed_shows_a_status_column() -> None:
    """No case of the stage gave a metric (every server died, as on the H100): the table has a
    status column saying so, not a variant column alone; the reasons stay listed below it."""
    from normbench.report.run_table import e2e_grid

    record = load_run(FIXTURES / "e2e-20260104T000000Z-eeeeee")
    stage = next(c.stage for c in record.cases if c.kind != "kernel")
    cases = [c.model_copy(update={"status": "FAILED", "metrics": {}, "reason": f"variant {c.variant}: died"})
             for c in record.cases if c.stage == stage]
    grid = e2e_grid(stage, cases, record.suite.spec.get("baseline"))
    assert grid.headers[-1] == "status"
    per_variant = {}
    for c in cases:
        per_variant[c.variant] = per_variant.get(c.variant, 0) + 1
    assert {row[0].text.replace(" (baseline)", ""): row[-1].text for row in grid.rows} == \
        {v: f"FAILED x{n}" for v, n in per_variant.items()}
    assert all(row[-1].style == "bold red" for row in grid.rows)
    assert any("died" in note for note in grid.notes)
