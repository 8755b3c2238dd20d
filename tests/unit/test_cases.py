"""Self-sufficient cases (issue 11, item 1): a ``Case`` carries its provider (``ProviderRef``)
and its stage's settings, crosses the worker pipe with them, and runs without the suite."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from normbench.executors import WorkUnit
from normbench.executors.worker import read_frame, write_frame
from normbench.expand import Capabilities, Case, E2ESettings, KernelSettings, expand
from normbench.suite import DEFAULT_TOLERANCE, ProviderRef, parse_suite

CPU = Capabilities("cpu", None, None, {})

UNFUSED_SUITE = """\
name: t
stages:
  - kind: kernel
    op: rms_norm_quant
    providers:
      - torch_naive
      - unfused: {norm: torch_naive, quant: torch_compile}
    sweep: {num_tokens: 3, hidden_size: 80, dtype: [bfloat16, float32]}
    timing: {warmup: 2, repetitions: 7, min_run_time_s: 0.05}
    tolerance: {float32: {atol: 0.125}}
    seed: 11
"""

E2E_SUITE = """\
name: t
server: {model: /nowhere}
variants: {a: {}, b: {}}
stages:
  - kind: throughput
    client: guidellm
    prompt_tokens: 16
    output_tokens: 4
    concurrency: 2
    max_seconds: 5
  - kind: latency
    input_len: [8, 16]
