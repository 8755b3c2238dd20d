"""Suite files: pydantic models and a loader that reports ``file:line:col``.

A suite is YAML::

    name: rmsnorm
    description: vLLM's benchmark_rmsnorm sweep
    stages:
      - kind: kernel
        op: rms_norm
        providers: [torch_naive, torch_compile, triton, liger]
        sweep:
          num_tokens: [1, 16, 128]
          hidden_size: [4096, 8192]
          dtype: bfloat16          # a scalar is a one-value axis

Stage kinds are a closed set (a discriminated union on ``kind``); every model
forbids unknown keys. ``load_suite`` raises ``SuiteError`` whose message is
``path:line:col: stages[0].sweep.dtype: <why>`` for the first problem, followed by
any others, one per line.

Errors:
    SuiteError: missing/empty file, YAML syntax error, duplicate keys, a
        document that is not a mapping, schema violations, unknown op/provider
        names (with did-you-mean), axis values an op does not accept.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from normbench.errors import SuiteError, UnknownNameError
from normbench.ops import OPS
from normbench.registry import PROVIDERS, UNFUSED_OPS, did_you_mean, op_info

Dtype = Literal["bfloat16", "float16", "float32"]


def _listify(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def OneOrMany(t: Any) -> Any:  # noqa: N802 - reads like a type
    """A sweep axis: a list of values, or one value meaning a one-element list."""
    return Annotated[list[t], BeforeValidator(_listify), Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- kernel stage
class Sweep(Strict):
    """Axes of a kernel sweep; the cases are their Cartesian product.

    Axes an op does not use must stay unset (the stage validator says which
    axes the op has). Unset op axes take the op's default (``normbench.ops``).
    """

    num_tokens: OneOrMany(PositiveInt)
    hidden_size: OneOrMany(PositiveInt)
    dtype: OneOrMany(Dtype) = ["bfloat16"]
    eps: OneOrMany(PositiveFloat) = [1e-6]
    residual: OneOrMany(bool) | None = None
    quant_dtype: OneOrMany(Literal["fp8", "int8", "nvfp4"]) | None = None
    group_size: OneOrMany(PositiveInt) | None = None
    static_scale: OneOrMany(bool) | None = None
    scale_granularity: OneOrMany(Literal["per_token", "per_tensor"]) | None = None
    scale_ub: OneOrMany(bool) | None = None
    scale_layout: OneOrMany(Literal["row_major", "col_major"]) | None = None
    static_scale_factor: OneOrMany(PositiveFloat) | None = None

    def axes(self) -> dict[str, list[Any]]:
        """The set axes, in declaration order."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class UnfusedParts(Strict):
    norm: str
    quant: str

    @field_validator("norm", "quant")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PROVIDERS:
            raise ValueError(did_you_mean("provider", v, sorted(PROVIDERS)))
        return v


class Unfused(Strict):
    """A norm provider followed by a separate quantization provider."""

    unfused: UnfusedParts

    @property
    def name(self) -> str:
        return f"unfused[norm={self.unfused.norm},quant={self.unfused.quant}]"


ProviderRef = Union[str, Unfused]


def provider_name(p: ProviderRef) -> str:
    return p if isinstance(p, str) else p.name


class Timing(Strict):
    """How a kernel case is timed (``normbench.timing``).

    Attributes:
        mode: ``auto`` = CUDA-graph replay on GPU (events + L2 flush when the
            callable cannot be captured), ``torch.utils.benchmark`` on CPU;
            ``graph``/``events`` force a GPU method.
        warmup: calls before timing (compilation, autotuning, caches).
        repetitions: samples kept per case.
        rotate_bytes: GPU: input sets are rotated until they span at least this
            many bytes (default: 2x the device's L2), so no call hits a warm L2.
        min_run_time_s: CPU: ``blocked_autorange``'s budget per case.
    """

    mode: Literal["auto", "graph", "events"] = "auto"
    warmup: NonNegativeInt = 10
    repetitions: PositiveInt = 50
    rotate_bytes: PositiveInt | None = None
    min_run_time_s: PositiveFloat = 0.2


