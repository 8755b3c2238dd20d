"""normbench: declarative benchmarks for RMSNorm-family kernels and their quantization fusions.

The data flow (DESIGN.md): suites/*.yaml -> ``suite.load_suite`` -> ``expand.expand``
-> runners -> ``store`` -> ``compare`` -> ``report``.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout, kernels/ and suites/ sit beside this package but are its
# subpackages normbench.kernels and normbench.suites (an install maps them so).
# Let a checkout that is run in place, or that shadows an install, find them too.
_root = _Path(__file__).resolve().parent.parent
if (_root / "kernels" / "base.py").is_file() and (_root / "pyproject.toml").is_file():
    __path__.append(str(_root))  # noqa: F821 - the package's own __path__
