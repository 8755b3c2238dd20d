"""One source of truth per provider: what derives from ``normbench.registry``, and outside providers.

A ``ProviderEntry`` is the only place a provider's import names, distributions, extra,
``needs_cuda`` and minimum SM are written; the recorded package versions, the compare and
report footers, ``validate``'s skip reasons and the README table are derived from it. An
outside package adds a provider through the ``normbench.providers`` entry-point group: here a
fake distribution (a ``.dist-info`` with ``entry_points.txt`` on ``sys.path``) does.

The (provider, op) <-> adapter check is ``tests/kernels/test_providers.py``
(``test_declared_ops_are_exactly_the_served_ones``): it loads the kernels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normbench import env, registry, store
from normbench.compare import env_differences, env_get, important_env_keys
from normbench.errors import UnknownNameError
from normbench.expand import Capabilities, capability_skip, expand
from normbench.registry import BUILTIN_PROVIDERS, PROVIDERS, ProviderEntry, provider_entry, provider_table
from normbench.report.compare_markdown import _versions
from normbench.suite import parse_suite

ROOT = Path(__file__).resolve().parents[2]
CPU = Capabilities("cpu", None, None, {})
H100 = Capabilities("cuda", (9, 0), "NVIDIA H100 80GB HBM3", {})

#: The footer's packages before they were derived (the committed goldens show this order).
FOOTER_BEFORE = ("torch", "triton", "vllm", "flashinfer-python", "liger-kernel", "quack-kernels",
                 "nvidia-cutlass-dsl", "guidellm", "lm-eval", "normbench")


# --------------------------------------------------------------------------- the README
def test_readme_provider_table_is_the_generated_one():
    """README's table under "## Providers" is exactly ``provider_table()`` (regenerate it with
    ``python -m normbench.registry``), and is the only provider table there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = "## Providers\n\n"
    start = readme.index(head) + len(head)
    block = readme[start:readme.index("\n\n", start)]
    assert block == provider_table(), "README's provider table drifted: paste `python -m normbench.registry`"
    assert readme.count("| provider | what |") == 1


def test_provider_table_rows_come_from_the_entries():
    lines = provider_table().splitlines()
    assert len(lines) == 2 + len(BUILTIN_PROVIDERS) + 1  # header, rule, one per entry, unfused
    rows = {ln.split(" | ")[0].strip("| `"): ln for ln in lines[2:]}
    assert list(rows)[:-1] == [e.name for e in BUILTIN_PROVIDERS]
    assert rows["triton"].endswith("| all | CUDA | with triton |")
    assert rows["torch_naive"].endswith("| all | CPU, CUDA | with torch |")
    assert "SM89+ for `rms_norm_static_quant`; SM100+ for `rms_norm_nvfp4_quant`" in rows["flashinfer"]
    assert rows["liger"].endswith("| `rms_norm`, `fused_add_rms_norm` | CUDA | `pip install 'normbench[liger]'` |")
    extra = ProviderEntry("sgl", "nb_sgl:PROVIDER", ("rms_norm",), summary="sgl-kernel's `rmsnorm`",
                          distributions=("sgl-kernel",), needs_cuda=True, min_sm={"rms_norm": 80})
    assert provider_table([extra]).splitlines()[2] == (
        "| `sgl` | sgl-kernel's `rmsnorm` | `rms_norm` | CUDA; SM80+ for `rms_norm` | `pip install sgl-kernel` |")


def test_entries_are_checked():
    with pytest.raises(ValueError, match="unknown ops"):
        ProviderEntry("x", "m:P", ("rms_nrom",))
    with pytest.raises(ValueError, match="min_sm for ops it does not declare"):
        ProviderEntry("x", "m:P", ("rms_norm",), min_sm={"scaled_quant": 89})
    with pytest.raises(ValueError, match="no '\\|'"):
        ProviderEntry("x", "m:P", ("rms_norm",), summary="a | b")
    with pytest.raises(ValueError, match="compiles must be one of"):
        ProviderEntry("x", "m:P", ("rms_norm",), compiles="always")


