"""The run record schema, version 2: every stored field declared, writing refuses unknown
fields, and version-1 records (every one committed included) still load and show."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from typer.testing import CliRunner

from normbench import store
from normbench.cli import app
from normbench.errors import NormbenchError
from normbench.timing import TimingResult

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "runs"
KERNEL_RUN = "rmsnorm-20260102T000000Z-bbbbbb"
E2E_RUN = "e2e-20260104T000000Z-eeeeee"

runner = CliRunner()


def _committed() -> list[str]:
    """Every committed run record: record files under docs/results and tests/fixtures, and runs in tarballs."""
    out = [str(p.parent.relative_to(ROOT)) for base in ("docs/results", "tests/fixtures")
           for p in sorted((ROOT / base).rglob("run.json*"))]
    for tarball in sorted((ROOT / "docs" / "results").rglob("*.tar*")):
        out += [str((tarball / d.name).relative_to(ROOT)) for d in store.list_runs(tarball)]
    return out


COMMITTED = _committed()


def test_the_committed_records_are_found() -> None:
    assert len(COMMITTED) >= 36  # 23 record files (.xz and plain) and 13 runs in one tarball, today
    assert any(p.endswith(E2E_RUN) for p in COMMITTED) and any(".tar.xz/" in p for p in COMMITTED)
    assert any((ROOT / p / "run.json.xz").is_file() for p in COMMITTED)


@pytest.mark.parametrize("rel", COMMITTED)
def test_every_committed_record_loads_and_shows(rel: str) -> None:
    path = ROOT / rel
    record = store.load_run(path)
    assert record.schema_version in (1, 2) and record.cases
    # version 2 declares everything version 1 stored: nothing was set aside
    assert record.v1_extras == {} and all(c.v1_extras == {} for c in record.cases)
    # ... so the record is a valid version-2 record as it stands
    again = store.RunRecord.model_validate_json(record.model_dump_json())
    assert again.model_dump() == record.model_dump()
    res = runner.invoke(app, ["show", str(path)])
    assert res.exit_code == 0, res.output
    assert record.name in res.output


@pytest.mark.slow  # about 30 s in all: compare reads every case's samples
@pytest.mark.parametrize("rel", COMMITTED)
def test_every_committed_record_compares(rel: str) -> None:
    path = ROOT / rel
    res = runner.invoke(app, ["compare", str(path), str(path), "-f", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    assert rows and len(rows) >= len({c.fingerprint for c in store.load_run(path).cases if c.status == "OK"}) > 0


def test_version_1_extras_read_from_committed_records_are_typed() -> None:
    e2e = store.load_run(FIXTURES / E2E_RUN)
    acc = next(c for c in e2e.cases if c.kind == "accuracy")
    assert acc.items is not None and acc.items[:2] == [{"doc_id": 0, "strict": 0, "flexible": 1},
                                                       {"doc_id": 1, "strict": 0, "flexible": 0}]
    runs = sorted((ROOT / "docs" / "results" / "h200x2" / "runs").glob("mgpu-local-*"))
    kernel = store.load_run(runs[0])
    timed = [c for c in kernel.cases if c.timing is not None]
    assert timed and all(c.timing["method"] in ("cuda_graph", "cuda_events") for c in timed)
    ok = [c for c in kernel.cases if c.status == "OK"]  # run by a worker (SKIPPED ones never left the parent)
    assert ok and all(c.device_info is not None and c.device_info["name"] == "NVIDIA H200" for c in ok)


# --------------------------------------------------------------------------- declared fields
def _typed_dicts() -> list[Any]:
    return [store.CaseTiming, store.DeviceInfo, store.ServerInfo, store.ToolInfo, store.RequestCounts,
            store.ItemResult, store.ClockSnapshot, store.CaseConditions]


def test_every_field_has_a_type_and_a_docstring_line() -> None:
    for model in (store.RunRecord, store.SuiteSnapshot, store.CaseRecord, store.Metric):
        for name, f in model.model_fields.items():
            assert f.annotation is not None, f"{model.__name__}.{name}"
            assert f.description and f.description.strip(), f"{model.__name__}.{name} has no docstring"
    for td in _typed_dicts():
        schema = TypeAdapter(td).json_schema()
        assert schema.get("additionalProperties") is False, td.__name__
        assert set(schema["properties"]) == set(td.__annotations__), td.__name__
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{td.__name__}.{name} has no docstring"


def test_the_former_extras_are_declared() -> None:
    """What runners and executors put on records (item 6 of issue 11): all declared now."""
    declared = set(store.CaseRecord.model_fields)
    assert {"timing", "device_info", "items", "requests", "effective_config", "requested_config", "config_note",
            "server", "tool", "attempts", "task", "latencies_ms", "evidence"} <= declared
    assert {"stderr", "n", "filter"} <= set(store.Metric.model_fields)


def test_timing_records_fit_the_declared_timing() -> None:
    res = TimingResult([1.0, 2.0], "cuda_graph", calls_per_sample=35, input_sets=7, bytes_per_call=300_000,
                       bytes_rotated=2_100_000, l2_bytes=2**20)
    assert set(res.as_record()) == set(store.CaseTiming.__annotations__)
    case = _case(timing=res.as_record())
    back = store.CaseRecord.model_validate_json(case.model_dump_json())
    assert back.timing == res.as_record()


def _conditions() -> dict[str, Any]:
    """A kernel case's ``conditions`` as the runner writes it (``normbench.conditions``): the sample after its
    samples and the stage's snapshots, one with a field the GPU did not report."""
    from normbench.conditions import CaseSample, Snapshot

    snap = Snapshot(at="2026-01-01T00:00:00.000Z", pci_bus_id="00000000:18:00.0", sm_clock_mhz=1980,
                    mem_clock_mhz=2619, app_sm_clock_mhz=1755, app_mem_clock_mhz=2619, power_w=412.3,
                    power_limit_w=700.0, temperature_c=47, reasons_mask=0x5, unread={"fan": "Not Supported"})
    return {**CaseSample(0x4, 1980).as_record(), "stage_before": snap.as_record(), "stage_after": snap.as_record()}


