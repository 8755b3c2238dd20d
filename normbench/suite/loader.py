"""Reading a suite: the file, its YAML, its validation, errors at ``file:line:col`` (see ``normbench.suite``).

``load_suite`` is ``read_regular_file`` (a regular file of at most ``MAX_SUITE_BYTES``, read
without blocking), UTF-8, then ``parse_suite`` (``normbench.suite.bounded_yaml``, then
``Suite.model_validate``). ``validate_spec`` validates a suite stored in a run record;
``refuse`` and ``locate`` place problems found after loading. ``_format_loc`` and ``_errors_at``
map pydantic error locations onto the YAML tree.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from normbench.errors import SuiteError, UnknownNameError
from normbench.stages import KINDS
from normbench.suite.bounded_yaml import _compose, _load_yaml, _pos
from normbench.suite.schema import Suite

#: A suite file is at most this many bytes (1 MiB; the bundled ones are < 10 KiB).
MAX_SUITE_BYTES = 1 << 20


class LoadedSuite(BaseModel):
    """A validated suite with where it came from.

    ``text`` is the file's text when it came from a file (positions for later
    checks, ``locate``); None for a suite restored from a run record.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)
    suite: Suite
    path: str
    sha256: str
    text: str | None = Field(default=None, repr=False)


def _format_loc(loc: tuple[Any, ...], root: yaml.Node | None) -> tuple[str, str]:
    """Map a pydantic error location onto the YAML tree: (dotted path, "line:col").

    Discriminator tags in ``loc`` (e.g. ``'kernel'`` after ``stages, 0``) and
    list indexes of axes given as scalars are skipped; the position is that of
    the deepest node found.
    """
    node = root
    parts: list[str] = []
    pos = _pos(root.start_mark) if root is not None else "1:1"
    for item in loc:
        if isinstance(item, int):
            if isinstance(node, yaml.SequenceNode) and item < len(node.value):
                node = node.value[item]
                parts.append(f"[{item}]")
                pos = _pos(node.start_mark)
            elif root is None:  # no document: the path alone
                parts.append(f"[{item}]")
            continue
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == item), None)
            if match is None:
                if item in KINDS or item in ("str", "Unfused") or "[" in str(item):
                    continue  # a union tag, not a key of the document
                parts.append(f".{item}" if parts else str(item))
                continue
            k, node = match
            parts.append(f".{item}" if parts else str(item))
            pos = _pos(k.start_mark)
        elif str(item) in ("kernel", "throughput", "latency", "accuracy", "startup", "str", "Unfused") or "[" in str(item):
            continue
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts), pos


_SUBPATH = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*): (.*)$", re.S)


def _clean_msg(msg: str) -> str:
    return re.sub(r"^(Value|Assertion) error, ", "", msg)


def _errors_at(problems: list[tuple[tuple[Any, ...], str]], root: yaml.Node | None, path: str) -> str:
    """``path:line:col: dotted.loc: message`` lines, in file order, for (pydantic-style loc, message) pairs."""
    found = []
    for loc, msg in problems:
        # A model validator names the sub-path it judged ("sweep.group_size: ...");
        # move it into the location so the position points at that key.
        sub = _SUBPATH.match(msg)
        if sub:
            loc += tuple(int(t) if t.isdigit() else t for t in re.findall(r"\w+", sub.group(1)))
            msg = sub.group(2)
        dotted, pos = _format_loc(loc, root)
        if root is None:
            head = f"{path}: " if path else ""
            found.append(((0, 0), f"{head}{dotted}: {msg}" if dotted else f"{head}{msg}"))
            continue
        line, col = (int(x) for x in pos.split(":"))
        found.append(((line, col), f"{path}:{pos}: {dotted}: {msg}" if dotted else f"{path}:{pos}: {msg}"))
    return "\n".join(text for _, text in sorted(found, key=lambda f: f[0]))


def parse_suite(text: str, path: str) -> Suite:
    """Parse and validate suite YAML ``text``; ``path`` is only used in messages.

    Raises:
        SuiteError: see the module docstring; the YAML limits are checked before
            any tree is built.
    """
    if not text.strip():
        raise SuiteError(f"{path}: the file is empty; a suite needs at least 'name' and 'stages'")
    data = _load_yaml(text, path)
    if data is None:
        raise SuiteError(f"{path}: the file holds no YAML document; a suite needs at least 'name' and 'stages'")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise SuiteError(f"{path}:1:1: a suite is a mapping (name:, stages:, ...), not {kind}")
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        problems = [(tuple(err["loc"]), _clean_msg(err["msg"])) for err in e.errors()]
        raise SuiteError(_errors_at(problems, _compose(text), path)) from e
    except UnknownNameError as e:
        raise SuiteError(f"{path}: {e}") from e


