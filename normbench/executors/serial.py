"""The serial executor: every case in this process, in expansion order.

Kernel stages run one after another (the kernel runner gets one stage's cases
at a time), with the compile caches parallel workers use
(``normbench.env.compile_caches``), then all end-to-end cases go to the
end-to-end runner at once (one server per variant serves several stages). This
is normbench's behaviour without ``--gpus`` or ``--executor``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from normbench.expand import Case


def run(cases: list[Case], ctx: Any) -> None:
    """Run runnable (not skipped) cases with their runners; records go to ``ctx.record``.

    Raises what the runners raise: ``NormbenchError`` (e.g. the end-to-end
    preflight), ``KeyboardInterrupt`` (Ctrl-C, after the runner cleaned up).
    """
    from normbench.env import compile_caches
    from normbench.registry import load
    from normbench.runners import RUNNERS

    kernel_stages: dict[str, list[Case]] = defaultdict(list)  # stage name -> its cases, in plan order
    e2e: list[Case] = []
    for c in cases:
        (kernel_stages[c.stage] if c.kind == "kernel" else e2e).append(c)
    if kernel_stages:
        with compile_caches():
            for stage_cases in kernel_stages.values():
                load(RUNNERS["kernel"])(stage_cases, ctx)
    if e2e:
        load(RUNNERS["e2e"])(e2e, ctx)
