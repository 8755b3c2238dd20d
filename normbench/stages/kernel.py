"""The ``kernel`` stage kind: a provider x sweep-point grid, run by ``normbench.runners.kernel``.

``expand`` gives one case per (sweep point, repeat, provider) that the stage's
include/exclude rules keep, grouped by point, repeats interleaving providers
(p1 p2 p1 p2 ...); each case carries its ``ProviderRef`` and its
``KernelSettings`` (seed, the tolerance for its dtype, timing).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from normbench.expand import Capabilities, Case, KernelSettings, _matches, _unfused_skip, capability_skip, case_bytes
from normbench.ops import OPS
from normbench.stages.base import StageKind
from normbench.suite import KernelStage, ProviderRef, Suite, stage_name


class KernelKind(StageKind):
    kind = "kernel"
    runner = "kernel"

    def expand(self, stage: KernelStage, index: int, suite: Suite | None, caps: Capabilities,
               repeats: int = 1) -> list[Case]:
        info = OPS[stage.op]
        axes = stage.sweep.axes()
        name = stage_name(stage, index)
        cases: list[Case] = []
        keys = list(axes)
        refs = [ProviderRef.of(p) for p in stage.providers]
        settings: dict[str, KernelSettings] = {}
        for combo in itertools.product(*(axes[k] for k in keys)):
            params = info.complete(dict(zip(keys, combo)))
            invalid = info.validate(params)
            dtype = params["dtype"]
            if dtype not in settings:
                settings[dtype] = KernelSettings.of(stage, dtype)
            for r in range(repeats):
                for ref in refs:
                    values = {**params, "provider": ref.label}
                    if stage.include and not any(_matches(rule, values) for rule in stage.include):
                        continue
                    if any(_matches(rule, values) for rule in stage.exclude):
                        continue
                    skip = invalid or (_unfused_skip(ref, stage.op, caps) if ref.is_unfused
                                       else capability_skip(ref.label, stage.op, caps))
                    cases.append(Case(name, index, "kernel", stage.op, ref.label, None, tuple(params.items()), r,
                                      skip, ref=ref, settings=settings[dtype]))
        return cases

    def size(self, stage: KernelStage, suite: Suite | None, repeats: int) -> int:
        return math.prod(len(v) for v in stage.sweep.axes().values()) * len(stage.providers) * repeats

    def size_reason(self, stage: KernelStage, index: int, repeats: int) -> tuple[tuple[Any, ...], str]:
        parts = [f"{len(v):,} {axis}" for axis, v in stage.sweep.axes().items() if len(v) > 1]
        parts.append(f"{len(stage.providers)} provider{'s' if len(stage.providers) > 1 else ''}")
        if repeats > 1:
            parts.append(f"{repeats} repeats")
        return ("stages", index, "sweep"), " x ".join(parts)

    def case_bytes(self, case: Case) -> int | None:
        assert case.op is not None and isinstance(case.settings, KernelSettings)
        return case_bytes(case.op, case.param_dict, case.settings.rotate_bytes)

    def run(self, cases: list[Case], ctx: Any) -> None:
        """Measure the cases (``normbench.runners.kernel.run``)."""
        from normbench.runners.kernel import run

        run(cases, ctx)


KIND = KernelKind()