def test_conditions_records_fit_the_declared_conditions() -> None:
    cond = _conditions()
    assert set(cond) | {"stage_before", "stage_after"} <= set(store.CaseConditions.__annotations__)
    assert set(cond["stage_before"]) == set(store.ClockSnapshot.__annotations__)  # every snapshot field is declared
    back = store.CaseRecord.model_validate_json(_case(conditions=cond).model_dump_json())
    assert back.conditions == cond and back.conditions["thermal_or_power_throttled"] is True
    assert "conditions" not in json.loads(_case().model_dump_json())  # written only where set


def test_a_record_with_conditions_validates_against_the_json_schema(tmp_path: Path) -> None:
    """The record schema as JSON Schema (``RunRecord.model_json_schema()``) describes the conditions fields:
    a written record validates, and a misspelt or mistyped conditions field does not."""
    import jsonschema

    schema = store.RunRecord.model_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    suite = store.SuiteSnapshot(name="n", path="p", sha256="0", spec={})
    w = store.create_run(tmp_path, "n", suite, {"clocks.lock": "locked", "clocks.locked_sm_mhz": 1755}, ["nb"], 1)
    w.add(_case(conditions=_conditions()))
    w.finish("complete")
    data = json.loads((w.dir / store.RUN_FILE).read_text())
    assert data["cases"][0]["conditions"]["stage_after"]["throttle_reasons"] == ["gpu_idle", "sw_power_cap"]
    assert list(validator.iter_errors(data)) == []
    for damage in ({"sm_clock_mhz": "fast"}, {"stage_before": {"at": "t", "sm_clock": 1}},
                   {"thermal_or_power_throttled": "yes"}, {"throttle_reasons": "sw_power_cap"}):
        bad = json.loads(json.dumps(data))
        bad["cases"][0]["conditions"].update(damage)
        assert list(validator.iter_errors(bad)), damage
    old = json.loads(json.dumps(data))
    del old["cases"][0]["conditions"]  # a record from before the field: valid, and it loads
    assert list(validator.iter_errors(old)) == []


