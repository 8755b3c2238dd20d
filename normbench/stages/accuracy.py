"""The ``accuracy`` stage kind: lm-eval ``gsm8k`` against the variant's server.

Its command line, task file and parsers are ``normbench.runners.accuracy``'s
(``lm_eval_command``, ``write_task``, ``find_outputs``, ``parse_lm_eval``). Files:
``logs/<stage>-<variant>-r<repeat>-lm_eval.log``, lm-eval's output folder
``...-lm_eval/`` (its newest ``results_*.json`` is the ``raw`` artifact, its
``samples_<task>_*.jsonl`` the ``samples`` one) and, with ``data_files``, the
task folder ``logs/<stage>-<variant>-lm_eval-task/`` (one per variant, rewritten
each repeat). The record keeps ``items`` (per-document results) and ``task``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from normbench.errors import NormbenchError
from normbench.runners import accuracy as acc
from normbench.runners.server import load_json, tool_command
from normbench.stages.e2e import Command, E2EKind, Parsed, slug

if TYPE_CHECKING:
    from normbench.runners.e2e import CaseRun


def _task(stage: Any) -> str:
    """The lm-eval task a stage runs: its own, or normbench's offline copy when it has ``data_files``."""
    return stage.task if stage.data_files is None else acc.LOCAL_TASK


class AccuracyKind(E2EKind):
    kind = "accuracy"

    def preflight(self, name: str, stage: Any) -> list[str]:
        problems = []
        try:
            acc.gsm8k_yaml()
        except NormbenchError as e:
            problems.append(str(e))
        if stage.data_files is not None:
            try:
                acc.resolve_data_files(stage.data_files)
            except NormbenchError as e:
                problems.append(f"stage {name}: {e}")
        return problems

    def command(self, run: CaseRun) -> Command:
        stage, server, case = run.stage, run.server, run.case
        include = None
        if stage.data_files is not None:
            include = run.logs / f"{slug(case.stage)}-{slug(case.variant or 'default')}-lm_eval-task"
            acc.write_task(include, acc.resolve_data_files(stage.data_files))
        argv = acc.lm_eval_command(tool_command("lm_eval"), stage, server.base_url, server.name, _task(stage),
                                   run.file("lm_eval"), include)
        return Command("lm_eval", argv, run.file("lm_eval.log"))

    def outputs(self, run: CaseRun, command: Command) -> dict[str, Path]:
        results, samples = acc.find_outputs(run.file("lm_eval"), _task(run.stage))
        return {"raw": results, **({"samples": samples} if samples is not None else {})}

    def parse(self, run: CaseRun, outputs: dict[str, Path]) -> Parsed:
        task = _task(run.stage)
        metrics, items = acc.parse_lm_eval(load_json(outputs["raw"]), acc.read_samples(outputs.get("samples")), task)
        return Parsed(metrics, {"items": items, "task": task})


KIND = AccuracyKind()
