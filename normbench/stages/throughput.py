"""The ``throughput`` stage kind: a load generator (guidellm or ``vllm bench serve``) against the variant's server.

Its command, outputs and parse: ``normbench.runners.throughput`` (``guidellm_command`` /
``vllm_bench_serve_command``, ``parse_guidellm_report`` / ``parse_vllm_bench_serve``),
driven by ``normbench.runners.e2e``.
"""

from __future__ import annotations

from typing import Any

from normbench.errors import NormbenchError
from normbench.stages.e2e import E2EKind


class ThroughputKind(E2EKind):
    kind = "throughput"

    def preflight(self, name: str, stage: Any) -> list[str]:
        from normbench.engines import vllm as vllm_engine
        from normbench.runners import throughput as tp

        if stage.client == "vllm_bench_serve" and not vllm_engine.installed():
            return [f"stage {name}: client vllm_bench_serve runs `vllm bench serve`: pip install vllm"]
        if stage.client == "guidellm":
            try:
                tp.check_guidellm_version(tp.guidellm_version())
            except NormbenchError as e:
                return [str(e)]
        return []

    def run(self, env: Any, case: Any, server: Any, variant: Any) -> Any:
        from normbench.runners.e2e import _throughput_case

        return _throughput_case(env, case, server, variant)


KIND = ThroughputKind()