# --------------------------------------------------------------------------- writing refuses unknown fields
def _case(**kw: Any) -> store.CaseRecord:
    base: dict[str, Any] = dict(case_id="s/op/p/-/x=1#0", fingerprint="s/op/p/-/x=1", stage="s", kind="kernel",
                                status="OK", metrics={"time_us": {"value": 1.0, "unit": "us",
                                                                  "higher_is_better": False, "samples": [1.0]}})
    return store.CaseRecord(**{**base, **kw})


def test_worker_startup_fits_the_declared_device_info() -> None:
    """What the parallel scheduler adds to a worker's records (``normbench.executors.pool.STARTUP_KEYS``) is declared."""
    from normbench.executors.pool import STARTUP_KEYS

    assert set(STARTUP_KEYS) <= set(store.DeviceInfo.__annotations__)
    info = {"index": 1, "label": "cuda:1", "name": "NVIDIA H200", "host": "h", "pid": 7, "peak_bandwidth_gbps": 4198.5,
            "startup_s": 9.812, "startup_wait_s": 0.0}
    back = store.CaseRecord.model_validate_json(_case(device_info=info).model_dump_json())
    assert back.device_info == info
    with pytest.raises(ValidationError, match="startup_s"):
        _case(device_info={**info, "startup_s": "slow"})


def test_writing_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        _case(bogus=1)
    case = _case()
    with pytest.raises(ValidationError, match="bogus"):
        case.bogus = 1  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match=r"timing\.bogus"):
        case.timing = {"method": "cuda_graph", "calls_per_sample": 1, "input_sets": 1, "bogus": 1}
    with pytest.raises(ValidationError, match=r"device_info\.gpus"):
        case.device_info = {"name": "x", "gpus": 2}
    with pytest.raises(ValidationError, match="input_sets"):
        case.timing = {"method": "cuda_graph", "calls_per_sample": 1}  # a required key missing
    with pytest.raises(ValidationError, match="bogus"):
        store.Metric(value=1.0, unit="us", higher_is_better=False, bogus=1)
    with pytest.raises(ValidationError, match="bogus"):
        store.RunRecord(run_id="r", name="n", created_at="t", bogus=1,
                        suite=store.SuiteSnapshot(name="n", path="p", sha256="0", spec={}))
    case.timing = {"method": "cpu", "calls_per_sample": 3, "input_sets": 1}  # a declared field: fine
    assert case.timing == {"method": "cpu", "calls_per_sample": 3, "input_sets": 1}


def test_kind_specific_fields_are_written_only_where_set() -> None:
    data = json.loads(_case().model_dump_json())
    assert "timing" not in data and "items" not in data and "v1_extras" not in data
    assert "evidence" in data and "stderr" not in data["metrics"]["time_us"]  # as version 1 wrote them
    data = json.loads(_case(attempts=2, metrics={"m": {"value": 0.5, "unit": "fraction", "higher_is_better": True,
                                                       "stderr": 0.1, "n": 10}}).model_dump_json())
    assert data["attempts"] == 2 and data["metrics"]["m"]["stderr"] == 0.1 and data["metrics"]["m"]["n"] == 10


