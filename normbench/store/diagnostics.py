"""Explaining why a record fails the schema, in one line (see ``normbench.store``).

``explain`` turns a pydantic ``ValidationError`` into ``run.json: case 12
(rms_norm/...): status 'WEIRD' is not one of OK, INCORRECT, FAILED, SKIPPED``:
the file, the case and the field of the first problem, and how many more.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from normbench.store.schema import SCHEMA_VERSION


_NOUNS = {
    "list_type": "a list", "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
    "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false", "bool_parsing": "true or false",
}


def _show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return f"the number {_show(v)}"
    if isinstance(v, str):
        return f"the string {_show(v)}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _field(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _case_label(index: int | None, case: Any) -> str:
    cid = case.get("case_id") if isinstance(case, dict) else getattr(case, "case_id", None)
    label = f"case {index}" if index is not None else "case"
    if isinstance(cid, str) and cid:
        label += f" ({cid if len(cid) <= 60 else cid[:59] + '…'})"
    return label


def _problem(e: Any, field: str) -> str:
    t, inp = e["type"], e.get("input")
    if t == "missing":
        return f"{field} is missing"
    if t == "extra_forbidden":
        return f"{field} is not a field of record schema version {SCHEMA_VERSION}"
    if t == "literal_error":
        choices = re.findall(r"'([^']*)'", (e.get("ctx") or {}).get("expected", ""))
        return f"{field} {_show(inp)} is not one of {', '.join(choices)}"
    if t in _NOUNS:
        return f"{field} is {_kind(inp)}, not {_NOUNS[t]}"
    return f"{field}: {' '.join(str(e.get('msg', t)).split())} (got {_kind(inp)})"


def explain(where: str, err: ValidationError, data: Any, case: str | None = None) -> str:
    """One line naming the file, the case and the field of ``err``'s first problem, and how many more.

    ``data`` is the JSON that failed (a record, or with ``case`` a journal line's
    case, ``case`` then being its label).
    """
    errors = err.errors()
    first = errors[0]
    loc = list(first["loc"])
    head = case
    if head is None and len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = data.get("cases") if isinstance(data, dict) else None
        head = _case_label(loc[1], cases[loc[1]] if isinstance(cases, list) and loc[1] < len(cases) else None)
        loc = loc[2:]
    field_name = _field(loc) if loc else ("the case" if head else "the record")
    text = f"{where}: " + (f"{head}: " if head else "") + _problem(first, field_name)
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text
