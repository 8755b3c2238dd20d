"""Tuned launch-config tables (``kernels/tuned/<family>.json``) and the contract of the tuner.

The tables are data, not code: ``scripts/tune.py FAMILY`` measures on a GPU and writes them,
each family's ``configs.py`` reads its own at import (``load``) and picks a row per launch.

Format, ``schema_version`` 1::

    {
      "schema_version": 1,
      "family": "rmsnorm",
      "key": ["residual", "hidden_size"],        # an entry's key fields, in the family's order
      "source": "scripts/tune.py rmsnorm, NVIDIA H200, triton 3.6.0 (...)",
      "entries": [
        {"residual": false, "hidden_size": 2880, "rows": [
          {"max_tokens": 1, "config": {"block_n": 4096, "num_warps": 8, ...}},
          {"max_tokens": null, "config": {...}}
        ]}
      ]
    }

An entry's rows are ascending in ``max_tokens``; the first row whose ``max_tokens`` is >=
num_tokens wins, ``null`` meaning no bound (``SENTINEL`` in memory). A ``config`` object holds
the family's ``LaunchConfig`` fields (``kernels/_triton.py``: ``from_dict``). Tables are
measured with 2-byte (bfloat16) activations; how a key is looked up (exact hidden size,
power-of-two bucket, fallbacks) is the family's ``default_config``. ``load`` validates every
field and raises ``TunedTableError`` naming the file and the place of the first problem.

The tuner's contract (``Tuning``, ``Point``): each family's ``configs.py`` says which points
to measure, which candidate configs to try there, and how a point maps to a table key; the one
tuner (``scripts/tune.py``) compiles, checks, times and writes the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

#: In-memory bound of a row without one (``"max_tokens": null``).
SENTINEL = 2**31 - 1
SCHEMA_VERSION = 1
DIR = Path(__file__).resolve().parent

Rows = tuple  # tuple[tuple[int, LaunchConfig], ...], ascending bounds


class TunedTableError(ValueError):
    """A tuned table that does not follow the format (the message names the file and field)."""


@dataclass(frozen=True)
class Table:
    """A parsed table: ``rows`` maps an entry's key tuple (``key_fields`` order) to its rows."""

    family: str
    key_fields: tuple[str, ...]
    source: str
    rows: dict[tuple, Rows]


def path_of(family: str) -> Path:
    """The table file of ``family`` inside the installed (or checked-out) package."""
    return DIR / f"{family}.json"


def load(family: str, config_type: type, key: tuple[tuple[str, type], ...], path: Path | None = None) -> Table:
    """Read and validate ``family``'s table.

    Args:
        config_type: the family's ``LaunchConfig`` subclass.
        key: (field name, type) of the key fields, in order, e.g. ``(("residual", bool),
            ("hidden_size", int))``.
        path: the file (default ``path_of(family)``).

    Raises:
        TunedTableError: a missing or unreadable file, invalid JSON, or a table that breaks the format.
    """
    path = Path(path) if path is not None else path_of(family)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TunedTableError(f"{path}: cannot read the tuned table: {e}") from None
    return parse(data, family, config_type, key, str(path))


