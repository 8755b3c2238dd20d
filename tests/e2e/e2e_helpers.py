"""Helpers shared by the e2e tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("vllm", "guidellm", "lm_eval")
#: Every process normbench starts in a test inherits this variable (value: a per-session id).
MARK = "NORMBENCH_E2E_MARK"


def missing_tools() -> list[str]:
    out = []
    for name in TOOLS:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except (ImportError, ValueError):
            out.append(name)
    return out


def normbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "normbench.cli", *args]


def leftovers(env: dict[str, str]) -> list[str]:
    """Live processes that inherited this session's marker (none may survive a run)."""
    out = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            if p.environ().get(MARK) == env[MARK]:
                out.append(f"{p.pid} {' '.join(p.info['cmdline'] or [p.info['name']])[:120]}")
        except (psutil.Error, OSError):
            continue
    return out


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd``, keep its output in ``log``, return it."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}\n")
    return proc
