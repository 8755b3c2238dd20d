"""The shared skeleton of the end-to-end stage kinds (throughput, latency, accuracy, startup).

Expansion is the same for all of them: one case per (repeat, variant[, point]),
variants interleaving A B / B A per repeat, each case carrying the validated
stage model (``E2ESettings.client``). What differs per kind is small and lives
in its module: ``points`` (latency: one per ``input_len``), ``serves`` (its
cases run against the variant's server), ``preflight`` (what must be installed)
and ``run`` (its command, outputs and parse, in ``normbench.runners.e2e``).
"""

from __future__ import annotations

from typing import Any

from normbench.expand import Capabilities, Case, E2ESettings
from normbench.stages.base import StageKind
from normbench.suite import Suite, stage_name

#: Stage fields that are not the client's settings (left out of ``Case.params``).
NOT_PARAMS = frozenset({"kind", "name", "description", "variants", "repeats"})


def e2e_skip(suite: Suite, caps: Capabilities) -> str | None:
    """Why the suite's served model cannot run here (before any server starts)."""
    if suite.server is None:
        return None
    req = suite.server.requires
    if req.cuda and caps.device != "cuda":
        return f"{suite.server.model} needs a CUDA GPU"
    if req.min_sm is not None:
        if caps.sm is None:
            return f"{suite.server.model} needs SM{req.min_sm}+ (no CUDA GPU here)"
        have = caps.sm[0] * 10 + caps.sm[1]
        if have < req.min_sm:
            return f"{suite.server.model} needs SM{req.min_sm}+ (this GPU is SM{have})"
    if "vllm" in caps.missing:
        return f"end-to-end stages need vLLM: {caps.missing['vllm']}"
    return None


def _hashable(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_hashable(i) for i in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return x


class E2EKind(StageKind):
    """An end-to-end kind. Subclasses set ``kind`` and override what differs.

    Attributes:
        serves: its cases run against the variant's server (False: it starts its own engine).
        server_order: where its cases go in a server step (0 first: the start is recorded before anything).
    """

    runner = "e2e"
    serves = True
    server_order = 1

    def points(self, stage: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
        """The case params of one (variant, repeat); ``base``: the stage's client settings."""
        return [base]

    def point_count(self, stage: Any) -> int:
        return 1

    def expand(self, stage: Any, index: int, suite: Suite, caps: Capabilities, repeats: int = 1) -> list[Case]:
        """One case per (repeat, variant, point); variants interleave A B B A per repeat.

        ``repeats`` (``--repeat``) is the kernel stages'; an end-to-end stage has its own ``repeats``.
        """
        name = stage_name(stage, index)
        variants = stage.variants or list(suite.variants) or ["default"]
        skip = e2e_skip(suite, caps)
        base = {k: v for k, v in stage.model_dump().items() if k not in NOT_PARAMS}
        client = E2ESettings(stage)
        cases: list[Case] = []
        for r in range(stage.repeats):
            order = variants if r % 2 == 0 else list(reversed(variants))
            for v in order:
                for pt in self.points(stage, base):
                    params = tuple((k, _hashable(x)) for k, x in pt.items())
                    cases.append(Case(name, index, stage.kind, None, None, v, params, r, skip, settings=client))
        return cases

    def size(self, stage: Any, suite: Suite, repeats: int) -> int:
        return len(stage.variants or suite.variants or ["default"]) * stage.repeats * self.point_count(stage)

    def preflight(self, name: str, stage: Any) -> list[str]:
        """What is missing to run this stage (one line each); checked before any server starts."""
        return []

    def run(self, env: Any, case: Case, server: Any, variant: Any) -> Any:
        """Run one case (``server``: the variant's running server, or None when ``serves`` is False)."""
        raise NotImplementedError
