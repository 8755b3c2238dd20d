"""NVFP4 family: format helpers, reference, check, Triton kernel and torch providers.

Without a GPU the Triton kernel runs under ``TRITON_INTERPRET=1`` on the CPU (set here
before the kernels import, as ``tests/conftest.py`` does); with one, the same tests run
the compiled kernel on it. ``round_norm=True`` is asserted bit-exact with the reference
under the interpreter; on a GPU (other float32 reduction order) near-tie flips are
allowed at a rate below 1e-4.
"""

from __future__ import annotations


import torch

# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

import pytest  # noqa: E402

from normbench.kernels import nvfp4 as F  # noqa: E402
from normbench.kernels._triton import interpreting  # noqa: E402
from normbench.kernels.base import Tolerance  # noqa: E402
from normbench.ops import OPS  # noqa: E402

INTERPRETED = interpreting()
if not INTERPRETED and not torch.cuda.is_available():
    raise RuntimeError("normbench.kernels.nvfp4 was imported in compiled mode without a GPU: "
                       "TRITON_INTERPRET=1 must be set before it is imported")
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CPU = torch.device("cpu")
OP = "rms_norm_nvfp4_quant"
OP_RES = "fused_add_rms_norm_nvfp4_quant"


def params(m, n, dtype="bfloat16", residual=False, **kw):
    p = {"num_tokens": m, "hidden_size": n, "dtype": dtype, "eps": 1e-6, "residual": residual}
    p.update(kw)
    return p


def tol(dtype="bfloat16") -> Tolerance:
    return F.DEFAULT_TOLERANCES[dtype]


def run_check(p, inputs, out, ref=None):
    op = OP_RES if p["residual"] else OP
    ref = ref if ref is not None else F.FAMILY.reference(op, p, inputs)
    return F.FAMILY.check(op, p, inputs, out, ref, tol(p["dtype"]))


def with_scale(inputs, p):
    """Recalibrate global_scale after editing x / weight / residual."""
    inputs["global_scale"] = F.calibrated_global_scale(
        inputs["x"], inputs["weight"], inputs.get("residual"), p["eps"]
    )
    return inputs


