"""``rms_norm_static_quant``: [residual add +] RMSNorm + fp8/int8 with a static per-tensor scale.

Checked here: the float64 reference against an independent float64 computation (nearest
value of the enumerated code grid, ties to the even code); the Triton kernel and
``torch_naive`` on odd shapes and every activation dtype; a saturating scale; the check
rejecting wrong outputs; the unfused compositions; the op's metadata (bytes model,
validation, registry, suite). The Triton kernels run under ``TRITON_INTERPRET=1`` on the
CPU (conftest.py), or compiled where a GPU is present.
"""


# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import normbench.kernels.quant as q  # noqa: E402
from normbench.kernels.base import Tolerance  # noqa: E402
from normbench.kernels.providers._family import Unsupported  # noqa: E402
from normbench.ops import OPS  # noqa: E402

OP = "rms_norm_static_quant"
INTERPRETED = "Interpreted" in type(q.triton_kernels._rowquant_kernel).__name__
if not INTERPRETED and not torch.cuda.is_available():
    raise RuntimeError(
        "normbench.kernels.quant was imported in compiled mode without a GPU: TRITON_INTERPRET=1 must be "
        "set before it is imported (run tests/kernels in its own pytest process)"
    )
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
TOL = Tolerance(norm_rel=1e-2, rtol=2e-2, atol=1e-2, mismatch_rate=0.02)  # not used by the family's check
SUITE = Path(__file__).resolve().parents[2] / "suites" / "rmsnorm_static_quant.yaml"


def params_of(tokens, hidden, dtype="bfloat16", **axes):
    p = OPS[OP].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype})
    p.update(axes)
    return p


def make(params, seed=11):
    inputs = q.FAMILY.make_inputs(OP, params, DEVICE, seed)
    return inputs, q.FAMILY.reference(OP, params, inputs)


def run(provider, params, inputs):
    """A provider on a private copy of the inputs (providers write the residual in place)."""
    trial = {k: v.clone() for k, v in inputs.items()}
    return q.IMPLS[provider][OP](params)(trial)


def check(params, inputs, out, ref):
    return q.FAMILY.check(OP, params, inputs, out, ref, TOL)


def assert_ok(params, inputs, out, ref):
    res = check(params, inputs, out, ref)
    assert res.ok, res.message
    assert res.metrics["hard_mismatches"] == 0
    return res


# --------------------------------------------------------------------------- independent float64


def _grid(quant_dtype):
    """(sorted code values float64, their codes) of every finite code of the format."""
    if quant_dtype == "fp8":
        codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
        vals = codes.double()
        keep = ~vals.isnan() & ~((vals == 0) & (torch.arange(256) >= 128))  # drop NaN and -0
        vals, codes = vals[keep], codes[keep]
        bits = codes.view(torch.uint8).to(torch.int64)
    else:
        vals = torch.arange(-128, 128, dtype=torch.float64)
        bits = vals.to(torch.int64)
    order = torch.argsort(vals)
    return vals[order], bits[order]


def nearest_even(v, quant_dtype):
    """``v`` (float64) saturated to the grid's ends, then the nearest grid value; a value
    exactly halfway goes to the code whose last bit is 0 (IEEE ties-to-even for e4m3's
    mantissa, the even integer for int8). Written without frexp or torch.round."""
    vals, bits = _grid(quant_dtype)
    flat = v.reshape(-1).clamp(vals[0], vals[-1])
    hi = torch.searchsorted(vals, flat).clamp(1, len(vals) - 1)
    lo = hi - 1
    d_lo, d_hi = flat - vals[lo], vals[hi] - flat
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (bits[hi] % 2 == 0))
    return torch.where(pick_hi, vals[hi], vals[lo]).reshape(v.shape)


def independent(params, inputs):
    """(codes as float64, residual_out): RMSNorm in float64 from the definition, the sum
    rounded once to the dtype, codes = nearest_even(y / scale)."""
    dtype = inputs["x"].dtype
    r = inputs["x"].double()
    res_out = None
    if params["residual"]:
        res_out = (r + inputs["residual"].double()).to(dtype)
        r = res_out.double()
    ms = (r * r).sum(dim=-1, keepdim=True) / r.shape[-1]
    y = r / torch.sqrt(ms + params["eps"]) * inputs["weight"].double()
    return nearest_even(y / inputs["scale"].double(), params["quant_dtype"]), res_out


