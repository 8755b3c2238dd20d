"""A run's write lock: an exclusive ``flock(2)`` on ``run.lock`` (see ``normbench.store``).

``acquire_lock`` takes it for the writer (``normbench.store.writer``);
``lock_holder`` tells readers (``normbench.store.reader``) whether a writer is alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError
from normbench.store.schema import LOCK_FILE


class RunLockedError(NormbenchError):
    """Another process is writing the run (it holds ``run.lock``)."""


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def _try_lock(f: Any, run_dir: Path, exclusive: bool = True) -> bool:
    """``flock`` ``f`` without waiting: True if taken, False if another open file holds it."""
    try:
        fcntl.flock(f.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise NormbenchError(f"{run_dir / LOCK_FILE}: cannot lock: {e.strerror or e}") from None


def acquire_lock(run_dir: Path) -> Any:
    """Take ``run_dir``'s write lock for this process and write its pid into the lock file.

    Returns the open lock file: the lock lasts until it is closed (or the process ends).
    The file is never removed: removing it would let two processes lock two different
    files of the same name.

    Raises:
        RunLockedError: another process holds it (message names its pid).
        NormbenchError: the lock file cannot be created (a read-only run directory).
    """
    lock = Path(run_dir) / LOCK_FILE
    try:
        f = open(lock, "a+", encoding="utf-8")
    except OSError as e:
        raise NormbenchError(f"{run_dir}: cannot write this run here ({lock}: {e.strerror or e})") from None
    if not _try_lock(f, Path(run_dir)):
        f.close()
        raise RunLockedError(
            f"{run_dir}: another normbench process ({_holder(lock)}) is writing this run; "
            "wait for it to end, or stop it, then try again"
        )
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def lock_holder(run_dir: str | Path) -> str | None:
    """``"pid N"`` when a process holds ``run_dir``'s write lock, else None (runs in tarballs: None)."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        f = open(lock, "r", encoding="utf-8")
    except OSError:
        return None
    with f:
        if _try_lock(f, Path(run_dir), exclusive=False):
            return None  # closing the file drops the shared lock just taken
    return _holder(lock)