# ----------------------------------------------------------------------------- swizzle
@pytest.mark.parametrize("m", [1, 33, 128, 300])
@pytest.mark.parametrize("n", [48, 1536, 5120])
def test_swizzle_round_trip_and_zero_padding(m, n):
    s = torch.randint(1, 255, (m, n // 16), dtype=torch.uint8)
    buf = F.swizzle_scales(s)
    assert tuple(buf.shape) == F.scale_shape(m, n)
    assert torch.equal(F.unswizzle_scales(buf, m, n), s)
    assert int((buf != 0).sum()) == s.numel()  # everything else is zero padding
    flat = buf.reshape(-1)
    for row, k in [(0, 0), (m - 1, n // 16 - 1), (m // 2, (n // 16) // 3)]:
        assert flat[F.swizzle_offset(row, k, n)] == s[row, k]
    f8 = s.view(torch.float8_e4m3fn)
    assert torch.equal(F.unswizzle_scales(F.swizzle_scales(f8), m, n).view(torch.uint8), s)


def test_swizzle_known_positions():
    # n=5120: 320 scales per row, k_tiles=80. (33, 5): tile (0, 1) -> 512, (33%32)*16=16,
    # (33//32)*4=4, 5%4=1 -> 533.
    assert F.swizzle_offset(33, 5, 5120) == 533
    # n=1536: 96 scales, k_tiles=24. (130, 2): tile (1, 0) -> 24*512=12288, 2*16, 0, 2 -> 12322.
    assert F.swizzle_offset(130, 2, 1536) == 12322
    assert F.swizzle_offset(0, 0, 64) == 0
    assert F.swizzle_offset(1, 0, 64) == 16
    assert F.swizzle_offset(32, 0, 64) == 4
    assert F.swizzle_offset(0, 3, 64) == 3
    s = torch.zeros((131, 96), dtype=torch.uint8)
    s[130, 2] = 7
    s[33, 5] = 9
    flat = F.swizzle_scales(s).reshape(-1)
    assert flat[12322] == 7 and flat[F.swizzle_offset(33, 5, 1536)] == 9
    with pytest.raises(ValueError):
        F.unswizzle_scales(torch.zeros(10, dtype=torch.uint8), 1, 64)


# ----------------------------------------------------------------------------- rounding
def test_round_e4m3_matches_torch_rne_and_saturates():
    vals = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float64)
    mids = (vals[1:] + vals[:-1]) / 2
    probes = torch.cat([vals, mids, mids * (1 + 1e-6), mids * (1 - 1e-6), torch.rand(2000, dtype=torch.float64) * 500])
    got = F.round_e4m3(probes)
    want = torch.clamp(probes, max=448).to(torch.float32).to(torch.float8_e4m3fn).to(torch.float64)
    assert torch.equal(got, want)
    assert F.round_e4m3(torch.tensor([463.9, 464.0, 1e9], dtype=torch.float64)).tolist() == [448.0] * 3
    # ties to even: 1.5 * 2**-9 (between codes 1 and 2) -> code 2; 17 (16, 18) -> 16
    assert F.round_e4m3(torch.tensor([1.5 * 2**-9, 17.0], dtype=torch.float64)).tolist() == [2**-8, 16.0]


def test_round_to_format_is_exact_rne():
    # 1 + 2**-8 + 2**-30 is just above a bf16 tie: exact RNE rounds up; torch's
    # float64 -> bfloat16 goes through float32 and rounds down.
    x = torch.tensor([1.0 + 2**-8 + 2**-30, 1.0 + 2**-8, 1.0 + 3 * 2**-8], dtype=torch.float64)
    assert F.round_to_format(x, torch.bfloat16).tolist() == [1.0 + 2**-7, 1.0, 1.0 + 2**-6]
    h = torch.tensor([2.0**-24 * 0.5, 2.0**-24 * 1.5, 65504.0], dtype=torch.float64)  # fp16 subnormals
    assert F.round_to_format(h, torch.float16).tolist() == [0.0, 2.0**-23, 65504.0]


def test_encode_e2m1_thresholds_ties_and_saturation():
    v = torch.tensor(
        [0.0, 0.25, 0.2501, 0.75, 0.7499, 1.25, 1.2501, 1.75, 2.5, 2.51, 3.5, 5.0, 5.01, 6.0, 7.0, 1e30]
    )
    want = [0, 0, 1, 2, 1, 2, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7]
    assert F.encode_e2m1(v).tolist() == want
    assert F.encode_e2m1(-v[1:]).tolist() == [w | 8 for w in want[1:]]
    assert F.encode_e2m1(torch.tensor([-0.1, -0.0])).tolist() == [8, 0]  # small negatives keep the sign
    assert F.decode_e2m1(torch.arange(16)).tolist() == [*F.E2M1_VALUES, -0.0, *[-x for x in F.E2M1_VALUES[1:]]]


def test_pack_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4, 15, 0]])
    packed = F.pack_codes(codes)
    assert packed.tolist() == [[0x21, 0x43, 0x0F]]
    assert torch.equal(F.unpack_codes(packed), codes)


# ----------------------------------------------------------------------------- the family
def test_make_inputs_and_calibrated_global_scale():
    p = params(5, 64, residual=True)
    inp = F.FAMILY.make_inputs(OP_RES, p, CPU, seed=3)
    assert set(inp) == {"x", "weight", "residual", "global_scale"}
    assert inp["global_scale"].dtype == torch.float32 and inp["global_scale"].shape == (1,)
    _, y = F.reference._norm64(inp["x"], inp["weight"], inp["residual"], p["eps"])
    assert inp["global_scale"].item() == pytest.approx(448 * 6 / y.abs().max().item(), rel=1e-6)
    again = F.FAMILY.make_inputs(OP_RES, p, CPU, seed=3)
    assert torch.equal(again["x"], inp["x"]) and not torch.equal(
        F.FAMILY.make_inputs(OP_RES, p, CPU, seed=4)["x"], inp["x"]
    )
    assert not (inp["x"] == 0).all()


def test_reference_outputs_shapes_and_self_check():
    p = params(3, 80, residual=True)
    inp = F.FAMILY.make_inputs(OP_RES, p, CPU, seed=0)
    ref = F.FAMILY.reference(OP_RES, p, inp)
    assert ref[0].dtype == torch.uint8 and ref[0].shape == (3, 40)
    assert ref[1].dtype == torch.float8_e4m3fn and ref[1].shape == (128, 8)
    assert ref[2].dtype == torch.bfloat16 and ref[2].shape == (3, 80)
    res = F.FAMILY.check(OP_RES, p, inp, ref, ref, tol())
    assert res.ok, res.message
    assert res.metrics["mismatch_rate"] == 0 and res.metrics["dequant_rel_err"] < 0.15
    # a copy of the reference (no attached intermediates) is checked the same way
    copies = tuple(t.clone() for t in ref)
    assert F.FAMILY.check(OP_RES, p, inp, copies, copies, tol()).ok