class ToleranceSpec(Strict):
    norm_rel: PositiveFloat | None = None
    rtol: float | None = Field(default=None, ge=0)
    atol: float | None = Field(default=None, ge=0)
    mismatch_rate: float | None = Field(default=None, ge=0, le=1)


#: Correctness defaults per input dtype: bf16/fp16 outputs round once or twice
#: (HF's formula rounds before the weight multiply), so 2 ulp element-wise.
DEFAULT_TOLERANCE: dict[str, dict[str, float]] = {
    "bfloat16": {"norm_rel": 1e-2, "rtol": 2e-2, "atol": 1e-2, "mismatch_rate": 0.02},
    "float16": {"norm_rel": 2e-3, "rtol": 4e-3, "atol": 2e-3, "mismatch_rate": 0.02},
    "float32": {"norm_rel": 1e-5, "rtol": 1e-4, "atol": 1e-5, "mismatch_rate": 0.02},
}

Rule = dict[str, Any]  # axis or "provider" -> value or list of values


class StageBase(Strict):
    name: str | None = None
    description: str = ""


class KernelStage(StageBase):
    """Time ``providers`` on every point of ``sweep``, each checked for correctness first."""

    kind: Literal["kernel"]
    op: str
    providers: list[ProviderRef] = Field(min_length=1)
    sweep: Sweep
    timing: Timing = Timing()
    tolerance: dict[Dtype, ToleranceSpec] = {}
    include: list[Rule] = []
    exclude: list[Rule] = []
    seed: NonNegativeInt = 0

    @field_validator("op")
    @classmethod
    def _known_op(cls, v: str) -> str:
        if v not in OPS:
            raise ValueError(did_you_mean("op", v, sorted(OPS)))
        return v

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, v: list[ProviderRef]) -> list[ProviderRef]:
        names = [provider_name(p) for p in v]
        for p in v:
            if isinstance(p, str) and p not in PROVIDERS:
                raise ValueError(did_you_mean("provider", p, sorted(PROVIDERS)))
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"provider listed twice: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _axes_fit_op(self) -> "KernelStage":
        info = op_info(self.op)
        allowed = set(info.all_axes())
        for axis, values in self.sweep.axes().items():
            if axis not in allowed:
                raise ValueError(
                    f"sweep.{axis}: op {self.op} has no axis '{axis}' (its axes: {', '.join(info.all_axes())})"
                )
            spec = info.axes.get(axis)
            if spec and spec.choices is not None:
                bad = [x for x in values if x not in spec.choices]
                if bad:
                    raise ValueError(
                        f"sweep.{axis}: op {self.op} accepts {list(spec.choices)}, got {bad}"
                    )
            if axis in info.fixed and any(x != info.fixed[axis] for x in values):
                raise ValueError(f"sweep.{axis}: op {self.op} is always {axis}={info.fixed[axis]}")
        known_keys = allowed | {"provider"}
        for which, rules in (("include", self.include), ("exclude", self.exclude)):
            for i, rule in enumerate(rules):
                unknown = sorted(set(rule) - known_keys)
                if unknown:
                    raise ValueError(
                        f"{which}[{i}]: unknown key {unknown[0]!r} (rules match on: provider, "
                        f"{', '.join(info.all_axes())})"
                    )
        for p in self.providers:
            if isinstance(p, Unfused) and self.op not in UNFUSED_OPS:
                ops = ", ".join(UNFUSED_OPS[:-1]) + " and " + UNFUSED_OPS[-1]
                raise ValueError(f"providers: unfused compositions apply to {ops}, not {self.op}")
        return self

    def tolerance_for(self, dtype: str) -> dict[str, float]:
        """Suite-wide defaults, then the op's own defaults, then this stage's ``tolerance``."""
        merged = dict(DEFAULT_TOLERANCE[dtype])
        merged.update(OPS[self.op].tolerance.get(dtype, {}))
        if dtype in self.tolerance:
            merged.update({k: v for k, v in self.tolerance[dtype].model_dump().items() if v is not None})
        return merged


