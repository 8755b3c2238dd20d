"""The ``latency`` stage kind: ``vllm bench latency``, an offline engine per case (no server).

One case per (repeat, variant, ``input_len``). Its command and parse:
``normbench.runners.latency`` (``latency_command``, ``parse_latency_json``), driven by
``normbench.runners.e2e``.
"""

from __future__ import annotations

from typing import Any

from normbench.stages.e2e import E2EKind


class LatencyKind(E2EKind):
    kind = "latency"
    serves = False

    def points(self, stage: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
        rest = {k: v for k, v in base.items() if k != "input_len"}
        return [{**rest, "input_len": n} for n in stage.input_len]

    def point_count(self, stage: Any) -> int:
        return len(stage.input_len)

    def run(self, env: Any, case: Any, server: Any, variant: Any) -> Any:
        from normbench.runners.e2e import _latency_case

        return _latency_case(env, case)


KIND = LatencyKind()
