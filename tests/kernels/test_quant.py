"""normbench.kernels.quant: inputs, float64 reference, check (tie rule), Triton kernels,
torch providers, and the unfused compositions (normbench.kernels.providers.unfused).

The Triton kernels run under ``TRITON_INTERPRET=1`` on the CPU (conftest.py sets it before
triton is imported; about 15 ms per row there, so the 300-token cases are few). Where the
kernels were already imported in compiled mode and a GPU is present, the same tests run on
the GPU.
"""


import torch

# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

import pytest  # noqa: E402

import normbench.kernels.quant as q  # noqa: E402
from normbench.kernels.base import Tolerance  # noqa: E402
from normbench.kernels.providers._family import Unsupported  # noqa: E402
from normbench.ops import OPS  # noqa: E402

INTERPRETED = "Interpreted" in type(q.triton_kernels._rowquant_kernel).__name__
if not INTERPRETED and not torch.cuda.is_available():
    raise RuntimeError(
        "normbench.kernels.quant was imported in compiled mode without a GPU: TRITON_INTERPRET=1 must be "
        "set before it is imported (run tests/kernels in its own pytest process)"
    )
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
# The suites' default tolerance; the family's check derives its bounds from the dtypes.
TOL = Tolerance(norm_rel=1e-2, rtol=2e-2, atol=1e-2, mismatch_rate=0.02)


def params_of(op, tokens, hidden, dtype="bfloat16", **axes):
    p = OPS[op].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype}) if op in OPS else {
        "num_tokens": tokens, "hidden_size": hidden, "dtype": dtype, "eps": 1e-6,
        "quant_dtype": "fp8", "group_size": 128, "scale_layout": "row_major",
    }
    p.update(axes)
    return p


def make(op, params, seed=7):
    inputs = q.FAMILY.make_inputs(op, params, DEVICE, seed)
    return inputs, q.FAMILY.reference(op, params, inputs)


def run(provider, op, params, inputs):
    """Run a provider on a private copy (providers may write in place), as the runner does."""
    trial = {k: v.clone() for k, v in inputs.items()}
    return q.IMPLS[provider][op](params)(trial)


def check(op, params, inputs, out, ref):
    return q.FAMILY.check(op, params, inputs, out, ref, TOL)


def assert_ok(op, params, inputs, out, ref):
    res = check(op, params, inputs, out, ref)
    assert res.ok, res.message
    assert res.metrics["hard_mismatches"] == 0
    return res


# --------------------------------------------------------------------------- triton vs reference

NORM_QUANT_CASES = [
    # tokens, hidden, quant, residual, scale_ub
    (1, 5120, "fp8", False, False),
    (7, 1536, "int8", True, False),
    (33, 5120, "int8", False, False),
    (33, 1536, "fp8", True, True),
    (7, 5120, "fp8", False, True),
    (300, 1536, "fp8", True, True),
]


@pytest.mark.parametrize("tokens,hidden,qd,residual,ub", NORM_QUANT_CASES)
def test_triton_rms_norm_quant(tokens, hidden, qd, residual, ub):
    p = params_of("rms_norm_quant", tokens, hidden, quant_dtype=qd, residual=residual, scale_ub=ub)
    inputs, ref = make("rms_norm_quant", p)
    out = run("triton", "rms_norm_quant", p, inputs)
    assert len(out) == (3 if residual else 2)
    assert out[1].shape == (tokens, 1) and out[1].dtype == torch.float32
    res = assert_ok("rms_norm_quant", p, inputs, out, ref)
    # fp32 math end to end: only fp32-level ties differ from the float64 reference.
    assert res.metrics["mismatch_rate"] < 2e-3
    # fp32 reductions (sequential in the interpreter's custom-combine reduce): within 2^-16.
    assert res.metrics["scale_max_rel_err"] < q.FP32_SLACK
    if residual:
        assert torch.equal(out[2], ref[2])


def test_scale_ub_clamps_some_rows():
    p = params_of("rms_norm_quant", 33, 1536, scale_ub=True)
    inputs, ref = make("rms_norm_quant", p)
    assert inputs["scale_ub"].dim() == 0 and inputs["scale_ub"].dtype == torch.float32
    clamped = ref[1].squeeze(1) == (inputs["scale_ub"] / 448.0).float()
    # which rows must be clamped, from a float64 RMSNorm of the inputs: amax(|y|) above scale_ub
    x, w = inputs["x"].double(), inputs["weight"].double()
    y = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + p["eps"]) * w
    amax = y.abs().amax(-1)
    expected = amax >= inputs["scale_ub"].double()
    assert torch.equal(clamped, expected)
    assert bool(clamped[amax.argmax()]) and not bool(clamped.all())  # the largest row is, not every row
    # clamped rows saturate: some codes at +-448
    assert bool((ref[0].float().abs() == 448).any())


