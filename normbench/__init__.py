"""normbench: declarative benchmarks for RMSNorm-family kernels and their quantization fusions.

The data flow (DESIGN.md): suites/*.yaml -> ``suite.load`` -> ``expand.expand``
-> runners -> ``store`` -> ``compare`` -> ``report``.
"""

__version__ = "0.1.0"
