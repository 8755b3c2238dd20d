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

Method. Correctness first, on the GPU: a preflight checks what the tuned kinds do not
cover (``PREFLIGHT``: scale_ub, fp16 / fp32 inputs, static and per-tensor scales,
column-major group scales, ``group_quant``; default and persistent configs), then every
candidate is checked against the float64 reference (``QuantFamily.check``, as the suites
check) before it is timed, on a ragged token count that runs every persistent program
through >= 2 tiles (rows sampled where that is large); a config that fails is reported
``INCORRECT`` and never timed, and the run exits 1. Timing is the suites' own:
``normbench.timing.time_cuda`` (CUDA graph over input sets spanning 2 x L2, at most
``MAX_SETS``, outputs allocated per call by the ``triton`` provider, as ``normbench run``
does) with ``--screen-reps`` replays per candidate, then the three fastest and the default
again with ``FINAL_REPS``; medians are reported. From 1024 tokens a device copy of the same
bytes is timed the same way (what a launch's fixed costs leave of copy bandwidth at that
size). Kernels are compiled first in parallel worker processes (filling Triton's cache).
``--budget-s`` stops timing new shapes (hidden 4096 and 8192 come first).

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
#: Input sets at most (the suites allow 2048): only cases of < 64 tokens need more to span
#: 2 x L2, and those are latency-bound; capturing 2048 launches per candidate costs seconds.
MAX_SETS = 512
FINAL_REPS = 30  # replays of the finalists (the suites take 50)
GATE_SAMPLE = 384  # rows checked at most (spread over the tensor, the last row always)
PERSISTENT_FROM = 1024  # persistent grids only where there are more tiles than programs
MAX_PER_THREAD = 64  # elements per thread; beyond, the fp32 tile and weight spill registers
SENTINEL = 2**31 - 1


def _quant():
    import normbench.kernels.quant as q

    return q


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def table_key(kind: str, hidden: int) -> tuple[str, bool, int]:
    """The TUNED key of a tuned kind and hidden size: (kernel kind, residual, bucket)."""
    return kind.split("+")[0], kind.endswith("+res"), _pow2(hidden)


def candidates(kind: str, hidden: int, pdl: bool, quick: bool) -> list[tuple[object, int]]:
    """(LaunchConfig, smallest num_tokens it is timed at) of one kind and hidden size."""
    q = _quant()
    b = _pow2(hidden)
    warps = {1024: (1, 2, 4), 2048: (2, 4, 8)}.get(b, (2, 4, 8, 16) if b <= 4096 else (4, 8, 16, 32))
    rows = (1,) if quick else ((1, 2, 4) if b <= 1024 else (1, 2))
    out: list[tuple[object, int]] = []

    def add(cfg, from_tokens: int = 1) -> None:
        per_thread = cfg.rows_per_program * b / (32 * cfg.num_warps)
        if per_thread > MAX_PER_THREAD or per_thread < 4 or cfg.rows_per_program * b > q.MAX_BLOCK:
            return
        if cfg not in [c for c, _ in out]:
            # multi-row tiles only from 128 tokens (below, fewer programs than SMs anyway)
            out.append((cfg, from_tokens if cfg.rows_per_program == 1 else max(from_tokens, 128)))

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
    for cfg in dict.fromkeys([base, small]):
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


#: GPU correctness of what the tuning kinds do not cover (scale_ub, fp16 / fp32 inputs,
#: static and per-tensor scales, column-major group scales, ``group_quant``), with the
#: default config and a persistent pipelined one: (op, tokens, hidden, dtype, axes).
PREFLIGHT = [
    ("rms_norm_quant", 33, 5120, "bfloat16", dict(quant_dtype="fp8", scale_ub=True)),
    ("rms_norm_quant", 33, 5120, "bfloat16", dict(quant_dtype="int8", scale_ub=True, residual=True)),
    ("rms_norm_quant", 300, 1536, "float16", dict(quant_dtype="fp8", residual=True)),
    ("rms_norm_quant", 33, 4096, "float32", dict(quant_dtype="int8", residual=True)),
    ("rms_norm_group_quant", 300, 5120, "bfloat16",
     dict(quant_dtype="int8", group_size=64, scale_layout="col_major", residual=True)),
    ("rms_norm_group_quant", 33, 1536, "float16", dict(quant_dtype="fp8", group_size=128, scale_layout="row_major")),
    ("scaled_quant", 33, 5120, "bfloat16", dict(quant_dtype="fp8", static_scale=True)),
    ("scaled_quant", 33, 1536, "float16", dict(quant_dtype="int8", static_scale=True)),
    ("scaled_quant", 300, 5120, "bfloat16", dict(quant_dtype="fp8", scale_granularity="per_tensor")),
    ("scaled_quant", 33, 8192, "float32", dict(quant_dtype="int8", scale_granularity="per_token")),
    ("group_quant", 33, 1536, "bfloat16", dict(quant_dtype="fp8", group_size=64, scale_layout="col_major")),
]


def preflight_params(op: str, tokens: int, hidden: int, dtype: str, axes: dict) -> dict:
    from normbench.ops import OPS

    base = {"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype}
    if op in OPS:
        return OPS[op].complete({**base, **axes})
    return {**base, "eps": 1e-6, "quant_dtype": "fp8", "group_size": 128, "scale_layout": "row_major", **axes}


def preflight_configs(pdl: bool) -> list:
    q = _quant()
    return [None, q.LaunchConfig(4, 2, programs_per_sm=1, stages=2, pdl=pdl)]


def preflight(device, pdl: bool) -> list[str]:
    """Check every PREFLIGHT case on the GPU; the failures, as lines."""
    import torch

    from normbench.kernels.base import Tolerance

    q = _quant()
    failures = []
    for op, t, h, dt, axes in PREFLIGHT:
        p = preflight_params(op, t, h, dt, axes)
        inputs = q.FAMILY.make_inputs(op, p, device, 5)
        ref = q.FAMILY.reference(op, p, inputs)
        for cfg in preflight_configs(pdl):
            name = f"{op} T={t} H={h} {dt} {axes} {cfg.short() if cfg else 'default'}"
            try:
                pc = dict(p, launch_config=cfg) if cfg else p
                out = q.IMPLS["triton"][op](pc)({k: v.clone() for k, v in inputs.items()})
                torch.cuda.synchronize()
                res = q.FAMILY.check(op, p, inputs, out, ref, Tolerance(1e-2, 2e-2, 1e-2, 0.02))
                limit = 1e-2 if op in ("scaled_quant", "group_quant") else 2e-3
                if not res.ok:
                    failures.append(f"{name}: {res.message}")
                elif res.metrics.get("mismatch_rate", 0) > limit:
                    failures.append(f"{name}: mismatch_rate {res.metrics['mismatch_rate']:.4f} > {limit}")
                elif len(out) == 3 and not torch.equal(out[2], ref[2]):
                    failures.append(f"{name}: residual_out differs from the once-rounded sum")
            except Exception as e:  # noqa: BLE001
                failures.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
    return failures


def _compile_job(job):
    """Worker: run one (op, params, config) once so that Triton caches its kernel."""
    op, p, cfg_dict = job
    try:
        import torch

        q = _quant()
        cfg = q.LaunchConfig(**cfg_dict) if cfg_dict else None
        t = p["num_tokens"] if not (cfg and cfg.programs_per_sm) else 8
        p = dict(p, num_tokens=t)
        fn = q.IMPLS["triton"][op](dict(p, launch_config=cfg) if cfg else p)
        fn(q.FAMILY.make_inputs(op, p, torch.device("cuda"), 1))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # reported; the main process compiles (or reports) it again
        return f"{op} {p.get('quant_dtype')} H={p.get('hidden_size')} {cfg_dict}: {type(e).__name__}: {str(e)[:300]}"


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
    if device.type == "cuda":
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
        n_sets = min(MAX_SETS, input_sets_needed(self.nbytes, 2 * l2))
        self.sets = [{k: v.clone() for k, v in inputs.items()} for _ in range(n_sets)]

    def time(self, cfg, reps: int, warmup: int) -> float:
        from normbench.timing import time_cuda

        _, _, fn = provider_fn(self.kind, self.quant, self.tokens, self.hidden, cfg)
        res = time_cuda([(lambda s=s: fn(s)) for s in self.sets], reps, warmup)
        return statistics.median(res.samples_us)


def copy_same_bytes_us(nbytes: int, l2: int, device) -> float:
    """Median us of ``dst.copy_(src)`` reading and writing nbytes / 2 each, under
    ``time_cuda`` with input sets spanning 2 x L2 (the kernels' method)."""
    import torch

    from normbench.timing import input_sets_needed, time_cuda

    half = max(1, nbytes // 2)
    n = min(MAX_SETS, input_sets_needed(nbytes, 2 * l2))
    src = [torch.empty(half, dtype=torch.uint8, device=device) for _ in range(n)]
    dst = [torch.empty_like(a) for a in src]
    res = time_cuda([(lambda a=a, b=b: b.copy_(a)) for a, b in zip(src, dst)], FINAL_REPS, 5)
    del src, dst
    return statistics.median(res.samples_us)


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy bandwidth, measured as normbench runs measure it (normbench.env)."""
    from normbench.env import measure_copy_bandwidth

    return measure_copy_bandwidth("cuda")["peak_bandwidth_gbps"]


def _cfg(d: dict):
    return _quant().LaunchConfig(**d)


def tuned_table(results: list[dict], source: str = "") -> str:
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
    lines = [f"#: Source: {source}." if source else "#: Source: scripts/tune_quant.py.",
             "TUNED: dict[tuple[str, bool, int], tuple[tuple[int, LaunchConfig], ...]] = {"]
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
        data = json.loads(Path(args.table_from).read_text())
        print(tuned_table(data["results"], table_source(data, args.table_from)))
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
    keep = set(defaults.values())

    def for_quant(cfgs, quant):  # the ablations are timed for fp8 only (int8: the same code)
        return [c for c in cfgs if quant == quants[0] or c in keep or (c.hw_cvt is not False and c.tuple_reduce is not False)]

    jobs = [(*case_params(k, quant, GATE_TOKENS, h), asdict(c))
            for (k, h), cfgs in gated.items() for quant in quants for c in for_quant(cfgs, quant)]
    jobs += [(case[0], preflight_params(*case), asdict(c) if c else None)
             for case in PREFLIGHT for c in preflight_configs(pdl_ok)]
    errors = precompile(jobs, args.workers)
    for e in errors:
        print(f"# precompile: {e}", flush=True)
    print(f"# {len(jobs)} kernel variants compiled in {time.perf_counter() - t_start:.0f} s", flush=True)
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20
    copy_gbps = copy_bandwidth_gbps()
    print(f"# {props.name}, {sms} SMs, PDL {pdl_ok}, torch {torch.__version__}, triton {triton.__version__}, "
          f"L2 {l2 / 2**20:.0f} MiB, copy {copy_gbps:.0f} GB/s", flush=True)
    pre_fail = preflight(device, pdl_ok)
    n_pre = len(PREFLIGHT) * len(preflight_configs(pdl_ok))
    print(f"# preflight (GPU correctness beyond the tuned kinds): {n_pre - len(pre_fail)}/{n_pre} passed", flush=True)
    for f in pre_fail:
        print(f"# PREFLIGHT FAILED {f}", flush=True)
    print("# kind                     q    hidden tokens | best config              us    GB/s  %copy | default"
          "              us  x best | formula's config: us; its ablations: us (x its time)", flush=True)

    results: list[dict] = []
    out_of_time = False

    def save(complete: bool) -> dict:
        """Write the JSON (after every shape too: a run cut short keeps what it measured,
        and ``--table-from`` reads it)."""
        summary = {
            "device": props.name, "sms": sms, "pdl": pdl_ok, "torch": torch.__version__, "triton": triton.__version__,
            "copy_gbps": copy_gbps, "l2_bytes": l2, "elapsed_s": time.perf_counter() - t_start,
            "complete": complete, "kernel": "v4", "preflight_failures": pre_fail, "results": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
        return summary

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
                        times[cfg] = b.time(cfg, FINAL_REPS, 10)
                    del b
                    torch.cuda.empty_cache()
                    best = min(times, key=times.get)
                    if quant == quants[0]:
                        fp8_order = sorted(times, key=times.get)
                    nbytes = _bytes(kind, quant, t, h)
                    # A device copy moving the same bytes, timed the same way: what the fixed
                    # costs of one launch (ramp-up, tail, launch gap) leave of copy bandwidth.
                    cu = copy_same_bytes_us(nbytes, l2, device) if quant == quants[0] and t >= PERSISTENT_FROM else None
                    row = {
                        "kind": kind, "quant": quant, "hidden": h, "tokens": t, "bytes": nbytes,
                        "best": asdict(best), "best_us": times[best], "best_gbps": nbytes / times[best] / 1e3,
                        "best_pct_copy": 100 * nbytes / times[best] / 1e3 / copy_gbps,
                        "default": asdict(default), "default_us": times.get(default), "copy_same_bytes_us": cu,
                        "all_us": {json.dumps(asdict(c)): v for c, v in times.items()},
                    }
                    results.append(row)
                    save(False)
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
                        + (f" | {base.short()} {ref_t:.2f}; " + ", ".join(abl) if ref_t else "")
                        + (f" | same-bytes copy {cu:.2f} us = {100 * nbytes / cu / 1e3 / copy_gbps:.1f}% of copy,"
                           f" best at {100 * cu / times[best]:.1f}% of it" if cu else ""),
                        flush=True,
                    )
            if out_of_time:
                break
        if out_of_time:
            break
    if out_of_time:
        print(f"# budget of {args.budget_s:.0f} s reached: remaining shapes not timed", flush=True)

    summary = save(not out_of_time)
    print(f"# wrote {args.out} in {summary['elapsed_s']:.0f} s; paste into kernels/quant.py:", flush=True)
    print(tuned_table(results, table_source(summary, args.out)), flush=True)
    if pre_fail or any("error" in r for r in results):
        print("# WARNING: some configs or preflight cases failed on the GPU (lines marked INCORRECT / PREFLIGHT "
              "FAILED above); the table holds only configs that passed", flush=True)
        return 1
    return 0


def table_source(summary: dict, path: str) -> str:
    """The provenance line of a TUNED block."""
    return (f"scripts/tune_quant.py, kernel {summary.get('kernel', 'v3')}, {summary.get('device', '?')}, "
            f"triton {summary.get('triton', '?')} ({Path(path).name}; fp8 and int8 scored together)")


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
