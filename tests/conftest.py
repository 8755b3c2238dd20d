"""Test-wide setup: Triton kernels run under the interpreter where there is no GPU."""

import os

import torch

if not torch.cuda.is_available():
    # Read when @triton.jit decorates, so it must be set before normbench.kernels imports.
    os.environ.setdefault("TRITON_INTERPRET", "1")