def parse(data: Any, family: str, config_type: type, key: tuple[tuple[str, type], ...], where: str = "table") -> Table:
    """Validate a decoded table (see the module docstring); ``where`` prefixes the errors."""

    def fail(place: str, why: str):
        raise TunedTableError(f"{where}: {place}: {why}")

    if not isinstance(data, dict):
        fail("top level", f"expected an object, got {type(data).__name__}")
    extra = sorted(set(data) - {"schema_version", "family", "key", "source", "entries"})
    if extra:
        fail("top level", f"unknown field(s) {', '.join(extra)}")
    if data.get("schema_version") != SCHEMA_VERSION:
        fail("schema_version", f"expected {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    if data.get("family") != family:
        fail("family", f"expected {family!r}, got {data.get('family')!r}")
    names = [name for name, _ in key]
    if data.get("key") != names:
        fail("key", f"expected {names}, got {data.get('key')!r}")
    source = data.get("source", "")
    if not isinstance(source, str):
        fail("source", "expected a string")
    entries = data.get("entries")
    if not isinstance(entries, list):
        fail("entries", "expected a list")
    rows: dict[tuple, Rows] = {}
    for i, entry in enumerate(entries):
        place = f"entries[{i}]"
        if not isinstance(entry, dict):
            fail(place, f"expected an object, got {type(entry).__name__}")
        extra = sorted(set(entry) - set(names) - {"rows"})
        if extra:
            fail(place, f"unknown field(s) {', '.join(extra)}")
        values = []
        for name, typ in key:
            value = entry.get(name)
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                fail(f"{place}.{name}", f"expected {typ.__name__}, got {value!r}")
            values.append(value)
        k = tuple(values)
        if k in rows:
            fail(place, f"duplicate key {dict(zip(names, k))}")
        raw = entry.get("rows")
        if not isinstance(raw, list) or not raw:
            fail(f"{place}.rows", "expected a non-empty list")
        parsed = []
        for j, row in enumerate(raw):
            rplace = f"{place}.rows[{j}]"
            if not isinstance(row, dict) or set(row) != {"max_tokens", "config"}:
                fail(rplace, "expected an object with exactly max_tokens and config")
            bound = row["max_tokens"]
            if bound is None:
                bound = SENTINEL
            elif not isinstance(bound, int) or isinstance(bound, bool) or not 0 < bound < SENTINEL:
                fail(f"{rplace}.max_tokens", f"expected a positive integer or null, got {row['max_tokens']!r}")
            if parsed and bound <= parsed[-1][0]:
                fail(f"{rplace}.max_tokens", f"bounds must ascend strictly ({bound} after {parsed[-1][0]})")
            try:
                cfg = config_type.from_dict(row["config"])
            except (TypeError, ValueError) as e:
                fail(f"{rplace}.config", str(e))
            parsed.append((bound, cfg))
        rows[k] = tuple(parsed)
    return Table(family, tuple(names), source, rows)


def pick(rows: Rows, num_tokens: int):
    """The config of the first row whose bound is >= ``num_tokens``, or None past the last bound."""
    for bound, cfg in rows:
        if num_tokens <= bound:
            return cfg
    return None


def dump(table: Table) -> str:
    """JSON text of ``table`` (entries sorted by key, one row per line), readable by ``load``."""
    head = {"schema_version": SCHEMA_VERSION, "family": table.family, "key": list(table.key_fields),
            "source": table.source}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + ['  "entries": [']
    keys = sorted(table.rows)
    for n, k in enumerate(keys):
        entry = ", ".join(f"{json.dumps(name)}: {json.dumps(v)}" for name, v in zip(table.key_fields, k))
        lines.append(f"    {{{entry}, \"rows\": [")
        rows = table.rows[k]
        for j, (bound, cfg) in enumerate(rows):
            b = "null" if bound >= SENTINEL else str(bound)
            comma = "," if j + 1 < len(rows) else ""
            lines.append(f"      {{\"max_tokens\": {b}, \"config\": {json.dumps(cfg.as_dict())}}}{comma}")
        lines.append("    ]}" + ("," if n + 1 < len(keys) else ""))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


# =========================================================================== the tuner's contract


@dataclass(frozen=True)
class Point:
    """One measured case: its table ``key``, ``num_tokens``, and the case (``op``, ``params``).

    Points of one key and token count that differ only by ``variant`` (e.g. the quant family's
    fp8 and int8) share one table row: the tuner scores configs over all of them.
    """

    key: tuple
    num_tokens: int
    op: str
    params: tuple = field(compare=False)  # sorted (name, value) pairs: hashable
    variant: str = ""

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def label(self) -> str:
        key = ",".join(str(v) for v in self.key)
        return f"{key} T={self.num_tokens}" + (f" {self.variant}" if self.variant else "")


def make_point(key: tuple, op: str, params: dict[str, Any], variant: str = "") -> Point:
    return Point(key, int(params["num_tokens"]), op, tuple(sorted(params.items())), variant)


class Tuning:
    """What a family tells the tuner (``kernels/<family>/configs.py`` subclasses it as ``TUNING``).

    The tuner runs a config through the family's ``triton`` provider with
    ``params["launch_config"] = config``.

    Attributes:
        family: the table's name (``kernels/tuned/<family>.json``).
        config_type: the family's ``LaunchConfig`` subclass.
        key: (field, type) of the table key, as ``load`` takes it.
    """

    family: str = ""
    config_type: type = object
    key: tuple[tuple[str, type], ...] = ()

    def points(self) -> list[Point]:
        """Every point a full run measures (the suites' shapes), most important first."""
        raise NotImplementedError

    def candidates(self, point: Point, facts, quick: bool) -> list:
        """Round-1 configs at ``point`` on a device with ``facts`` (fewer when ``quick``)."""
        raise NotImplementedError

    def refine(self, point: Point, leaders: list, facts, quick: bool) -> list:
        """Round-1b configs around the fastest round-1 ``leaders`` (none by default)."""
        return []

    def default(self, point: Point, facts):
        """The config the launcher picks today at ``point`` (the table, else the formula)."""
        raise NotImplementedError

    def baselines(self, point: Point, facts) -> dict[str, Any]:
        """Named configs timed in the final round for comparison (and eligible to win)."""
        return {}

    def gate_tokens(self, config, facts) -> int:
        """A ragged token count at which ``config`` is checked: every program of a persistent
        grid walks >= 2 tiles, and the last tile is partial."""
        rows = getattr(config, "rows", getattr(config, "rows_per_program", 1)) or 1
        pps = getattr(config, "programs_per_sm", 0) or 0
        if pps:
            return 2 * rows * pps * facts.sms + 3
        return 8 * rows + 3

    def judge(self, op: str, params: dict, out, ref, result) -> str | None:
        """Why a checked output is not good enough for our kernel (beyond ``result.ok``), or None."""
        return None if result.ok else result.message

    def preflight(self, facts) -> list[tuple[str, str, dict, dict]]:
        """Extra correctness cases run on the GPU before timing, what the tuned points do not
        cover: (label, op, case params, the ``triton`` provider's overrides such as a
        ``launch_config``)."""
        return []

    def probe(self, device) -> list[str]:
        """Failures of family-specific GPU probes (e.g. inline PTX against its float64 model)."""
        return []


def bounds(tokens: Iterable[int]) -> list[int]:
    """Row bounds of configs measured at ascending ``tokens``: the geometric midpoint between
    neighbours (``isqrt(a * b)``: a token count at least as close to ``a`` in log scale takes
    ``a``'s config), then ``SENTINEL``."""
    import math

    ts = list(tokens)
    return [math.isqrt(a * b) for a, b in zip(ts, ts[1:])] + [SENTINEL]