@pytest.mark.parametrize(
    "tokens,hidden,dtype,residual,qd,factor",
    [
        (7, 1000, "bfloat16", True, "fp8", 1.0),
        (33, 5120, "float16", False, "fp8", 1.0),
        (5, 1000, "float32", True, "fp8", 0.3),
        (33, 1000, "bfloat16", False, "int8", 1.0),
        (7, 5120, "float16", True, "int8", 0.5),
    ],
)
def test_reference_matches_independent_float64(tokens, hidden, dtype, residual, qd, factor):
    p = params_of(tokens, hidden, dtype, residual=residual, quant_dtype=qd, static_scale_factor=factor)
    inputs, ref = make(p)
    assert len(ref) == (3 if residual else 2)
    assert ref[0].dtype == q.QUANT_TORCH_DTYPES[qd] and ref[0].shape == (tokens, hidden)
    # the static scale is the input, returned as is
    assert ref[1].dtype == torch.float32 and torch.equal(ref[1], inputs["scale"])
    codes, res_out = independent(p, inputs)
    assert torch.equal(ref[0].double(), codes)
    if residual:
        assert torch.equal(ref[2], res_out)
    assert inputs["scale"].shape == (1,) and inputs["scale"].dtype == torch.float32


def test_make_inputs_scale_fits_the_largest_value():
    """factor 1: amax(|y|) / scale is qmax to fp32 rounding; fresh non-zero inputs per seed."""
    for qd in ("fp8", "int8"):
        p = params_of(9, 1000, quant_dtype=qd, residual=True)
        inputs, ref = make(p, seed=3)
        parts = q.reference._recall(ref[0])
        top = float(parts.amax.max()) / float(inputs["scale"])
        assert top == pytest.approx(q.QMAX[qd], rel=1e-5)
        assert ref[0].double().abs().max() == q.QMAX[qd]
        for name in ("x", "residual", "weight"):
            assert bool((inputs[name] != 0).all())
    again, _ = make(p, seed=3)
    other, _ = make(p, seed=4)
    assert torch.equal(again["x"], inputs["x"]) and not torch.equal(other["x"], inputs["x"])


def test_make_inputs_refuses_a_non_positive_factor():
    with pytest.raises(ValueError, match="static_scale_factor"):
        q.FAMILY.make_inputs(OP, params_of(2, 64, static_scale_factor=0.0), DEVICE, 0)


# --------------------------------------------------------------------------- providers vs reference

SHAPES = [(t, h) for h in (1000, 5120) for t in (1, 7, 33)]


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("tokens,hidden", SHAPES)
@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
def test_providers_pass_check(provider, tokens, hidden, dtype, residual):
    p = params_of(tokens, hidden, dtype, residual=residual)
    inputs, ref = make(p)
    out = run(provider, p, inputs)
    assert len(out) == len(ref)
    assert out[0].dtype == torch.float8_e4m3fn and out[0].shape == (tokens, hidden)
    assert torch.equal(out[1], inputs["scale"])  # returned, not recomputed
    res = assert_ok(p, inputs, out, ref)
    if residual:  # the sum is rounded once to the dtype either way
        assert torch.equal(out[2], ref[2])
    if provider == "triton":
        # fp32 math end to end: only fp32-level ties differ from the float64 reference
        assert res.metrics["mismatch_rate"] < 2e-3
    elif dtype == "bfloat16" and tokens * hidden > 5000:
        # HF rounding (norm output rounded to bf16, then the weight product): many tie flips,
        # all inside the window; the check must not need exact codes to pass it
        assert res.metrics["tie_mismatches"] > 0


@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
@pytest.mark.parametrize("tokens,hidden,dtype,residual", [(7, 1000, "bfloat16", True), (33, 5120, "float32", False)])
def test_providers_int8(provider, tokens, hidden, dtype, residual):
    p = params_of(tokens, hidden, dtype, residual=residual, quant_dtype="int8")
    inputs, ref = make(p)
    out = run(provider, p, inputs)
    assert out[0].dtype == torch.int8
    assert_ok(p, inputs, out, ref)


def test_triton_launch_variants():
    """Several rows per tile (ragged last tile), a persistent pipelined grid, arithmetic rounding."""
    p = params_of(9, 1000, residual=True)
    inputs, ref = make(p)
    for cfg in (q.LaunchConfig(4, 4), q.LaunchConfig(2, 2, programs_per_sm=1, stages=2), q.LaunchConfig(4, 1, hw_cvt=False)):
        trial = {k: v.clone() for k, v in inputs.items()}
        codes, scale = q.triton_rms_norm_static_quant(
            trial["x"], trial["weight"], trial["scale"], 1e-6, "fp8", trial["residual"], config=cfg
        )
        assert scale is trial["scale"]
        res = assert_ok(p, inputs, (codes, scale, trial["residual"]), ref)
        assert res.metrics["mismatch_rate"] < 2e-3
        assert torch.equal(trial["residual"], ref[2])