def test_validate_rejects_hidden_not_multiple_of_16():
    for op in (OP, OP_RES):
        info = OPS[op]
        msg = info.validate(info.complete({"num_tokens": 4, "hidden_size": 100}))
        assert msg and "multiple of 16" in msg
        assert info.validate(info.complete({"num_tokens": 4, "hidden_size": 128})) is None
    with pytest.raises(ValueError, match="multiple of 16"):
        F.rms_norm_nvfp4_quant_triton(torch.ones(2, 40), torch.ones(40), torch.ones(1))


# ----------------------------------------------------------------------------- Triton vs reference
CASES = [
    # (num_tokens, hidden_size, residual, dtype, rows_per_program override)
    (1, 5120, False, "bfloat16", None),
    (1, 1536, True, "float16", None),
    (7, 1536, False, "float32", None),
    (7, 5120, True, "bfloat16", None),
    (33, 1536, True, "bfloat16", None),
    (33, 5120, False, "float16", 4),
    (300, 1536, False, "bfloat16", 16),
    (300, 1536, True, "float16", 16),
    (300, 5120, True, "float32", 32),
]


@pytest.mark.parametrize("m,n,residual,dtype,rows", CASES)
def test_triton_round_norm_is_bit_exact(m, n, residual, dtype, rows):
    """round_norm=True follows the reference's rule: identical bytes."""
    p = params(m, n, dtype, residual, rows_per_program=rows, round_norm=True)
    op = OP_RES if residual else OP
    inp = F.FAMILY.make_inputs(op, p, DEV, seed=m + n)
    ref = F.FAMILY.reference(op, p, inp)
    out = F.IMPLS["triton"][op](p)(inp)
    res = F.FAMILY.check(op, p, inp, out, ref, tol(dtype))
    assert res.ok, res.message
    if residual:
        assert torch.equal(out[2], ref[2])
    if not INTERPRETED:  # another float32 reduction order: rare near-tie flips
        assert res.metrics["mismatch_rate"] < 1e-4 and res.metrics["scale_mismatch_rate"] < 1e-3
        return
    assert res.metrics["mismatch_rate"] == 0 and res.metrics["scale_mismatch_rate"] == 0
    assert torch.equal(out[0], ref[0])
    assert torch.equal(out[1].view(torch.uint8), ref[1].view(torch.uint8))
    assert res.metrics["dequant_rel_err"] == pytest.approx(res.metrics["ref_dequant_rel_err"])


@pytest.mark.parametrize("m,n,residual,dtype", [
    (1, 16, False, "float32"), (7, 48, False, "float32"), (33, 1536, True, "float32"),
    (7, 1536, False, "float16"), (33, 48, True, "float16"), (300, 5120, False, "float32"),
])
def test_generic_kernels_strided_pair_loads_give_the_same_bytes(m, n, residual, dtype):
    """``strided_pairs`` (two strided loads instead of one split load; the float32 default since
    the split load compiled wrong on the H100) computes the same thing: the same bytes as the
    split load, which pass the float64 check, on the shapes that failed there and odd ones."""
    op = OP_RES if residual else OP
    base = params(m, n, dtype, residual, fast=False)
    inp = F.FAMILY.make_inputs(op, base, DEV, seed=3 * m + n)
    ref = F.FAMILY.reference(op, base, inp)
    split = F.IMPLS["triton"][op]({**base, "strided_pairs": False})({k: v.clone() for k, v in inp.items()})
    strided = F.IMPLS["triton"][op]({**base, "strided_pairs": True})({k: v.clone() for k, v in inp.items()})
    for a, b in zip(split, strided):
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b)
    res = F.FAMILY.check(op, base, inp, strided, ref, tol(dtype))
    assert res.ok, res.message


