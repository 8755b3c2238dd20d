"""The suite schema: the pydantic models of a suite file and the rules they carry (see ``normbench.suite``).

``Suite`` holds stages (``KernelStage`` with its ``Sweep``, ``Timing`` and ``ToleranceSpec``; the
end-to-end ``ThroughputStage``, ``LatencyStage``, ``StartupStage`` and ``AccuracyStage``, a
discriminated union on ``kind``), ``ServerSpec`` with its ``Requirements``, and ``Variant``s.
Beside them: ``ProviderRef`` (which provider a kernel case runs), the name rule (``NAME_RULE``,
``name_problem``, ``SafeName``), the timing caps, ``DEFAULT_TOLERANCE``, ``stage_name`` and
``suite_json_schema``. It reads no file and no YAML: ``normbench.suite.loader`` validates data
against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from normbench.ops import OPS
from normbench.registry import PROVIDERS, UNFUSED_OPS, did_you_mean, op_info

Dtype = Literal["bfloat16", "float16", "float32"]

#: Caps on timing budgets (per case).
MAX_MIN_RUN_TIME_S = 60.0
MAX_TIMING_CALLS = 100_000
MAX_REPEATS = 1_000

#: The one rule for every name that becomes part of a path (suite, stage,
#: variant, ``--name``): one safe path component.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
NAME_RULE = "1 to 100 characters from A-Z a-z 0-9 . _ -, starting with a letter or a digit"


def name_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid name (``NAME_RULE``), or None when it is one."""
    if not isinstance(value, str):
        return f"a name is a string, not {type(value).__name__}"
    if re.fullmatch(NAME_PATTERN, value):
        return None
    shown = value if len(value) <= 40 else value[:37] + "..."
    if len(value) > 100:
        return f"{shown!r} has {len(value)} characters; a name is {NAME_RULE}"
    return f"{shown!r} is not a safe name; a name is {NAME_RULE}"


def _check_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: A name that is always one safe path component (``NAME_RULE``).
SafeName = Annotated[
    str, AfterValidator(_check_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": 100})
]


def _listify(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def OneOrMany(t: Any) -> Any:  # noqa: N802 - reads like a type
    """A sweep axis: a list of values, or one value meaning a one-element list.

    The JSON Schema (``normbench schema``) accepts a value or a non-empty list
    of distinct values; ``_first_duplicate`` refuses a value listed twice.
    """
    given = Union[t, Annotated[list[t], Field(min_length=1, json_schema_extra={"uniqueItems": True})]]
    return Annotated[list[t], BeforeValidator(_listify, json_schema_input_type=given), Field(min_length=1)]


def _first_duplicate(values: list[Any]) -> tuple[int, int] | None:
    """``(i, j)``, i < j, of the first value listed again, or None (O(n), values hashable)."""
    first: dict[Any, int] = {}
    for j, v in enumerate(values):
        key = (type(v), v)
        if key in first:
            return first[key], j
        first[key] = j
    return None


def _refuse_duplicates(field: str, values: list[Any] | None) -> None:
    dup = _first_duplicate(values or [])
    if dup is not None:
        i, j = dup
        raise ValueError(f"{field}[{j}]: {values[j]!r} is already listed at [{i}]; each value makes its cases once")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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

    @model_validator(mode="after")
    def _distinct(self) -> "Sweep":
        for axis, values in self.axes().items():
            _refuse_duplicates(axis, values)
        return self


#: A provider's name; the JSON Schema lists the known ones, for editors.
ProviderName = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(PROVIDERS)})]


class UnfusedParts(Strict):
    norm: ProviderName
    quant: ProviderName

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
        return self.ref().label

    def ref(self) -> "ProviderRef":
        return ProviderRef(norm=self.unfused.norm, quant=self.unfused.quant)


#: What a kernel stage's ``providers`` list holds: a provider's name, or an unfused composition.
ProviderChoice = Union[ProviderName, Unfused]