GROUP_CASES = [
    # tokens, hidden, quant, group, layout, residual
    (1, 5120, "fp8", 64, "col_major", False),
    (7, 1536, "int8", 128, "row_major", True),
    (33, 5120, "fp8", 128, "col_major", True),
    (33, 1536, "int8", 64, "row_major", False),
    (7, 1536, "fp8", 64, "row_major", False),
    (300, 5120, "int8", 64, "col_major", True),
]


@pytest.mark.parametrize("tokens,hidden,qd,group,layout,residual", GROUP_CASES)
def test_triton_rms_norm_group_quant(tokens, hidden, qd, group, layout, residual):
    p = params_of("rms_norm_group_quant", tokens, hidden, quant_dtype=qd, group_size=group,
                  scale_layout=layout, residual=residual)
    inputs, ref = make("rms_norm_group_quant", p)
    out = run("triton", "rms_norm_group_quant", p, inputs)
    groups = hidden // group
    assert out[1].shape == (tokens, groups)
    if layout == "col_major":
        assert out[1].t().is_contiguous() and (tokens == 1 or out[1].stride() == (1, tokens))
    else:
        assert out[1].is_contiguous()
    res = assert_ok("rms_norm_group_quant", p, inputs, out, ref)
    assert res.metrics["mismatch_rate"] < 2e-3
    assert res.metrics["scale_max_rel_err"] < q.FP32_SLACK


SCALED_CASES = [
    # tokens, hidden, quant, static, granularity, dtype
    (7, 5120, "fp8", True, "per_token", "bfloat16"),
    (33, 1536, "int8", True, "per_token", "bfloat16"),
    (33, 5120, "fp8", False, "per_tensor", "bfloat16"),
    (7, 1536, "int8", False, "per_tensor", "float16"),
    (300, 1536, "fp8", False, "per_token", "bfloat16"),
    (33, 5120, "int8", False, "per_token", "float32"),
    (1, 1536, "fp8", False, "per_token", "float16"),
]


@pytest.mark.parametrize("tokens,hidden,qd,static,gran,dtype", SCALED_CASES)
def test_triton_scaled_quant(tokens, hidden, qd, static, gran, dtype):
    p = params_of("scaled_quant", tokens, hidden, dtype, quant_dtype=qd, static_scale=static, scale_granularity=gran)
    inputs, ref = make("scaled_quant", p)
    out = run("triton", "scaled_quant", p, inputs)
    assert out[1].shape == ((1,) if static or gran == "per_tensor" else (tokens, 1))
    res = assert_ok("scaled_quant", p, inputs, out, ref)
    assert res.metrics["mismatch_rate"] < 2e-3
    if static:
        assert torch.equal(out[1], inputs["scale"])


@pytest.mark.parametrize("qd,group,layout,tokens,hidden", [("fp8", 64, "col_major", 33, 1536), ("int8", 128, "row_major", 7, 5120)])
def test_triton_group_quant(qd, group, layout, tokens, hidden):
    p = params_of("group_quant", tokens, hidden, quant_dtype=qd, group_size=group, scale_layout=layout)
    inputs, ref = make("group_quant", p)
    assert_ok("group_quant", p, inputs, run("triton", "group_quant", p, inputs), ref)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_triton_other_dtypes(dtype):
    p = params_of("rms_norm_quant", 7, 1536, dtype, quant_dtype="int8", residual=True)
    inputs, ref = make("rms_norm_quant", p)
    out = run("triton", "rms_norm_quant", p, inputs)
    res = assert_ok("rms_norm_quant", p, inputs, out, ref)
    assert res.metrics["mismatch_rate"] < 1e-3
    p = params_of("rms_norm_group_quant", 7, 1536, dtype, quant_dtype="fp8", group_size=64, scale_layout="col_major")
    inputs, ref = make("rms_norm_group_quant", p)
    assert_ok("rms_norm_group_quant", p, inputs, run("triton", "rms_norm_group_quant", p, inputs), ref)


def test_triton_config_override_rows_per_program():
    """Several rows per tile with a ragged last tile; the residual is updated once."""
    p = params_of("rms_norm_group_quant", 7, 1536, quant_dtype="fp8", group_size=128, residual=True)
    inputs, ref = make("rms_norm_group_quant", p)
    trial = {k: v.clone() for k, v in inputs.items()}
    out = q.triton_rms_norm_group_quant(
        trial["x"], trial["weight"], 1e-6, "fp8", 128, residual=trial["residual"], config=q.LaunchConfig(4, 4)
    )
    assert_ok("rms_norm_group_quant", p, inputs, (*out, trial["residual"]), ref)
    p2 = params_of("scaled_quant", 7, 1536, quant_dtype="int8")
    inputs2, ref2 = make("scaled_quant", p2)
    out2 = q.triton_scaled_quant(inputs2["x"], "int8", config=q.LaunchConfig(2, 2))
    assert_ok("scaled_quant", p2, inputs2, out2, ref2)
    with pytest.raises(ValueError, match="power of two"):
        q.triton_scaled_quant(inputs2["x"], "int8", config=q.LaunchConfig(2, 3))
    with pytest.raises(ValueError, match="exceeds"):
        q.triton_scaled_quant(torch.zeros(2, 8192, device=DEVICE), "int8", config=q.LaunchConfig(8, 8))