@pytest.mark.parametrize("m,n,residual,dtype,rows", CASES)
def test_triton_default_fast_path_passes_check(m, n, residual, dtype, rows):
    """The default (unrounded norm, rstd folded into the block multiplier) differs
    from the reference only by near-tie flips."""
    p = params(m, n, dtype, residual, rows_per_program=rows)
    op = OP_RES if residual else OP
    inp = F.FAMILY.make_inputs(op, p, DEV, seed=m + n)
    ref = F.FAMILY.reference(op, p, inp)
    out = F.IMPLS["triton"][op](p)(inp)
    res = F.FAMILY.check(op, p, inp, out, ref, tol(dtype))
    assert res.ok, res.message
    assert res.metrics["mismatch_rate"] < (5e-3 if dtype != "float32" else 1e-4)
    assert res.metrics["scale_pad_rows_nonzero"] == 0  # the kernel zeroes every padding byte
    assert res.metrics["dequant_rel_err"] < res.metrics["ref_dequant_rel_err"] + 1e-3
    if residual:
        assert torch.equal(out[2], ref[2])  # the residual sum is rounded exactly either way


@pytest.mark.parametrize("m,n,residual,dtype,rows", CASES[:6])
def test_torch_naive_passes_check(m, n, residual, dtype, rows):
    p = params(m, n, dtype, residual)
    op = OP_RES if residual else OP
    inp = F.FAMILY.make_inputs(op, p, DEV, seed=1)
    res = run_check(p, inp, F.IMPLS["torch_naive"][op](p)(inp))
    assert res.ok, res.message
    assert res.metrics["dequant_rel_err"] < res.metrics["ref_dequant_rel_err"] + 1e-3


def test_torch_naive_traces_without_graph_breaks():
    p = params(4, 64, residual=True)
    inp = F.FAMILY.make_inputs(OP_RES, p, DEV, seed=0)
    fn = F.IMPLS["torch_naive"][OP_RES](p)
    eager = fn(inp)
    torch._dynamo.reset()
    traced = torch.compile(fn, backend="eager", fullgraph=True)(inp)
    for a, b in zip(eager, traced):
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b)


# ----------------------------------------------------------------------------- crafted rows
def crafted_row_inputs(dtype=torch.bfloat16):
    """Two rows whose codes are known: norm output * global_scale lands on E2M1 values.

    Each 16-block holds [0, .5, 1, 1.5, 2, 3, 4, 6, -.5, -1, -1.5, -2, -3, -4, -6, 0];
    mean(x^2) = 8.5625 and global_scale = sqrt(8.5625 + eps) make the block scale
    1.0 and y * out_scale ~= x.
    """
    block = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -1.5, -2, -3, -4, -6, 0]
    x = torch.tensor([block * 2, block * 2], dtype=dtype, device=DEV)
    eps = 1e-6
    gs = torch.tensor([(8.5625 + eps) ** 0.5], dtype=torch.float32, device=DEV)
    return {"x": x, "weight": torch.ones(32, dtype=dtype, device=DEV), "global_scale": gs}, eps


@pytest.mark.parametrize("impl", ["reference", "triton", "torch_naive"])
def test_nibble_order_on_a_crafted_row(impl):
    inp, eps = crafted_row_inputs()
    p = params(2, 32, eps=eps)
    q, s = F.IMPLS[impl][OP](p)(inp)
    row = [0x10, 0x32, 0x54, 0x76, 0xA9, 0xCB, 0xED, 0x0F] * 2
    assert q.tolist() == [row, row]
    assert F.unswizzle_scales(s, 2, 32).view(torch.uint8).tolist() == [[0x38, 0x38]] * 2  # E4M3 1.0


# ----------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("impl", ["triton", "torch_naive"])
@pytest.mark.parametrize("residual", [False, True])
def test_zero_rows_give_zero_scales_and_codes(impl, residual):
    p = params(5, 64, residual=residual)
    op = OP_RES if residual else OP
    inp = F.FAMILY.make_inputs(op, p, DEV, seed=2)
    inp["x"][1] = 0
    if residual:
        inp["residual"][1] = 0
    with_scale(inp, p)
    out = F.IMPLS[impl][op](p)(inp)
    assert F.unswizzle_scales(out[1], 5, 64)[1].view(torch.uint8).eq(0).all()
    assert (out[0][1] & 0x77).eq(0).all()  # magnitude 0 (sign bits may be set: -0)
    assert not torch.isnan(out[1].float()).any()
    res = run_check(p, inp, out)
    assert res.ok, res.message


@pytest.mark.parametrize("impl", ["triton", "torch_naive"])
def test_all_zero_input(impl):
    p = params(3, 64)
    inp = {"x": torch.zeros(3, 64, dtype=torch.bfloat16, device=DEV),
           "weight": torch.ones(64, dtype=torch.bfloat16, device=DEV)}
    with_scale(inp, p)
    assert inp["global_scale"].item() == 1.0
    q, s = F.IMPLS[impl][OP](p)(inp)
    assert (q & 0x77).eq(0).all() and s.view(torch.uint8).eq(0).all()
    res = run_check(p, inp, (q, s))
    assert res.ok, res.message
    assert res.metrics["dequant_rel_err"] == 0


