"""The tuner's CPU logic (``scripts/tune.py`` and the families' ``TUNING``): points, candidates
that the launchers accept, compile jobs, scoring, table building and merging.

The GPU half (compiling, checking on the device, timing) runs only on a GPU
(``bash scripts/gpu_bench.sh tune:FAMILY``); nothing here launches a kernel.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
from pathlib import Path

# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

import pytest  # noqa: E402
import torch  # noqa: E402

import normbench.kernels.nvfp4 as F  # noqa: E402
import normbench.kernels.quant as q  # noqa: E402
import normbench.kernels.rmsnorm as rn  # noqa: E402
from normbench.kernels import tuned  # noqa: E402
from normbench.kernels._triton import DeviceFacts, next_pow2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tune_script", ROOT / "scripts" / "tune.py")
tune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tune)

FAMILIES = {"rmsnorm": rn, "quant": q, "nvfp4": F}
#: An H100-like device without PDL, so that every candidate is also valid on the CPU's facts.
FACTS = DeviceFacts(sms=132, capability=(9, 0), l2_bytes=50 * 2**20, pdl=False, ptx_fp8=True)
FACTS_PDL = dataclasses.replace(FACTS, pdl=True)


def _all_configs(mod, point, facts):
    return tune.configs_to_compile(mod.TUNING, point, facts)


# --------------------------------------------------------------------------- points and candidates


@pytest.mark.parametrize("name", ["rmsnorm", "quant", "nvfp4"])
def test_points_are_the_families_shapes(name):
    mod = FAMILIES[name]
    points = mod.TUNING.points()
    assert len(points) == len(set(points)) > 10
    for p in points:
        params = p.param_dict
        assert params["dtype"] == "bfloat16" and params["num_tokens"] == p.num_tokens
        assert p.op in mod.FAMILY.ops if hasattr(mod.FAMILY, "ops") else p.op in mod.OPS
        assert len(p.key) == len(mod.configs.KEY)
    if name == "quant":  # fp8 leads int8 at every (key, num_tokens): the tuner times fp8 first
        order = [(p.key, p.num_tokens, p.variant) for p in points]
        assert all(order.index((k, t, "fp8")) < order.index((k, t, "int8")) for k, t, _ in order)
        assert {p.key[2] for p in points} == {1024, 2048, 4096, 8192}


def test_rmsnorm_candidates_pass_the_launchers_validation():
    """Every config any round may try at every point is one ``rms_norm``'s planner accepts."""
    from normbench.kernels.rmsnorm.triton_launch import _plan

    n = 0
    for p in rn.TUNING.points():
        residual, hidden = p.key
        for cfg in _all_configs(rn, p, FACTS):
            _plan(p.num_tokens, hidden, 2, residual, torch.device("cpu"), cfg)  # raises ValueError if invalid
            n += 1
    assert n > 500


def test_quant_candidates_pass_the_launchers_validation():
    from normbench.kernels.quant.triton_launch import _tile, check_config

    for p in q.TUNING.points():
        params = p.param_dict
        bg, gs, _ = _tile(params["hidden_size"], params.get("group_size", 0) if p.op == "rms_norm_group_quant" else 0)
        cfgs = _all_configs(q, p, FACTS)
        assert q.TUNING.default(p, FACTS) in cfgs and len(cfgs) >= 3
        for cfg in cfgs:
            check_config(cfg, bg * gs, pdl_ok=False)  # raises ValueError if invalid
            assert 4 <= cfg.rows_per_program * next_pow2(params["hidden_size"]) / (32 * cfg.num_warps) <= 64, cfg
        multi_row = [c for c in q.TUNING.candidates(p, FACTS, False) if c.rows_per_program > 1]
        assert not multi_row or p.num_tokens >= 128
    with pytest.raises(ValueError, match="stages > 1"):
        check_config(q.LaunchConfig(4, 1, stages=2), 4096, True)