# Persistent grids (2 SMs under the interpreter: a program walks several tiles), pipelined
# loops, multi-row per-token tiles (codes stored with the input's vector width) and v3's
# arithmetic rounding; all ragged.
PERSISTENT_CASES = [
    # op, tokens, hidden, axes, config
    ("rms_norm_quant", 9, 1536, dict(quant_dtype="fp8"), q.LaunchConfig(4, 2, programs_per_sm=1, stages=2)),
    ("rms_norm_quant", 9, 1536, dict(quant_dtype="int8", residual=True), q.LaunchConfig(4, 4, programs_per_sm=1, stages=2)),
    ("rms_norm_quant", 7, 5120, dict(quant_dtype="fp8", residual=True, scale_ub=True), q.LaunchConfig(8, 1, programs_per_sm=1)),
    ("rms_norm_group_quant", 9, 1536, dict(quant_dtype="int8", residual=True, group_size=64, scale_layout="col_major"),
     q.LaunchConfig(4, 2, programs_per_sm=2)),
    ("rms_norm_group_quant", 11, 1536, dict(quant_dtype="fp8", group_size=128), q.LaunchConfig(2, 2, programs_per_sm=1, stages=2)),
    ("scaled_quant", 9, 1536, dict(quant_dtype="int8", scale_granularity="per_tensor"), q.LaunchConfig(4, 2, programs_per_sm=1, stages=2)),
    ("scaled_quant", 9, 1536, dict(quant_dtype="fp8", static_scale=True), q.LaunchConfig(2, 4, programs_per_sm=1)),
    ("rms_norm_quant", 5, 1536, dict(quant_dtype="fp8"), q.LaunchConfig(4, 2, hw_cvt=False)),
    ("rms_norm_quant", 5, 1536, dict(quant_dtype="fp8", residual=True), q.LaunchConfig(4, 1, hw_cvt=False)),
]


@pytest.mark.parametrize("op,tokens,hidden,axes,cfg", PERSISTENT_CASES, ids=lambda v: v.short() if isinstance(v, q.LaunchConfig) else None)
def test_triton_launch_variants(op, tokens, hidden, axes, cfg):
    p = params_of(op, tokens, hidden, **axes)
    p["launch_config"] = cfg
    inputs, ref = make(op, p)
    out = run("triton", op, p, inputs)
    res = assert_ok(op, p, inputs, out, ref)
    assert res.metrics["mismatch_rate"] < (1e-2 if op == "scaled_quant" else 2e-3)
    if len(out) == 3:
        assert torch.equal(out[2], ref[2])


def test_int8_scale_ub_clamps_to_minus_128():
    """int8 codes are the low byte of v + 1.5 * 2^23: the clamp must hold where scale_ub cuts."""
    p = params_of("rms_norm_quant", 33, 1536, quant_dtype="int8", scale_ub=True)
    for seed in range(9, 60):  # a draw whose clamped rows reach -128 (seed 9 on the CPU)
        inputs, ref = make("rms_norm_quant", p, seed=seed)
        if bool((ref[0] == -128).any()):
            break
    out = run("triton", "rms_norm_quant", p, inputs)
    assert_ok("rms_norm_quant", p, inputs, out, ref)
    assert bool((out[0] == 127).any()) and bool((out[0] == -128).any())
    assert torch.equal(out[0] == -128, ref[0] == -128)


def test_pdl_refused_where_unsupported():
    x = torch.randn(4, 1024, device=DEVICE)
    if q.device_facts(x.device).pdl:
        codes, _ = q.triton_scaled_quant(x, "fp8", config=q.LaunchConfig(4, 1, pdl=True))
        assert codes.shape == x.shape
    else:
        with pytest.raises(ValueError, match="programmatic dependent launch"):
            q.triton_scaled_quant(x, "fp8", config=q.LaunchConfig(4, 1, pdl=True))
    with pytest.raises(ValueError, match="programs_per_sm"):
        q.triton_scaled_quant(x, "fp8", config=q.LaunchConfig(4, 1, stages=2))


def test_triton_tuple_reduce_path():
    """The GPU default (sum of squares and amax in one two-operand reduction), forced here."""
    p = params_of("rms_norm_quant", 2, 1536, quant_dtype="fp8", residual=True)
    inputs, ref = make("rms_norm_quant", p)
    trial = {k: v.clone() for k, v in inputs.items()}
    out = q.triton_rms_norm_quant(
        trial["x"], trial["weight"], 1e-6, "fp8", trial["residual"], config=q.LaunchConfig(4, 2, tuple_reduce=True)
    )
    res = assert_ok("rms_norm_quant", p, inputs, (*out, trial["residual"]), ref)
    assert res.metrics["mismatch_rate"] < 2e-3