@pytest.mark.parametrize("impl", ["triton", "torch_naive"])
def test_all_equal_rows(impl):
    p = params(4, 96, dtype="float16")
    inp = {"x": torch.full((4, 96), -0.37, dtype=torch.float16, device=DEV),
           "weight": torch.ones(96, dtype=torch.float16, device=DEV)}
    inp["x"][2] = 2.5
    with_scale(inp, p)
    out = F.IMPLS[impl][OP](p)(inp)
    codes = F.unpack_codes(out[0])
    assert codes[0].eq(15).all() and codes[2].eq(7).all()  # -6 and +6: amax of every block
    res = run_check(p, inp, out)
    assert res.ok, res.message


@pytest.mark.parametrize("impl", ["triton", "torch_naive"])
def test_saturation_with_an_oversized_global_scale(impl):
    p = params(6, 128)
    inp = with_scale(F.FAMILY.make_inputs(OP, p, DEV, seed=5), p)
    inp["global_scale"] = inp["global_scale"] * 10  # ten times the calibrated value
    ref = F.FAMILY.reference(OP, p, inp)
    rs = F.unswizzle_scales(ref[1], 6, 128).float()
    assert (rs == 448).float().mean() > 0.5  # most scales saturate at the E4M3 max
    assert (F.unpack_codes(ref[0]) & 7).eq(7).float().mean() > 0.3  # codes clamp at 6
    out = F.IMPLS[impl][OP](p)(inp)
    res = run_check(p, inp, out, ref)
    assert res.ok, res.message
    assert res.metrics["dequant_rel_err"] > 0.5  # saturation destroys the values, as it should


@pytest.mark.parametrize("impl", ["triton", "torch_naive"])
def test_subnormal_and_vanishing_scales(impl):
    p = params(4, 256, dtype="float32")
    inp = with_scale(F.FAMILY.make_inputs(OP, p, DEV, seed=6), p)
    inp["global_scale"] = inp["global_scale"] / 2e5  # scales <= 2**-9: E4M3 subnormals, some round to 0
    ref = F.FAMILY.reference(OP, p, inp)
    rs = F.unswizzle_scales(ref[1], 4, 256).view(torch.uint8)
    assert (rs == 0).any() and (rs == 1).any()  # 0 and the smallest subnormal (2**-9)
    zero_blocks = (rs == 0).repeat_interleave(16, dim=1)
    assert (F.unpack_codes(ref[0])[zero_blocks] & 7).eq(0).all()  # scale 0 -> codes 0
    out = F.IMPLS[impl][OP](p)(inp)
    assert torch.equal(out[1].view(torch.uint8), ref[1].view(torch.uint8))
    res = run_check(p, inp, out, ref)
    assert res.ok, res.message


def test_triton_single_token_default_config_and_overrides():
    p = params(1, 1536)
    inp = F.FAMILY.make_inputs(OP, p, DEV, seed=9)
    ref = F.FAMILY.reference(OP, p, inp)
    for rows, warps in [(None, None), (2, 2), (8, 1)]:
        out = F.rms_norm_nvfp4_quant_triton(
            inp["x"], inp["weight"], inp["global_scale"], 1e-6, rows_per_program=rows, num_warps=warps,
            round_norm=True,
        )
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1].view(torch.uint8), ref[1].view(torch.uint8))
    with pytest.raises(ValueError, match="power of two"):
        F.rms_norm_nvfp4_quant_triton(inp["x"], inp["weight"], inp["global_scale"], rows_per_program=3)


def test_heuristic_config():
    for m in (1, 16, 128, 1024, 4096, 16384):
        for n in (2048, 4096, 5120, 8192):
            rows, warps = F.nvfp4_config(m, n)
            assert rows & (rows - 1) == 0 and rows <= 128 and warps in (1, 2, 4, 8, 16)


# ----------------------------------------------------------------------------- the check catches errors
@pytest.fixture(scope="module")
def good_case():
    p = params(33, 256)
    inp = F.FAMILY.make_inputs(OP, p, DEV, seed=11)
    ref = F.FAMILY.reference(OP, p, inp)
    return p, inp, ref


