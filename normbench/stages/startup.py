"""The ``startup`` stage kind: the variant's server start, measured (no client of its own).

Recorded first in each server step (``server_order`` 0), from the server that the
variant's other stages use: ``server_startup_s`` (launch to the health endpoint's
first 200, s) and, when the engine logged it, ``torch_compile_s`` (s), both lower
is better, one sample each; ``duration_s`` is the start's. The record's tool is
the engine (``vllm serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from normbench.stages.e2e import E2EKind, Parsed
from normbench.store import Metric

if TYPE_CHECKING:
    from normbench.runners.e2e import CaseRun


def _seconds(value: float) -> Metric:
    return Metric(value=value, unit="s", higher_is_better=False, samples=[value])


class StartupKind(E2EKind):
    kind = "startup"
    server_order = 0

    def command(self, run: CaseRun) -> None:
        return None

    def parse(self, run: CaseRun, outputs: dict[str, Path]) -> Parsed:
        server = run.server
        metrics = {}
        if server.startup_s is not None:
            metrics["server_startup_s"] = _seconds(server.startup_s)
        compile_s = (server.evidence or {}).get("torch_compile_s")
        if compile_s is not None:
            metrics["torch_compile_s"] = _seconds(float(compile_s))
        failure = None if metrics else "the server started but its start-up time was not measured"
        return Parsed(metrics, {"duration_s": server.startup_s}, failure)


KIND = StartupKind()
