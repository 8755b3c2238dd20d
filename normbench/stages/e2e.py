"""The end-to-end stage kinds' shared shape (throughput, latency, accuracy, startup).

Expansion is the same for all of them: one case per (repeat, variant[, point]),
variants interleaving A B / B A per repeat, each case carrying the validated
stage model (``E2ESettings.client``).

Running is the same for all of them too: ``normbench.runners.e2e`` starts (or
reuses) the variant's server, runs the kind's client as a logged subprocess with
its timeout (trying a timed-out one again when the kind allows), keeps its log
and outputs as artifacts, reads the engine's start (from the server's log, or,
for a kind whose client runs the engine itself, from the client's), fails the
case with the reason on every error path, and builds the ``CaseRecord``. A kind
supplies only what is its own, in its module (one per kind, registered in
``normbench.stages.KINDS``), with its tool's command lines and parsers in its
client module (``normbench.runners.<client>``):

* ``command(run) -> Command | None``: the argv, environment, log file, output
  files, timeout and retries of one case's client (``run``: the case as
  ``normbench.runners.e2e.CaseRun`` shows it); None when the case has no client
  (``startup``: the server's start is the measurement);
* ``outputs(run, command) -> {role: path}``: what the client wrote, as artifact
  roles (``raw``, ``samples``); the default checks that ``Command.outputs`` exist;
* ``parse(run, outputs) -> Parsed``: metrics, the record's kind-specific fields
  (``requests``, ``items``, ``latencies_ms``, ...) and a failure reason when the
  client ran but measured nothing;

and, for expansion and the checks before any server starts: ``points`` (latency:
one per ``input_len``), ``serves`` (its cases run against the variant's server),
``preflight`` (what must be installed) and ``file_stem`` (its files' names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from normbench.errors import NormbenchError
from normbench.expand import Capabilities, Case, E2ESettings
from normbench.stages.base import StageKind
from normbench.suite import Suite, stage_name

if TYPE_CHECKING:
    from normbench.runners.e2e import CaseRun
    from normbench.store import Metric

#: Stage fields that are not the client's settings (left out of ``Case.params``).
NOT_PARAMS = frozenset({"kind", "name", "description", "variants", "repeats"})


def _model_label(model: str) -> str:
    """The served model as a run would resolve it (``${NAME:-default}`` expanded), else as written."""
    from normbench.runners.server import expand_env

    try:
        return expand_env(model)
    except NormbenchError:
        return model


def e2e_skip(suite: Suite, caps: Capabilities) -> str | None:
    """Why the suite's served model cannot run here (before any server starts)."""
    if suite.server is None:
        return None
    req = suite.server.requires
    model = _model_label(suite.server.model)
    if req.cuda and caps.device != "cuda":
        return f"{model} needs a CUDA GPU"
    if req.min_sm is not None:
        if caps.sm is None:
            return f"{model} needs SM{req.min_sm}+ (no CUDA GPU here)"
        have = caps.sm[0] * 10 + caps.sm[1]
        if have < req.min_sm:
            return f"{model} needs SM{req.min_sm}+ (this GPU is SM{have})"
    if "vllm" in caps.missing:
        return f"end-to-end stages need vLLM: {caps.missing['vllm']}"
    return None


def slug(text: str) -> str:
    """``text`` as one safe file-name component: runs of other characters than ``A-Z a-z 0-9 _ . -`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


@dataclass
class Command:
    """One end-to-end case's client, as its kind builds it (``E2EKind.command``).

    Attributes:
        tool: the tool's name in the record (``vllm bench serve``); the record's
            tool version is that of its first word's distribution, else the engine's.
        argv: the command line (never a shell string).
        log: the client's log file (stdout and stderr, under a ``case <id>`` banner),
            kept as the ``client_log`` artifact.
        env: the client's environment; None: the suite's (``os.environ`` + ``server.env``).
            A client that runs the engine itself takes ``CaseRun.engine_env()``.
        outputs: files the client writes, by artifact role (``raw``): removed before
            each attempt, kept as artifacts when present, and required once it exits 0.
        timeout_s: the client is stopped after this long (s); None: ``CLIENT_TIMEOUT_S``.
        retries: None: one attempt, and the record says nothing of attempts; a number:
            a client stopped by its timeout (with its server still up) is run again up
            to that many times, and the record keeps ``attempts``.
        status: a line shown under the progress bar before it runs, or None.
    """

    tool: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    timeout_s: float | None = None
    retries: int | None = None
    status: str | None = None


@dataclass
class Parsed:
    """What a kind read from its outputs (``E2EKind.parse``).

    Attributes:
        metrics: normalized metrics by name (each with unit and direction).
        fields: more ``CaseRecord`` fields of this kind (``requests``, ``items``,
            ``task``, ``latencies_ms``; ``duration_s`` replaces the client's wall time).
        failure: why the case FAILED although its client ran (``fields`` are kept),
            e.g. no request completed; None: OK.
    """

    metrics: dict[str, "Metric"]
    fields: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


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

    def file_stem(self, case: Case) -> str:
        """The start of the case's file names in ``logs/``: ``<stage>-<variant>-r<repeat>``."""
        return slug(f"{case.stage}-{case.variant or 'default'}-r{case.repeat}")

    def command(self, run: CaseRun) -> Command | None:
        """The case's client (see ``Command``); None when the case has none.

        Raises:
            NormbenchError: the client cannot run here (the case FAILED with the message).
        """
        raise NotImplementedError

    def outputs(self, run: CaseRun, command: Command) -> dict[str, Path]:
        """The files the client wrote, by artifact role, once it exited 0 (default: ``command.outputs``).

        Raises:
            NormbenchError: one is missing (the case FAILED with the message and the client's log).
        """
        for path in command.outputs.values():
            if not path.exists():
                raise NormbenchError(f"{command.tool} exited 0 but wrote no {path.name}")
        return dict(command.outputs)

    def parse(self, run: CaseRun, outputs: dict[str, Path]) -> Parsed:
        """Metrics and the kind's record fields from ``outputs`` (``{}`` for a case with no client).

        Raises:
            NormbenchError: an output it cannot read (the case FAILED with the message and the client's log).
        """
        raise NotImplementedError