def test_check_fails_swapped_nibbles(good_case):
    p, inp, ref = good_case
    q = ref[0]
    swapped = ((q & 0xF) << 4) | (q >> 4)
    res = F.FAMILY.check(OP, p, inp, (swapped, ref[1].clone()), ref, tol())
    assert not res.ok and "nibble" in res.message


def test_check_fails_scale_one_step_off_away_from_a_tie(good_case):
    p, inp, ref = good_case
    parts = ref[0]._nvfp4_parts
    mid_dist = (parts["s_pre"] - (parts["s8"] + F.round_e4m3(parts["s8"] * 1.2)) / 2).abs() / parts["s_pre"]
    row, k = (int(i) for i in torch.nonzero(mid_dist > 0.03)[0])  # far from a rounding boundary
    raw = F.unswizzle_scales(ref[1].view(torch.uint8), 33, 256).clone()
    raw[row, k] += 1
    bad_scales = F.swizzle_scales(raw).view(torch.float8_e4m3fn)
    res = F.FAMILY.check(OP, p, inp, (ref[0].clone(), bad_scales), ref, tol())
    assert not res.ok and "scales" in res.message


def test_check_fails_one_code_step_off_away_from_a_tie(good_case):
    p, inp, ref = good_case
    parts = ref[0]._nvfp4_parts
    codes = parts["codes"].clone()
    a = parts["v32"].abs().to(torch.float64)
    far = ((a - 1.0).abs() < 0.1) & ((codes & 7) == 2)  # value ~1.0: far from 0.75 and 1.25
    idx = tuple(int(i) for i in torch.nonzero(far)[0])
    codes[idx] += 1
    res = F.FAMILY.check(OP, p, inp, (F.pack_codes(codes), ref[1].clone()), ref, tol())
    assert not res.ok and "codes" in res.message


def test_check_tolerates_a_flip_at_an_exact_tie():
    # v exactly 0.75 (a tie): RNE gives 1.0 (code 2); a neighbour's 0.5 (code 1) is tolerated.
    v = torch.tensor([[0.75] * 16], dtype=torch.float64)
    codes = F.encode_e2m1(v)
    flipped = codes.clone()
    flipped[0, 3] = 1
    assert F.reference._code_errors(flipped, codes, v, delta=1e-3) == (0, 1)
    flipped[0, 4] = 3  # two steps away is never tolerated
    assert F.reference._code_errors(flipped, codes, v, delta=1e-3)[0] == 1


def test_check_padding_columns_must_be_zero_rows_are_reported():
    p = params(3, 80)  # 5 scales per row, padded to 8; 3 rows padded to 128
    inp = F.FAMILY.make_inputs(OP, p, CPU, seed=4)
    ref = F.FAMILY.reference(OP, p, inp)
    raw = ref[1].view(torch.uint8).reshape(-1).clone()
    raw[F.swizzle_offset(1, 6, 80)] = 0x38  # padded k column of a real row
    res = F.FAMILY.check(OP, p, inp, (ref[0].clone(), raw.view(torch.float8_e4m3fn).reshape(128, 8)), ref, tol())
    assert not res.ok and "padded k columns" in res.message
    raw = ref[1].view(torch.uint8).reshape(-1).clone()
    raw[F.swizzle_offset(100, 2, 80)] = 0x7F  # garbage (even NaN) in a padded row: reported only
    res = F.FAMILY.check(OP, p, inp, (ref[0].clone(), raw.view(torch.float8_e4m3fn).reshape(128, 8)), ref, tol())
    assert res.ok and res.metrics["scale_pad_rows_nonzero"] == 1 and res.metrics["scale_pad_cols_nonzero"] == 0


def test_check_fails_wrong_shapes(good_case):
    p, inp, ref = good_case
    res = F.FAMILY.check(OP, p, inp, (ref[0][:, :-1], ref[1]), ref, tol())
    assert not res.ok and "codes" in res.message
    res = F.FAMILY.check(OP, p, inp, (ref[0], ref[1][:64]), ref, tol())
    assert not res.ok and "scales" in res.message


def test_check_mismatch_rate_cap(good_case):
    p, inp, ref = good_case
    strict = Tolerance(norm_rel=1e-2, rtol=1e-2, atol=1e-6, mismatch_rate=0.0)
    out = F.IMPLS["torch_naive"][OP](p)(inp)
    res = F.FAMILY.check(OP, p, inp, out, ref, strict)
    # HF-style double rounding flips a few codes/scales at near-ties (tolerated by the default)
    assert res.metrics["mismatch_rate"] > 0 and res.metrics["scale_mismatch_rate"] > 0
    assert not res.ok and "mismatch_rate" in res.message
    assert F.FAMILY.check(OP, p, inp, out, ref, tol()).ok


