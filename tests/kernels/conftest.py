"""Kernel tests run the Triton kernels on the CPU under the interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when its module
is imported, so it is set here, before any test module of this folder imports one. Run
this folder in its own pytest process when the same session also runs GPU tests (a module
imported in compiled mode first stays compiled).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