def test_extras_are_pyproject_extras_of_the_declared_distributions():
    """``extra`` names an optional-dependencies group that installs only declared distributions."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    with_extra = [e for e in BUILTIN_PROVIDERS if e.extra]
    assert {"vllm", "flashinfer", "liger", "quack"} <= {e.name for e in with_extra}
    for e in with_extra:
        names = {req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() for req in extras[e.extra]}
        assert names and names <= set(e.distributions), (e.name, names, e.distributions)
        assert e.install_hint == f"pip install 'normbench[{e.extra}]'"


# --------------------------------------------------------------------------- environment, compare, footers
def test_recorded_packages_are_the_providers_then_the_tools():
    recorded = env.recorded_packages()
    assert len(set(recorded)) == len(recorded)
    assert set(recorded) == {d for e in BUILTIN_PROVIDERS for d in e.distributions} | set(env.TOOLS)
    assert recorded[:7] == ("torch", "triton", "vllm", "flashinfer-python", "liger-kernel", "quack-kernels",
                            "nvidia-cutlass-dsl")
    footer = env.footer_packages()
    assert footer == tuple(p for p in recorded if p not in env.FOOTER_HIDDEN)
    assert tuple(p for p in footer if p in FOOTER_BEFORE) == FOOTER_BEFORE  # a new provider adds, never reorders
    keys = important_env_keys()
    assert [k for k in keys if k.startswith("packages.")] == [f"packages.{p}" for p in footer]
    assert keys[:2] == ("gpu.name", "gpu.sm") and keys[-1] == "host"


def test_a_new_provider_distribution_reaches_env_compare_and_footer(monkeypatch):
    entry = ProviderEntry("sgl", "nb_sgl:PROVIDER", ("rms_norm",), distributions=("sgl-kernel",), needs_cuda=True)
    monkeypatch.setitem(PROVIDERS, "sgl", entry)
    assert env.recorded_packages().index("sgl-kernel") < env.recorded_packages().index("numpy")
    assert "sgl-kernel" in env.footer_packages()
    assert "packages.sgl-kernel" in important_env_keys()
    base = {"packages.torch": "2.9", "packages.sgl-kernel": "0.3.1", "host": "a", "zz": 1}
    cand = {"packages.torch": "2.9", "packages.sgl-kernel": "0.3.2", "host": "b", "zz": 2}
    # important keys first, in their order; the rest alphabetical
    assert [d.key for d in env_differences(base, {"c": cand})] == ["packages.sgl-kernel", "host", "zz"]
    footer = _versions({"cpu": "x", **base})
    assert footer == "x · torch 2.9 · sgl-kernel 0.3.1"


def test_footer_names_a_recorded_package_nothing_here_declares():
    """A run made where an outside provider was installed keeps its version in the footer."""
    footer = _versions({"cpu": "x", "packages": {"torch": "2.9", "numpy": "2.1", "nb-elsewhere": "1.0"}})
    assert footer == "x · torch 2.9 · nb-elsewhere 1.0"  # numpy: recorded, not in footers


# --------------------------------------------------------------------------- validate's skip reasons
@pytest.mark.parametrize("entry", BUILTIN_PROVIDERS, ids=lambda e: e.name)
def test_skip_reasons_follow_the_entry(entry):
    for op in entry.ops:
        on_cpu = capability_skip(entry.name, op, CPU)
        assert on_cpu == ("needs CUDA" if entry.needs_cuda else None), (op, on_cpu)
        on_h100 = capability_skip(entry.name, op, H100)
        need = entry.min_sm.get(op)
        assert on_h100 == (f"needs SM{need}+ (this GPU is SM90)" if need and need > 90 else None), (op, on_h100)
    missing = [op for op in registry.ALL_OPS if op not in entry.ops]
    for op in missing:
        assert capability_skip(entry.name, op, CPU) == f"{entry.name} has no {op}"


def test_unfused_parts_skip_by_their_entries(monkeypatch):
    monkeypatch.setitem(PROVIDERS, "cpu_only_peer", ProviderEntry("cpu_only_peer", "m:P", ("rms_norm",)))
    monkeypatch.setitem(PROVIDERS, "gpu_peer", ProviderEntry("gpu_peer", "m:P", ("scaled_quant",), needs_cuda=True))

    def skip(norm, quant):
        text = f"""\
