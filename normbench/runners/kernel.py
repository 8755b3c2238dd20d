"""Kernel stages: correctness gate, then timing, then GB/s and % of peak.

For each sweep point (cases arrive grouped by point, see ``normbench.expand``):

1. fresh random inputs from a seed derived from the stage seed and the point
   (recorded per case), and the float64 reference, built once;
2. per provider: build its callable (outside any timed region), run it once on
   a copy of the inputs and check the outputs against the reference with the
   stage's tolerance for the dtype. Outside tolerance -> INCORRECT with the
   error, not timed;
3. time it (``normbench.timing``) over copies of the inputs rotated to span
   ``2 x L2``, keep every sample;
4. metrics: ``time_us`` (median of samples; p20/p80 spread), ``gbps`` = the op's
   bytes-moved model / time, ``pct_peak`` = gbps / the run's measured copy
   bandwidth.

On a GPU the measurement conditions go on the records (``normbench.conditions``):
the throttle reasons and SM clock read right after each case's timed samples, and
the GPU's state (clocks, power, temperature, reasons) before the stage on the first
case it records and after it on the last. A "stage" is one call of ``run``: the
whole stage in a serial run, one sweep point in a parallel worker, which reads its
own GPU.

A provider that is unavailable or cannot run the case is SKIPPED with its
reason; an exception while building or running it is FAILED with the error;
neither stops the run.
"""

from __future__ import annotations

import hashlib
import itertools
import traceback
from typing import Any

from normbench import conditions
from normbench.expand import Case, KernelSettings
from normbench.errors import NormbenchError
from normbench.ops import OPS
from normbench.registry import PROVIDERS, UNFUSED_TARGET, load
from normbench.runners import RunContext, Stopwatch, base_record
from normbench.store import Metric
from normbench.suite import ProviderRef


def point_seed(stage_seed: int, case: Case) -> int:
    """A seed per sweep point: stable across runs and providers, distinct across points."""
    key = f"{stage_seed}/{case.op}/{case.params}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def _clone_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() for k, v in inputs.items()}


class _Providers:
    """Provider objects by ``ProviderRef``, loaded once per run."""

    def __init__(self) -> None:
        self._cache: dict[ProviderRef, Any] = {}

    def get(self, ref: ProviderRef) -> Any:
        if ref not in self._cache:
            if ref.is_unfused:
                self._cache[ref] = load(UNFUSED_TARGET)(ref.norm, ref.quant)
            else:
                self._cache[ref] = load(PROVIDERS[ref.name].target)
        return self._cache[ref]


def settings_of(case: Case) -> KernelSettings:
    """The case's ``KernelSettings``.

    Raises:
        NormbenchError: the case carries none (cases from ``normbench.expand`` always do).
    """
    if not isinstance(case.settings, KernelSettings):
        raise NormbenchError(f"kernel case {case.case_id} carries no KernelSettings (expand() fills them)")
    return case.settings


def _tolerance(settings: KernelSettings):
    from normbench.kernels.base import Tolerance

    return Tolerance(**settings.tolerance_dict)


def _memory_skip(torch: Any, device: Any, op: str, params: dict[str, Any]) -> str | None:
    """Skip a point whose inputs, float64 reference and outputs cannot fit on the GPU."""
    if device.type != "cuda":
        return None
    elems = params["num_tokens"] * params["hidden_size"]
    need = OPS[op].bytes_moved(params) * 3 + elems * 8 * 3  # inputs/outputs + copies + float64 work
    free, _ = torch.cuda.mem_get_info()
    if need > free * 0.9:
        return f"needs about {need / 2**30:.1f} GiB of GPU memory, {free / 2**30:.1f} GiB free"
    return None


def run(cases: list[Case], ctx: RunContext) -> None:
    """Measure kernel cases and hand each record to ``ctx.record``.

    Each case carries its provider (``Case.ref``) and its stage's settings
    (``Case.settings``: seed, tolerance, timing); ``ctx.suite`` is not read.
    """
    _StageRunner(cases, ctx).run(cases)