@dataclass(frozen=True)
class ProviderRef:
    """Which provider a kernel case runs: a registry name, or an unfused composition.

    Exactly one form: ``ProviderRef(name="torch_naive")``, or
    ``ProviderRef(norm="torch_naive", quant="torch_compile")`` for the suite's
    ``unfused: {norm: .., quant: ..}`` (``kernels/providers/unfused.py``). ``label`` renders
    it for fingerprints and records (``unfused[norm=A,quant=B]``); nothing parses a label
    back: cases carry the ref itself (``normbench.expand.Case.ref``).

    Raises:
        ValueError: neither or both forms, or a composition missing a part.
    """

    name: str | None = None
    norm: str | None = None
    quant: str | None = None

    def __post_init__(self) -> None:
        composed = self.norm is not None or self.quant is not None
        if (self.name is None) == (not composed) or (composed and (self.norm is None or self.quant is None)):
            raise ValueError(f"ProviderRef: a name, or both norm and quant (got {self!r})")

    @property
    def is_unfused(self) -> bool:
        return self.name is None

    @property
    def label(self) -> str:
        """``name``, or ``unfused[norm=A,quant=B]``."""
        return self.name if self.name is not None else f"unfused[norm={self.norm},quant={self.quant}]"

    @property
    def parts(self) -> tuple[str, ...]:
        """The registry providers it runs: ``(name,)`` or ``(norm, quant)``."""
        return (self.name,) if self.name is not None else (self.norm, self.quant)  # type: ignore[return-value]

    @classmethod
    def of(cls, p: ProviderChoice) -> "ProviderRef":
        """The ref of one entry of a stage's ``providers``."""
        return cls(name=p) if isinstance(p, str) else p.ref()


def provider_name(p: ProviderChoice) -> str:
    return ProviderRef.of(p).label


class Timing(Strict):
    """How a kernel case is timed (``normbench.timing``).

    Attributes:
        mode: ``auto`` = CUDA-graph replay on GPU (events + L2 flush when the
            callable cannot be captured), timed blocks of calls on CPU;
            ``graph``/``events`` force a GPU method.
        warmup: calls before timing (compilation, autotuning, caches), on every device.
        repetitions: samples kept per case, on every device (CPU: blocks of calls,
            ``normbench.timing.time_cpu``).
        rotate_bytes: GPU: input sets are rotated until they span at least this
            many bytes (default: 2x the device's L2), so no call hits a warm L2.
        min_run_time_s: CPU: the time budget of a case's ``repetitions`` blocks
            together (each block gets ``min_run_time_s / repetitions``, at least one call).
    """

    mode: Literal["auto", "graph", "events"] = "auto"
    warmup: NonNegativeInt = Field(default=10, le=MAX_TIMING_CALLS)
    repetitions: PositiveInt = Field(default=50, le=MAX_TIMING_CALLS)
    rotate_bytes: PositiveInt | None = Field(default=None, le=1 << 40)
    min_run_time_s: PositiveFloat = Field(default=0.2, le=MAX_MIN_RUN_TIME_S)


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
    """Fields and per-kind facts every stage has. Each kind's expansion and run live in its
    module under ``normbench.stages`` (registered by its ``kind`` literal); the facts the
    suite's own checks need are class attributes here, so no check branches on ``kind``.

    Class attributes:
        server_need: why this kind needs the suite-level ``server``, or None.
    """

    server_need: ClassVar[str | None] = None

    name: SafeName | None = None
    description: str = ""

    def default_name(self, index: int) -> str:
        """The stage's name when it has no ``name``: ``<kind>-<index>``."""
        return f"{getattr(self, 'kind', 'stage')}-{index}"