# ----------------------------------------------------------------------------- providers
def test_impls_cover_both_ops():
    for name in ("reference", "torch_naive", "triton", "vllm", "flashinfer"):
        assert set(F.IMPLS[name]) == {OP, OP_RES}


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 10,
                    reason="SM100+: the peers may run here")
@pytest.mark.parametrize("name", ["vllm", "flashinfer"])
def test_peers_are_unsupported_without_sm100(name):
    from normbench.kernels.providers._family import Unsupported

    with pytest.raises(Unsupported, match="CUDA|SM100"):
        F.IMPLS[name][OP](params(4, 4096))
    with pytest.raises(Unsupported, match="fp16/bf16"):
        F.IMPLS[name][OP](params(4, 4096, dtype="float32"))


@pytest.mark.parametrize("impl", ["triton", "torch_naive"])
def test_subnormal_scales(impl):
    p = params(4, 256, dtype="float32")
    inp = with_scale(F.FAMILY.make_inputs(OP, p, DEV, seed=6), p)
    inp["global_scale"] = inp["global_scale"] / 3e4  # scales 3..8 * 2**-9: subnormal and smallest normal
    ref = F.FAMILY.reference(OP, p, inp)
    rs = F.unswizzle_scales(ref[1], 4, 256).view(torch.uint8)
    assert (rs < 8).any() and (rs >= 8).any()
    out = F.IMPLS[impl][OP](p)(inp)
    assert torch.equal(out[1].view(torch.uint8), ref[1].view(torch.uint8))
    assert run_check(p, inp, out, ref).ok


def test_triton_reads_unaligned_bf16_views():
    # bf16 rows are loaded as 4-byte words; a view starting mid-word is copied first.
    big = torch.randn(4, 65, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).to(DEV)
    x, w = big[:, 1:], torch.ones(64, dtype=torch.bfloat16, device=DEV)
    p = params(4, 64)
    inp = with_scale({"x": x, "weight": w}, p)
    ref = F.FAMILY.reference(OP, p, inp)
    out = F.rms_norm_nvfp4_quant_triton(x, w, inp["global_scale"], round_norm=True)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1].view(torch.uint8), ref[1].view(torch.uint8))


# ----------------------------------------------------------------------------- fast kernel (bf16/fp16)
def encoder_probes():
    """The launcher's probe values (``encoder_probe_values``) with fewer random ones: the
    interpreter runs this."""
    return F.encoder_probe_values(n_random=4500).to(DEV)


def test_fast_encoder_matches_its_model():
    """The fast kernel's E2M1 encoder (packed-f16 PTX on the GPU, its float32 emulation
    under the interpreter) and E4M3 rounding equal the float64 model exactly."""
    v = encoder_probes()
    for got, want in zip(F.fast_encoder_probe(v), F.fast_encoder_model(v)):
        bad = torch.nonzero(got != want).flatten()
        assert bad.numel() == 0, (bad[:5].tolist(), got[bad[:5]].tolist(), want[bad[:5]].tolist())


def test_fast_encoder_model_is_the_reference_encoder_on_f16_values():
    # on values already on the f16 grid the model is encode_e2m1 (sign of -0 aside)
    v = torch.linspace(-7, 7, 4001).to(torch.float16).float()
    codes, _, _ = F.fast_encoder_model(v)
    ref = F.encode_e2m1(v)
    assert torch.equal(_zero_norm(codes), _zero_norm(ref))
    assert F.fast_encoder_model(torch.tensor([-0.0] * 8))[0].tolist() == [8] * 8


def _zero_norm(c):
    return torch.where(c == 8, torch.zeros_like(c), c)


FAST_CASES = [
    # (num_tokens, hidden_size, residual, dtype): even / padded k, pad rows, fp16
    (1, 256, False, "bfloat16"),
    (13, 512, True, "bfloat16"),
    (9, 80, False, "bfloat16"),  # 5 blocks: BLOCK_K 8, K padded to 8
    (10, 1536, True, "float16"),
    (20, 64, False, "float16"),
]
FAST_CONFIGS = [F.LaunchConfig(1, 1, False, False), F.LaunchConfig(2, 3, True, True), F.LaunchConfig(4, 2, True, False),
                F.LaunchConfig(1, 5, False, True)]