# --------------------------------------------------------------------------- end-to-end stages
class E2EStageBase(StageBase):
    """Fields shared by the end-to-end stages.

    Attributes:
        variants: the suite variants this stage runs under (default: all).
        repeats: how often each variant is measured; variants interleave
            (A B B A ...) so drift spreads over all of them.
        extra_args: appended to the client's command line.
    """

    variants: list[str] | None = None
    repeats: PositiveInt = 1
    extra_args: list[str] = []


class ThroughputStage(E2EStageBase):
    """Serving throughput against the suite's ``vllm serve`` (``guidellm`` or ``vllm bench serve``).

    Attributes:
        client: ``guidellm`` (>= 0.7) or ``vllm_bench_serve`` (random dataset).
        profile: ``concurrent`` (``concurrency`` streams; ``rate`` is accepted as
            the stream count, as guidellm's ``--rate`` was), ``synchronous``,
            ``throughput`` (all at once, capped by ``concurrency``), ``constant``
            (guidellm only) or ``poisson`` at ``rate`` req/s.
        prompt_tokens / output_tokens: synthetic prompt and forced output length
            (tokens): guidellm ``synthetic_text``, ``vllm bench serve --random-input-len
            / --random-output-len`` with ``--ignore-eos``.
        max_seconds: guidellm's ``max_duration`` constraint (s).
        num_prompts: requests to send (``vllm bench serve --num-prompts``, default
            1000; guidellm ``max_requests``).
    """

    kind: Literal["throughput"]
    client: Literal["guidellm", "vllm_bench_serve"]
    profile: Literal["concurrent", "synchronous", "throughput", "constant", "poisson"] = "concurrent"
    rate: PositiveFloat | None = None
    concurrency: PositiveInt | None = None
    prompt_tokens: PositiveInt | None = None
    output_tokens: PositiveInt | None = None
    max_seconds: PositiveFloat | None = None
    num_prompts: PositiveInt | None = None

    @model_validator(mode="after")
    def _client_fits(self) -> "ThroughputStage":
        if self.prompt_tokens is None or self.output_tokens is None:
            missing = "prompt_tokens" if self.prompt_tokens is None else "output_tokens"
            raise ValueError(f"{missing}: a throughput stage needs prompt_tokens and output_tokens")
        if self.profile == "concurrent":
            if self.concurrency is None and self.rate is None:
                raise ValueError("concurrency: the concurrent profile needs concurrency (or rate as the stream count)")
            if self.concurrency is None and self.rate is not None and self.rate != int(self.rate):
                raise ValueError(f"rate: the concurrent profile's rate is a stream count, got {self.rate:g}")
        if self.profile in ("constant", "poisson") and self.rate is None:
            raise ValueError(f"rate: the {self.profile} profile needs rate (requests per second)")
        if self.client == "guidellm" and self.max_seconds is None and self.num_prompts is None:
            raise ValueError("max_seconds: guidellm needs max_seconds or num_prompts to know when to stop")
        if self.client == "vllm_bench_serve":
            if self.max_seconds is not None:
                raise ValueError("max_seconds: vllm bench serve stops after num_prompts; it has no time limit")
            if self.profile == "constant":
                raise ValueError("profile: vllm bench serve has no constant-rate profile (use poisson or guidellm)")
        return self


class LatencyStage(E2EStageBase):
    """``vllm bench latency`` (an offline engine per variant, no server)."""

    kind: Literal["latency"]
    input_len: OneOrMany(PositiveInt) = [512, 2048, 8192]
    output_len: PositiveInt = 1
    batch_size: PositiveInt = 1
    num_iters: PositiveInt = 10
    num_iters_warmup: NonNegativeInt = 3


class StartupStage(StageBase):
    """The start of each variant's ``vllm serve``, measured: one case per (variant, repeat).

    Records ``server_startup_s`` (process start to the first ``GET /health`` 200,
    s, lower is better) and, when vLLM logs it, ``torch_compile_s`` (its own
    compile time, s, lower is better), with the start's fusion evidence. It
    starts no extra server: it measures the start that the variant's throughput
    and accuracy stages share (``server.cold_start`` makes every start a cold one).

    Attributes:
        variants: the suite variants it covers (default: all).
        repeats: starts measured per variant; variants interleave (A B B A ...).
    """

    kind: Literal["startup"]
    variants: list[str] | None = None
    repeats: PositiveInt = 1


