"""normbench.kernels.rmsnorm: inputs, float64 reference, check, Triton kernels, torch providers.

Without a GPU the Triton kernels run under ``TRITON_INTERPRET=1`` on the CPU. ``triton.jit``
reads it when a kernel is decorated, i.e. when kernels/rmsnorm/ is imported, so it is set
here before that import (tests/conftest.py sets it too, under the same condition). With a
GPU the kernels compile and the same tests run on it.

The interpreter rounds fp32 -> bfloat16 toward zero where the GPU rounds to nearest, so
bfloat16 errors on the CPU are about twice the GPU's (still well inside the tolerances) and
exact equality of the stored residual is asserted for float16 / float32 only.
"""

from dataclasses import replace

import torch

# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

import pytest  # noqa: E402

import normbench.kernels.rmsnorm as rn  # noqa: E402
from normbench.kernels.base import Tolerance  # noqa: E402
from normbench.kernels.providers._family import Unsupported  # noqa: E402

INTERPRETED = "Interpreted" in type(rn.triton_kernels._rms_norm_kernel).__name__
if not INTERPRETED and not torch.cuda.is_available():
    raise RuntimeError(
        "normbench.kernels.rmsnorm was imported in compiled mode without a GPU: TRITON_INTERPRET=1 must be "
        "set before it is imported"
    )
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")

TOL = {
    "bfloat16": Tolerance(norm_rel=1e-2, rtol=2e-2, atol=1e-2),
    "float16": Tolerance(norm_rel=2e-3, rtol=4e-3, atol=2e-3),
    "float32": Tolerance(norm_rel=1e-5, rtol=1e-4, atol=1e-5),
}
# (op, residual) pairs: rms_norm with and without its residual axis, and the fused op.
VARIANTS = [("rms_norm", False), ("rms_norm", True), ("fused_add_rms_norm", True)]
# (hidden_size, num_tokens): odd, non-power-of-2 and vector-misaligned sizes.
SHAPES = [(5120, 1), (1000, 7), (1536, 33), (2880, 300)]