@pytest.mark.parametrize(
    "op,axes,reason",
    [
        ("rms_norm_quant", dict(quant_dtype="int8", scale_ub=True), "scale_ub is fp8 only"),
        ("scaled_quant", dict(quant_dtype="int8", scale_granularity="per_tensor"), "no dynamic per-tensor int8"),
        ("group_quant", dict(quant_dtype="int8", scale_layout="col_major"), "row-major scales only"),
    ],
)
def test_vllm_refuses_what_it_lacks(op, axes, reason):
    with pytest.raises(Unsupported, match=reason):
        q.IMPLS["vllm"][op](params_of(op, 4, 1024, **axes))


def test_default_config_table_and_fallback():
    # the table: 2-byte activations, keyed by (kind, residual, next_pow2(hidden))
    for (kind, residual, bucket), rows in q.TUNED.items():
        assert kind in q.KINDS and bucket & (bucket - 1) == 0
        bounds = [b for b, _ in rows]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds) and bounds[-1] == 2**31 - 1
        for _, cfg in rows:
            assert cfg.rows_per_program & (cfg.rows_per_program - 1) == 0
            assert cfg.rows_per_program * bucket <= q.MAX_BLOCK
            assert not cfg.stages > 1 or cfg.programs_per_sm
        # the first row whose bound covers num_tokens; PDL only where the device has it
        for t in (1, bounds[0], min(bounds[0] + 1, bounds[-1]), 10**6):
            want = next(c for b, c in rows if t <= b)
            got = q.default_config(t, bucket, 2, kind, residual, pdl=True)
            assert got == want
            assert not q.default_config(t, bucket, 2, kind, residual, pdl=False).pdl
        # a hidden size in the same bucket borrows the table
        assert q.default_config(4096, bucket - 64, 2, kind, residual) == q.default_config(4096, bucket, 2, kind, residual)
    # untuned: the formula (16 elements per thread up to 1024 tokens, 64 bytes above, >= 2 warps)
    assert q.default_config(4096, 4096, 4, "rms_norm_quant") == q.formula_config(4096, 4096, 4)
    assert q.formula_config(1, 4096, 2) == q.LaunchConfig(8, 1)
    assert q.formula_config(4096, 4096, 2) == q.LaunchConfig(4, 1)
    assert q.formula_config(4096, 8192, 2, pdl=True) == q.LaunchConfig(8, 1, pdl=True)
    assert q.formula_config(16384, 1024, 2).num_warps == 2
    assert q.formula_config(1, 32768, 4).num_warps == 32
    # above 1024 tokens: 64 bytes of input per thread (32 bf16 or 16 fp32 elements)
    assert q.formula_config(4096, 8192, 4) == q.LaunchConfig(16, 1)
    assert q.formula_config(1024, 8192, 4) == q.formula_config(1024, 8192, 2) == q.LaunchConfig(16, 1)
    assert q.default_config(16, 16384, 2, "scaled_quant") == q.formula_config(16, 16384, 2)
    with pytest.raises(ValueError):
        q.default_config(16, 2048, 2, "nvfp4")
    with pytest.raises(Unsupported):
        q.IMPLS["triton"]["rms_norm_quant"](params_of("rms_norm_quant", 1, 65536))


def test_launch_config_names():
    c = q.LaunchConfig(8, 2, programs_per_sm=4, stages=2, pdl=True, hw_cvt=False)
    assert c.short() == "w8.r2.p4.s2.pdl.sw_cvt"
    assert c.literal() == "LaunchConfig(8, 2, programs_per_sm=4, stages=2, pdl=True, hw_cvt=False)"
    assert eval(c.literal(), {"LaunchConfig": q.LaunchConfig}) == c
    assert q.LaunchConfig(4).literal() == "LaunchConfig(4, 1)"


# --------------------------------------------------------------------------- torch_naive


@pytest.mark.parametrize(
    "op,axes",
    [
        ("rms_norm_quant", dict(quant_dtype="fp8", residual=True, scale_ub=True)),
        ("rms_norm_quant", dict(quant_dtype="int8", residual=False)),
        ("rms_norm_group_quant", dict(quant_dtype="int8", group_size=64, scale_layout="col_major", residual=True)),
        ("rms_norm_group_quant", dict(quant_dtype="fp8", group_size=128, scale_layout="row_major")),
        ("scaled_quant", dict(quant_dtype="fp8", static_scale=True)),
        ("scaled_quant", dict(quant_dtype="int8", scale_granularity="per_tensor")),
        ("scaled_quant", dict(quant_dtype="fp8", scale_granularity="per_token")),
        ("group_quant", dict(quant_dtype="fp8", group_size=64, scale_layout="col_major")),
    ],
)
@pytest.mark.parametrize("tokens,hidden,dtype", [(33, 5120, "bfloat16"), (300, 1536, "float16"), (7, 1536, "float32")])
def test_torch_naive(op, axes, tokens, hidden, dtype):
    p = params_of(op, tokens, hidden, dtype, **axes)
    inputs, ref = make(op, p)
    out = run("torch_naive", op, p, inputs)
    res = assert_ok(op, p, inputs, out, ref)
    if p.get("scale_layout") == "col_major" and tokens > 1:
        assert out[1].stride() == (1, tokens)
    # HF rounding of the norm output: more tie mismatches than ours, all within the window.
    if op in q.NORM_OPS and dtype == "bfloat16":
        assert res.metrics["mismatch_rate"] > 1e-3


