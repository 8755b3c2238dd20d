"""The comparison engine: run records in, delta rows with verdicts out. Pure: no torch.

Three uses, one engine:

* ``compare(baseline, [candidate])``: run against run (``normbench compare A B``);
* ``compare(baseline, [c1, c2, ...])``: N runs against one baseline;
* ``compare_variants(run, baseline_variant)``: the variants of one run (the
  end-to-end ``--compilation-config`` settings) against its baseline variant.

Matching
    Cases are matched by ``CaseRecord.fingerprint`` (``stage/op-or-kind/
    provider/variant/k=v,...``, see ``normbench.expand.Case``); for variants
    the variant segment is left out of the key. Repeats of a fingerprint
    (``case_id = fingerprint#repeat``) are one group: for kernel cases their
    metric samples are pooled, for end-to-end cases each repeat's value is one
    sample. Fingerprints present on one side only become rows that say so,
    never silently dropped; so do cases that are OK on one side and
    INCORRECT / FAILED / SKIPPED on the other (a status, not a number).

Rows (``Row``): one per matched case and metric: baseline and candidate
    medians (in the metric's unit), ``ratio = cand / base``, ``delta_pct`` (the
    signed change in the metric's own terms: +5% on ``time_us`` is 5% more
    time), ``speedup`` (> 1 is an improvement: ``base / cand`` for
    lower-is-better metrics such as times, ``cand / base`` for throughputs),
    the interval of ``delta_pct``, the verdict (``normbench.stats``) and the
    samples per side. A derived metric (``Metric.derived_from``, e.g. GB/s of
    ``time_us``) takes its source's verdict and interval, so one measurement
    is not judged twice. gsm8k metrics (``exact_match,strict-match`` /
    ``exact_match,flexible-extract``) whose cases carry per-item results
    (``items: [{"doc_id", "strict", "flexible"}]``) are judged by McNemar's
    test paired on the shared ``doc_id``s (the lowest repeat that has items).
    Kernel cases run with ``--repeat N`` add a per-case noise floor: a change
    must also exceed the spread between that case's repeat medians (in either
    run), so drift between identical repeats is never called a change
    (``CompareOptions.repeat_floor``; ``normbench noise`` shows those spreads).

Fusion evidence (``compare_variants`` only): per variant, what its server
    starts logged about vLLM's fusion passes (the records' ``evidence``, see
    ``normbench.runners.e2e``): patterns replaced per pass, the effective
    ``fuse_norm_quant``, the enabled fusions. A candidate variant is flagged
    (``VariantEvidence.flag``) when it asked for ``fuse_norm_quant`` and the
    norm+quant pass replaced nothing, or when its passes and replacement
    counts equal the baseline variant's: its deltas then compare the same
    fusion, and a difference is not the fusion's. Unknown evidence (vLLM's
    CPU platform, a compile-cache load, no pass debug lines) is shown with its
    reason and never flagged.

Throttling: a kernel case whose record says it was sampled under power or
    thermal throttling (``conditions.thermal_or_power_throttled``, read from
    NVML right after its samples: ``normbench.conditions``) on either side is a
    row of status ``THROTTLED`` ("not comparable: throttled"): both medians
    shown, no delta or verdict, not gated, counted apart in the summary
    (``Summary.throttled``). ``CompareOptions(allow_throttled=True)``
    (``--allow-throttled``) compares it anyway, with a note. A throttled GPU
    runs slower for reasons that are not the code's (NVIDIA/nvbench #193 drops
    such samples for the same reason).

Environment differences (GPU, driver, CUDA, package versions, git commit,
    anything else in ``RunRecord.environment``, and the measurement conditions
    each run recorded: ``--lock-clocks`` state, the median SM clock its cases
    were sampled at, throttled cases, power limit) are listed, asv/pyperf style;
    ``strict=True`` refuses runs on different GPUs (``IncomparableError``);
    when a run's cases ran on several GPU models (a heterogeneous Ray
    cluster: each case's ``device_info.name``), it instead keeps them apart:
    cases match only on the same fingerprint *and* GPU model, and rows gain a
    ``gpu`` parameter.

Gating (``parse_fail_on`` / ``check_gates``): ``median:+5%`` or per metric
    (``time_us:+5%``, ``output_throughput:-3%``) fails only for a row whose
    verdict is a regression (significant and at least ``min_effect``) *and*
    whose change is beyond the threshold, and for a case that was OK in the
    baseline and is INCORRECT or FAILED in the candidate. Noise never fails,
    nor does a throttled case (it has no verdict).

Errors: ``IncomparableError`` (``--strict``), ``NormbenchError`` for bad gate
specs, unknown gated metrics, unknown variants.
"""

from normbench.compare.environment import env_differences, env_get, flatten, important_env_keys, with_conditions
from normbench.compare.evidence import FLAG_SAME, FLAG_ZERO, VariantEvidence
from normbench.compare.gates import check_gates, parse_fail_on
from normbench.compare.match import compare, compare_variants, run_variants
from normbench.compare.model import (
    COMPARED, NOT_OK, ONLY_BASE, ONLY_CAND, THROTTLED, CompareOptions, Comparison, Row,
)
from normbench.compare.noise import NoiseReport, noise

__all__ = [
    "COMPARED", "FLAG_SAME", "FLAG_ZERO", "NOT_OK", "ONLY_BASE", "ONLY_CAND", "THROTTLED",
    "CompareOptions", "Comparison", "NoiseReport", "Row", "VariantEvidence",
    "check_gates", "compare", "compare_variants", "env_differences", "env_get", "flatten",
    "important_env_keys", "noise", "parse_fail_on", "run_variants", "with_conditions",
]
