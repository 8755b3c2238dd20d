"""Stage kinds as objects: one module per kind, registered by its ``kind`` literal.

``KINDS`` maps each ``kind`` a suite may use to the ``"module:attr"`` of its
``StageKind`` (``normbench.stages.base``), loaded on first use (the kernel kind
never imports the end-to-end modules, nor the reverse). A kind's object:

* ``expand(stage, index, suite, caps, repeats)``: its cases, each carrying what it
  needs to run (``normbench.expand.Case``: provider ref, params, settings);
* ``size(stage, suite, repeats)`` and ``size_reason(stage, index, repeats)``:
  its case count before rules and skips, and what multiplies it (``check_size``);
* ``runner``: the ``normbench.runners.RUNNERS`` group that runs its cases;
* end-to-end kinds (``normbench.stages.e2e.E2EKind``) add ``serves`` (its cases
  run against the variant's server), ``preflight`` and the three hooks the shared
  runner (``normbench.runners.e2e.run_case``) calls: ``command``, ``outputs`` and
  ``parse``.

The pydantic union of stage models (``normbench.suite.Stage``) stays static: it
gives positioned errors. A new kind is one model in ``suite/schema.py``, one module here
and one line in ``KINDS``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from normbench.stages.base import StageKind

#: kind literal -> "module:attr" of its StageKind.
KINDS: dict[str, str] = {
    "kernel": "normbench.stages.kernel:KIND",
    "throughput": "normbench.stages.throughput:KIND",
    "latency": "normbench.stages.latency:KIND",
    "accuracy": "normbench.stages.accuracy:KIND",
    "startup": "normbench.stages.startup:KIND",
}
_LOADED: dict[str, "StageKind"] = {}


def kind_of(kind: str) -> "StageKind":
    """The ``StageKind`` registered for ``kind``.

    Raises:
        KeyError: no such kind (the suite validator admits only registered ones).
    """
    got = _LOADED.get(kind)
    if got is None:
        module, _, attr = KINDS[kind].partition(":")
        got = _LOADED[kind] = getattr(import_module(module), attr)
        if got.kind != kind:
            raise TypeError(f"{KINDS[kind]} is kind {got.kind!r}, registered as {kind!r}")
    return got