def test_a_run_is_written_as_version_2(tmp_path: Path) -> None:
    suite = store.SuiteSnapshot(name="n", path="p", sha256="0", spec={})
    w = store.create_run(tmp_path, "n", suite, {}, ["normbench"], 1)
    w.add(_case(timing={"method": "cpu", "calls_per_sample": 3, "input_sets": 1, "bytes_per_call": 64}))
    head = json.loads((w.dir / store.JOURNAL_FILE).read_text().splitlines()[0])
    assert head[store.JOURNAL_HEADER] == 2 and head["run"]["schema_version"] == 2
    w.finish("complete")
    data = json.loads((w.dir / store.RUN_FILE).read_text())
    assert data["schema_version"] == store.SCHEMA_VERSION == 2
    assert store.load_run(w.dir).cases[0].timing["bytes_per_call"] == 64


# --------------------------------------------------------------------------- reading: v1 tolerant, v2 strict
def _fixture_copy(tmp_path: Path, run: str = KERNEL_RUN) -> tuple[Path, dict[str, Any]]:
    d = tmp_path / "runs" / run
    shutil.copytree(FIXTURES / run, d)
    return d, json.loads((d / "run.json").read_text())


def _write(d: Path, data: dict[str, Any]) -> None:
    (d / "run.json").write_text(json.dumps(data))


def _add_extras(data: dict[str, Any]) -> None:
    data["uploaded_by"] = "ci"  # record level
    data["suite"]["digest"] = "x"  # inside the suite snapshot
    c0 = data["cases"][0]
    c0["gpu_clock_mhz"] = 1980  # case level
    c0["metrics"]["time_us"]["ci95"] = [1.0, 2.0]  # metric level
    c0["device_info"] = {"name": "NVIDIA H200", "gpus": 2}  # a declared field with a key version 2 lacks
    data["cases"][1]["server"] = "localhost:8000"  # a declared field whose version-1 value does not fit


def test_version_1_records_keep_fields_version_2_does_not_declare(tmp_path: Path) -> None:
    d, data = _fixture_copy(tmp_path)
    assert data["schema_version"] == 1
    _add_extras(data)
    _write(d, data)
    record = store.load_run(d)
    assert record.schema_version == 1
    assert record.v1_extras == {"uploaded_by": "ci", "suite.digest": "x"}
    c0, c1 = record.cases[0], record.cases[1]
    assert c0.v1_extras == {"gpu_clock_mhz": 1980, "metrics.time_us.ci95": [1.0, 2.0],
                            "device_info": {"name": "NVIDIA H200", "gpus": 2}}
    assert c0.device_info is None and c0.metrics["time_us"].samples == data["cases"][0]["metrics"]["time_us"]["samples"]
    assert c1.v1_extras == {"server": "localhost:8000"} and c1.server is None
    assert len(record.cases) == len(data["cases"])
    res = runner.invoke(app, ["show", str(d)])
    assert res.exit_code == 0, res.output


def test_a_resumed_version_1_run_is_written_as_version_2_with_its_extras(tmp_path: Path) -> None:
    d, data = _fixture_copy(tmp_path)
    _add_extras(data)
    data["status"] = "interrupted"
    _write(d, data)
    w = store.resume_run(d)
    w.finish("complete")
    written = json.loads((d / "run.json").read_text())
    assert written["schema_version"] == 2 and written["v1_extras"]["uploaded_by"] == "ci"
    assert written["cases"][0]["v1_extras"]["gpu_clock_mhz"] == 1980
    back = store.load_run(d)  # strict version-2 reading
    assert back.schema_version == 2 and back.cases[1].v1_extras == {"server": "localhost:8000"}


def test_version_1_damage_is_still_refused(tmp_path: Path) -> None:
    d, data = _fixture_copy(tmp_path)
    _add_extras(data)
    data["cases"][2]["metrics"]["time_us"]["unit"] = 5  # a version-1 field: real damage
    _write(d, data)
    with pytest.raises(NormbenchError, match=r"run\.json: case 2 \(.*\): metrics\.time_us\.unit is the number 5, "
                                             r"not a string$"):
        store.load_run(d)


