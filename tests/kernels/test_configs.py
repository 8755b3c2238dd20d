"""Launch configs and tuned tables: the same choices as before the tables became data, a strict
table format, and the shared Triton plumbing (``kernels/_triton.py``, ``kernels/tuned``).

CPU only, no kernel launches: fast.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

import pytest  # noqa: E402
import torch  # noqa: E402

import normbench.kernels.nvfp4 as F  # noqa: E402
import normbench.kernels.quant as q  # noqa: E402
import normbench.kernels.rmsnorm as rn  # noqa: E402
from normbench.kernels import _triton, tuned  # noqa: E402

CHOICES = json.loads((Path(__file__).parent / "config_choices.json").read_text())
FAMILIES = {"rmsnorm": rn, "quant": q, "nvfp4": F}


# --------------------------------------------------------------------------- same choices as before


def _expand(runs: list, tokens: list[int]):
    """(num_tokens, config index) over the grid, from runs of [first num_tokens, index]."""
    starts = {t: i for t, i in runs}
    current = None
    for t in tokens:
        current = starts.get(t, current)
        yield t, current


def _expected(section: dict, idx: int):
    return dict(zip(section["fields"], section["configs"][idx]))


@pytest.mark.parametrize("name", ["rmsnorm", "quant", "nvfp4"])
def test_tables_choose_what_the_python_literals_chose(name):
    """Every (kind, num_tokens, hidden_size, activation bytes, residual, PDL) point of the recorded
    grid picks the config the committed code picked before its table moved to JSON."""
    section, tokens = CHOICES[name], CHOICES["tokens"]
    checked = 0
    for g in section["groups"]:
        for t, idx in _expand(g["runs"], tokens):
            if name == "rmsnorm":
                got = rn.default_config(t, g["hidden"], g["elem_bytes"], g["residual"], g["pdl"])
            elif name == "quant":
                got = q.default_config(t, g["hidden"], g["elem_bytes"], g["kind"], g["residual"], g["pdl"])
            else:
                got = F.default_config(t, g["hidden"], g["residual"])
            assert got.as_dict() == _expected(section, idx), (g, t)
            checked += 1
    assert checked == len(section["groups"]) * len(tokens) > 1000


def test_generic_nvfp4_heuristic_unchanged():
    for g in CHOICES["nvfp4_generic"]["groups"]:
        for t, want in _expand(g["runs"], CHOICES["tokens"]):
            assert list(F.nvfp4_config(t, g["hidden"], getattr(torch, g["dtype"]))) == want, (g, t)


def test_every_tuned_row_is_reached():
    """The fixture's grid covers every row of every shipped table (so the test above sees them all)."""
    seen = {name: set() for name in FAMILIES}
    for name, mod in FAMILIES.items():
        for g in CHOICES[name]["groups"]:
            for _, idx in _expand(g["runs"], CHOICES["tokens"]):
                seen[name].add(json.dumps(_expected(CHOICES[name], idx), sort_keys=True))
        for rows in mod.TUNED.values():
            for _, cfg in rows:
                with_pdl = json.dumps(cfg.as_dict(), sort_keys=True)
                assert with_pdl in seen[name], (name, cfg)


# --------------------------------------------------------------------------- the shipped tables


@pytest.mark.parametrize("name", ["rmsnorm", "quant", "nvfp4"])
def test_shipped_table_is_canonical_and_round_trips(name):
    mod = FAMILIES[name]
    path = tuned.path_of(name)
    table = tuned.load(name, mod.LaunchConfig, mod.configs.KEY)
    assert table.rows == mod.TUNED and table.source
    assert tuned.dump(table) == path.read_text(), "the file is not in dump()'s form (hand-edited?)"
    for key, rows in table.rows.items():
        bounds = [b for b, _ in rows]
        assert bounds == sorted(set(bounds)) and bounds[-1] == tuned.SENTINEL, key
        assert all(a[1] != b[1] for a, b in zip(rows, rows[1:])), f"{key}: equal neighbours are merged"


def _table_json(name: str) -> dict:
    return json.loads(tuned.path_of(name).read_text())