def test_triton_refuses_a_bad_scale():
    x = torch.randn(2, 64, device=DEVICE)
    w = torch.ones(64, device=DEVICE)
    with pytest.raises(ValueError, match="one fp32 element"):
        q.triton_rms_norm_static_quant(x, w, torch.ones(2, device=DEVICE), 1e-6, "fp8")
    with pytest.raises(ValueError, match="one fp32 element"):
        q.triton_rms_norm_static_quant(x, w, torch.ones(1, dtype=torch.float64, device=DEVICE), 1e-6, "fp8")


def test_reference_provider_is_the_reference():
    p = params_of(7, 1000, residual=True)
    inputs, ref = make(p)
    res = assert_ok(p, inputs, run("reference", p, inputs), ref)
    assert res.metrics["mismatch_rate"] == 0 and res.metrics["deq_rel_err"] == res.metrics["ref_deq_rel_err"]


# --------------------------------------------------------------------------- saturation


@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
@pytest.mark.parametrize("qd,residual", [("fp8", True), ("fp8", False), ("int8", True)])
def test_saturating_scale(provider, qd, residual):
    """A scale a quarter of the fitting one: every |y / scale| above qmax clamps to +-qmax
    (a conversion without the clamp would give NaN for fp8, or wrap for int8)."""
    p = params_of(33, 1000, residual=residual, quant_dtype=qd, static_scale_factor=0.25)
    inputs, ref = make(p)
    codes, _ = independent(p, inputs)
    assert torch.equal(ref[0].double(), codes)
    parts = q.reference._recall(ref[0])
    v = parts.real_values()
    qmax, qmin = q.QMAX[qd], q.QMIN[qd]
    over = v > qmax * (1 + 1e-3)
    under = v < qmin * (1 + 1e-3)
    assert over.float().mean() > 0.01 and under.float().mean() > 0.01  # a good share saturates
    assert float(v.abs().max()) > 3.5 * qmax  # up to 4 qmax with factor 1/4
    out = run(provider, p, inputs)
    got = out[0].double()
    assert not bool(got.isnan().any())
    assert bool((got[over] == qmax).all()) and bool((got[under] == qmin).all())
    assert torch.equal(got[over | under], ref[0].double()[over | under])
    res = assert_ok(p, inputs, out, ref)
    assert res.metrics["deq_rel_err"] < 0.05  # against the saturated reference values


def test_check_rejects_unclamped_saturated_codes():
    p = params_of(7, 1000, residual=False, static_scale_factor=0.25)
    inputs, ref = make(p)
    v = q.reference._recall(ref[0]).real_values()
    i = tuple(int(j) for j in torch.nonzero(v > 600)[0].tolist())
    bits = ref[0].clone().view(torch.uint8)
    bits[i] = 0x7F  # NaN, what an unclamped e4m3fn conversion of 600 gives
    assert not check(p, inputs, (bits.view(torch.float8_e4m3fn), ref[1]), ref).ok
    bits = ref[0].clone().view(torch.uint8)
    bits[i] = 0x7D  # 416: one step below the saturated 448, but v is nowhere near a tie
    res = check(p, inputs, (bits.view(torch.float8_e4m3fn), ref[1]), ref)
    assert not res.ok and res.metrics["hard_mismatches"] == 1


# --------------------------------------------------------------------------- the check catches errors


@pytest.fixture(scope="module")
def good_case():
    p = params_of(7, 1000, residual=True)
    inputs, ref = make(p)
    out = run("triton", p, inputs)
    assert_ok(p, inputs, out, ref)
    return p, inputs, out, ref


def test_check_rejects_codes_of_a_scale_off_by_2x(good_case):
    """Codes quantized with 2x the scale, the given scale returned: caught on the codes."""
    p, inputs, out, ref = good_case
    wrong = {**inputs, "scale": inputs["scale"] * 2}
    bad = run("triton", p, wrong)
    res = check(p, inputs, (bad[0], inputs["scale"], bad[2]), ref)
    assert not res.ok and "beyond a rounding tie" in res.message
    assert res.metrics["hard_mismatches"] > 0.5 * bad[0].numel()


def test_check_rejects_a_returned_scale_off_by_2x(good_case):
    p, inputs, out, ref = good_case
    res = check(p, inputs, (out[0], out[1] * 2, out[2]), ref)
    assert not res.ok and "scales" in res.message


def _far_from_tie(ref):
    """An element whose real value lies well inside its rounding interval."""
    v = q.reference._recall(ref[0]).real_values()
    c = ref[0].double()
    ok = (c.abs() > 1) & (c.abs() < 300) & ((v - c).abs() / v.abs() < 0.005)
    return tuple(int(i) for i in torch.nonzero(ok)[0].tolist())