class AccuracyStage(E2EStageBase):
    """lm-eval ``gsm8k`` through ``local-completions`` against the suite's server.

    Attributes:
        num_fewshot / limit: lm-eval's ``--num_fewshot`` / ``--limit`` (documents).
        concurrency: lm-eval's ``num_concurrent`` requests.
        gen_kwargs: lm-eval's ``--gen_kwargs`` (e.g. ``{max_gen_toks: 256}``).
        data_files: local gsm8k-format JSONL for offline machines: one path (used
            for the test and the few-shot split) or ``{test: .., train: ..}``;
            relative paths start at the working directory; ``${NAME}`` and
            ``${NAME:-default}`` are read from the environment, as in ``server.model``.
    """

    kind: Literal["accuracy"]
    task: Literal["gsm8k"] = "gsm8k"
    num_fewshot: NonNegativeInt = 5
    limit: PositiveInt | None = None
    concurrency: PositiveInt = 1
    gen_kwargs: dict[str, Any] = {}
    data_files: str | dict[Literal["train", "test"], str] | None = None


Stage = Annotated[
    Union[KernelStage, ThroughputStage, LatencyStage, AccuracyStage, StartupStage], Field(discriminator="kind")
]
E2E_KINDS = ("throughput", "latency", "accuracy", "startup")


class Requirements(Strict):
    """What the served model needs; a suite's end-to-end stages are SKIPPED elsewhere."""

    cuda: bool = False
    min_sm: PositiveInt | None = None


class ServerSpec(Strict):
    """The ``vllm serve`` that throughput and accuracy stages share (one per variant).

    Attributes:
        model: a hub id or a local folder; ``${NAME}`` / ``${NAME:-default}`` are
            read from the environment when the run starts (shell semantics: the
            default when NAME is unset or empty), e.g.
            ``${NORMBENCH_MODEL_DIR:-/tmp/nb-model/llama3-8b-fp8}``.
        cold_start: every ``vllm serve`` gets fresh, empty compile caches
            (``VLLM_CACHE_ROOT`` and ``TORCHINDUCTOR_CACHE_DIR`` in a temporary
            folder, removed after the server stops), as ``vllm bench startup``'s
            cold phase: each start compiles, so start-up times compare like with
            like across repeats, and the fusion passes run, and log, at every
            start. Triton's own cache (vLLM's hand-written kernels) stays warm.
        log_passes: log vLLM's compilation passes at DEBUG and the rest at INFO
            (a ``VLLM_LOGGING_CONFIG_PATH`` file normbench writes into the run's
            ``logs/``), so their ``Replaced N patterns`` lines, the fusion
            evidence, reach the server and latency logs; a ``VLLM_LOGGING_CONFIG_PATH``
            or ``VLLM_LOGGING_LEVEL=DEBUG`` already set is left alone.
    """

    model: str
    served_model_name: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: PositiveFloat = 900
    port: int | None = Field(default=None, ge=1, le=65535)
    requires: Requirements = Requirements()
    cold_start: bool = False
    log_passes: bool = False


class Variant(Strict):
    """Named settings of the served model: ``--compilation-config`` JSON, env, extra args."""

    description: str = ""
    compilation_config: dict[str, Any] = {}
    env: dict[str, str] = {}
    args: list[str] = []


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    server: ServerSpec | None = None
    variants: dict[str, Variant] = {}
    baseline: str | None = None
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Suite":
        if self.baseline is not None and self.baseline not in self.variants:
            raise ValueError(
                f"baseline: '{self.baseline}' is not a variant (variants: {', '.join(self.variants) or 'none'})"
            )
        seen: set[str] = set()
        for i, st in enumerate(self.stages):
            name = stage_name(st, i)
            if name in seen:
                raise ValueError(f"stages[{i}].name: '{name}' is used by an earlier stage")
            seen.add(name)
            if st.kind in E2E_KINDS:
                if st.kind != "latency" and self.server is None:
                    raise ValueError(f"stages[{i}]: a {st.kind} stage needs a suite-level 'server'")
                if st.kind == "latency" and self.server is None:
                    raise ValueError(f"stages[{i}]: a latency stage needs a suite-level 'server' (its model)")
                for v in st.variants or []:
                    if v not in self.variants:
                        raise ValueError(
                            f"stages[{i}].variants: unknown variant '{v}' (variants: {', '.join(self.variants) or 'none'})"
                        )
        return self