class _StageRunner:
    def __init__(self, cases: list[Case], ctx: RunContext):
        import torch

        from normbench.timing import l2_bytes

        self.torch = torch
        self.ctx = ctx
        self.device = torch.device("cuda" if ctx.caps.device == "cuda" else "cpu")
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.peak = ctx.environment.get("peak_bandwidth_gbps")
        self.providers = _Providers()
        self.l2 = l2_bytes() if self.device.type == "cuda" else 0
        self.probe = conditions.stage_probe(self.device.type,
                                            torch.cuda.current_device() if self.device.type == "cuda" else 0)

    def rotate(self, settings: KernelSettings) -> int:
        """Bytes the rotated input sets span: the stage's ``rotate_bytes``, else 2 x L2 (GPU; 0 on the CPU)."""
        return settings.rotate_bytes or 2 * self.l2

    def run(self, cases: list[Case]) -> None:
        from normbench.kernels.providers._family import family_of

        self.probe.start()  # the GPU before the stage
        recorded = 0
        for _, group_iter in itertools.groupby(cases, key=Case.shape_key):
            group = list(group_iter)
            op, params = group[0].op, group[0].param_dict
            assert op is not None
            seed = point_seed(settings_of(group[0]).seed, group[0])
            family = family_of(op)
            self.ctx.status(f"{op} {params['num_tokens']}x{params['hidden_size']} {params['dtype']}: inputs + reference")
            skip = _memory_skip(self.torch, self.device, op, params)
            inputs = ref = None
            setup_error = None
            if skip is None:
                try:
                    inputs = family.make_inputs(op, params, self.device, seed)
                    ref = family.reference(op, params, inputs)
                except Exception as e:  # a bug in a family must not stop the run
                    setup_error = f"inputs/reference failed: {type(e).__name__}: {e}"
            for case in group:
                clock = Stopwatch()
                if skip or setup_error:
                    rec = base_record(case, "SKIPPED" if skip else "FAILED", skip or setup_error, seed=seed)
                else:
                    self.ctx.status(f"{case.provider}: {op} {params['num_tokens']}x{params['hidden_size']}")
                    rec = self.measure(case, family, inputs, ref, seed)
                rec.duration_s = round(clock.elapsed(), 3)
                rec.device = self.device_name
                recorded += 1
                stage = self.probe.fields(first=recorded == 1, last=recorded == len(cases))
                if stage:
                    rec.conditions = {**(rec.conditions or {}), **stage}
                self.ctx.record(case, rec)
            del inputs, ref
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()

    def measure(self, case: Case, family: Any, inputs: dict, ref_out: Any, seed: int):
        from normbench.kernels.providers._family import Unsupported
        from normbench.timing import input_sets_needed, time_cpu, time_cuda

        torch, device = self.torch, self.device
        op, params = case.op, case.param_dict
        try:
            settings = settings_of(case)
            ref = case.provider_ref
            if ref is None:
                raise NormbenchError(f"kernel case {case.case_id} names no provider")
            provider = self.providers.get(ref)
            reason = provider.unavailable() or provider.unsupported(op, params, device)
            if reason:
                return base_record(case, "SKIPPED", reason, seed=seed)
            fn = provider.make(op, params)
            # Correctness first, on a private copy (providers may write in place).
            trial = _clone_inputs(inputs)
            out = fn(trial)
            if device.type == "cuda":
                torch.cuda.synchronize()
            check = family.check(op, params, inputs, out, ref_out, _tolerance(settings))
            del trial, out
            if not check.ok:
                return base_record(case, "INCORRECT", check.message, seed=seed, correctness=check.metrics)
            nbytes = OPS[op].bytes_moved(params)
            if device.type == "cuda":
                rotate = self.rotate(settings)
                sets = [_clone_inputs(inputs) for _ in range(input_sets_needed(nbytes, rotate))]
                fns = [(lambda s=s: fn(s)) for s in sets]
                timing = time_cuda(fns, settings.repetitions, settings.warmup, settings.mode,
                                   bytes_per_call=nbytes, rotate_bytes=rotate)
                del sets, fns
            else:
                data = _clone_inputs(inputs)
                timing = time_cpu(lambda: fn(data), settings.min_run_time_s, warmup=settings.warmup,
                                  repetitions=settings.repetitions, bytes_per_call=nbytes)
            sample = self.probe.sample()  # right after the samples: throttled while they were taken?
        except Unsupported as e:
            return base_record(case, "SKIPPED", str(e), seed=seed)
        except Exception as e:  # any provider failure is that case's FAILED, not the run's end
            msg = f"{type(e).__name__}: {e}"
            if self.ctx.debug:
                msg += "\n" + traceback.format_exc()
            return base_record(case, "FAILED", msg[:2000], seed=seed)
        return _ok_record(case, seed, timing, nbytes, self.peak, check.metrics, sample)


def _ok_record(case: Case, seed: int, timing: Any, nbytes: int, peak: float | None, correctness: dict,
               sample: conditions.CaseSample | None = None):
    from normbench.timing import summarize

    stats = summarize(timing.samples_us)
    gbps = nbytes / stats["median"] / 1e3
    metrics = {
        "time_us": Metric(
            value=stats["median"], unit="us", higher_is_better=False, samples=timing.samples_us,
            spread={"p20": stats["p20"], "p80": stats["p80"], "min": stats["min"], "max": stats["max"]},
        ),
        "gbps": Metric(value=gbps, unit="GB/s", higher_is_better=True, derived_from="time_us"),
    }
    if peak:
        metrics["pct_peak"] = Metric(value=100.0 * gbps / peak, unit="%", higher_is_better=True, derived_from="time_us")
    rec = base_record(case, "OK", "; ".join(timing.notes) or None, seed=seed, metrics=metrics, correctness=correctness)
    rec.timing = timing.as_record()
    if sample is not None and sample.as_record():
        rec.conditions = sample.as_record()
    return rec
