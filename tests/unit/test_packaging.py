"""The built wheel carries normbench.kernels and the bundled suites (no editable-install magic)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_kernels_and_suites(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True,
    )
    (wheel,) = wheels.glob("normbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for family in ("rmsnorm", "quant", "nvfp4"):
        assert f"normbench/kernels/{family}/__init__.py" in names and f"normbench/kernels/{family}/configs.py" in names
        assert f"normbench/kernels/tuned/{family}.json" in names, "the tuned tables are package data"
        assert f"normbench/kernels/{family}.py" not in names, "a single-file family left over (a stale build/?)"
    assert "normbench/kernels/_triton.py" in names and "normbench/kernels/tuned/__init__.py" in names
    assert "normbench/kernels/providers/triton.py" in names and "normbench/kernels/providers/vllm.py" in names
    assert "normbench/suites/smoke.yaml" in names
    for module in ("__init__", "match", "noise", "gates", "evidence"):
        assert f"normbench/compare/{module}.py" in names, "normbench.compare is a package"
    assert "normbench/compare.py" not in names, "the single-file compare module left over (a stale build/?)"
    assert not any(n.startswith(("kernels/", "suites/", "tests/")) for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    code = (
        "import normbench, normbench.kernels.rmsnorm, normbench.kernels.quant, normbench.kernels.nvfp4;"
        "assert normbench.kernels.quant.TUNED and normbench.kernels.rmsnorm.TUNED and normbench.kernels.nvfp4.TUNED;"
        "from importlib import resources;"
        "assert normbench.__file__.startswith(%r), normbench.__file__;"
        "import normbench.kernels.tuned as T; assert str(T.path_of('quant')).startswith(%r), T.path_of('quant');"
        "assert resources.files('normbench.suites').joinpath('rmsnorm.yaml').is_file();"
        "from normbench.cli.run import find_suite; print(find_suite('smoke', None))"
    ) % (str(target), str(target))
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("normbench/suites/smoke.yaml")