def _load(data, name="rmsnorm", tmp_path=None):
    mod = FAMILIES[name]
    return tuned.parse(data, name, mod.LaunchConfig, mod.configs.KEY, where="t.json")


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(schema_version=2), "t.json: schema_version: expected 1, got 2"),
        (lambda d: d.update(family="quant"), "family: expected 'rmsnorm'"),
        (lambda d: d.update(key=["hidden_size", "residual"]), "key: expected ['residual', 'hidden_size']"),
        (lambda d: d.update(extra=1), "top level: unknown field(s) extra"),
        (lambda d: d["entries"][1].update(hidden_size="4096"), "entries[1].hidden_size: expected int, got '4096'"),
        (lambda d: d["entries"][1].update(residual=1), "entries[1].residual: expected bool, got 1"),
        (lambda d: d["entries"][2].update(rows=[]), "entries[2].rows: expected a non-empty list"),
        (lambda d: d["entries"][0]["rows"][1].update(max_tokens=1),
         "entries[0].rows[1].max_tokens: bounds must ascend"),
        (lambda d: d["entries"][0]["rows"][0].update(max_tokens=-3), "rows[0].max_tokens: expected a positive integer"),
        (lambda d: d["entries"][0]["rows"][0].update(bound=3), "rows[0]: expected an object with exactly"),
        (lambda d: d["entries"][0]["rows"][0]["config"].update(num_warps="8"),
         "entries[0].rows[0].config: field 'num_warps': expected int, got '8'"),
        (lambda d: d["entries"][0]["rows"][0]["config"].update(hints=1), "field 'hints': expected bool, got 1"),
        (lambda d: d["entries"][0]["rows"][0]["config"].update(num_warps=True), "field 'num_warps': expected int"),
        (lambda d: d["entries"][0]["rows"][0]["config"].update(warps=8), "unknown field(s) warps"),
        (lambda d: d["entries"][0]["rows"][0]["config"].pop("block_n"), "missing field 'block_n'"),
        (lambda d: d["entries"].append(copy.deepcopy(d["entries"][0])), "duplicate key"),
    ],
)
def test_malformed_tables_are_refused_with_the_place(mutate, message):
    data = _table_json("rmsnorm")
    assert _load(copy.deepcopy(data)).rows == rn.TUNED  # the unmutated file loads
    mutate(data)
    with pytest.raises(tuned.TunedTableError) as e:
        _load(data)
    assert message in str(e.value)


def test_unreadable_table_names_the_file(tmp_path):
    bad = tmp_path / "quant.json"
    bad.write_text("{ not json")
    with pytest.raises(tuned.TunedTableError, match=r"quant\.json: cannot read the tuned table"):
        tuned.load("quant", q.LaunchConfig, q.configs.KEY, bad)
    with pytest.raises(tuned.TunedTableError, match="cannot read"):
        tuned.load("quant", q.LaunchConfig, q.configs.KEY, tmp_path / "missing.json")


def test_null_bound_and_optional_fields():
    """``max_tokens: null`` is the open bound; config fields with defaults may be left out;
    quant's ``bool | None`` fields take null."""
    data = _table_json("quant")
    row = data["entries"][0]["rows"][-1]
    assert row["max_tokens"] is None
    row["config"] = {"num_warps": 8, "tuple_reduce": None, "hw_cvt": False}
    t = tuned.parse(data, "quant", q.LaunchConfig, q.configs.KEY)
    assert t.rows[tuple(data["entries"][0][k] for k in t.key_fields)][-1] == (
        tuned.SENTINEL, q.LaunchConfig(8, hw_cvt=False))


def test_pick_and_bounds():
    a, b = rn.LaunchConfig(1024, 4), rn.LaunchConfig(1024, 8)
    rows = ((16, a), (tuned.SENTINEL, b))
    assert [tuned.pick(rows, t) for t in (0, 1, 16, 17, 10**9)] == [a, a, a, b, b]
    assert tuned.pick(((16, a),), 17) is None
    assert tuned.bounds([1, 16, 128, 1024, 4096, 16384]) == [4, 45, 362, 2048, 8192, tuned.SENTINEL]
    assert tuned.bounds([7]) == [tuned.SENTINEL]


# --------------------------------------------------------------------------- launch configs and device facts


@pytest.mark.parametrize(
    "cfg,literal",
    [
        (rn.LaunchConfig(8192, 16, 1, 0, True, reload=True), "LaunchConfig(8192, 16, 1, 0, True, reload=True)"),
        (q.LaunchConfig(8, 2, programs_per_sm=4, pdl=True), "LaunchConfig(8, 2, programs_per_sm=4, pdl=True)"),
        (F.LaunchConfig(2, 8, False, True), "LaunchConfig(2, 8, False, True)"),
    ],
)
def test_launch_configs_share_one_base(cfg, literal):
    assert isinstance(cfg, _triton.LaunchConfig)
    assert {"num_warps", "programs_per_sm", "pdl"} <= {f.name for f in dataclasses.fields(cfg)}
    assert cfg.literal() == literal
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.as_dict()))) == cfg
    assert hash(cfg) == hash(dataclasses.replace(cfg))  # frozen, hashable: launch plans are cached by it
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_warps = 1
    assert cfg.short() and cfg.short() != dataclasses.replace(cfg, pdl=not cfg.pdl).short()


def test_device_facts_of_the_interpreter():
    facts = _triton.device_facts(torch.device("cpu"))
    assert facts == _triton.INTERPRETER_FACTS and facts.sms == _triton.INTERPRETER_SMS == 2
    assert not facts.pdl and not facts.ptx_fp8 and facts.capability == (0, 0)
    for mod in FAMILIES.values():
        assert mod.device_facts is _triton.device_facts


def test_next_pow2_matches_triton():
    import triton

    for n in list(range(1, 300)) + [4095, 4096, 4097, 2**20 + 1]:
        assert _triton.next_pow2(n) == triton.next_power_of_2(n), n
        assert _triton.cdiv(n, 7) == triton.cdiv(n, 7)