@pytest.mark.parametrize("where, damage, message", [
    ("case", lambda d: d["cases"][0].update(gpu_clock_mhz=1980),
     r"run\.json: case 0 \(rms_norm/.*\): gpu_clock_mhz is not a field of record schema version 2$"),
    ("nested", lambda d: d["cases"][3].update(timing={"method": "cpu", "calls_per_sample": 1, "input_sets": 1,
                                                      "flushed": True}),
     r"run\.json: case 3 \(rms_norm/.*\): timing\.flushed is not a field of record schema version 2$"),
    ("metric", lambda d: d["cases"][1]["metrics"]["time_us"].update(ci95=[1, 2]),
     r"run\.json: case 1 \(.*\): metrics\.time_us\.ci95 is not a field of record schema version 2$"),
    ("record", lambda d: d.update(uploaded_by="ci"),
     r"run\.json: uploaded_by is not a field of record schema version 2$"),
])
def test_version_2_records_with_unknown_fields_are_refused(tmp_path: Path, where: str, damage: Any,
                                                           message: str) -> None:
    d, data = _fixture_copy(tmp_path)
    data["schema_version"] = 2
    damage(data)
    _write(d, data)
    with pytest.raises(NormbenchError, match=message):
        store.load_run(d)
    res = runner.invoke(app, ["show", str(d)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    data["schema_version"] = 1  # the same, as version 1: read
    _write(d, data)
    assert store.load_run(d).cases


def test_a_version_1_journal_keeps_its_extras(tmp_path: Path) -> None:
    """A version-1 run that crashed: its run.json and a headerless journal (older normbench wrote none)."""
    d, data = _fixture_copy(tmp_path)
    case = dict(data["cases"][0], case_id="extra#0", gpu_clock_mhz=1500)
    data["status"] = "running"
    _write(d, data)
    (d / store.JOURNAL_FILE).write_text(json.dumps(case) + "\n")
    record = store.load_run(d)
    assert record.status == "interrupted"
    assert record.case_map()["extra#0"].v1_extras == {"gpu_clock_mhz": 1500}
    data["schema_version"] = 2  # the same journal beside a version-2 record: refused
    _write(d, data)
    with pytest.raises(NormbenchError, match=r"cases\.jsonl:1: case \(extra#0\): gpu_clock_mhz is not a field"):
        store.load_run(d)


def test_a_journal_header_says_the_version_of_its_cases(tmp_path: Path) -> None:
    d, data = _fixture_copy(tmp_path)
    cases = data.pop("cases")
    head = {store.JOURNAL_HEADER: 1, "run": dict(data, status="running")}
    lines = [json.dumps(head)] + [json.dumps(dict(c, gpu_clock_mhz=1)) for c in cases[:3]]
    (d / "run.json").unlink()
    (d / store.JOURNAL_FILE).write_text("\n".join(lines) + "\n")
    record = store.load_run(d)
    assert record.recovered_from and len(record.cases) == 3
    assert all(c.v1_extras == {"gpu_clock_mhz": 1} for c in record.cases)
    head["run"]["schema_version"] = 2
    (d / store.JOURNAL_FILE).write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    with pytest.raises(NormbenchError, match=r"cases\.jsonl:2: case \(.*\): gpu_clock_mhz is not a field"):
        store.load_run(d)


def test_a_tarball_of_version_1_runs_reads(tmp_path: Path) -> None:
    d, data = _fixture_copy(tmp_path)
    _add_extras(data)
    _write(d, data)
    tarball = tmp_path / "runs.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(d, arcname=d.name)
    record = store.load_run(tarball / d.name)
    assert record.v1_extras["uploaded_by"] == "ci" and record.cases[0].v1_extras["gpu_clock_mhz"] == 1980


def _models() -> list[type[BaseModel]]:
    return [store.RunRecord, store.SuiteSnapshot, store.CaseRecord, store.Metric]


def test_models_refuse_extras_by_config() -> None:
    assert all(m.model_config.get("extra") == "forbid" for m in _models())
    assert store.CaseRecord.model_config.get("validate_assignment") is True