@pytest.mark.parametrize("m,n,residual,dtype", FAST_CASES)
def test_fast_kernel_configs_agree_and_pass_check(m, n, residual, dtype):
    """Every launch config (warps, persistent grid, prefetch) writes the same bytes;
    they pass the check, zero all swizzle padding and round residual_out exactly."""
    p = params(m, n, dtype, residual)
    op = OP_RES if residual else OP
    inp = F.FAMILY.make_inputs(op, p, DEV, seed=m * n)
    ref = F.FAMILY.reference(op, p, inp)
    first = None
    for cfg in FAST_CONFIGS:
        out = F.rms_norm_nvfp4_quant_triton(inp["x"], inp["weight"], inp["global_scale"], 1e-6,
                                            inp["residual"] if residual else None, fast=True, fast_config=cfg)
        res = F.FAMILY.check(op, p, inp, out, ref, tol(dtype))
        assert res.ok, (cfg, res.message)
        assert res.metrics["scale_pad_rows_nonzero"] == 0 and res.metrics["scale_pad_cols_nonzero"] == 0
        assert res.metrics["dequant_rel_err"] < res.metrics["ref_dequant_rel_err"] + 1e-3
        if residual:
            assert torch.equal(out[2], ref[2])
        flat = [t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t for t in out]
        if first is None:
            first = flat
        else:
            assert all(torch.equal(a, b) for a, b in zip(first, flat)), cfg


def test_fast_kernel_garbage_in_padding_is_overwritten():
    # the scale buffer comes from torch.empty: every padding byte must be written
    p = params(3, 80)
    inp = F.FAMILY.make_inputs(OP, p, DEV, seed=5)
    for _ in range(3):  # reuse the caching allocator's dirty blocks
        junk = torch.full((128, 8), 0x7F, dtype=torch.uint8, device=DEV)
        del junk
        q, s = F.rms_norm_nvfp4_quant_triton(inp["x"], inp["weight"], inp["global_scale"], fast=True,
                                             fast_config=F.LaunchConfig(1, 2, True, False))
        raw = s.view(torch.uint8)
        assert int((F.swizzle_scales(F.unswizzle_scales(raw, 3, 80)) != raw).sum()) == 0


def test_fast_kernel_dispatch():
    assert F.uses_fast_kernel(torch.bfloat16) and F.uses_fast_kernel(torch.float16)
    assert not F.uses_fast_kernel(torch.float32)
    assert not F.uses_fast_kernel(torch.bfloat16, round_norm=True)
    assert not F.uses_fast_kernel(torch.bfloat16, rows_per_program=2)
    x = torch.ones(2, 64, device=DEV)
    with pytest.raises(ValueError, match="fast kernel"):
        F.rms_norm_nvfp4_quant_triton(x, torch.ones(64, device=DEV), torch.ones(1, device=DEV), fast=True)
    xb = x.to(torch.bfloat16)
    with pytest.raises(ValueError, match="fast kernel"):
        F.rms_norm_nvfp4_quant_triton(xb, xb[0], torch.ones(1, device=DEV), fast=True, round_norm=True)


def test_fast_config_table_and_formula(monkeypatch):
    for m in (1, 16, 128, 1024, 4096, 16384):
        for n in (2048, 4096, 5120, 8192):
            cfg = F.default_config(m, n)
            assert cfg.num_warps in (1, 2, 4, 8, 16) and cfg.programs_per_sm >= 1
    table = {(False, 4096, 128): F.LaunchConfig(8, 1, False, True), (False, 4096, 4096): F.LaunchConfig(4, 4, True, True),
             (True, 4096, 4096): F.LaunchConfig(2, 8, False, True)}
    # measured points -> the table's rows (bounds at the geometric midpoints: the nearest count wins)
    from normbench.kernels import tuned

    points: dict = {}
    for (r, n, t), cfg in sorted(table.items(), key=lambda kv: kv[0]):
        points.setdefault((r, n), []).append((t, cfg))
    rows = {k: tuple(zip(tuned.bounds([t for t, _ in v]), [c for _, c in v])) for k, v in points.items()}
    monkeypatch.setattr(F.configs, "TUNED", rows)
    assert F.default_config(100, 4096) == table[(False, 4096, 128)]
    assert F.default_config(3000, 4096) == table[(False, 4096, 4096)]
    assert F.default_config(65536, 4096, residual=True) == table[(True, 4096, 4096)]
    assert F.default_config(4096, 8192) == F.formula_config(4096, 8192)  # other hidden: formula
