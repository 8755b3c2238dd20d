"""Test-wide setup: Triton kernels run under the interpreter where there is no GPU, and tests
marked ``gpu`` are deselected there (counted in the terminal summary, never passed or skipped)."""

import os
import signal

import pytest
import torch

if not torch.cuda.is_available():
    # Read when @triton.jit decorates, so it must be set before normbench.kernels imports.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# A shell that starts pytest in the background (``cmd &`` without job control, nohup, some CI
# runners) hands it SIGINT ignored, and children inherit that: the Ctrl-C tests would then see no
# KeyboardInterrupt and spawned runs would never stop. Give this process, and so every child it
# starts, the ordinary Ctrl-C behaviour a terminal user has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_GPU_DESELECTED = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items):
    """Without CUDA, drop the ``gpu`` tests from the run (``pytest_deselected``), so that a
    CPU run reports them as deselected instead of counting them as passed or skipped."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    config.hook.pytest_deselected(items=gpu)
    config.stash[_GPU_DESELECTED] = len(gpu)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.stash.get(_GPU_DESELECTED, 0)
    if n:
        terminalreporter.write_line(
            f"{n} gpu tests deselected: no CUDA device (torch.cuda.is_available() is False); "
            "on a GPU: python3 -m pytest -m gpu tests/kernels"
        )