def validate_spec(spec: Any, path: str = "") -> Suite:
    """A suite from its stored form (a run record's ``suite.spec``), validated as ``parse_suite`` validates.

    Raises:
        SuiteError: one ``[path: ]stages[0].sweep.num_tokens[1]: why`` line per problem (no positions).
    """
    try:
        return Suite.model_validate(spec)
    except ValidationError as e:
        problems = [(tuple(err["loc"]), _clean_msg(err["msg"])) for err in e.errors()]
        raise SuiteError(_errors_at(problems, None, path)) from None
    except UnknownNameError as e:
        raise SuiteError(f"{path}: {e}" if path else str(e)) from None


def refuse(loaded: LoadedSuite, problems: list[tuple[tuple[Any, ...], str]]) -> SuiteError:
    """A ``SuiteError`` for problems found after loading (``normbench.expand.check_rules`` / ``check_memory``).

    Each problem is a pydantic-style location (``("stages", 0, "sweep", "num_tokens", 2)``)
    and a message; the error reads ``file:line:col: stages[0].sweep.num_tokens[2]: message``
    when the suite's text is known, else ``file: stages[0]...: message``.
    """
    root = _compose(loaded.text) if loaded.text else None
    return SuiteError(_errors_at(problems, root, loaded.path))


def locate(loaded: LoadedSuite, dotted: str) -> str | None:
    """``file:line:col`` of a dotted path such as ``variants.fused.compilation_config.pass_config.x``
    (the deepest key found), or None without the suite's text."""
    if not loaded.text:
        return None
    loc = tuple(int(t) if t.isdigit() else t for t in re.findall(r"[^.\[\]]+", dotted))
    _, pos = _format_loc(loc, _compose(loaded.text))
    return f"{loaded.path}:{pos}"


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular_file(path: str | Path, max_bytes: int = MAX_SUITE_BYTES, what: str = "suite file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read without ever blocking.

    The type and size come from ``os.stat`` before anything is opened (a FIFO
    would block ``open``; ``/dev/zero`` never ends); the file is then opened
    ``O_NONBLOCK`` and checked again with ``fstat``, and at most ``max_bytes + 1``
    bytes are read (a file that grew is refused too).

    Raises:
        SuiteError: no such file, a directory, a FIFO/device/socket, over
            ``max_bytes``, or unreadable (permissions, a name too long, ...).
    """
    shown = str(path)

    def refused(st: os.stat_result) -> SuiteError | None:
        if stat.S_ISDIR(st.st_mode):
            return SuiteError(f"{shown}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            return SuiteError(f"{shown}: is {_file_kind(st.st_mode)}, not a regular file; "
                              f"a {what} must be a regular file")
        if st.st_size > max_bytes:
            return SuiteError(f"{shown}: {st.st_size:,} bytes; a {what} is at most {max_bytes:,} bytes")
        return None

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SuiteError(f"{shown}: no such file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        raise SuiteError(f"{shown}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    err = refused(st)
    if err:
        raise err
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise SuiteError(f"{shown}: cannot read: {e.strerror}") from None
    try:
        err = refused(os.fstat(fd))  # the name may have changed hands since the stat
        if err:
            raise err
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise SuiteError(f"{shown}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise SuiteError(f"{shown}: more than {max_bytes:,} bytes; a {what} is at most {max_bytes:,} bytes")
    return b"".join(chunks)


def load_suite(path: str | Path) -> LoadedSuite:
    """Read, parse and validate a suite file (``read_regular_file``, UTF-8, ``parse_suite``).

    Raises:
        SuiteError: see the module docstring.
    """
    shown = str(path)
    raw = read_regular_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SuiteError(f"{shown}:{line}:{col}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                         "save the suite as UTF-8") from None
    suite = parse_suite(text, shown)
    return LoadedSuite(suite=suite, path=shown, sha256=hashlib.sha256(raw).hexdigest(), text=text)
