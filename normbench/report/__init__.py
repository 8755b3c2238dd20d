"""Renderers: rich tables, Markdown, JSON/CSV and plots. Pure: no torch."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable


def varying_axes(param_dicts: Iterable[dict[str, Any]]) -> list[str]:
    """The parameter names whose values differ across ``param_dicts``, in first-seen order."""
    values: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for params in param_dicts:
        for k, v in params.items():
            if k not in values:
                order.append(k)
            values[k].add(repr(v))
    return [k for k in order if len(values[k]) > 1]