def case(op, residual, hidden, tokens, dtype, eps=1e-6):
    params = {"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype, "eps": eps, "residual": residual}
    inputs = rn.FAMILY.make_inputs(op, params, DEVICE, seed=1234)
    return params, inputs, rn.FAMILY.reference(op, params, inputs)


def assert_ok(op, params, inputs, out, ref):
    result = rn.FAMILY.check(op, params, inputs, out, ref, TOL[params["dtype"]])
    assert result.ok, result.message
    return result


# --------------------------------------------------------------------------- Triton kernels


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("op,residual", VARIANTS)
@pytest.mark.parametrize("hidden,tokens", SHAPES)
def test_triton_matches_float64(op, residual, hidden, tokens, dtype):
    params, inputs, ref = case(op, residual, hidden, tokens, dtype)
    x_before = inputs["x"].clone()
    out = rn.IMPLS["triton"][op](params)(inputs)
    result = assert_ok(op, params, inputs, out, ref)
    assert set(result.metrics) >= {"out_rel_err", "out_max_abs_err"}
    assert all(o.dtype == inputs["x"].dtype for o in out)
    assert torch.equal(inputs["x"], x_before), "the triton provider is out of place"
    if len(ref) == 2 and dtype != "bfloat16":
        # r is stored rounded to the dtype: exactly the reference's rounded sum.
        assert torch.equal(out[1].double(), ref[1])


CONFIGS = [
    pytest.param(rn.LaunchConfig(block_n=1024, num_warps=4, programs_per_sm=1), id="persistent"),
    pytest.param(rn.LaunchConfig(block_n=1024, num_warps=4, rows=4), id="rows4-partial-tile"),
    pytest.param(rn.LaunchConfig(block_n=4096, num_warps=8), id="wide-block"),
    pytest.param(rn.LaunchConfig(block_n=256, num_warps=2), id="chunked-masked-tail"),
    pytest.param(rn.LaunchConfig(block_n=128, num_warps=1, programs_per_sm=2), id="chunked-persistent"),
    pytest.param(rn.LaunchConfig(block_n=256, num_warps=2, hints=False), id="chunked-no-hints"),
    pytest.param(rn.LaunchConfig(block_n=1024, num_warps=4, hints=False), id="no-hints"),
    pytest.param(rn.LaunchConfig(block_n=1024, num_warps=4, reload=True), id="reload"),
    pytest.param(rn.LaunchConfig(block_n=1024, num_warps=4, rows=2, programs_per_sm=1, reload=True), id="reload-persistent"),
    pytest.param(rn.LaunchConfig(block_n=1024, num_warps=4, rows=2, programs_per_sm=1, stages=3), id="pipelined"),
]


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("config", CONFIGS)
def test_triton_configs(config, residual):
    """Every kernel path (persistent loop, multi-row tiles, chunked two-pass) is exact enough."""
    params, inputs, ref = case("rms_norm", residual, 1000, 33, "float32")
    out = rn.rms_norm(inputs["x"], inputs["weight"], params["eps"], inputs.get("residual"), config=config)
    assert_ok("rms_norm", params, inputs, out, ref)


def test_pipelined_reload_without_residual():
    """The one pipelined re-read the launcher allows (with a residual it refuses, see below)."""
    params, inputs, ref = case("rms_norm", False, 1000, 33, "float32")
    cfg = rn.LaunchConfig(block_n=1024, num_warps=4, programs_per_sm=1, reload=True, stages=2)
    assert_ok("rms_norm", params, inputs, rn.rms_norm(inputs["x"], inputs["weight"], params["eps"], config=cfg), ref)


def test_chunked_default_for_long_rows():
    cfg = rn.formula_config(4, 32768, 2)
    assert cfg.block_n < 32768, "untuned: 32768 bf16 values per row take the chunked kernel"
    params, inputs, ref = case("fused_add_rms_norm", True, 20000, 3, "float16")
    out = rn.IMPLS["triton"]["fused_add_rms_norm"](params)(inputs)
    assert_ok("fused_add_rms_norm", params, inputs, out, ref)


@pytest.mark.parametrize(
    "config",
    [
        None,
        rn.LaunchConfig(block_n=2048, num_warps=4, reload=True),
        rn.LaunchConfig(block_n=2048, num_warps=4, rows=2, programs_per_sm=1, stages=2),
        rn.LaunchConfig(block_n=512, num_warps=2),
    ],
    ids=["default", "reload", "pipelined", "chunked"],
)
@pytest.mark.parametrize("residual", [True, False])
def test_in_place_like_vllm(config, residual):
    """out=x (and residual_out=residual): every path reads a row before it overwrites it."""
    op = "fused_add_rms_norm" if residual else "rms_norm"
    params, inputs, ref = case(op, residual, 1536, 7, "float32")
    x, res = inputs["x"].clone(), inputs["residual"].clone() if residual else None
    out = rn.rms_norm(x, inputs["weight"], params["eps"], res, out=x, residual_out=res, config=config)
    assert out[0] is x and (not residual or out[1] is res)
    assert_ok(op, params, inputs, out, ref)


def test_strided_rows():
    """Row stride larger than hidden_size (a slice of a wider tensor)."""
    params, inputs, ref = case("rms_norm", False, 1000, 7, "float32")
    wide = torch.zeros(7, 1040, device=DEVICE)
    wide[:, :1000] = inputs["x"]
    out = rn.rms_norm(wide[:, :1000], inputs["weight"], params["eps"])
    assert_ok("rms_norm", params, inputs, out, ref)


def test_zero_tokens():
    x = torch.empty(0, 64, device=DEVICE)
    (out,) = rn.rms_norm(x, torch.ones(64, device=DEVICE))
    assert out.shape == (0, 64)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weight": torch.ones(63)}, "weight"),
        ({"x": torch.ones(4, 64).t()}, "unit stride"),
        ({"x": torch.ones(2, 4, 64)}, "2-D"),
        ({"residual": torch.ones(4, 64, dtype=torch.float16)}, "residual"),
    ],
)
def test_launcher_rejects_bad_tensors(kwargs, match):
    args = {"x": torch.ones(4, 64), "weight": torch.ones(64), "residual": None, **kwargs}
    args = {k: v.to(DEVICE) if v is not None else v for k, v in args.items()}
    with pytest.raises(ValueError, match=match):
        rn.rms_norm(args["x"], args["weight"], 1e-6, args["residual"])


