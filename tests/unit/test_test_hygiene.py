"""The test suite's own rules that a GPU run depends on and a CPU run cannot see.

On a CUDA machine, ``pytest -m gpu tests/kernels`` collects every module of tests/kernels. A module
that sets ``TRITON_INTERPRET=1`` at import time makes the whole GPU run interpret the kernels (every
GPU case then errors with "TRITON_INTERPRET=1 is set on a CUDA machine"): that happened on the first
H100 run. Only tests/conftest.py may set it, and only without CUDA.
"""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SETS_INTERPRET = re.compile(r"""(environ\.setdefault\(|environ\[|setenv\()\s*["']TRITON_INTERPRET["']""")


def test_only_the_root_conftest_sets_triton_interpret():
    setters = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                     if "fixtures" not in p.parts and SETS_INTERPRET.search(p.read_text()))
    assert setters == ["conftest.py"], setters
