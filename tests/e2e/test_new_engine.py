"""A new serving engine is one module: ``fake_engine.py``, registered by name, served for real.

The engine module launches ``fake_server.py`` (a stand-in with ``/health``,
children and a grandchild), so this runs in seconds and needs no vLLM:
the suite names ``engine: fake``; validation, the preflight, the executors'
GPU count and the end-to-end runner all go through the registry; the
``startup`` stage measures real server starts, and teardown leaves nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import psutil
import pytest

from normbench import engines
from normbench.engines import vllm as vllm_engine
from normbench.errors import NormbenchError, SuiteError, UnknownNameError
from normbench.executors import e2e_units
from normbench.expand import Capabilities, expand
from normbench.runners import RunContext, e2e
from normbench.suite import parse_suite

sys.path.insert(0, str(Path(__file__).parent))
from fake_engine import FAKE_SERVER, FakeEngine  # noqa: E402

SUITE = """\
name: new-engine
server: {model: fake-model, engine: fake, args: [--tp-size, "2", --delay, "0.3"], startup_timeout_s: 30}
variants:
  a: {}
  b: {args: [--dp-size=2]}
stages:
  - {kind: startup, name: start, repeats: 2}
"""


@pytest.fixture
def fake_registered(monkeypatch):
    """Register the engine as a contributor would: one ``module:attr`` line; vLLM made absent."""
    monkeypatch.setitem(engines.ENGINES, "fake", "fake_engine:FakeEngine")
    monkeypatch.setattr(vllm_engine, "installed", lambda: False)  # proves nothing asks for vLLM


def test_an_unregistered_engine_is_a_positioned_suite_error():
    with pytest.raises(SuiteError, match=r"s\.yaml:2:29: server\.engine: unknown serving engine 'fake'.*Known: vllm"):
        parse_suite(SUITE, "s.yaml")
    with pytest.raises(UnknownNameError, match="Did you mean 'vllm'"):
        engines.get_engine("vlm")


def test_the_registry_resolves_names_and_entry_points(monkeypatch, fake_registered):
    assert "fake" in engines.engine_names() and "vllm" in engines.engine_names()
    assert isinstance(engines.get_engine("fake"), FakeEngine)
    assert isinstance(engines.get_engine(), vllm_engine.VllmEngine)  # the default

    class EntryPoint:
        name = "outside"

        def load(self):
            return FakeEngine

    monkeypatch.setattr(engines, "_entry_points", lambda: {"outside": EntryPoint()})
    assert "outside" in engines.engine_names() and isinstance(engines.get_engine("outside"), FakeEngine)
    monkeypatch.setitem(engines.ENGINES, "broken", "fake_engine:FAKE_SERVER")  # a path, not an Engine
    with pytest.raises(NormbenchError, match="is not a normbench.engines.Engine"):
        engines.get_engine("broken")


def test_executors_ask_the_engine_for_its_gpu_count(fake_registered):
    suite = parse_suite(SUITE, "s.yaml")
    units = {u.affinity: u.gpus for u in e2e_units(expand(suite, Capabilities("cpu")), suite)}
    assert units == {"a": 2, "b": 4}  # --tp-size 2, times --dp-size=2 for b: the engine's flags, not vLLM's -tp/-dp


def test_preflight_refuses_what_the_engine_cannot_do(fake_registered, tmp_path):
    text = (SUITE.replace("startup_timeout_s: 30}", "startup_timeout_s: 30, cold_start: true}")
            .replace("b: {args: [--dp-size=2]}", "b: {args: [--dp-size=two], compilation_config: {mode: 3}}")
            + "  - {kind: latency, name: lat, input_len: [16]}\n")
    suite = parse_suite(text, "s.yaml")
    cases = [c for c in expand(suite, Capabilities("cpu")) if c.kind != "kernel"]
    with pytest.raises(NormbenchError) as e:
        e2e.preflight(cases, RunContext(suite=suite, caps=Capabilities("cpu"), environment={}, run_dir=tmp_path,
                                        record=lambda c, r: None))
    lines = str(e.value).splitlines()[1:]
    assert [ln.strip() for ln in lines] == [
        "variant b: server args: --dp-size 'two' is not a whole number >= 1",
        "server.cold_start: engine fake has no compile caches normbench can empty",
        "latency stages need an offline engine benchmark; engine fake has none here",
        "variants.b.compilation_config: engine fake takes no compilation_config; give its options in `args`",
    ]


def test_a_new_engine_serves_the_startup_stage_for_real(fake_registered, tmp_path):
    suite = parse_suite(SUITE, "s.yaml")
    cases = expand(suite, Capabilities("cpu"))
    records = []
    ctx = RunContext(suite=suite, caps=Capabilities("cpu"), environment={}, run_dir=tmp_path / "run",
                     record=lambda c, r: records.append(r))
    e2e.run(cases, ctx)

    assert [(r.variant, r.repeat, r.status) for r in records] == [
        ("a", 0, "OK"), ("b", 0, "OK"), ("b", 1, "OK"), ("a", 1, "OK")]  # ABBA, one start each
    for r in records:
        startup = r.metrics["server_startup_s"]
        assert startup.unit == "s" and not startup.higher_is_better and 0.3 <= startup.value < 30
        assert "torch_compile_s" not in r.metrics  # this engine logs no compile time: none made up
        assert r.tool == {"name": "fake serve", "version": "0.0.0"}
        cmd = r.server["command"]
        assert cmd[:2] == [sys.executable, str(FAKE_SERVER)] and cmd[cmd.index("--delay") + 1] == "0.3"
        assert "--tp-size" not in cmd and not any(a.startswith("--dp-size") for a in cmd)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", r.server["url"])
        assert r.effective_config is None and r.evidence is None
        assert r.config_note.startswith("no engine config line found")
        pid = r.server["pid"]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    log = (tmp_path / "run" / "logs" / "a-server.log").read_text()
    assert log.count("fake server starting") == 2  # both of a's starts, appended to its log
