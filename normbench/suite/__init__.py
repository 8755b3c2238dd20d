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

Input limits (the one input boundary: ``read_regular_file`` and ``parse_suite``):

* a suite is a regular file (no FIFO, device or socket: checked with ``os.stat``
  before it is opened, so nothing blocks) of at most ``MAX_SUITE_BYTES`` (1 MiB),
  UTF-8 text;
* YAML nests at most ``MAX_YAML_DEPTH`` (32) collections deep, counted with
  aliases expanded; an alias may not refer to a node that contains it;
* the document, aliases expanded, has at most ``MAX_YAML_NODES`` (200,000)
  nodes and uses at most ``MAX_YAML_ALIASES`` (10,000) aliases: an alias bomb is
  refused at the alias that crosses the limit, without expanding it;
* mapping keys are scalars (a list or mapping as a key is refused); merge keys
  (``<<: *base``, YAML 1.1) are read as ``yaml.safe_load`` reads them;
* names (suite ``name``, stage ``name``, variant names, ``--name``) follow
  ``NAME_RULE``: 1 to 100 of ``A-Z a-z 0-9 . _ -``, starting with a letter or a
  digit, so a name is always one safe path component;
* floats are finite; sweep axes list each value once; ``timing.min_run_time_s``
  is at most 60 s, ``warmup``/``repetitions`` at most 100,000, ``repeats`` at most
  1,000. The case count, rules that empty a stage and bytes per case against
  the machine are ``normbench.expand``'s (``check_size``, ``check_rules``,
  ``check_memory``).

Errors:
    SuiteError: missing/empty file, not a regular file, too large, not UTF-8,
        YAML syntax error, too deep, alias bomb, duplicate keys, a non-scalar
        key, a document that is not a mapping, schema violations, unknown
        op/provider names (with did-you-mean), axis values an op does not accept.

Modules (this package re-exports their public names; import from ``normbench.suite``):

    schema.py        the models: ``Suite``, the stage models (``KernelStage``, ``ThroughputStage``, ...),
                     ``Sweep``, ``Timing``, ``ToleranceSpec``, ``ServerSpec``, ``Requirements``, ``Variant``;
                     ``ProviderRef``; the name rule (``NAME_RULE``, ``name_problem``); the timing caps;
                     ``DEFAULT_TOLERANCE``; ``suite_json_schema``, ``stage_name``
    bounded_yaml.py  YAML text to data within ``MAX_YAML_DEPTH`` / ``MAX_YAML_NODES`` /
                     ``MAX_YAML_ALIASES``: the loaders (duplicate and non-scalar keys refused), the
                     event walk that measures aliases unexpanded, YAML errors as ``file:line:col``
    loader.py        reading a suite: ``read_regular_file`` (``MAX_SUITE_BYTES``), ``parse_suite``,
                     ``load_suite``, ``LoadedSuite``, ``validate_spec``, ``refuse``, ``locate``; pydantic
                     errors placed on the YAML tree (``_format_loc``, ``_errors_at``)

``bounded_yaml`` imports neither of the others; ``loader`` imports both. A limit is looked up in
the module that holds it (``normbench.suite.bounded_yaml.MAX_YAML_DEPTH``, not this package's
re-export); ``read_regular_file`` takes its size limit as ``max_bytes``.
"""

from normbench.suite.bounded_yaml import MAX_YAML_ALIASES, MAX_YAML_DEPTH, MAX_YAML_NODES
from normbench.suite.loader import (
    MAX_SUITE_BYTES, LoadedSuite, load_suite, locate, parse_suite, read_regular_file, refuse, validate_spec,
)
from normbench.suite.schema import (
    DEFAULT_TOLERANCE, E2E_KINDS, MAX_MIN_RUN_TIME_S, MAX_REPEATS, MAX_TIMING_CALLS, NAME_PATTERN, NAME_RULE,
    SCHEMA_COMMENT, AccuracyStage, Dtype, E2EStageBase, KernelStage, LatencyStage, OneOrMany, ProviderChoice,
    ProviderName, ProviderRef, Requirements, Rule, SafeName, ServerSpec, Stage, StageBase, StartupStage, Strict,
    Suite, Sweep, ThroughputStage, Timing, ToleranceSpec, Unfused, UnfusedParts, Variant, name_problem,
    provider_name, stage_name, suite_json_schema,
)

__all__ = [
    # schema
    "Dtype", "MAX_MIN_RUN_TIME_S", "MAX_TIMING_CALLS", "MAX_REPEATS", "NAME_PATTERN", "NAME_RULE", "name_problem",
    "SafeName", "OneOrMany", "Strict", "Sweep", "ProviderName", "UnfusedParts", "Unfused", "ProviderChoice",
    "ProviderRef", "provider_name", "Timing", "ToleranceSpec", "DEFAULT_TOLERANCE", "Rule", "StageBase",
    "KernelStage", "E2EStageBase", "ThroughputStage", "LatencyStage", "StartupStage", "AccuracyStage", "Stage",
    "E2E_KINDS", "Requirements", "ServerSpec", "Variant", "Suite", "SCHEMA_COMMENT", "suite_json_schema",
    "stage_name",
    # bounded_yaml
    "MAX_YAML_DEPTH", "MAX_YAML_NODES", "MAX_YAML_ALIASES",
    # loader
    "MAX_SUITE_BYTES", "LoadedSuite", "parse_suite", "validate_spec", "refuse", "locate", "read_regular_file",
    "load_suite",
]
