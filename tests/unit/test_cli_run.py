"""The CLI end to end on the CPU: run, correctness gate, failures, Ctrl-C + resume, show, list."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from normbench import registry, store
from normbench.cli import app
from normbench.kernels.base import Provider

runner = CliRunner()

SUITE = """\
name: gate
stages:
  - kind: kernel
    op: rms_norm
    providers: [torch_naive, wrong, broken, triton]
    sweep: {num_tokens: [1, 7], hidden_size: [96], residual: [false, true], dtype: [float32]}
    timing: {min_run_time_s: 0.001}
"""


class _Wrong(Provider):
    """RMSNorm with the weight off by one: a plausible bug the gate must catch."""

    name = "wrong"

    def __init__(self) -> None:
        self.ops = {"rms_norm": self._make}

    @staticmethod
    def _make(params):
        def fn(inputs):
            x = inputs["x"]
            if params["residual"]:
                x = x + inputs["residual"]
            y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + params["eps"])
            out = (y * (inputs["weight"].float() + 1.0)).to(x.dtype)
            return (out, x) if params["residual"] else (out,)

        return fn


class _Broken(Provider):
    name = "broken"

    def __init__(self) -> None:
        self.ops = {"rms_norm": self._make}

    @staticmethod
    def _make(params):
        def fn(inputs):
            raise RuntimeError("kernel launch failed: invalid argument")

        return fn


class _Interrupting(Provider):
    """Raises KeyboardInterrupt on its first call, like a user's Ctrl-C mid-run."""

    name = "wrong"
    calls = 0

    def __init__(self) -> None:
        self.ops = {"rms_norm": self._make}

    def _make(self, params):
        def fn(inputs):
            _Interrupting.calls += 1
            if _Interrupting.calls == 1:
                raise KeyboardInterrupt
            return _Wrong._make(params)(inputs)

        return fn


@pytest.fixture
def fake_providers(monkeypatch: pytest.MonkeyPatch):
    mod = types.ModuleType("nb_fake_providers")
    mod.WRONG, mod.BROKEN, mod.INTERRUPTING = _Wrong(), _Broken(), _Interrupting()
    monkeypatch.setitem(sys.modules, "nb_fake_providers", mod)
    for name, attr in (("wrong", "WRONG"), ("broken", "BROKEN")):
        monkeypatch.setitem(registry.PROVIDERS, name, registry.ProviderEntry(
            name, f"nb_fake_providers:{attr}", registry.NORM_OPS, ("torch",), "-", "test provider"))
    return mod


def _suite(tmp_path: Path, text: str = SUITE) -> Path:
    f = tmp_path / "gate.yaml"
    f.write_text(text)
    return f


def test_run_checks_correctness_first_and_records_everything(tmp_path: Path, fake_providers) -> None:
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(tmp_path / "runs"), "--no-progress"])
    assert res.exit_code == 1, res.output  # an INCORRECT/FAILED case
    record = store.load_run(store.resolve_run("latest", tmp_path / "runs"))
    assert record.status == "complete" and len(record.cases) == record.planned == 16
    by = {(c.provider, c.params["num_tokens"], c.params["residual"]): c for c in record.cases}
    wrong = by[("wrong", 7, True)]
    assert wrong.status == "INCORRECT" and wrong.metrics == {}  # caught, and not timed
    assert "norm-wise relative error" in wrong.reason and wrong.correctness["out_rel_err"] > 0.05
    broken = by[("broken", 1, False)]
    assert broken.status == "FAILED" and "kernel launch failed" in broken.reason
    assert by[("triton", 1, False)].status == "SKIPPED" and by[("triton", 1, False)].reason == "needs CUDA"
    ok = by[("torch_naive", 7, True)]
    assert ok.status == "OK" and ok.correctness["out_rel_err"] < 1e-6
    t = ok.metrics["time_us"]
    assert t.unit == "us" and not t.higher_is_better and len(t.samples) >= 1 and t.value > 0
    assert ok.metrics["gbps"].higher_is_better and ok.metrics["gbps"].derived_from == "time_us"
    assert ok.seed is not None and ok.seed == by[("wrong", 7, True)].seed  # same inputs for every provider
    assert record.environment["peak_bandwidth_gbps"] > 0 and record.suite.sha256
    assert "INCORRECT" in res.output and "FAILED" in res.output


