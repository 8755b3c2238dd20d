"""The ``latency`` stage kind: ``vllm bench latency``, an offline engine per case (no server).

One case per (repeat, variant, ``input_len``). Its command line and parser are
``normbench.runners.latency``'s (``latency_command``, ``parse_latency_json``).
The tool runs the engine itself, with the variant's ``compilation_config`` and
args and the engine's environment (``server.log_passes`` included), so the
runner reads the engine's start from this case's part of the client log
(``logs/<stage>-<variant>-in<input_len>-r<repeat>-latency.log``) and fails the
case when it contradicts the variant. Raw output: ``...-latency.json``; the
record keeps every timed iteration in ``latencies_ms``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from normbench.expand import Case
from normbench.runners import latency as lat
from normbench.runners.server import load_json, tool_command
from normbench.stages.e2e import Command, E2EKind, Parsed, slug

if TYPE_CHECKING:
    from normbench.runners.e2e import CaseRun


class LatencyKind(E2EKind):
    kind = "latency"
    serves = False

    def points(self, stage: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
        rest = {k: v for k, v in base.items() if k != "input_len"}
        return [{**rest, "input_len": n} for n in stage.input_len]

    def point_count(self, stage: Any) -> int:
        return len(stage.input_len)

    def file_stem(self, case: Case) -> str:
        return slug(f"{case.stage}-{case.variant or 'default'}-in{case.param_dict['input_len']}-r{case.repeat}")

    def command(self, run: CaseRun) -> Command:
        input_len, variant = run.case.param_dict["input_len"], run.variant
        raw = run.file("latency.json")
        engine_args = run.engine.offline_args([*run.server_args, *variant.args])
        argv = lat.latency_command(tool_command("vllm"), run.model, input_len, run.stage, variant.compilation_config,
                                   engine_args, raw)
        status = f"{run.variant_name}: vllm bench latency --input-len {input_len} (repeat {run.case.repeat})"
        return Command("vllm bench latency", argv, run.file("latency.log"), env=run.engine_env(),
                       outputs={"raw": raw}, status=status)

    def parse(self, run: CaseRun, outputs: dict[str, Path]) -> Parsed:
        metrics, iters = lat.parse_latency_json(load_json(outputs["raw"]))
        return Parsed(metrics, {"latencies_ms": iters})


KIND = LatencyKind()