@pytest.mark.parametrize("steps", [1, 2])
def test_check_rejects_a_code_flipped_far_from_a_tie(good_case, steps):
    p, inputs, out, ref = good_case
    i = _far_from_tie(ref)
    bits = out[0].clone().view(torch.uint8)
    b = int(bits[i])
    bits[i] = (b & 0x80) | ((b & 0x7F) + steps)
    res = check(p, inputs, (bits.view(torch.float8_e4m3fn), out[1], out[2]), ref)
    assert not res.ok and res.metrics["hard_mismatches"] == 1 and f"first at {i}" in res.message


def test_check_rejects_wrong_residual_arity_and_dtype(good_case):
    p, inputs, out, ref = good_case
    res_bad = out[2].clone()
    res_bad[3, 5] += 1.0
    assert not check(p, inputs, (out[0], out[1], res_bad), ref).ok
    assert not check(p, inputs, out[:2], ref).ok
    assert not check(p, inputs, (out[0].view(torch.int8), out[1], out[2]), ref).ok


# --------------------------------------------------------------------------- peers refuse what they lack


@pytest.mark.parametrize(
    "provider,axes,reason",
    [
        ("vllm", dict(quant_dtype="int8"), "no fused static int8"),
        ("flashinfer", dict(quant_dtype="int8"), "fp8 only"),
        ("flashinfer", dict(dtype="float32"), "float16 and bfloat16 only"),
    ],
)
def test_peers_refuse_before_importing(provider, axes, reason):
    with pytest.raises(Unsupported, match=reason):
        q.IMPLS[provider][OP](params_of(4, 1024, **axes))


# --------------------------------------------------------------------------- unfused compositions


@pytest.mark.parametrize("parts", [("torch_naive", "torch_naive"), ("triton", "triton")])
@pytest.mark.parametrize("residual", [False, True])
def test_unfused_compositions(parts, residual):
    from normbench.kernels.providers.unfused import compose, quant_part

    prov = compose(*parts)
    p = params_of(7, 1000, residual=residual, static_scale_factor=0.5)
    q_op, q_params = quant_part(OP, p)
    assert q_op == "scaled_quant" and q_params["static_scale"] is True
    inputs, ref = make(p)
    out = prov.make(OP, p)({k: v.clone() for k, v in inputs.items()})
    assert len(out) == len(ref) and torch.equal(out[1], inputs["scale"])
    assert_ok(p, inputs, out, ref)
    if DEVICE.type == "cpu" and parts[0] == "triton":
        assert prov.unsupported(OP, p, DEVICE) == "norm part triton: needs CUDA"
    elif parts[0] == "torch_naive":
        assert prov.unsupported(OP, p, DEVICE) is None


# --------------------------------------------------------------------------- metadata


def test_bytes_model_and_validation():
    info = OPS[OP]
    p = info.complete({"num_tokens": 16, "hidden_size": 4096, "residual": True})
    act = 16 * 4096 * 2
    # x read, weight read, residual read + written, 1-byte codes written, fp32 scale read
    assert info.bytes_moved(p) == act + 4096 * 2 + 2 * act + 16 * 4096 + 4
    assert info.bytes_moved({**p, "residual": False, "dtype": "float32"}) == 2 * act + 4096 * 4 + 16 * 4096 + 4
    assert info.validate(p) is None
    assert "positive" in info.validate({**p, "static_scale_factor": 0})
    assert set(info.axes) == {"residual", "quant_dtype", "static_scale_factor"}
    assert info.axes["quant_dtype"].choices == ("fp8", "int8")


def test_registry_entries_match_the_implementations():
    from normbench.kernels.providers import unfused
    from normbench.registry import PROVIDERS, UNFUSED_OPS, load

    serving = {name for name, e in PROVIDERS.items() if OP in e.ops}
    assert serving == {"reference", "torch_naive", "torch_compile", "triton", "vllm", "flashinfer"}
    for name in serving - {"torch_compile"}:  # torch_compile compiles torch_naive's table
        assert OP in q.IMPLS[name], name
    assert OP in load(PROVIDERS["torch_compile"].target).ops
    assert PROVIDERS["flashinfer"].min_sm[OP] == 89
    assert OP not in PROVIDERS["vllm"].min_sm
    assert OP in UNFUSED_OPS and unfused.OPS == UNFUSED_OPS


def test_suite_loads_and_sweeps_the_saturating_factor():
    from normbench.suite import load_suite

    suite = load_suite(SUITE).suite
    ops = {s.op for s in suite.stages}
    assert ops == {OP}
    main, saturating = suite.stages
    axes = main.sweep.axes()
    assert axes["num_tokens"] == [1, 16, 128, 1024, 4096, 16384] and axes["residual"] == [False, True]
    assert saturating.sweep.axes()["static_scale_factor"] == [0.25]
