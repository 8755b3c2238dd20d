"""YAML text to Python data, within limits, with ``file:line:col`` errors (see ``normbench.suite``).

``_load_yaml`` first walks the YAML events (``_check_shape``; no tree is built): nesting depth,
nodes and aliases are counted with every alias expanded, from per-anchor sizes, so an alias bomb
is refused without being expanded, and an alias inside the node it names is refused. It then
loads with a SafeLoader that refuses duplicate and non-scalar keys and gives a bad scalar a
position (``_Loader``: libyaml's parser when present); a syntax error in a small file is re-read
by the pure-Python ``_PyLoader`` for its clearer message. ``_compose`` gives the node tree
(positions) of text already loaded. It knows nothing of the suite schema.

Raises:
    SuiteError: a YAML syntax error, too deep, too many nodes or aliases, a recursive alias,
        duplicate keys, a non-scalar key, an unreadable scalar.
"""

from __future__ import annotations

from typing import Any

import yaml

from normbench.errors import SuiteError

#: Collections nest at most this deep (aliases expanded); suites need about 6.
MAX_YAML_DEPTH = 32
#: Nodes of the document with every alias expanded (an alias bomb crosses it early).
MAX_YAML_NODES = 200_000
#: Alias uses (``*name``) in one document.
MAX_YAML_ALIASES = 10_000
#: Syntax errors in files up to this size are re-read by the pure-Python YAML
#: parser, whose messages name the offending character (it is ~20x slower).
_PY_FALLBACK_CHARS = 64 * 1024


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when present
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one) and non-scalar keys."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *base`: merged by SafeLoader.construct_mapping below
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value (a name or a number), not {kind}", key_node.start_mark
            )
        key = loader.construct_object(key_node)
        if key in seen:
            first = seen[key].start_mark
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key '{key}' (first at line {first.line + 1}, column {first.column + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _checked_scalar(construct: Any) -> Any:
    """A scalar constructor whose ``ValueError`` (an int of 5,000 digits, 2001-13-45) carries a position."""

    def wrapped(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as e:
            why = str(e).split(";")[0]  # not the hint about sys.set_int_max_str_digits
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value[:40]!r}: {why}", node.start_mark
            ) from None

    return wrapped


class _PyLoader(yaml.SafeLoader):
    """The pure-Python loader: slower, but its syntax errors name the offending character."""


for _cls in (_Loader, _PyLoader):
    _cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    for _tag, _fn in (("int", yaml.SafeLoader.construct_yaml_int), ("float", yaml.SafeLoader.construct_yaml_float),
                      ("timestamp", yaml.SafeLoader.construct_yaml_timestamp)):
        _cls.add_constructor(f"tag:yaml.org,2002:{_tag}", _checked_scalar(_fn))


def _pos(mark: Any) -> str:
    return f"{mark.line + 1}:{mark.column + 1}"


def _check_shape(text: str, path: str, loader_cls: type) -> None:
    """Walk the YAML events (no tree is built) and refuse what would blow up later.

    Nesting depth and the node count are computed with every alias expanded,
    from per-anchor sizes, so a bomb is measured without being expanded.
    Stops at the first problem, so deep or long input costs little; YAML syntax
    errors propagate as ``yaml.YAMLError``.

    Raises:
        SuiteError: deeper than ``MAX_YAML_DEPTH``, more than ``MAX_YAML_NODES``
            nodes expanded, more than ``MAX_YAML_ALIASES`` aliases, or an alias
            inside the node it names (a recursive structure).
    """
    loader = loader_cls(text)
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, collection height)
    stack: list[list[Any]] = []  # open collections: [anchor, nodes before it, height of its children]
    total = aliases = 0
    try:
        while loader.check_event():
            ev = loader.get_event()
            where = f"{path}:{_pos(ev.start_mark)}"
            if isinstance(ev, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    raise SuiteError(f"{where}: more than {MAX_YAML_ALIASES:,} aliases; a suite uses a few")
                if ev.anchor not in sizes:
                    if any(frame[0] == ev.anchor for frame in stack):
                        raise SuiteError(f"{where}: alias *{ev.anchor} is inside the node it names "
                                         "(a recursive structure); a suite is a tree")
                    continue  # an undefined alias: the composer says so, with its position
                nodes, height = sizes[ev.anchor]
                if total + nodes > MAX_YAML_NODES:
                    raise SuiteError(f"{where}: alias *{ev.anchor} ({nodes:,} nodes) takes the suite past the limit "
                                     f"of {MAX_YAML_NODES:,} nodes (an alias bomb?); refused, not expanded")
                total += nodes
            elif isinstance(ev, yaml.ScalarEvent):
                total += 1
                height = 0
                if ev.anchor:
                    sizes[ev.anchor] = (1, 0)
            elif isinstance(ev, yaml.CollectionStartEvent):
                if len(stack) >= MAX_YAML_DEPTH:
                    raise SuiteError(f"{where}: YAML nested more than {MAX_YAML_DEPTH} levels deep; "
                                     "a suite needs a few")
                stack.append([ev.anchor, total, 0])
                total += 1
                continue
            elif isinstance(ev, yaml.CollectionEndEvent):
                anchor, before, inner = stack.pop()
                height = inner + 1
                if anchor:
                    sizes[anchor] = (total - before, height)
            else:  # stream and document events
                continue
            if total > MAX_YAML_NODES:
                raise SuiteError(f"{where}: more than {MAX_YAML_NODES:,} YAML nodes; a suite needs far fewer")
            if len(stack) + height > MAX_YAML_DEPTH:
                raise SuiteError(f"{where}: YAML nested more than {MAX_YAML_DEPTH} levels deep once aliases are "
                                 "expanded; a suite needs a few")
            if stack:
                stack[-1][2] = max(stack[-1][2], height)
    finally:
        loader.dispose()


def _yaml_error(e: yaml.YAMLError, text: str, path: str) -> SuiteError:
    """One ``file:line:col: ...`` line for a YAML error."""
    if isinstance(e, yaml.reader.ReaderError):
        before = text[: e.position] if isinstance(e.position, int) else ""
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        ch = e.character if isinstance(e.character, str) else chr(e.character)
        return SuiteError(f"{path}:{line}:{col}: character {ord(ch):#06x} is not allowed in YAML ({e.reason})")
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{_pos(mark)}" if mark else path
        problem = e.problem or str(e)
        if isinstance(e, yaml.constructor.ConstructorError):
            return SuiteError(f"{where}: {problem}")
        if e.context:
            problem = f"{e.context}: {problem}"
        return SuiteError(f"{where}: YAML syntax error: {problem}")
    return SuiteError(f"{path}: YAML error: {e}")


def _load_yaml(text: str, path: str) -> Any:
    """``text`` as Python data, within the limits (``_check_shape``) (libyaml, else pure Python)."""
    try:
        _check_shape(text, path, _Loader)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        if _Loader.__mro__[1] is yaml.SafeLoader or len(text) > _PY_FALLBACK_CHARS:
            raise _yaml_error(e, text, path) from e
        first = e
    try:  # the same text again, for the pure-Python parser's clearer message
        _check_shape(text, path, _PyLoader)
        yaml.load(text, Loader=_PyLoader)  # noqa: S506 - _PyLoader is a SafeLoader
    except yaml.YAMLError as e:
        raise _yaml_error(e, text, path) from e
    raise _yaml_error(first, text, path) from first


def _compose(text: str) -> yaml.Node | None:
    """The YAML tree of ``text`` (positions only; the text already loaded once)."""
    return yaml.compose(text, Loader=_Loader)
