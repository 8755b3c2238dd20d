"""The ``startup`` stage kind: the variant's server start, measured (no client of its own).

Recorded first in each server step (``server_order`` 0), from the server that the
variant's other stages use (``normbench.runners.e2e._startup_case``).
"""

from __future__ import annotations

from typing import Any

from normbench.stages.e2e import E2EKind


class StartupKind(E2EKind):
    kind = "startup"
    server_order = 0

    def run(self, env: Any, case: Any, server: Any, variant: Any) -> Any:
        from normbench.runners.e2e import _startup_case

        return _startup_case(env, case, server, variant)


KIND = StartupKind()
