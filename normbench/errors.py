"""User-facing errors.

Every error a user can cause (bad suite, unknown name, missing run) is a
``NormbenchError``. ``normbench.cli`` catches them once, prints the message
without a traceback (``--debug`` shows it) and exits with ``exit_code``.
"""

from __future__ import annotations


class NormbenchError(Exception):
    """A problem the user can fix; its message is the whole explanation."""

    exit_code = 2


class SuiteError(NormbenchError):
    """A suite file that cannot be read, parsed or validated.

    The message starts with ``file:line:col:`` where a position is known.
    """


class UnknownNameError(NormbenchError):
    """An op, provider, suite or run name that does not exist (with did-you-mean)."""


class RunNotFoundError(NormbenchError):
    """A run reference (id, prefix, path, ``latest``) that matches no stored run."""


class IncomparableError(NormbenchError):
    """Runs that ``compare --strict`` refuses to compare (different GPUs, ...)."""