def test_reference_provider_is_the_reference():
    p = params_of("rms_norm_group_quant", 7, 1536, group_size=64, residual=True)
    inputs, ref = make("rms_norm_group_quant", p)
    out = run("reference", "rms_norm_group_quant", p, inputs)
    res = assert_ok("rms_norm_group_quant", p, inputs, out, ref)
    assert res.metrics["mismatch_rate"] == 0 and res.metrics["scale_max_rel_err"] == 0


# --------------------------------------------------------------------------- reference rules


def test_round_e4m3_matches_torch_rne():
    grid = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).double()
    grid = grid[~grid.isnan()].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    v = torch.cat([grid, mids, torch.linspace(-448, 448, 10001, dtype=torch.float64)])
    ours = q.quantize_f64(v, "fp8")
    assert torch.equal(ours.double(), v.float().to(torch.float8_e4m3fn).double())
    # ties go to the even mantissa: 17 lies between 16 and 18
    assert q.quantize_f64(torch.tensor([17.0, 19.0, -17.0], dtype=torch.float64), "fp8").double().tolist() == [16, 20, -16]


def test_int8_rounding_and_saturation():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 127.4, 200.0, -128.4, -300.0], dtype=torch.float64)
    assert q.quantize_f64(v, "int8").tolist() == [0, 2, 2, 0, -2, 126, 127, 127, -128, -128]


# --------------------------------------------------------------------------- edge cases


def _zero_row(op, inputs):
    inputs["x"][2].zero_()
    if "residual" in inputs:
        inputs["residual"][2].zero_()


@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
@pytest.mark.parametrize(
    "op,axes",
    [
        ("rms_norm_quant", dict(quant_dtype="fp8", residual=True)),
        ("rms_norm_quant", dict(quant_dtype="int8")),
        ("rms_norm_group_quant", dict(quant_dtype="fp8", group_size=64, scale_layout="col_major", residual=True)),
        ("rms_norm_group_quant", dict(quant_dtype="int8", group_size=128)),
        ("scaled_quant", dict(quant_dtype="fp8")),
        ("scaled_quant", dict(quant_dtype="int8")),
    ],
)
def test_zero_row(provider, op, axes):
    """amax 0: scale = min_scale (vLLM's min_scaling_factor), codes 0, no NaN/Inf."""
    p = params_of(op, 5, 1536, **axes)
    inputs = q.FAMILY.make_inputs(op, p, DEVICE, 3)
    _zero_row(op, inputs)
    ref = q.FAMILY.reference(op, p, inputs)
    assert torch.all(ref[0][2].float() == 0)
    assert torch.all(ref[1][2] == q.MIN_SCALE[p["quant_dtype"]])
    out = run(provider, op, p, inputs)
    assert torch.isfinite(out[1]).all()
    assert torch.all(out[0][2].float() == 0)
    assert_ok(op, p, inputs, out, ref)


@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
@pytest.mark.parametrize("qd", ["fp8", "int8"])
def test_all_zero_tensor_per_tensor(provider, qd):
    p = params_of("scaled_quant", 3, 1536, quant_dtype=qd, scale_granularity="per_tensor")
    inputs = {"x": torch.zeros(3, 1536, dtype=torch.bfloat16, device=DEVICE)}
    ref = q.FAMILY.reference("scaled_quant", p, inputs)
    out = run(provider, "scaled_quant", p, inputs)
    assert torch.isfinite(out[1]).all() and torch.all(out[0].float() == 0)
    assert_ok("scaled_quant", p, inputs, out, ref)


def test_zero_row_accepts_vllm_int8_scale_zero_but_not_nan():
    """vLLM's dynamic_scaled_int8_quant writes scale 0 for a zero row (codes 0): accepted."""
    p = params_of("scaled_quant", 4, 1536, quant_dtype="int8")
    inputs = q.FAMILY.make_inputs("scaled_quant", p, DEVICE, 5)
    inputs["x"][1].zero_()
    ref = q.FAMILY.reference("scaled_quant", p, inputs)
    scales = ref[1].clone()
    scales[1] = 0.0
    assert check("scaled_quant", p, inputs, (ref[0].clone(), scales), ref).ok
    scales[1] = float("nan")
    assert not check("scaled_quant", p, inputs, (ref[0].clone(), scales), ref).ok


