"""The ``throughput`` stage kind: a load generator (guidellm or ``vllm bench serve``) against the variant's server.

Its tools' command lines and report parsers are ``normbench.runners.throughput``'s;
here is which one a case runs, where its files go and what its record keeps:

* ``logs/<stage>-<variant>-r<repeat>-<client>.log`` and the raw report
  ``...-guidellm.json`` / ``...-vllm-bench-serve.json`` (artifact ``raw``);
* guidellm gets ``max_seconds + GUIDELLM_SLACK_S`` (no ``max_seconds``: the
  runner's default) and is tried again ``GUIDELLM_RETRIES`` times when it hangs
  past that; ``vllm bench serve`` runs once; the record keeps ``attempts``;
* ``requests: {"completed": n, "failed": m}``; nothing completed: FAILED.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from normbench.engines import vllm as vllm_engine
from normbench.errors import NormbenchError
from normbench.runners import throughput as tp
from normbench.runners.server import load_json, tool_command
from normbench.stages.e2e import Command, E2EKind, Parsed

if TYPE_CHECKING:
    from normbench.runners.e2e import CaseRun


def _tool(stage: Any) -> str:
    return "guidellm" if stage.client == "guidellm" else "vllm bench serve"


class ThroughputKind(E2EKind):
    kind = "throughput"

    def preflight(self, name: str, stage: Any) -> list[str]:
        if stage.client == "vllm_bench_serve" and not vllm_engine.installed():
            return [f"stage {name}: client vllm_bench_serve runs `vllm bench serve`: pip install vllm"]
        if stage.client == "guidellm":
            try:
                tp.check_guidellm_version(tp.guidellm_version())
            except NormbenchError as e:
                return [str(e)]
        return []

    def command(self, run: CaseRun) -> Command:
        stage, server = run.stage, run.server
        log = run.file(f"{stage.client}.log")
        if stage.client == "guidellm":
            tp.check_guidellm_version(run.versions["guidellm"])
            raw = run.file("guidellm.json")
            argv = tp.guidellm_command(tool_command("guidellm"), stage, server.base_url, server.name, run.model, raw)
            timeout = stage.max_seconds + tp.GUIDELLM_SLACK_S if stage.max_seconds else None
            return Command(_tool(stage), argv, log, outputs={"raw": raw}, timeout_s=timeout,
                           retries=tp.GUIDELLM_RETRIES)
        raw = run.file("vllm-bench-serve.json")
        argv = tp.vllm_bench_serve_command(tool_command("vllm"), stage, server.base_url, server.name, run.model,
                                           raw.parent, raw.name)
        return Command(_tool(stage), argv, log, outputs={"raw": raw}, retries=0)

    def parse(self, run: CaseRun, outputs: dict[str, Path]) -> Parsed:
        data = load_json(outputs["raw"])
        parse = tp.parse_guidellm_report if run.stage.client == "guidellm" else tp.parse_vllm_bench_serve
        metrics, counts = parse(data)
        failure = None
        if counts["completed"] == 0:
            failure = f"{_tool(run.stage)}: no request completed ({counts['failed']} failed)"
        return Parsed(metrics, {"requests": counts}, failure)


KIND = ThroughputKind()