@pytest.mark.parametrize(
    "config,match",
    [
        (rn.LaunchConfig(block_n=96, num_warps=1), "powers of 2"),
        (rn.LaunchConfig(block_n=32, num_warps=1, rows=2), "rows=1"),
        (rn.LaunchConfig(block_n=32, num_warps=1, reload=True), "reload=False"),
        (rn.LaunchConfig(block_n=64, num_warps=1, stages=2), "programs_per_sm"),
        (rn.LaunchConfig(block_n=64, num_warps=1, programs_per_sm=1, reload=True, stages=2), "cannot be pipelined"),
    ],
)
def test_launcher_rejects_bad_configs(config, match):
    x = torch.ones(4, 64, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        rn.rms_norm(x, torch.ones(64, device=DEVICE), 1e-6, torch.ones(4, 64, device=DEVICE), config=config)


def test_config_literal_round_trips():
    for cfg in (
        rn.LaunchConfig(8192, 16),
        rn.LaunchConfig(4096, 8, 2, 4, True),
        rn.LaunchConfig(8192, 4, 1, 2, True, hints=False, reload=True, stages=3),
    ):
        assert eval(cfg.literal(), {"LaunchConfig": rn.LaunchConfig}) == cfg
    assert rn.LaunchConfig(8192, 16, 1, 0, True).literal() == "LaunchConfig(8192, 16, 1, 0, True)"


@pytest.mark.skipif(DEVICE.type != "cpu", reason="PDL is refused only where unsupported")
def test_pdl_refused_without_sm90():
    x = torch.ones(4, 64)
    with pytest.raises(ValueError, match="programmatic dependent launch"):
        rn.rms_norm(x, torch.ones(64), config=rn.LaunchConfig(block_n=64, num_warps=1, pdl=True))


# --------------------------------------------------------------------------- heuristic


@pytest.mark.parametrize("elem_bytes", [2, 4])
@pytest.mark.parametrize("residual", [False, True])
def test_heuristic_configs_are_valid(elem_bytes, residual):
    for hidden in (64, 1000, 2880, 4096, 5120, 7168, 8192, 16384, 32768, 65536):
        for tokens in [1 << k for k in range(17)]:
            cfg = rn.default_config(tokens, hidden, elem_bytes, residual, pdl=True)
            assert cfg.block_n & (cfg.block_n - 1) == 0 and cfg.rows & (cfg.rows - 1) == 0
            assert cfg.num_warps in (1, 2, 4, 8, 16, 32)
            if cfg.block_n < hidden:
                assert cfg.rows == 1 and not cfg.reload and cfg.stages == 1
            else:
                # Whole rows: at most 64 values of the tile per thread (sm_90 ptxas: <= 168
                # registers, no spills; docs/kernels/rmsnorm-notes.md).
                assert cfg.rows * cfg.block_n // (32 * cfg.num_warps) <= 64, (hidden, tokens, cfg)
            assert cfg.stages == 1 or cfg.programs_per_sm > 0
            assert not (cfg.stages > 1 and cfg.reload and residual)


def test_tuned_table_lookup(monkeypatch):
    a, b = rn.LaunchConfig(4096, 4), rn.LaunchConfig(4096, 8, 1, 4, True)
    monkeypatch.setattr(rn.configs, "TUNED", {(False, 4096): ((128, a), (2**31 - 1, b))})
    assert rn.default_config(100, 4096, 2, False, pdl=True) == rn.LaunchConfig(4096, 4, pdl=False)
    assert rn.default_config(5000, 4096, 2, False, pdl=True) == b
    assert rn.default_config(5000, 4096, 2, False, pdl=False).pdl is False, "never PDL where unsupported"
    assert rn.default_config(1, 2880, 2, False, pdl=True).block_n == 4096, "same block borrows the table"
    assert rn.default_config(1, 8192, 2, False, pdl=True) == replace(rn.formula_config(1, 8192, 2), pdl=True)
    assert rn.default_config(1, 4096, 4, False, pdl=False) == rn.formula_config(1, 4096, 4), "fp32: formula"


# --------------------------------------------------------------------------- family


@pytest.mark.parametrize("op,residual", VARIANTS)
def test_inputs(op, residual):
    params = {"num_tokens": 5, "hidden_size": 96, "dtype": "bfloat16", "eps": 1e-6, "residual": residual}
    a = rn.FAMILY.make_inputs(op, params, DEVICE, seed=7)
    b = rn.FAMILY.make_inputs(op, params, DEVICE, seed=7)
    c = rn.FAMILY.make_inputs(op, params, DEVICE, seed=8)
    assert set(a) == ({"x", "weight", "residual"} if residual else {"x", "weight"})
    assert a["x"].shape == (5, 96) and a["weight"].shape == (96,)
    for name, t in a.items():
        assert t.dtype == torch.bfloat16 and t.device.type == DEVICE.type
        assert bool((t != 0).all()), f"{name} has zeros"
        assert torch.equal(t, b[name]), "same seed, same inputs"
        assert not torch.equal(t, c[name]), "another seed, other inputs"
    assert abs(a["weight"].float().mean().item() - 1.0) < 0.1


def test_fused_op_always_has_residual():
    params = {"num_tokens": 2, "hidden_size": 16, "dtype": "float32", "eps": 1e-6, "residual": False}
    assert "residual" in rn.FAMILY.make_inputs("fused_add_rms_norm", params, DEVICE, seed=0)


def test_reference_rounds_the_residual_sum_first():
    params, inputs, (out, r) = case("fused_add_rms_norm", True, 64, 3, "bfloat16")
    assert out.dtype == r.dtype == torch.float64
    exact = inputs["x"].double() + inputs["residual"].double()
    assert torch.equal(r, exact.to(torch.bfloat16).double())
    assert not torch.equal(r, exact), "the rounding is visible in bfloat16"
    # The norm is the plain RMSNorm of the rounded r.
    plain_inputs = {"x": r.to(torch.bfloat16), "weight": inputs["weight"]}
    (plain,) = rn.FAMILY.reference("rms_norm", {**params, "residual": False}, plain_inputs)
    assert torch.equal(out, plain)
    ms = r.square().mean(-1, keepdim=True)
    assert torch.allclose(out, r / torch.sqrt(ms + 1e-6) * inputs["weight"].double(), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- torch providers


@pytest.mark.parametrize("provider", ["reference", "torch_naive", "torch_rms_norm"])
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("op,residual", VARIANTS)
def test_torch_providers(provider, dtype, op, residual):
    params, inputs, ref = case(op, residual, 1000, 33, dtype)
    out = rn.IMPLS[provider][op](params)(inputs)
    assert len(out) == (2 if residual else 1)
    assert_ok(op, params, inputs, out, ref)


def test_torch_naive_is_the_hf_formula():
    params, inputs, _ = case("rms_norm", False, 256, 4, "bfloat16")
    x, w = inputs["x"], inputs["weight"]
    h = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    (out,) = rn.IMPLS["torch_naive"]["rms_norm"](params)(inputs)
    assert torch.equal(out, w * h.to(torch.bfloat16))


def test_impls_cover_every_provider_and_op():
    assert set(rn.IMPLS) == {
        "reference", "torch_naive", "torch_rms_norm", "triton", "vllm", "flashinfer", "liger", "quack"
    }
    for ops in rn.IMPLS.values():
        assert set(ops) == set(rn.NORM_OPS)


def test_flashinfer_refuses_float32_before_importing():
    params = {"num_tokens": 1, "hidden_size": 64, "dtype": "float32", "eps": 1e-6, "residual": False}
    with pytest.raises(Unsupported, match="float16 and bfloat16"):
        rn.IMPLS["flashinfer"]["rms_norm"](params)


# --------------------------------------------------------------------------- the check can fail


def _wrong(kind):
    def fn(inputs, params):
        x, w, eps = inputs["x"], inputs["weight"], params["eps"]
        if kind == "weight+1":
            w = w + 1
        if kind == "eps*1000":
            eps = eps * 1000
        r = x + inputs["residual"] if "residual" in inputs else x
        out = rn.hf_rms_norm(r.float(), w.float(), eps).to(x.dtype)
        if kind == "nan":
            out = out.clone()
            out[0, 0] = float("nan")
        if kind == "residual_not_added":
            return out, x
        if kind == "one_output":
            return (out,)
        return (out, r) if "residual" in inputs else (out,)

    return fn


@pytest.mark.parametrize(
    "kind,op,dtype,message",
    [
        ("weight+1", "rms_norm", "bfloat16", "out: norm-wise relative error"),
        ("eps*1000", "rms_norm", "float32", "out: norm-wise relative error"),
        ("nan", "rms_norm", "float16", "NaN"),
        ("residual_not_added", "fused_add_rms_norm", "bfloat16", "residual_out"),
        ("one_output", "fused_add_rms_norm", "float32", "expected 2 outputs"),
    ],
)
def test_wrong_implementations_fail(kind, op, dtype, message):
    params, inputs, ref = case(op, op == "fused_add_rms_norm", 512, 9, dtype)
    result = rn.FAMILY.check(op, params, inputs, _wrong(kind)(inputs, params), ref, TOL[dtype])
    assert not result.ok
    assert message in result.message


def test_elementwise_tolerance_catches_one_bad_element():
    params, inputs, ref = case("rms_norm", False, 512, 9, "bfloat16")
    (out,) = rn.IMPLS["torch_naive"]["rms_norm"](params)(inputs)
    out = out.clone()
    out[3, 100] += 0.25  # within norm_rel over 4608 elements, far outside atol + rtol * |ref|
    result = rn.FAMILY.check("rms_norm", params, inputs, (out,), ref, TOL["bfloat16"])
    assert not result.ok and "first at (3, 100)" in result.message
