"""The ``accuracy`` stage kind: lm-eval ``gsm8k`` against the variant's server.

Its command, outputs and parse: ``normbench.runners.accuracy`` (``lm_eval_command``,
``find_outputs``, ``parse_lm_eval``), driven by ``normbench.runners.e2e``.
"""

from __future__ import annotations

from typing import Any

from normbench.errors import NormbenchError
from normbench.stages.e2e import E2EKind


class AccuracyKind(E2EKind):
    kind = "accuracy"

    def preflight(self, name: str, stage: Any) -> list[str]:
        from normbench.runners import accuracy as acc

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

    def run(self, env: Any, case: Any, server: Any, variant: Any) -> Any:
        from normbench.runners.e2e import _accuracy_case

        return _accuracy_case(env, case, server, variant)


KIND = AccuracyKind()