@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
@pytest.mark.parametrize("qd", ["fp8", "int8"])
def test_all_equal_rows(provider, qd):
    """Constant rows: every code is +-qmax (norm ops: with weight 1 the output is constant too)."""
    qmax = q.QMAX[qd]
    p = params_of("rms_norm_quant", 4, 1536, quant_dtype=qd)
    inputs = q.FAMILY.make_inputs("rms_norm_quant", p, DEVICE, 1)
    inputs["x"] = torch.tensor([1.5, -0.25, 3.0, 7.0], dtype=torch.bfloat16, device=DEVICE)[:, None].repeat(1, 1536)
    inputs["weight"] = torch.ones(1536, dtype=torch.bfloat16, device=DEVICE)
    ref = q.FAMILY.reference("rms_norm_quant", p, inputs)
    assert torch.all(ref[0].float().abs() == qmax)
    out = run(provider, "rms_norm_quant", p, inputs)
    assert torch.all(out[0].float().abs() == qmax)
    assert_ok("rms_norm_quant", p, inputs, out, ref)

    p = params_of("scaled_quant", 4, 1536, quant_dtype=qd)
    x = inputs["x"].clone()
    ref = q.FAMILY.reference("scaled_quant", p, {"x": x})
    out = run(provider, "scaled_quant", p, {"x": x})
    assert torch.equal(out[0].float(), ref[0].float()) and torch.all(out[0].float().abs() == qmax)
    assert_ok("scaled_quant", p, {"x": x}, out, ref)


@pytest.mark.parametrize("provider", ["triton", "torch_naive"])
@pytest.mark.parametrize("qd", ["fp8", "int8"])
def test_saturation_static_scale(provider, qd):
    """A static scale 4x too small: |x / scale| up to 4 qmax, clamped to [-448, 448] / [-128, 127]."""
    p = params_of("scaled_quant", 7, 1536, quant_dtype=qd, static_scale=True)
    inputs = q.FAMILY.make_inputs("scaled_quant", p, DEVICE, 2)
    inputs["scale"] = inputs["scale"] / 4
    ref = q.FAMILY.reference("scaled_quant", p, inputs)
    codes = ref[0].float()
    assert codes.max() == q.QMAX[qd] and codes.min() == q.QMIN[qd]
    out = run(provider, "scaled_quant", p, inputs)
    assert out[0].float().max() == q.QMAX[qd] and out[0].float().min() == q.QMIN[qd]
    res = assert_ok("scaled_quant", p, inputs, out, ref)
    assert res.metrics["deq_rel_err"] < 0.05


def test_group_hidden_not_multiple_is_rejected_at_validation():
    p = OPS["rms_norm_group_quant"].complete({"num_tokens": 4, "hidden_size": 1000, "group_size": 128})
    msg = OPS["rms_norm_group_quant"].validate(p)
    assert msg and "not a multiple of group_size 128" in msg
    assert OPS["rms_norm_group_quant"].validate({**p, "hidden_size": 1024}) is None
    with pytest.raises(Unsupported):
        q.IMPLS["triton"]["rms_norm_group_quant"](p)


# --------------------------------------------------------------------------- the check catches errors


@pytest.fixture(scope="module")
def group_case():
    p = params_of("rms_norm_group_quant", 7, 1536, quant_dtype="fp8", group_size=64, residual=True)
    inputs, ref = make("rms_norm_group_quant", p)
    out = run("triton", "rms_norm_group_quant", p, inputs)
    assert_ok("rms_norm_group_quant", p, inputs, out, ref)
    return p, inputs, out, ref


def _far_from_tie(ref, inputs, p, op="rms_norm_group_quant"):
    """An element whose real value is well inside its rounding interval."""
    parts = q.reference._recall(ref[0])
    v = parts.real_values()
    c = ref[0].double()
    dist = (v - c).abs() / v.abs().clamp(min=1e-30)
    ok = (c.abs() > 1) & (c.abs() < 300) & (dist < 0.005)
    return tuple(int(i) for i in torch.nonzero(ok)[0].tolist())


def _shift(codes, idx, steps):
    bits = codes.clone().view(torch.uint8)
    b = int(bits[idx])
    mag, sign = b & 0x7F, b & 0x80
    bits[idx] = sign | (mag + steps)
    return bits.view(torch.float8_e4m3fn)


def test_check_rejects_code_two_steps_off(group_case):
    p, inputs, out, ref = group_case
    i = _far_from_tie(ref, inputs, p)
    bad = (_shift(out[0], i, 2), out[1], out[2])
    res = check("rms_norm_group_quant", p, inputs, bad, ref)
    assert not res.ok and "beyond a rounding tie" in res.message and res.metrics["hard_mismatches"] == 1


