"""Runners: turn a stage kind's cases into ``CaseRecord``s, and nothing else.

A runner is ``run(cases, ctx) -> None``: it measures each case and hands every
finished ``CaseRecord`` to ``ctx.record`` (which makes it durable and advances
the progress bar) as soon as it has it, so a crash keeps finished work. Cases
that expansion already marked ``skip`` never reach a runner. Ctrl-C arrives as
``KeyboardInterrupt``: a runner cleans up (servers, processes) and re-raises.

``RUNNERS`` maps a group name to its ``"module:attr"``: ``kernel`` gets the cases
of one kernel stage at a time; ``e2e`` gets all end-to-end cases of the suite
at once, because one server per variant serves several stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from normbench.expand import Capabilities, Case
from normbench.store import CaseRecord, utc_now
from normbench.suite import Suite

RUNNERS = {
    "kernel": "normbench.runners.kernel:run",
    "e2e": "normbench.runners.e2e:run",
}


@dataclass
class RunContext:
    """What a runner may use.

    Attributes:
        suite: the validated suite (runners read its ``server`` and ``variants``;
            a case carries its stage's settings, ``Case.settings``, so no runner
            reads ``suite.stages``).
        caps: what this machine offers.
        environment: the run's environment fingerprint (``normbench.env``);
            ``environment["peak_bandwidth_gbps"]`` is the measured copy bandwidth.
        run_dir: the run's directory; ``logs_dir`` for logs and raw tool outputs.
        record: call with each finished (case, CaseRecord).
        status: call with a short line about what is happening now (shown under
            the progress bar).
        debug: ``--debug`` was given (runners may keep more logs).
        extra: what an executor tells a runner: for end-to-end lanes ``port``
            (the lane's ``vllm serve`` port) and ``preflight_done``.
    """

    suite: Suite
    caps: Capabilities
    environment: dict[str, Any]
    run_dir: Path
    record: Callable[[Case, CaseRecord], None]
    status: Callable[[str], None] = lambda s: None
    debug: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"


def base_record(case: Case, status: str, reason: str | None = None, **kw: Any) -> CaseRecord:
    """A ``CaseRecord`` with the case's identity filled in."""
    return CaseRecord(
        case_id=case.case_id,
        fingerprint=case.fingerprint,
        stage=case.stage,
        kind=case.kind,
        op=case.op,
        provider=case.provider,
        variant=case.variant,
        params=case.param_dict,
        repeat=case.repeat,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        started_at=kw.pop("started_at", utc_now()),
        **kw,
    )


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
