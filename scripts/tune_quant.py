#!/usr/bin/env python
"""Tune the launch configs of normbench's quantization Triton kernel (v4) on one GPU.

For hidden_size {4096, 8192, 1024, 2048} (the table's buckets: next_pow2(H)) x num_tokens
{1, 16, 128, 1024, 4096, 16384}, bfloat16, fp8 and int8, and the kernel kinds

* ``rms_norm_quant``            fused RMSNorm + dynamic per-token quant (no residual),
* ``rms_norm_quant+res``        the same with the residual add (in-place residual),
* ``rms_norm_group_quant``      fused RMSNorm + per-group quant, group 128, row-major scales,
* ``rms_norm_group_quant+res``  the same with the residual add,
* ``scaled_quant``              standalone dynamic per-token quant,

it times candidate ``LaunchConfig`` s and prints, per shape, the best config with its time
(us), GB/s (``normbench.ops`` bytes model) and % of the measured copy bandwidth, next to the
current ``default_config`` (the TUNED table or its fallback) and the v4 ablations. The run
ends with a paste-ready ``TUNED = {...}`` block for ``kernels/quant.py``; everything goes
to a JSON file too.

Candidates (``candidates``), per hidden bucket: one program per tile with num_warps x rows
per tile (rows loaded together), PDL on where supported; from 1024 tokens also persistent
grids (2 or 4 programs per SM, weight loaded once) with and without a pipelined loop
(``tl.range(num_stages=2)``); and ablations of the formula's config: PDL off, v3's
arithmetic rounding (``hw_cvt=False``, fp8 and the bf16 residual sum) and, per-token norm,
two separate reductions. int8 is timed, per token count, on fp8's two best configs there,
the formula's and the current default's.

Method. Correctness first, on the GPU: every config is checked against the float64
reference (``QuantFamily.check``, as the suites check) before it is timed, on a ragged
token count that runs every persistent program through >= 2 tiles (rows sampled where
that is large); a config that fails is reported ``INCORRECT`` and never timed. Timing is the
suites' own: ``normbench.timing.time_cuda`` (CUDA graph over input sets spanning 2 x L2,
outputs allocated per call by the ``triton`` provider, as ``normbench run`` does) with
``--screen-reps`` replays per candidate, then the three fastest and the default again with
the suites' 50 repetitions; the medians are reported. Kernels are compiled first in
parallel worker processes (filling Triton's cache). ``--budget-s`` stops timing new shapes.

Usage (repository root; CUDA, torch, triton; ``normbench`` need not be installed)::

    python scripts/tune_quant.py --out tune_quant.json        # H200: about 2 minutes
    python scripts/tune_quant.py --quick --kinds rms_norm_quant --hidden 8192   # a smoke run
    python scripts/tune_quant.py --table-from tune_quant.json  # the TUNED block of a JSON, no GPU
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = {
    # kind -> (op, extra params)
    "rms_norm_quant": ("rms_norm_quant", {"residual": False}),
    "rms_norm_quant+res": ("rms_norm_quant", {"residual": True}),
    "rms_norm_group_quant": ("rms_norm_group_quant", {"residual": False, "group_size": 128, "scale_layout": "row_major"}),
    "rms_norm_group_quant+res": ("rms_norm_group_quant", {"residual": True, "group_size": 128, "scale_layout": "row_major"}),
    "scaled_quant": ("scaled_quant", {"static_scale": False, "scale_granularity": "per_token"}),
}
HIDDEN = (4096, 8192, 1024, 2048)  # most important first: --budget-s cuts the tail
TOKENS = (1, 16, 128, 1024, 4096, 16384)
GATE_TOKENS = 51  # ragged for 2 and 4 rows per tile
GATE_SAMPLE = 384  # rows checked at most (spread over the tensor, the last row always)
PERSISTENT_FROM = 1024  # persistent grids only where there are more tiles than programs
SENTINEL = 2**31 - 1


def _quant():
    import normbench.kernels.quant as q

    return q


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def table_key(kind: str, hidden: int) -> tuple[str, bool, int]:
    """The TUNED key of a tuned kind and hidden size: (kernel kind, residual, bucket)."""
    return kind.split("+")[0], kind.endswith("+res"), _pow2(hidden)


def _max_elems_per_thread() -> int:
    return 64  # beyond this the fp32 row (and weight) no longer fit in 255 registers


def candidates(kind: str, hidden: int, pdl: bool, quick: bool) -> list[tuple[object, int]]:
    """(LaunchConfig, smallest num_tokens it is timed at) of one kind and hidden size."""
    q = _quant()
    b = _pow2(hidden)
    warps = {1024: (1, 2, 4), 2048: (2, 4, 8)}.get(b, (2, 4, 8, 16) if b <= 4096 else (4, 8, 16, 32))
    rows = (1,) if quick else ((1, 2, 4) if b <= 1024 else (1, 2))
    out: list[tuple[object, int]] = []

    def add(cfg, from_tokens: int = 1) -> None:
        per_thread = cfg.rows_per_program * b / (32 * cfg.num_warps)
        if per_thread > _max_elems_per_thread() or per_thread < 4 or cfg.rows_per_program * b > q.MAX_BLOCK:
            return
        if cfg not in [c for c, _ in out]:
            out.append((cfg, from_tokens if cfg.rows_per_program == 1 else max(from_tokens, 2)))

    for w in warps:
        for r in rows:
            add(q.LaunchConfig(w, r, pdl=pdl))
    base = q.formula_config(4096, hidden, 2, pdl)  # 32 elements per thread, one row
    if not quick:
        for r in (1, 2):
            for pps in (2, 4):
                for st in (1, 2):
                    add(replace(base, rows_per_program=r, programs_per_sm=pps, stages=st), PERSISTENT_FROM)
    # ablations of the formula's config (each alone), at every token count
    small = q.formula_config(1, hidden, 2, pdl)
    for cfg in {base, small}:
        add(cfg)
        if pdl:
            add(replace(cfg, pdl=False))
        add(replace(cfg, hw_cvt=False))
        if kind in ("rms_norm_quant", "rms_norm_quant+res"):
            add(replace(cfg, tuple_reduce=False))
    return out


def case_params(kind: str, quant: str, tokens: int, hidden: int):
    from normbench.ops import OPS

    op, extra = KINDS[kind]
    return op, OPS[op].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "quant_dtype": quant, **extra})


def provider_fn(kind: str, quant: str, tokens: int, hidden: int, cfg):
    """The ``triton`` provider's callable for the case, with ``cfg`` (None: its default)."""
    q = _quant()
    op, p = case_params(kind, quant, tokens, hidden)
    if cfg is not None:
        p = dict(p, launch_config=cfg)
    return op, p, q.IMPLS["triton"][op](p)