def test_check_rejects_one_step_away_from_a_tie(group_case):
    p, inputs, out, ref = group_case
    i = _far_from_tie(ref, inputs, p)
    res = check("rms_norm_group_quant", p, inputs, (_shift(out[0], i, 1), out[1], out[2]), ref)
    assert not res.ok and res.metrics["hard_mismatches"] == 1


def test_check_rejects_scaled_scales(group_case):
    p, inputs, out, ref = group_case
    res = check("rms_norm_group_quant", p, inputs, (out[0], out[1] * 1.1, out[2]), ref)
    assert not res.ok and "scales" in res.message


def test_check_rejects_nan_code_and_wrong_layout(group_case):
    p, inputs, out, ref = group_case
    codes = out[0].clone().view(torch.uint8)
    codes[0, 0] = 0x7F  # e4m3fn NaN
    assert not check("rms_norm_group_quant", p, inputs, (codes.view(torch.float8_e4m3fn), out[1], out[2]), ref).ok
    p_col = {**p, "scale_layout": "col_major"}
    res = check("rms_norm_group_quant", p_col, inputs, out, q.FAMILY.reference("rms_norm_group_quant", p_col, inputs))
    assert not res.ok and "col_major" in res.message


def test_check_rejects_wrong_residual_and_arity(group_case):
    p, inputs, out, ref = group_case
    res_bad = out[2].clone()
    res_bad[3, 5] += 1.0
    assert not check("rms_norm_group_quant", p, inputs, (out[0], out[1], res_bad), ref).ok
    assert not check("rms_norm_group_quant", p, inputs, out[:2], ref).ok
    assert not check("rms_norm_group_quant", p, inputs, (out[0].view(torch.int8), out[1], out[2]), ref).ok


def test_check_int8_one_step_rule():
    p = params_of("rms_norm_quant", 7, 1536, "float16", quant_dtype="int8")
    inputs, ref = make("rms_norm_quant", p)
    parts = q.reference._recall(ref[0])
    v = parts.real_values()
    frac = (v - v.floor() - 0.5).abs()
    far = tuple(int(i) for i in torch.nonzero((frac > 0.3) & (v.abs() < 100))[0].tolist())
    codes = ref[0].clone()
    codes[far] += 1
    assert not check("rms_norm_quant", p, inputs, (codes, ref[1]), ref).ok
    # a flip at an exact tie of the reference values is accepted
    near = tuple(int(i) for i in torch.nonzero(frac < 1e-4)[0].tolist()) if bool((frac < 1e-4).any()) else None
    if near is not None:
        codes = ref[0].clone()
        codes[near] += 1 if v[near] > ref[0][near].double() else -1
        assert check("rms_norm_quant", p, inputs, (codes, ref[1]), ref).ok


def test_check_in_row_chunks(group_case, monkeypatch):
    """Large cases are checked in row chunks: same metrics, a bad code in a later chunk found."""
    p, inputs, out, ref = group_case
    whole = check("rms_norm_group_quant", p, inputs, out, ref).metrics
    real = q.reference._row_chunks
    monkeypatch.setattr(q.reference, "_row_chunks", lambda t, h, elems=1 << 22: real(t, h, elems=2 * h))
    assert len(q.reference._row_chunks(7, 1536)) == 4
    chunked = check("rms_norm_group_quant", p, inputs, out, ref).metrics
    for k in ("mismatch_rate", "hard_mismatches", "max_code_step", "scale_max_rel_err"):
        assert chunked[k] == whole[k]
    assert chunked["deq_rel_err"] == pytest.approx(whole["deq_rel_err"], rel=1e-9)
    parts = q.reference._recall(ref[0])
    v = parts.real_values()
    c = ref[0].double()
    ok = (c.abs() > 1) & ((v - c).abs() / v.abs() < 0.005)
    ok[:6] = False  # the last chunk
    i = tuple(int(j) for j in torch.nonzero(ok)[0].tolist())
    res = check("rms_norm_group_quant", p, inputs, (_shift(out[0], i, 2), out[1], out[2]), ref)
    assert not res.ok and f"first at {i}" in res.message


def test_check_recomputes_without_cached_reference(group_case):
    p, inputs, out, ref = group_case
    ref_copy = tuple(t.clone() for t in ref)  # not in the cache: recomputed from inputs
    assert q.reference._recall(ref_copy[0]) is None
    assert check("rms_norm_group_quant", p, inputs, out, ref_copy).ok


# --------------------------------------------------------------------------- unfused compositions


def _naive_norm_provider():
    """A stand-in for the rmsnorm family's torch_naive rms_norm (HF formula)."""
    from normbench.kernels.base import Provider

    class Norm(Provider):
        name = "stub_norm"

        def __init__(self):
            self.ops = {"rms_norm": self._make}

        @staticmethod
        def _make(params):
            def fn(inputs):
                y, r = q.impls._naive_norm(inputs["x"], inputs["weight"], params["eps"], inputs.get("residual"))
                return (y, r) if params["residual"] else (y,)

            return fn

    return Norm()