"""


# --------------------------------------------------------------------------- ProviderRef
def test_provider_ref_of_a_composition_is_structured_and_renders_the_old_label() -> None:
    ref = ProviderRef(norm="torch_naive", quant="torch_compile")
    assert ref.is_unfused and ref.parts == ("torch_naive", "torch_compile")
    assert ref.label == "unfused[norm=torch_naive,quant=torch_compile]"
    named = ProviderRef(name="triton")
    assert not named.is_unfused and named.parts == ("triton",) and named.label == "triton"
    # frozen and hashable: the kernel runner caches loaded providers by ref
    assert {ref: 1}[ProviderRef(norm="torch_naive", quant="torch_compile")] == 1
    for bad in ({}, {"name": "a", "norm": "b", "quant": "c"}, {"norm": "a"}, {"quant": "b"}):
        with pytest.raises(ValueError, match="a name, or both norm and quant"):
            ProviderRef(**bad)


def test_expand_gives_kernel_cases_their_ref_and_resolved_settings() -> None:
    cases = expand(parse_suite(UNFUSED_SUITE, "t.yaml"), CPU)
    by = {(c.provider, c.param_dict["dtype"]): c for c in cases}
    c = by[("unfused[norm=torch_naive,quant=torch_compile]", "float32")]
    assert c.ref == ProviderRef(norm="torch_naive", quant="torch_compile")
    assert by[("torch_naive", "float32")].ref == ProviderRef(name="torch_naive")
    # the fingerprint keeps its label byte for byte (records and comparisons match on it)
    assert c.fingerprint == ("rms_norm_quant/rms_norm_quant/unfused[norm=torch_naive,quant=torch_compile]/-/"
                             "num_tokens=3,hidden_size=80,dtype=float32,eps=1e-06,residual=False,quant_dtype=fp8,"
                             "scale_ub=False")
    s = c.settings
    assert isinstance(s, KernelSettings)
    assert (s.seed, s.mode, s.warmup, s.repetitions, s.rotate_bytes, s.min_run_time_s) == (11, "auto", 2, 7, None, 0.05)
    # the stage's float32 override over the op's and the suite-wide defaults, for this case's dtype
    assert s.tolerance_dict["atol"] == 0.125
    assert s.tolerance_dict["norm_rel"] == DEFAULT_TOLERANCE["float32"]["norm_rel"]
    bf16 = by[("torch_naive", "bfloat16")].settings
    assert bf16.tolerance_dict["atol"] != 0.125 and bf16.seed == 11


def test_a_case_refuses_a_provider_label_its_ref_does_not_render() -> None:
    ref = ProviderRef(norm="torch_naive", quant="torch_compile")
    assert Case("s", 0, "kernel", "rms_norm_quant", None, None, (), ref=ref).provider == ref.label
    with pytest.raises(ValueError, match="is not its ref's label"):
        Case("s", 0, "kernel", "rms_norm_quant", "torch_naive", None, (), ref=ref)


# --------------------------------------------------------------------------- crossing process boundaries
def test_cases_cross_the_worker_pipe_with_their_ref_and_settings() -> None:
    kernel = expand(parse_suite(UNFUSED_SUITE, "t.yaml"), CPU)
    e2e = expand(parse_suite(E2E_SUITE, "t.yaml"), CPU)
    buf = io.BytesIO()
    write_frame(buf, WorkUnit("kernel", tuple(kernel)))
    write_frame(buf, WorkUnit("e2e", tuple(e2e)))
    buf.seek(0)
    got_k, got_e = read_frame(buf), read_frame(buf)
    assert [c.case_id for c in got_k.cases] == [c.case_id for c in kernel]
    # ref and settings are outside equality, so compare them one by one
    assert [(c.ref, c.settings) for c in got_k.cases] == [(c.ref, c.settings) for c in kernel]
    assert all(isinstance(c.settings, KernelSettings) and c.settings.repetitions == 7 for c in got_k.cases)
    assert [c.case_id for c in got_e.cases] == [c.case_id for c in e2e]
    for sent, got in zip(e2e, got_e.cases):
        assert isinstance(got.settings, E2ESettings)
        assert got.settings.client == sent.settings.client  # the validated stage model, by value
    kinds = {c.kind: c.settings.client for c in got_e.cases}
    assert kinds["throughput"].client == "guidellm" and kinds["throughput"].max_seconds == 5
    assert kinds["latency"].input_len == [8, 16]


# --------------------------------------------------------------------------- runners without the suite
def _ctx(tmp_path: Path, records: list):
    from normbench.runners import RunContext

    # suite=None: a runner that reached back into the suite would fail here
    return RunContext(suite=None, caps=CPU, environment={}, run_dir=tmp_path,  # type: ignore[arg-type]
                      record=lambda case, rec: records.append((case, rec)))


def _hand_case(op: str, ref: ProviderRef, params: dict, settings: KernelSettings) -> Case:
    from normbench.ops import OPS

    full = OPS[op].complete(params)
    return Case("hand", 0, "kernel", op, None, None, tuple(full.items()), 0, None, ref=ref, settings=settings)


def test_the_kernel_runner_runs_a_hand_made_case_without_the_suite(tmp_path: Path) -> None:
    from normbench.runners import kernel

    settings = KernelSettings(seed=3, tolerance=tuple(DEFAULT_TOLERANCE["float32"].items()),
                              warmup=1, repetitions=4, min_run_time_s=0.004)
    case = _hand_case("rms_norm", ProviderRef(name="torch_naive"),
                      {"num_tokens": 5, "hidden_size": 72, "dtype": "float32"}, settings)
    records: list = []
    kernel.run([case], _ctx(tmp_path, records))
    [(got, rec)] = records
    assert got is case and rec.status == "OK", rec.reason
    assert rec.fingerprint == case.fingerprint and rec.provider == "torch_naive"
    assert len(rec.metrics["time_us"].samples) == 4  # the case's repetitions, on the CPU
    t = rec.timing
    assert t["method"] == "cpu" and t["input_sets"] == 1 and t["calls_per_sample"] >= 1
    assert t["bytes_per_call"] == 2 * 5 * 72 * 4 + 72 * 4  # x in, y out (float32), the weight once
    assert rec.seed == kernel.point_seed(3, case)
    from normbench.store import CaseRecord

    assert CaseRecord.model_validate_json(rec.model_dump_json()).timing == t  # the schema declares every key
    assert 0 < rec.correctness["out_rel_err"] < settings.tolerance_dict["norm_rel"]  # float32 vs float64


def test_the_kernel_runner_runs_an_unfused_composition_from_its_ref(tmp_path: Path) -> None:
    from normbench.runners import kernel

    settings = KernelSettings(seed=5, tolerance=tuple(DEFAULT_TOLERANCE["bfloat16"].items()),
                              warmup=0, repetitions=2, min_run_time_s=0.002)
    ref = ProviderRef(norm="torch_naive", quant="torch_naive")
    case = _hand_case("rms_norm_quant", ref, {"num_tokens": 3, "hidden_size": 48, "dtype": "bfloat16"}, settings)
    records: list = []
    kernel.run([case], _ctx(tmp_path, records))
    [(_, rec)] = records
    assert rec.status == "OK", rec.reason
    assert rec.provider == "unfused[norm=torch_naive,quant=torch_naive]"
    assert len(rec.metrics["time_us"].samples) == 2


def test_a_kernel_case_without_settings_fails_with_the_reason(tmp_path: Path) -> None:
    from normbench.runners import kernel

    case = Case("hand", 0, "kernel", "rms_norm", "torch_naive", None,
                (("num_tokens", 2), ("hidden_size", 32), ("dtype", "float32"), ("eps", 1e-6), ("residual", False)))
    records: list = []
    with pytest.raises(Exception, match="carries no KernelSettings"):
        kernel.run([case], _ctx(tmp_path, records))


def test_the_e2e_runner_reads_the_client_spec_from_the_case() -> None:
    from normbench.errors import NormbenchError
    from normbench.runners.e2e import client_of

    e2e = expand(parse_suite(E2E_SUITE, "t.yaml"), CPU)
    assert {client_of(c).kind for c in e2e} == {"throughput", "latency"}
    bare = Case("lat", 1, "latency", None, None, "a", (("input_len", 8),))
    with pytest.raises(NormbenchError, match="carries no E2ESettings"):
        client_of(bare)


# --------------------------------------------------------------------------- CPU timing honours the suite
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cpu_timing_takes_warmup_and_repetitions() -> None:
    from normbench.timing import time_cpu

    clock, calls = _Clock(), []

    def fn() -> None:
        calls.append(clock.now)
        clock.now += 2e-6  # 2 us a call

    res = time_cpu(fn, min_run_time_s=0.001, timer=clock, warmup=5, repetitions=9, bytes_per_call=64)
    assert len(res.samples_us) == 9  # exactly the repetitions
    assert all(math.isclose(s, 2.0) for s in res.samples_us)
    # blocks sized so that 9 of them take about min_run_time_s: >= 1 ms / 9 each
    assert res.calls_per_sample * 2e-6 >= 0.001 / 9
    assert res.as_record()["bytes_per_call"] == 64
    # the warmup calls ran before any timed one (the first five calls precede calibration)
    calibrate_and_time = len(calls) - 5
    assert calibrate_and_time >= 9 * res.calls_per_sample
    for w, r in ((0, 3), (3, 1)):
        calls.clear()
        time_cpu(fn, min_run_time_s=1e-9, timer=clock, warmup=w, repetitions=r)
        assert len(calls) == w + 1 + r  # warmup, one calibration call, r one-call blocks
    with pytest.raises(ValueError):
        time_cpu(fn, timer=clock, warmup=0, repetitions=0)


# --------------------------------------------------------------------------- stage kinds
def test_every_stage_model_has_a_registered_kind_and_back() -> None:
    import typing

    from normbench.stages import KINDS, kind_of
    from normbench.stages.e2e import E2EKind
    from normbench.suite import Stage

    union = typing.get_args(typing.get_args(Stage)[0])
    literals = {typing.get_args(m.model_fields["kind"].annotation)[0] for m in union}
    assert literals == set(KINDS)
    for kind in KINDS:
        obj = kind_of(kind)
        assert obj.kind == kind and obj is kind_of(kind)
        assert obj.runner in ("kernel", "e2e")
        assert isinstance(obj, E2EKind) == (obj.runner == "e2e")
    assert [k for k in KINDS if getattr(kind_of(k), "serves", True) is False] == ["latency"]
    assert kind_of("startup").server_order < kind_of("throughput").server_order


def test_stage_kinds_expand_and_size_alike() -> None:
    from normbench.expand import stage_sizes

    for text in (UNFUSED_SUITE, E2E_SUITE):
        suite = parse_suite(text, "t.yaml")
        cases = expand(suite, CPU)
        counts = [sum(1 for c in cases if c.stage_index == i) for i in range(len(suite.stages))]
        assert stage_sizes(suite) == counts
    lat = [c for c in expand(parse_suite(E2E_SUITE, "t.yaml"), CPU) if c.kind == "latency"]
    assert [(c.variant, c.param_dict["input_len"]) for c in lat] == [("a", 8), ("a", 16), ("b", 8), ("b", 16)]


def test_runners_and_executors_never_reach_back_into_the_suite_stages() -> None:
    import re

    import normbench

    root = Path(normbench.__file__).parent
    files = sorted((root / "runners").glob("*.py")) + sorted((root / "executors").glob("*.py"))
    assert len(files) > 8
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"\.stage_index\b|\.stages\[|\.stages\b\s*(\)|$)", text, re.M), f
    suite_modules = sorted((root / "suite").glob("*.py"))
    assert len(suite_modules) >= 3, suite_modules
    for f in (*suite_modules, root / "expand.py", root / "runners" / "e2e.py"):
        assert not re.search(r"\bkind\s*(==|!=)\s*[\"']", f.read_text(encoding="utf-8")), f