def _compile_job(job):
    """Worker: run one (kind, quant, hidden, config) once so that Triton caches its kernel."""
    kind, quant, hidden, cfg_dict = job
    try:
        import torch

        q = _quant()
        cfg = q.LaunchConfig(**cfg_dict)
        t = GATE_TOKENS if not cfg.programs_per_sm else 8
        op, p, fn = provider_fn(kind, quant, t, hidden, cfg)
        fn(q.FAMILY.make_inputs(op, p, torch.device("cuda"), 1))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # reported; the main process compiles (or reports) it again
        return f"{kind} {quant} H={hidden} {cfg_dict}: {type(e).__name__}: {str(e)[:300]}"


def precompile(jobs, workers: int) -> list[str]:
    if not jobs or workers <= 1:
        return []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        return [e for e in ex.map(_compile_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))) if e]


def gate_tokens(cfg, sms: int) -> int:
    """A ragged token count that runs every persistent program through >= 2 tiles."""
    if not cfg.programs_per_sm:
        return GATE_TOKENS
    return 2 * cfg.rows_per_program * cfg.programs_per_sm * sms + 3


def gate(kind: str, quant: str, hidden: int, cfg, device, sms: int) -> str | None:
    """None if the config's outputs pass the family check against the float64 reference."""
    import torch

    from normbench.kernels.base import Tolerance

    q = _quant()
    t = gate_tokens(cfg, sms)
    op, p, fn = provider_fn(kind, quant, t, hidden, cfg)
    inputs = q.FAMILY.make_inputs(op, p, device, 11)
    out = fn({k: v.clone() for k, v in inputs.items()})
    torch.cuda.synchronize()
    # Rows are independent: check a spread sample (the last, ragged row always included).
    idx = torch.arange(0, t, max(1, t // GATE_SAMPLE), device=device)
    idx = torch.unique(torch.cat([idx, torch.tensor([t - 1], device=device)]))
    n = int(idx.numel())
    sample = {k: (v[idx].contiguous() if v.dim() == 2 else v) for k, v in inputs.items()}
    sp = dict(p, num_tokens=n)
    sp.pop("launch_config", None)
    ref = q.FAMILY.reference(op, sp, sample)
    got = tuple(o[idx] for o in out)
    res = q.FAMILY.check(op, sp, sample, got, ref, Tolerance(1e-2, 2e-2, 1e-2, 0.02))
    if not res.ok:
        return res.message
    # Ours matches the reference to fp32 rounding: tie mismatches only at (near-)exact ties,
    # which exact bf16 inputs of scaled_quant hit more often (x / (amax / 448) with 8-bit x).
    limit = 1e-2 if op == "scaled_quant" else 2e-3
    if res.metrics.get("mismatch_rate", 0) > limit:
        return f"mismatch_rate {res.metrics['mismatch_rate']:.4f} > {limit} (ours should match the reference to fp32 rounding)"
    return None


class Bench:
    """Input sets of one case, rotated as ``normbench run`` rotates them (2 x L2)."""

    def __init__(self, kind: str, quant: str, tokens: int, hidden: int, device, l2: int):
        from normbench.ops import OPS
        from normbench.timing import input_sets_needed

        q = _quant()
        self.kind, self.quant, self.tokens, self.hidden = kind, quant, tokens, hidden
        self.op, self.params = case_params(kind, quant, tokens, hidden)
        self.nbytes = OPS[self.op].bytes_moved(self.params)
        inputs = q.FAMILY.make_inputs(self.op, self.params, device, 1234)
        self.sets = [{k: v.clone() for k, v in inputs.items()} for _ in range(input_sets_needed(self.nbytes, 2 * l2))]

    def time(self, cfg, reps: int, warmup: int) -> float:
        from normbench.timing import time_cuda

        _, _, fn = provider_fn(self.kind, self.quant, self.tokens, self.hidden, cfg)
        res = time_cuda([(lambda s=s: fn(s)) for s in self.sets], reps, warmup)
        return statistics.median(res.samples_us)


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy of 1 GiB: (read + write) bytes / median time."""
    import torch

    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1e-3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / statistics.median(times) / 1e9


def _cfg(d: dict):
    return _quant().LaunchConfig(**d)


def tuned_table(results: list[dict]) -> str:
    """The paste-ready ``TUNED`` block for kernels/quant.py from the timed rows of a run.

    Per (kind, residual, bucket) and token count: the config with the least
    ``t_fp8 / best_fp8 + t_int8 / best_int8`` among those timed for both (fp8's best where
    int8 was not timed). Each measured token count T_i covers up to the geometric midpoint
    sqrt(T_i T_i+1) (the last: everything above); a row whose config equals the next one's
    is dropped.
    """
    per: dict[tuple, dict[int, dict[str, dict]]] = {}
    for r in results:
        if "error" in r or not r.get("all_us"):
            continue
        key = table_key(r["kind"], r["hidden"])
        if key[2] != r["hidden"]:  # a non-power-of-2 hidden size does not set its bucket
            continue
        per.setdefault(key, {}).setdefault(r["tokens"], {})[r["quant"]] = r["all_us"]
    lines = [
        "TUNED: dict[tuple[str, bool, int], tuple[tuple[int, LaunchConfig], ...]] = {",
    ]
    for key in sorted(per):
        chosen = []
        for t in sorted(per[key]):
            by_q = per[key][t]
            fp8 = by_q.get("fp8") or next(iter(by_q.values()))
            both = [c for c in fp8 if all(c in v for v in by_q.values())]
            pool = both or list(fp8)
            best = {qd: min(v.values()) for qd, v in by_q.items()}
            c = min(pool, key=lambda c: sum(by_q[qd][c] / best[qd] for qd in by_q if c in by_q[qd]))
            chosen.append((t, _cfg(json.loads(c))))
        tokens = [t for t, _ in chosen]
        bounds = [int(math.sqrt(a * b)) for a, b in zip(tokens, tokens[1:])] + [SENTINEL]
        kept = [(b, c) for i, (b, (_, c)) in enumerate(zip(bounds, chosen)) if i + 1 == len(chosen) or chosen[i + 1][1] != c]
        lines.append(f"    {key!r}: (")
        lines += [f"        ({b}, {c.literal()})," for b, c in kept]
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines)


def _fmt(cfg) -> str:
    return cfg.short() if cfg is not None else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tune_quant.json", help="JSON results file")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--quant", default="fp8,int8")
    ap.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--quick", action="store_true", help="one row per tile, no persistent grids")
    ap.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1), help="parallel compile processes")
    ap.add_argument("--screen-reps", type=int, default=10, help="graph replays per candidate in the screening round")
    ap.add_argument("--budget-s", type=float, default=140.0, help="stop timing new shapes after this many seconds")
    ap.add_argument("--table-from", metavar="JSON", help="print the TUNED block of a results file and exit (no GPU)")
    args = ap.parse_args(argv)

    if args.table_from:
        print(tuned_table(json.loads(Path(args.table_from).read_text())["results"]))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("tune_quant.py needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    t_start = time.perf_counter()
    q = _quant()
    device = torch.device("cuda")
    kinds = [k for k in args.kinds.split(",") if k]
    quants = [s for s in args.quant.split(",") if s]
    hiddens = [int(h) for h in args.hidden.split(",") if h]
    tokens_list = [int(t) for t in args.tokens.split(",") if t]
    # This process touches CUDA only after the compile workers are done (a GPU in
    # exclusive-process mode would refuse them a context): SM count and PDL support come
    # from a short-lived probe process.
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        sms, pdl_ok = ex.submit(_device_facts_job).result()
    plan = {(k, h): candidates(k, h, pdl_ok, args.quick) for k in kinds for h in hiddens}
    defaults = {
        (k, h, t): q.default_config(t, h, 2, table_key(k, h)[0], k.endswith("+res"), pdl_ok)
        for k in kinds for h in hiddens for t in tokens_list
    }
    gated = {key: [c for c, _ in cfgs] for key, cfgs in plan.items()}
    for (k, h, t), c in defaults.items():  # the current defaults are gated and timed too
        if c not in gated[(k, h)]:
            gated[(k, h)].append(c)

    def for_quant(cfgs, quant):  # the ablations that change nothing for int8 are fp8 only
        return [c for c in cfgs if quant == quants[0] or (c.hw_cvt is not False and c.tuple_reduce is not False)]

    jobs = [(k, quant, h, asdict(c)) for (k, h), cfgs in gated.items() for quant in quants for c in for_quant(cfgs, quant)]
    errors = precompile(jobs, args.workers)
    for e in errors:
        print(f"# precompile: {e}", flush=True)
    print(f"# {len(jobs)} kernel variants compiled in {time.perf_counter() - t_start:.0f} s", flush=True)
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20
    copy_gbps = copy_bandwidth_gbps()
    print(f"# {props.name}, {sms} SMs, PDL {pdl_ok}, torch {torch.__version__}, triton {triton.__version__}, "
          f"L2 {l2 / 2**20:.0f} MiB, copy {copy_gbps:.0f} GB/s", flush=True)
    print("# kind                     q    hidden tokens | best config              us    GB/s  %copy | default"
          "              us  x best | formula's config: us; its ablations: us (x its time)", flush=True)

    results: list[dict] = []
    out_of_time = False
    for h in hiddens:
        for kind in kinds:
            valid: dict[str, list] = {}
            for quant in quants:
                valid[quant] = []
                for cfg in for_quant(gated[(kind, h)], quant):
                    try:
                        err = gate(kind, quant, h, cfg, device, sms)
                    except Exception as e:  # noqa: BLE001 - a config that does not compile or launch
                        err = f"{type(e).__name__}: {str(e)[:300]}"
                    if err:
                        print(f"# INCORRECT {kind} {quant} H={h} {cfg.short()}: {err}", flush=True)
                        results.append({"kind": kind, "quant": quant, "hidden": h, "config": asdict(cfg), "error": err})
                    else:
                        valid[quant].append(cfg)
            for t in tokens_list:
                if time.perf_counter() - t_start > args.budget_s:
                    out_of_time = True
                    break
                default = defaults[(kind, h, t)]
                formula = q.formula_config(t, h, 2, pdl_ok)
                base = q.formula_config(4096, h, 2, pdl_ok)
                fp8_order: list = []
                for quant in quants:
                    if quant == quants[0]:
                        cfgs = [c for c, t0 in plan[(kind, h)] if t >= t0]
                    else:  # fp8's two best here, the formula's and the default
                        cfgs = fp8_order[:2] + [formula]
                    cfgs = [c for c in dict.fromkeys(cfgs + [default]) if c in valid[quant]]
                    if not cfgs:
                        continue
                    b = Bench(kind, quant, t, h, device, l2)
                    times = {}
                    for cfg in cfgs:
                        try:
                            times[cfg] = b.time(cfg, args.screen_reps, 2)
                        except Exception as e:  # noqa: BLE001
                            print(f"# FAILED {kind} {quant} H={h} T={t} {cfg.short()}: {type(e).__name__}: {e}", flush=True)
                    if not times:
                        continue
                    # the three fastest and the default again, with the suites' repetitions
                    for cfg in dict.fromkeys(sorted(times, key=times.get)[:3] + ([default] if default in times else [])):
                        times[cfg] = b.time(cfg, 50, 10)
                    del b
                    torch.cuda.empty_cache()
                    best = min(times, key=times.get)
                    if quant == quants[0]:
                        fp8_order = sorted(times, key=times.get)
                    nbytes = _bytes(kind, quant, t, h)
                    row = {
                        "kind": kind, "quant": quant, "hidden": h, "tokens": t, "bytes": nbytes,
                        "best": asdict(best), "best_us": times[best], "best_gbps": nbytes / times[best] / 1e3,
                        "best_pct_copy": 100 * nbytes / times[best] / 1e3 / copy_gbps,
                        "default": asdict(default), "default_us": times.get(default),
                        "all_us": {json.dumps(asdict(c)): v for c, v in times.items()},
                    }
                    results.append(row)
                    du = times.get(default)
                    ref_t = times.get(base)
                    abl = []
                    for name, c in (("no-pdl", replace(base, pdl=False)), ("sw-cvt", replace(base, hw_cvt=False)),
                                    ("two-red", replace(base, tuple_reduce=False))):
                        if ref_t and c in times and c != base:
                            abl.append(f"{name} {times[c]:.2f} ({times[c] / ref_t:.3f}x)")
                    print(
                        f"{kind:26s} {quant:4s} {h:5d} {t:6d} | {best.short():20s} {times[best]:8.2f} {row['best_gbps']:7.0f} "
                        f"{row['best_pct_copy']:5.1f}% | {default.short():16s} "
                        + (f"{du:8.2f} {du / times[best]:6.3f}" if du else "     n/a       ")
                        + (f" | {base.short()} {ref_t:.2f}; " + ", ".join(abl) if ref_t else ""),
                        flush=True,
                    )
            if out_of_time:
                break
        if out_of_time:
            break
    if out_of_time:
        print(f"# budget of {args.budget_s:.0f} s reached: remaining shapes not timed", flush=True)

    summary = {
        "device": props.name, "sms": sms, "pdl": pdl_ok, "torch": torch.__version__, "triton": triton.__version__,
        "copy_gbps": copy_gbps, "l2_bytes": l2, "elapsed_s": time.perf_counter() - t_start,
        "complete": not out_of_time, "kernel": "v4", "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"# wrote {args.out} in {summary['elapsed_s']:.0f} s; paste into kernels/quant.py:", flush=True)
    print(tuned_table(results), flush=True)
    return 0


def _bytes(kind: str, quant: str, tokens: int, hidden: int) -> int:
    from normbench.ops import OPS

    op, p = case_params(kind, quant, tokens, hidden)
    return OPS[op].bytes_moved(p)


def _device_facts_job():
    import torch

    q = _quant()
    return q.device_facts(torch.device("cuda", 0))


if __name__ == "__main__":
    sys.exit(main())