class KernelStage(StageBase):
    """Time ``providers`` on every point of ``sweep``, each checked for correctness first."""

    kind: Literal["kernel"]
    op: str = Field(json_schema_extra={"enum": sorted(OPS)})
    providers: list[ProviderChoice] = Field(min_length=1)
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
    def _known_providers(cls, v: list[ProviderChoice]) -> list[ProviderChoice]:
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

    def default_name(self, index: int) -> str:
        """A kernel stage is named after its op."""
        return self.op

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
    repeats: PositiveInt = Field(default=1, le=MAX_REPEATS)
    extra_args: list[str] = []

    @model_validator(mode="after")
    def _distinct_variants(self) -> "E2EStageBase":
        _refuse_duplicates("variants", self.variants)
        return self


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

    server_need: ClassVar[str | None] = "a throughput stage needs a suite-level 'server'"

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

    server_need: ClassVar[str | None] = "a latency stage needs a suite-level 'server' (its model)"

    kind: Literal["latency"]
    input_len: OneOrMany(PositiveInt) = [512, 2048, 8192]
    output_len: PositiveInt = 1
    batch_size: PositiveInt = 1
    num_iters: PositiveInt = Field(default=10, le=MAX_TIMING_CALLS)
    num_iters_warmup: NonNegativeInt = Field(default=3, le=MAX_TIMING_CALLS)

    @model_validator(mode="after")
    def _distinct_input_len(self) -> "LatencyStage":
        _refuse_duplicates("input_len", self.input_len)
        return self


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

    server_need: ClassVar[str | None] = "a startup stage needs a suite-level 'server'"

    kind: Literal["startup"]
    variants: list[str] | None = None
    repeats: PositiveInt = Field(default=1, le=MAX_REPEATS)

    @model_validator(mode="after")
    def _distinct_variants(self) -> "StartupStage":
        _refuse_duplicates("variants", self.variants)
        return self


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

    server_need: ClassVar[str | None] = "a accuracy stage needs a suite-level 'server'"

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
    """The server that throughput and accuracy stages share (one per variant): ``vllm serve`` by default.

    Attributes:
        engine: the serving engine (``normbench.engines``): ``vllm``, the default,
            or another registered engine's name; ``args`` are that engine's
            launch options, ``variants.*.compilation_config`` its settings.
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
    engine: str = "vllm"
    served_model_name: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: PositiveFloat = 900
    port: int | None = Field(default=None, ge=1, le=65535)
    requires: Requirements = Requirements()
    cold_start: bool = False
    log_passes: bool = False

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from normbench.engines import engine_names

        names = engine_names()
        if v not in names:
            raise ValueError(did_you_mean("serving engine", v, names))
        return v


class Variant(Strict):
    """Named settings of the served model: ``--compilation-config`` JSON, env, extra args."""

    description: str = ""
    compilation_config: dict[str, Any] = {}
    env: dict[str, str] = {}
    args: list[str] = []


class Suite(Strict):
    """A suite file: named stages (kernel sweeps and end-to-end measurements) of one benchmark.

    Attributes:
        name: the suite's name, used in run ids (``NAME_RULE``).
        server / variants / baseline: the served model and its named settings
            (end-to-end stages only); ``baseline`` is the variant others compare to.
        stages: what to measure, in order; stage names are unique.
    """

    name: SafeName
    description: str = ""
    server: ServerSpec | None = None
    variants: dict[SafeName, Variant] = {}
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
            if st.server_need is not None and self.server is None:
                raise ValueError(f"stages[{i}]: {st.server_need}")
            for v in getattr(st, "variants", None) or []:
                if v not in self.variants:
                    raise ValueError(
                        f"stages[{i}].variants: unknown variant '{v}' (variants: {', '.join(self.variants) or 'none'})"
                    )
        return self


SCHEMA_COMMENT = "# yaml-language-server: $schema=./suite.schema.json"


def suite_json_schema() -> str:
    """The JSON Schema (draft 2020-12) of suite files, from the pydantic models, as JSON text.

    ``normbench schema`` prints it; ``suites/suite.schema.json`` is this text, and
    every bundled suite's first line (``SCHEMA_COMMENT``) points editors at it.
    Checks that need more than a schema (op axes, variant references, names
    of stages being unique) are ``normbench validate``'s.
    """
    import json

    body = Suite.model_json_schema()
    body.pop("title", None)
    body.pop("description", None)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "normbench suite",
        "description": "A normbench suite file (YAML). `normbench validate FILE` checks what a schema cannot.",
        **body,
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stage_name(stage: Any, index: int) -> str:
    """A stage's name: its ``name`` or ``<op or kind>`` (``-<index>`` if needed is the user's job)."""
    return stage.name or stage.default_name(index)