name: t
stages:
  - kind: kernel
    op: rms_norm_quant
    providers: [{{unfused: {{norm: {norm}, quant: {quant}}}}}]
    sweep: {{num_tokens: [1], hidden_size: [64], quant_dtype: [fp8]}}
"""
        return expand(parse_suite(text, "t.yaml"), CPU)[0].skip

    assert skip("cpu_only_peer", "torch_naive") is None
    assert skip("cpu_only_peer", "gpu_peer") == "unfused[norm=cpu_only_peer,quant=gpu_peer]: gpu_peer needs CUDA"


def test_missing_package_looks_up_the_top_level_package_only():
    """``vllm._custom_ops`` would import vllm to be found; the check finds ``vllm`` without importing."""
    e = ProviderEntry("ghost", "m:P", ("rms_norm",), imports=("nb_ghost_pkg_xyz._ops",), extra="ghost")
    assert e.missing_package() == "ghost not installed: pip install 'normbench[ghost]'"
    e = ProviderEntry("ghost", "m:P", ("rms_norm",), imports=("nb_ghost_pkg_xyz",), distributions=("nb-ghost",))
    assert e.missing_package() == "ghost not installed: pip install nb-ghost"
    assert ProviderEntry("json_based", "m:P", ("rms_norm",), imports=("json.decoder",)).missing_package() is None


def test_entries_match_the_provider_objects():
    """The kernels' provider objects import what the entry declares and need CUDA where it says.

    (They take these as constructor arguments today; the entry is the declaration.)
    """
    for e in BUILTIN_PROVIDERS:
        provider = registry.load(e.target)
        assert tuple(getattr(provider, "packages", ())) == e.imports, e.name
        assert bool(getattr(provider, "needs_cuda", False)) == e.needs_cuda, e.name
        assert sys.modules[e.module].__file__.endswith(f"kernels/providers/{e.module.rsplit('.', 1)[1]}.py")


# --------------------------------------------------------------------------- entry points
ENTRY_MODULE = '''\
"""What an outside package's entry point names: declarations only (no torch)."""
from normbench.registry import ProviderEntry

ENTRY = ProviderEntry(
    "nbfake", "nb_fake_impl:PROVIDER", ("rms_norm",), summary="a fake outside provider",
    distributions=("nb-fake-provider",),
)


def make():
    return ProviderEntry("nbfake_made", "nb_fake_impl:PROVIDER", ("rms_norm",), distributions=("nb-fake-provider",),
                         needs_cuda=True)


NOT_AN_ENTRY = 42
SHADOW = ProviderEntry("vllm", "nb_fake_impl:PROVIDER", ("rms_norm",))
'''

IMPL_MODULE = '''\
"""The outside provider's adapter: RMSNorm in float32, as HF's LlamaRMSNorm."""
import torch

from normbench.kernels.base import Provider


def rms_norm(params):
    eps, residual = float(params["eps"]), bool(params["residual"])

    def fn(inputs):
        x = inputs["x"]
        if residual:
            x = x + inputs["residual"]
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        out = (y * inputs["weight"].float()).to(x.dtype)
        return (out, x) if residual else (out,)

    return fn


class FakeProvider(Provider):
    name = "nbfake"

    def __init__(self):
        self.ops = {"rms_norm": rms_norm}