def _quant_provider():
    from normbench.kernels.base import Provider

    class Quant(Provider):
        name = "stub_quant"

        def __init__(self):
            self.ops = q.IMPLS["torch_naive"]

    return Quant()


@pytest.fixture
def stub_parts(monkeypatch):
    import normbench.registry as reg

    q.IMPLS  # noqa: B018 - assemble the real table (it loads every provider's target) before the stubs join
    entry = reg.ProviderEntry("stub_a", "stub:norm", ("rms_norm",), (), "", "")
    monkeypatch.setitem(reg.PROVIDERS, "stub_a", entry)
    monkeypatch.setitem(reg.PROVIDERS, "stub_b", reg.ProviderEntry("stub_b", "stub:quant", (), (), "", ""))
    real_load = reg.load
    parts = {"stub:norm": _naive_norm_provider(), "stub:quant": _quant_provider()}
    monkeypatch.setattr(reg, "load", lambda target: parts.get(target) or real_load(target))


@pytest.mark.parametrize(
    "op,axes",
    [
        ("rms_norm_quant", dict(quant_dtype="fp8", residual=True, scale_ub=True)),
        ("rms_norm_quant", dict(quant_dtype="int8")),
        ("rms_norm_group_quant", dict(quant_dtype="fp8", group_size=64, scale_layout="col_major", residual=True)),
        ("rms_norm_group_quant", dict(quant_dtype="int8", group_size=128)),
    ],
)
def test_unfused_composition_logic(stub_parts, op, axes):
    from normbench.kernels.providers.unfused import compose

    prov = compose("stub_a", "stub_b")
    assert prov.name == "unfused[norm=stub_a,quant=stub_b]"
    assert prov.unavailable() is None
    p = params_of(op, 33, 1536, **axes)
    assert prov.unsupported(op, p, DEVICE) is None
    inputs, ref = make(op, p)
    out = prov.make(op, p)({k: v.clone() for k, v in inputs.items()})
    assert len(out) == len(ref)
    assert_ok(op, p, inputs, out, ref)
    assert "has no scaled_quant" in prov.unsupported("scaled_quant", p, DEVICE)


def test_unfused_unavailable_names_the_part(monkeypatch):
    import normbench.registry as reg
    from normbench.errors import UnknownNameError
    from normbench.kernels.providers.unfused import compose

    monkeypatch.setitem(
        reg.PROVIDERS, "ghost", reg.ProviderEntry("ghost", "ghost_mod:P", ("rms_norm",), ("ghost_pkg_xyz",), "pip install ghost", "")
    )
    why = compose("ghost", "torch_naive").unavailable()
    assert why and "norm part" in why and "pip install ghost" in why
    why = compose("torch_naive", "ghost").unavailable()
    assert why and "quant part" in why
    with pytest.raises(UnknownNameError):
        compose("torch_naiv", "torch_naive")


def _families_import():
    try:
        import normbench.kernels.nvfp4  # noqa: F401
        import normbench.kernels.rmsnorm  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _families_import(), reason="the rmsnorm / nvfp4 families are not importable yet")
@pytest.mark.parametrize(
    "op,axes",
    [
        ("rms_norm_quant", dict(quant_dtype="fp8", residual=True)),
        ("rms_norm_group_quant", dict(quant_dtype="int8", group_size=64, scale_layout="col_major")),
    ],
)
def test_unfused_torch_naive_both(op, axes):
    from normbench.kernels.providers.unfused import compose

    prov = compose("torch_naive", "torch_naive")
    assert prov.unavailable() is None
    p = params_of(op, 33, 1536, **axes)
    assert prov.unsupported(op, p, DEVICE) is None
    inputs, ref = make(op, p)
    out = prov.make(op, p)({k: v.clone() for k, v in inputs.items()})
    assert_ok(op, p, inputs, out, ref)


@pytest.mark.skipif(not _families_import(), reason="the rmsnorm / nvfp4 families are not importable yet")
def test_unfused_triton_parts_run_here():
    """triton as both parts (the provider needs CUDA for the runner; the factories run here)."""
    from normbench.kernels.providers.unfused import compose

    prov = compose("triton", "triton")
    p = params_of("rms_norm_group_quant", 7, 1536, quant_dtype="fp8", group_size=128, residual=True)
    inputs, ref = make("rms_norm_group_quant", p)
    out = prov.make("rms_norm_group_quant", p)({k: v.clone() for k, v in inputs.items()})
    assert_ok("rms_norm_group_quant", p, inputs, out, ref)
    if DEVICE.type == "cpu":
        assert prov.unsupported("rms_norm_group_quant", p, DEVICE) == "norm part triton: needs CUDA"