def test_ctrl_c_keeps_finished_cases_and_resume_completes(tmp_path: Path, fake_providers, monkeypatch) -> None:
    monkeypatch.setitem(registry.PROVIDERS, "wrong", registry.ProviderEntry(
        "wrong", "nb_fake_providers:INTERRUPTING", registry.NORM_OPS, ("torch",), "-", "test provider"))
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(runs), "--no-progress",
                              "--filter", "provider=torch_naive,wrong"])
    assert res.exit_code == 130, res.output
    first = store.load_run(store.resolve_run("latest", runs))
    assert first.status == "interrupted"
    assert [c.provider for c in first.cases] == ["torch_naive"]  # finished before the interrupt
    assert "--resume" in res.output
    res = runner.invoke(app, ["run", "--resume", "latest", "--results-dir", str(runs), "--no-progress"])
    record = store.load_run(store.resolve_run("latest", runs))
    assert record.status == "complete" and record.run_id == first.run_id
    assert len(record.cases) == record.planned == 8  # the stored filters were reused
    assert {c.provider for c in record.cases} == {"torch_naive", "wrong"}
    assert res.exit_code == 1  # the wrong provider is INCORRECT once it runs


def test_dry_run_and_validate_show_skips(tmp_path: Path, fake_providers) -> None:
    res = runner.invoke(app, ["run", str(_suite(tmp_path)), "--dry-run", "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 0 and not (tmp_path / "r").exists()
    assert "triton: SKIPPED x4: needs CUDA" in res.output.replace("\n", " ") or "needs CUDA" in res.output
    res = runner.invoke(app, ["validate", str(_suite(tmp_path))])
    assert res.exit_code == 0 and "16 cases: 12 to run, 4 skipped" in res.output


def test_bad_input_exits_2_with_message(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n"
                 "    sweep: {num_tokens: 1, hidden_size: 64, dtype: bf16}\n")
    res = runner.invoke(app, ["validate", str(f)])
    assert res.exit_code == 2
    assert f"{f}:6:45: stages[0].sweep.dtype: Input should be 'bfloat16', 'float16' or 'float32'" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["run", "no-such-suite"])
    assert res.exit_code == 2 and "unknown suite 'no-such-suite'" in res.output
    res = runner.invoke(app, ["show", "nope", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_show_and_list(tmp_path: Path, fake_providers) -> None:
    runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(tmp_path / "runs"), "--no-progress",
                        "--filter", "provider=torch_naive"])
    res = runner.invoke(app, ["show", "latest", "--results-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0 and "torch_naive" in res.output and "7x96" in res.output
    res = runner.invoke(app, ["list", "--suites-dir", str(tmp_path)])
    assert res.exit_code == 0 and "gate" in res.output and "smoke" in res.output


def test_main_prints_errors_without_traceback(tmp_path: Path, capsys) -> None:
    from normbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["validate", str(tmp_path / "missing.yaml")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "missing.yaml: no such file" in err and "Traceback" not in err


def test_record_is_plain_json(tmp_path: Path, fake_providers) -> None:
    runner.invoke(app, ["run", str(_suite(tmp_path)), "--results-dir", str(tmp_path / "runs"), "--no-progress",
                        "--filter", "provider=torch_naive", "--filter", "num_tokens=1"])
    run_dir = store.resolve_run("latest", tmp_path / "runs")
    data = json.loads((run_dir / "run.json").read_text())
    assert data["schema_version"] == store.SCHEMA_VERSION
    assert data["options"] == {"filters": ["provider=torch_naive", "num_tokens=1"], "repeat": 1}
    assert {c["status"] for c in data["cases"]} == {"OK"}