PROVIDER = FakeProvider()
'''

ENTRY_POINTS = """\
[normbench.providers]
nbfake = nb_fake_entry:ENTRY
nbfake_made = nb_fake_entry:make
nbfake_broken = nb_fake_entry:NOT_AN_ENTRY
vllm = nb_fake_entry:SHADOW
"""


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """A distribution ``nb-fake-provider`` 1.2.3 on ``sys.path`` with four entry points."""
    site = tmp_path / "site"
    info = site / "nb_fake_provider-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nb-fake-provider\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "nb_fake_entry.py").write_text(ENTRY_MODULE)
    (site / "nb_fake_impl.py").write_text(IMPL_MODULE)
    monkeypatch.syspath_prepend(str(site))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        PROVIDERS.discover(refresh=True)
    yield site, seen
    monkeypatch.undo()
    for mod in ("nb_fake_entry", "nb_fake_impl"):
        sys.modules.pop(mod, None)
    PROVIDERS.discover(refresh=True)
    assert "nbfake" not in PROVIDERS


def test_entry_points_add_providers_lazily(fake_dist):
    _, seen = fake_dist
    assert any("'vllm' is a built-in provider" in str(w.message) for w in seen)
    assert PROVIDERS["vllm"] is next(e for e in BUILTIN_PROVIDERS if e.name == "vllm")
    assert {"nbfake", "nbfake_made", "nbfake_broken"} <= set(sorted(PROVIDERS))
    assert "nb_fake_entry" not in sys.modules, "listing names imported the entry point's module"
    assert PROVIDERS.outside() == ["nbfake", "nbfake_made", "nbfake_broken"]

    entry = PROVIDERS["nbfake"]
    assert entry.summary == "a fake outside provider" and "nb_fake_entry" in sys.modules
    assert "nb_fake_impl" not in sys.modules, "the entry imported its implementation"
    assert PROVIDERS["nbfake_made"].needs_cuda  # a callable returning the entry
    assert capability_skip("nbfake_made", "rms_norm", CPU) == "needs CUDA"
    assert capability_skip("nbfake", "rms_norm", CPU) is None
    assert capability_skip("nbfake", "scaled_quant", CPU) == "nbfake has no scaled_quant"

    with pytest.warns(UserWarning, match="nbfake_broken.*could not be loaded: TypeError: it is of type int"):
        names = [n for n, _ in PROVIDERS.items()]
    assert "nbfake_broken" not in names and "nbfake_broken" not in PROVIDERS
    with pytest.raises(UnknownNameError, match="nbfake_broken.*nb-fake-provider 1.2.3.*could not be loaded"):
        provider_entry("nbfake_broken")

    assert "nb-fake-provider" in env.recorded_packages() and "nb-fake-provider" in env.footer_packages()
    assert env.package_versions()["nb-fake-provider"] == "1.2.3"


@pytest.mark.filterwarnings("ignore:provider 'nbfake_broken'")
def test_an_outside_provider_runs_and_is_recorded(fake_dist, tmp_path):
    """End to end on the CPU: the suite names the outside provider; the run checks it against
    the float64 reference, times it, and records its distribution's version."""
    suite = tmp_path / "outside.yaml"
    suite.write_text(textwrap.dedent("""\
        name: outside
        stages:
          - kind: kernel
            op: rms_norm
            providers: [torch_naive, nbfake]
            sweep: {num_tokens: [3], hidden_size: [80], residual: [false, true], dtype: [float32]}
            timing: {min_run_time_s: 0.001}
        """))
    from normbench.cli import app

    res = CliRunner().invoke(app, ["run", str(suite), "--results-dir", str(tmp_path / "runs"), "--no-progress"])
    assert res.exit_code == 0, res.output
    record = store.load_run(store.resolve_run("latest", tmp_path / "runs"))
    ours = [c for c in record.cases if c.provider == "nbfake"]
    assert len(ours) == 2 and all(c.status == "OK" and c.metrics["time_us"].value > 0 for c in ours)
    assert all(c.correctness["out_rel_err"] < 1e-6 for c in ours)
    assert env_get(record.environment, "packages.nb-fake-provider") == "1.2.3"


@pytest.mark.filterwarnings("ignore:provider 'nbfake_broken'")
def test_list_with_an_outside_provider_imports_no_torch(fake_dist):
    site, _ = fake_dist
    code = (
        "import sys; from normbench.cli import app; from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['list']); assert r.exit_code == 0, r.output;"
        "from normbench.registry import PROVIDERS; assert PROVIDERS['nbfake'].summary;"
        "from normbench.expand import capability_skip, Capabilities;"
        "assert capability_skip('nbfake', 'rms_norm', Capabilities('cpu')) is None;"
        "assert 'torch' not in sys.modules, 'torch imported'; print(json.dumps(sorted(PROVIDERS)))"
    )
    out = subprocess.run([sys.executable, "-c", "import json;" + code], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": f"{site}:{ROOT}"})
    assert out.returncode == 0, out.stderr
    assert "nbfake" in json.loads(out.stdout.strip().splitlines()[-1])