def test_nvfp4_candidates_are_whole_blocks_per_thread():
    for p in F.TUNING.points():
        hidden = p.key[1]
        cands = F.TUNING.candidates(p, FACTS, False)
        assert cands and all(c.pdl for c in cands)
        for c in cands:
            per_thread = 16 * max(4, next_pow2(hidden // 16)) / (32 * c.num_warps)
            assert 16 <= per_thread <= 64 and c.programs_per_sm >= 1
            assert (c.programs_per_sm == 1 and not c.prefetch) if p.num_tokens <= F.configs.FEW_TOKENS else True
        assert len(F.TUNING.candidates(p, FACTS, True)) < len(cands) or len(cands) == 1


def test_rmsnorm_refinements_follow_the_leaders():
    p = next(p for p in rn.TUNING.points() if p.key == (True, 8192) and p.num_tokens == 4096)
    ranked = rn.TUNING.candidates(p, FACTS_PDL, False)
    more = rn.TUNING.refine(p, ranked, FACTS_PDL, False)
    assert {dataclasses.replace(c, hints=True, pdl=True, programs_per_sm=0, stages=1, maxnreg=0) for c in more} \
        <= set(ranked[:3])
    assert any(c.programs_per_sm for c in more) and any(not c.pdl for c in more)
    small = next(p for p in rn.TUNING.points() if p.num_tokens == 1)
    assert len(rn.TUNING.refine(small, ranked, FACTS, False)) <= 2, "one leader below 256 tokens"


def test_select_points_filters():
    args = tune.parse_args(["quant", "--hidden", "4096", "--tokens", "16,4096", "--residual", "1", "--variant", "int8"])
    points = tune.select_points(q.TUNING, args)
    assert points and all(
        p.param_dict["hidden_size"] == 4096 and p.num_tokens in (16, 4096) and p.param_dict["residual"]
        and p.variant == "int8" for p in points
    )
    assert {p.op for p in points} == {"rms_norm_quant", "rms_norm_group_quant"}


def test_compile_jobs_are_distinct_kernels_and_picklable():
    points = [p for p in rn.TUNING.points() if p.key == (False, 4096)]
    jobs = tune.compile_jobs("rmsnorm", rn.TUNING, points, FACTS_PDL)
    n_configs = len({c for p in points for c in _all_configs(rn, p, FACTS_PDL)})
    assert 0 < len(jobs) < n_configs, "token counts and grid sizes do not make new kernels"
    keys = set()
    for fam, op, params, overrides in jobs:
        cfg = overrides["launch_config"]
        assert fam == "rmsnorm" and "launch_config" not in params and cfg.programs_per_sm <= 1
        keys.add(tune.case_key(op, params) + (tune.cfg_key(cfg),))
    assert len(keys) == len(jobs)
    assert pickle.loads(pickle.dumps(jobs)) == jobs  # they go to spawned worker processes
    pre = tune.compile_jobs("quant", q.TUNING, [], FACTS)
    assert len(pre) == 2 * len(q.configs.PREFLIGHT) and any(not o for *_, o in pre)


# --------------------------------------------------------------------------- scoring and tables


def test_choose_scores_variants_together():
    a, b, c = (json.dumps({"n": i}) for i in range(3))
    assert tune.choose({"": {a: 3.0, b: 2.0}}, "") == b
    # fp8 prefers a by 1%, int8 prefers b by 20%: b is the better row for both
    assert tune.choose({"fp8": {a: 1.0, b: 1.01, c: 0.9}, "int8": {a: 1.2, b: 1.0}}, "fp8") == b
    assert tune.choose({"fp8": {a: 1.0, c: 0.9}, "int8": {b: 1.0}}, "fp8") == c, "no shared config: fp8's best"


def _record(key, tokens, times, variant=""):
    return {"key": list(key), "num_tokens": tokens, "variant": variant,
            "final_us": {json.dumps(c.as_dict()): t for c, t in times.items()}}


def test_rows_from_records_bound_at_midpoints_and_merge():
    a, b = rn.LaunchConfig(4096, 8), rn.LaunchConfig(4096, 4, 2)
    records = [_record((False, 4096), 1, {a: 2.0, b: 3.0}), _record((False, 4096), 16, {a: 2.1, b: 3.0}),
               _record((False, 4096), 128, {a: 5.0, b: 4.0}), {"key": [False, 4096], "num_tokens": 999}]
    rows = tune.rows_from_records(records, rn.LaunchConfig)
    assert rows == {(False, 4096): ((45, a), (tuned.SENTINEL, b))}


def test_write_table_merges_into_the_checkout_table(tmp_path):
    a = q.LaunchConfig(2, 1, pdl=True)
    key = ("rms_norm_quant", False, 4096)
    records = [_record(key, t, {a: 1.0}, v) for t in (1, 16) for v in ("fp8", "int8")]
    out = tune.write_table(q.TUNING, records, "unit test", tmp_path / "quant.json")
    table = tuned.load("quant", q.LaunchConfig, q.configs.KEY, out)
    old_source = tuned.load("quant", q.LaunchConfig, q.configs.KEY).source
    assert table.source == f"unit test; other keys: {old_source}", "the rows kept name their run"
    assert table.rows[key] == ((tuned.SENTINEL, a),)
    assert {k: v for k, v in table.rows.items() if k != key} == {k: v for k, v in q.TUNED.items() if k != key}


def test_table_from_a_results_file(tmp_path, capsys):
    a = F.LaunchConfig(8, 2, True, True)
    results = tmp_path / "tune_nvfp4.json"
    results.write_text(json.dumps({"family": "nvfp4", "env": {"gpu": "Fake GPU", "triton": "9.9"},
                                   "records": [_record((True, 12288), 4096, {a: 10.0})]}))
    assert tune.main(["nvfp4", "--table-from", str(results), "--table", str(tmp_path / "t.json")]) == 0
    table = tuned.load("nvfp4", F.LaunchConfig, F.configs.KEY, tmp_path / "t.json")
    assert table.rows[(True, 12288)] == ((tuned.SENTINEL, a),) and "Fake GPU" in table.source
    assert len(table.rows) == len(F.TUNED) + 1
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["rmsnorm", "quant", "nvfp4"])
def test_list_plans_without_a_gpu(name, capsys):
    assert tune.main([name, "--list", "--tokens", "4096"]) == 0
    out = capsys.readouterr().out
    assert "candidates" in out and "kernels to compile" in out


def test_judges_are_stricter_than_the_check():
    from normbench.kernels.base import CheckResult

    ok = CheckResult(True, {"mismatch_rate": 0.01})
    t = torch.zeros(2, 4)
    assert q.TUNING.judge("rms_norm_quant", {}, (t, t), (t, t), ok).startswith("mismatch_rate 0.0100 > 0.002")
    assert q.TUNING.judge("scaled_quant", {}, (t, t), (t, t), ok) is None
    assert q.TUNING.judge("rms_norm_quant", {}, (t, t, t), (t, t, t + 1), CheckResult(True, {})) \
        == "residual_out differs from the once-rounded sum"
    assert "residual_out differs" in F.TUNING.judge("x", {}, (t, t, t), (t, t, t + 1), CheckResult(True, {}))
    assert rn.TUNING.judge("x", {}, (t,), (t,), CheckResult(False, {}, "norm-wise")) == "norm-wise"