def stage_name(stage: Any, index: int) -> str:
    """A stage's name: its ``name`` or ``<op or kind>`` (``-<index>`` if needed is the user's job)."""
    if stage.name:
        return stage.name
    return stage.op if stage.kind == "kernel" else f"{stage.kind}-{index}"


# --------------------------------------------------------------------------- loading
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when present
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            first = seen[key].start_mark
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key '{key}' (first at line {first.line + 1}, column {first.column + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


class _PyLoader(yaml.SafeLoader):
    """The pure-Python loader: slower, but its syntax errors name the offending character."""


for _cls in (_Loader, _PyLoader):
    _cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class LoadedSuite(BaseModel):
    """A validated suite with where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)
    suite: Suite
    path: str
    sha256: str


def _pos(mark: Any) -> str:
    return f"{mark.line + 1}:{mark.column + 1}"


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
            continue
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == item), None)
            if match is None:
                if item in ("kernel", "throughput", "latency", "accuracy", "startup", "str", "Unfused") or "[" in str(item):
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


def parse_suite(text: str, path: str) -> Suite:
    """Parse and validate suite YAML ``text``; ``path`` is only used in messages."""
    if not text.strip():
        raise SuiteError(f"{path}: the file is empty; a suite needs at least 'name' and 'stages'")
    try:
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        except yaml.YAMLError:
            data = yaml.load(text, Loader=_PyLoader)  # noqa: S506 - raises again, with a clearer message
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{_pos(mark)}" if mark else path
        problem = e.problem or str(e)
        if isinstance(e, yaml.constructor.ConstructorError):
            raise SuiteError(f"{where}: {problem}") from e
        if e.context:
            problem = f"{e.context}: {problem}"
        raise SuiteError(f"{where}: YAML syntax error: {problem}") from e
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: YAML error: {e}") from e
    if data is None:
        raise SuiteError(f"{path}: the file holds no YAML document; a suite needs at least 'name' and 'stages'")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise SuiteError(f"{path}:1:1: a suite is a mapping (name:, stages:, ...), not {kind}")
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        root = yaml.compose(text, Loader=_PyLoader)  # positions, only needed to report errors
        found = []
        for err in e.errors():
            loc, msg = tuple(err["loc"]), _clean_msg(err["msg"])
            # A model validator names the sub-path it judged ("sweep.group_size: ...");
            # move it into the location so the position points at that key.
            sub = _SUBPATH.match(msg)
            if sub:
                loc += tuple(int(t) if t.isdigit() else t for t in re.findall(r"\w+", sub.group(1)))
                msg = sub.group(2)
            dotted, pos = _format_loc(loc, root)
            line, col = (int(x) for x in pos.split(":"))
            found.append(((line, col), f"{path}:{pos}: {dotted}: {msg}" if dotted else f"{path}:{pos}: {msg}"))
        raise SuiteError("\n".join(text for _, text in sorted(found, key=lambda f: f[0]))) from e
    except UnknownNameError as e:
        raise SuiteError(f"{path}: {e}") from e


def load_suite(path: str | Path) -> LoadedSuite:
    """Read, parse and validate a suite file.

    Raises:
        SuiteError: see the module docstring.
    """
    p = Path(path)
    shown = str(path)
    if not p.exists():
        raise SuiteError(f"{shown}: no such file")
    if p.is_dir():
        raise SuiteError(f"{shown}: is a directory, not a suite file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SuiteError(f"{shown}: cannot read: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"{shown}: not UTF-8 text (byte {e.start})") from e
    suite = parse_suite(text, shown)
    return LoadedSuite(suite=suite, path=shown, sha256=hashlib.sha256(raw).hexdigest())
