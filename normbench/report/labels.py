"""Case labels and dtype short names: the one vocabulary every table, plot and message uses.

A kernel case is labelled by its shape and the axes that tell it apart, one token each::

    16x4096 bf16 +residual fp8 g128 col_major

* the shape ``<num_tokens>x<hidden_size>`` comes first whenever both are in the params;
* a boolean axis is ``+name`` / ``-name`` (``+residual``, ``-static_scale``);
* ``dtype`` and ``quant_dtype`` are short names (``DTYPE_SHORT``: ``bf16``, ``fp16``,
  ``fp32``; ``fp8``, ``int8``, ``nvfp4`` are short already);
* ``group_size`` is ``g<size>`` (``g128``);
* ``scale_layout`` and ``scale_granularity`` are their values (``col_major``, ``per_token``),
  which name themselves;
* any other axis is ``name=value``.

End-to-end points and plot groups, whose axes are free-form, are ``name=value`` lists
(``params_text``; in a run table's ``point`` column ``input_len`` is ``in``). Pure: no torch.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

#: torch dtype name -> the short name tables use.
DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
#: The axes that form the shape token.
SHAPE_KEYS = ("num_tokens", "hidden_size")
#: Axes shown as a short dtype name.
DTYPE_KEYS = frozenset({"dtype", "quant_dtype"})
#: Axes shown as their bare value (the values name themselves).
VALUE_KEYS = frozenset({"scale_layout", "scale_granularity"})
#: End-to-end axis -> its name in a run table's narrow ``point`` column (``e2e_label(compact=True)``).
E2E_COMPACT = {"input_len": "in"}
#: Params left out of constant lists and plot group titles: the same in every suite unless swept.
HIDDEN_PARAMS = frozenset({"eps"})


def short_dtype(name: Any) -> Any:
    """``"bfloat16"`` -> ``"bf16"``; a name without a short form (``fp8``) is returned as is."""
    return DTYPE_SHORT.get(name, name) if isinstance(name, str) else name


def axis_token(key: str, value: Any) -> str:
    """One axis of a case label: ``+residual``, ``bf16``, ``g128``, ``col_major``, ``eps=1e-05``."""
    if isinstance(value, bool):
        return f"{'+' if value else '-'}{key}"
    if key in DTYPE_KEYS and isinstance(value, str):
        return short_dtype(value)
    if key == "group_size":
        return f"g{value}"
    if key in VALUE_KEYS and isinstance(value, str):
        return value
    return f"{key}={value}"


def shape_label(params: Mapping[str, Any]) -> str | None:
    """``"16x4096"``, or None when ``params`` lacks ``num_tokens`` or ``hidden_size``."""
    if all(k in params for k in SHAPE_KEYS):
        return f"{params['num_tokens']}x{params['hidden_size']}"
    return None


def case_label(params: Mapping[str, Any], axes: Iterable[str]) -> str:
    """A kernel case: the shape, then ``axis_token`` of each of ``axes`` (in that order) that
    ``params`` holds; ``-`` when that leaves nothing.

    Args:
        params: the case's op params (``num_tokens``, ``hidden_size``, ``dtype``, ...).
        axes: the axes that tell this case apart from its neighbours, usually the ones that
            vary in the table (``normbench.report.varying_axes``); the shape axes among
            them are covered by the shape token.
    """
    parts = [s] if (s := shape_label(params)) else []
    parts += [axis_token(k, params[k]) for k in axes if k not in SHAPE_KEYS and k in params]
    return " ".join(parts) or "-"


def params_text(params: Mapping[str, Any] | Iterable[tuple[str, Any]], sep: str = ", ",
                hide: Iterable[str] = ()) -> str:
    """``name=value`` for each param, in order, joined by ``sep``, less the ``hide`` names
    (``"input_len=512"``; ``"hidden_size=4096, dtype=bfloat16"``)."""
    items = params.items() if isinstance(params, Mapping) else params
    hidden = set(hide)
    return sep.join(f"{k}={v}" for k, v in items if k not in hidden)


def e2e_label(params: Mapping[str, Any], axes: Iterable[str], compact: bool = False) -> str:
    """An end-to-end point: ``name=value`` of each of ``axes`` (``input_len=512``); empty
    when there are none. ``compact``: the names of ``E2E_COMPACT`` shortened (``in=512``),
    for the narrow ``point`` column of a run's table."""
    return params_text([(E2E_COMPACT.get(k, k) if compact else k, params.get(k)) for k in axes], sep=" ")
