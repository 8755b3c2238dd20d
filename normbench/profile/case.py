"""One kernel case, outside the run: what a profiler runs (``CaseSpec``), and running it (``prepare``, ``run_profiled``).

A ``CaseSpec`` is the case's op, params, provider and the seed its timed pass recorded, as
JSON, so a child process (``python -m normbench.profile.one_case``, under ncu) rebuilds the
same inputs and callable. The callable is built as the kernel runner builds it
(``normbench.runners.kernel``: the provider's factory, outside any profiled range); the
case was checked against the float64 reference in the timed pass, so it is not checked
again here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable

from normbench.errors import NormbenchError

#: Calls of the case's callable before the profiled ones: the first compiles or autotunes.
WARMUP = 3
#: Calls profiled: one ("one kernel launch each": a case that launches several kernels keeps each).
LAUNCHES = 1


@dataclass(frozen=True)
class CaseSpec:
    """What a profiler needs to run one kernel case again.

    Attributes:
        case_id: the case's id in its run (for messages).
        op: the op (``normbench.ops``).
        params: the op's full params (shape, dtype, ...).
        provider: the provider ref's fields: ``{"name": "triton"}`` or
            ``{"norm": "torch_naive", "quant": "triton"}`` (``normbench.suite.ProviderRef``).
        seed: the seed of its inputs (the case record's ``seed``).
        warmup: calls before the profiled ones (not profiled).
        launches: calls profiled.
    """

    case_id: str
    op: str
    params: dict[str, Any]
    provider: dict[str, str]
    seed: int
    warmup: int = WARMUP
    launches: int = LAUNCHES

    @classmethod
    def of(cls, case: Any, seed: int | None, warmup: int = WARMUP, launches: int = LAUNCHES) -> "CaseSpec":
        """The spec of a kernel ``normbench.expand.Case``; ``seed`` is its record's (None: derived as the runner does).

        Raises:
            NormbenchError: not a kernel case with a provider.
        """
        ref = case.provider_ref
        if case.kind != "kernel" or case.op is None or ref is None:
            raise NormbenchError(f"{case.case_id}: only kernel cases with a provider can be profiled")
        if seed is None:
            from normbench.runners.kernel import point_seed, settings_of

            seed = point_seed(settings_of(case).seed, case)
        provider = {"name": ref.name} if not ref.is_unfused else {"norm": ref.norm, "quant": ref.quant}
        return cls(case.case_id, case.op, case.param_dict, provider, int(seed), warmup, launches)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "CaseSpec":
        """Read a spec written by ``to_json``.

        Raises:
            NormbenchError: not JSON, or not a spec (missing or unknown fields, wrong types).
        """
        try:
            data = json.loads(text)
            spec = cls(**data)
        except (json.JSONDecodeError, TypeError) as e:
            raise NormbenchError(f"not a normbench profile case spec: {e}") from None
        if not (isinstance(spec.params, dict) and isinstance(spec.provider, dict) and isinstance(spec.seed, int)
                and isinstance(spec.warmup, int) and isinstance(spec.launches, int) and spec.launches >= 1
                and spec.warmup >= 0):
            raise NormbenchError("not a normbench profile case spec: params/provider must be objects, seed, "
                                 "warmup >= 0 and launches >= 1 integers")
        return spec


@dataclass
class Prepared:
    """A case ready to run: its callable, inputs and device."""

    fn: Callable[[dict[str, Any]], Any]
    inputs: dict[str, Any]
    device: Any  # torch.device


def prepare(spec: CaseSpec, device: str | None = None) -> Prepared:
    """Build the case's inputs (from its seed) and its provider's callable, on ``device``
    (default: CUDA when there is a GPU, else the CPU).

    Raises:
        NormbenchError: the provider is unavailable here or cannot run the case (its reason).
    """
    import torch

    from normbench.kernels.providers._family import Unsupported, family_of
    from normbench.registry import PROVIDERS, UNFUSED_TARGET, load
    from normbench.suite import ProviderRef

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ref = ProviderRef(**spec.provider)
    if ref.is_unfused:
        provider = load(UNFUSED_TARGET)(ref.norm, ref.quant)
    elif ref.name in PROVIDERS:
        provider = load(PROVIDERS[ref.name].target)
    else:
        raise NormbenchError(f"{spec.case_id}: unknown provider {ref.name!r}")
    reason = provider.unavailable() or provider.unsupported(spec.op, spec.params, dev)
    if reason:
        raise NormbenchError(f"{ref.label} cannot run {spec.op} here: {reason}")
    try:
        fn = provider.make(spec.op, spec.params)
    except Unsupported as e:
        raise NormbenchError(f"{ref.label} cannot run {spec.op} here: {e}") from None
    inputs = family_of(spec.op).make_inputs(spec.op, spec.params, dev, spec.seed)
    return Prepared(fn, inputs, dev)


def _clone(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() for k, v in inputs.items()}


def run_profiled(prep: Prepared, spec: CaseSpec, start: Callable[[], None], stop: Callable[[], None]) -> None:
    """Call the case's callable ``spec.warmup`` times, then ``spec.launches`` times between
    ``start()`` and ``stop()``.

    Every call gets its own copy of the inputs (providers may write in place), made before
    ``start()``: nothing but the case's own kernels runs in the profiled range. ``stop()``
    runs even when a call raises.
    """
    import torch

    sync = torch.cuda.synchronize if prep.device.type == "cuda" else (lambda: None)
    for _ in range(spec.warmup):
        prep.fn(_clone(prep.inputs))
    sets = [_clone(prep.inputs) for _ in range(spec.launches)]
    sync()
    start()
    try:
        for s in sets:
            prep.fn(s)
        sync()
    finally:
        stop()
