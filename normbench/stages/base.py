"""``StageKind``: what each stage kind implements (see ``normbench.stages``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from normbench.expand import Capabilities, Case
    from normbench.suite import Suite


class StageKind:
    """One stage kind. Subclasses set ``kind`` and ``runner`` and implement ``expand`` and ``size``.

    Attributes:
        kind: the ``kind`` literal of its suite model.
        runner: the ``normbench.runners.RUNNERS`` group that runs its cases.
    """

    kind: str = ""
    runner: str = ""

    def expand(self, stage: Any, index: int, suite: "Suite", caps: "Capabilities", repeats: int) -> list["Case"]:
        """The stage's cases, skips included (``Case.skip`` says why)."""
        raise NotImplementedError

    def size(self, stage: Any, suite: "Suite", repeats: int) -> int:
        """Case count before rules and capability skips, by multiplying (never enumerating)."""
        raise NotImplementedError

    def size_reason(self, stage: Any, index: int, repeats: int) -> tuple[tuple[Any, ...], str]:
        """(suite location, what multiplies) for ``check_size``'s refusal of an oversized stage."""
        return ("stages", index), "variants x repeats"

    def case_bytes(self, case: "Case") -> int | None:
        """About the memory one case needs on the device (bytes), or None when it needs none there."""
        return None
