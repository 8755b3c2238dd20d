#!/usr/bin/env python
"""Tune the launch configs of normbench's quantization Triton kernels on one GPU.

For hidden_size {1024, 4096, 8192} x num_tokens {1, 16, 128, 1024, 4096, 16384}, bfloat16,
fp8 and int8, and the kernel kinds

* ``rms_norm_quant``        fused RMSNorm + dynamic per-token quant (no residual),
* ``rms_norm_quant+res``    the same with the residual add (in-place residual),
* ``rms_norm_group_quant``  fused RMSNorm + per-group quant, group 128, row-major scales,
* ``scaled_quant``          standalone dynamic per-token quant,

it times candidate ``LaunchConfig`` s (num_warps x rows per program, and for the per-token
norm the one- vs two-reduction variant) and prints, per shape, the best config with its
time (us), GB/s (``normbench.ops`` bytes model) and % of the measured copy bandwidth,
next to the choice of ``heuristic_config`` and its time. Everything goes to a JSON file too.

Method: every config is first checked against the float64 reference
(``QuantFamily.check``, 48 tokens); a config that fails is reported and not timed. Timing:
one CUDA graph replays the kernel over N input/output sets (N x bytes >= 2 x L2, capped
at 512 sets, so small shapes stay L2-resident), median of the replays / N. The Triton
kernels are compiled first in parallel worker processes (filling Triton's cache).
fp8 is swept over all candidates; int8 over the heuristic's config and fp8's best three.

Usage (H100, about 2 minutes; ``--budget-s`` stops timing new shapes when exceeded)::

    python scripts/tune_quant.py --out tune_quant.json
    python scripts/tune_quant.py --quick --kinds rms_norm_quant --hidden 8192   # a smoke run

Needs CUDA, torch and triton; run from a checkout (``normbench`` need not be installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = {
    # kind -> (op, extra params)
    "rms_norm_quant": ("rms_norm_quant", {"residual": False}),
    "rms_norm_quant+res": ("rms_norm_quant", {"residual": True}),
    "rms_norm_group_quant": ("rms_norm_group_quant", {"residual": False, "group_size": 128, "scale_layout": "row_major"}),
    "scaled_quant": ("scaled_quant", {"static_scale": False, "scale_granularity": "per_token"}),
}
HIDDEN = (1024, 4096, 8192)
TOKENS = (1, 16, 128, 1024, 4096, 16384)
GATE_TOKENS = 48
MAX_SETS = 512


def _quant():
    import normbench.kernels.quant as q

    return q


def candidates(hidden: int, kind: str, quick: bool):
    """LaunchConfigs to try for one hidden size (the heuristic's is always among them)."""
    q = _quant()
    if hidden <= 2048:
        warps, rows = (2, 4, 8), (1, 2, 4)
    elif hidden <= 4096:
        warps, rows = (4, 8, 16), (1, 2)
    else:
        warps, rows = (8, 16, 32), (1, 2)
    if quick:
        rows = (1,)
    cfgs = [q.LaunchConfig(w, r) for w in warps for r in rows]
    heur = q.heuristic_config(4096, hidden, 2)
    if heur not in cfgs:
        cfgs.insert(0, heur)
    if kind.startswith("rms_norm_quant"):  # the two-reduction variant of the heuristic's config
        cfgs.append(q.LaunchConfig(heur.num_warps, heur.rows_per_program, tuple_reduce=False))
    return cfgs


def case_params(kind: str, quant: str, tokens: int, hidden: int):
    from normbench.ops import OPS

    op, extra = KINDS[kind]
    return op, OPS[op].complete({"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "quant_dtype": quant, **extra})


class Buffers:
    """N rotating sets of inputs and outputs of one case, and the launch of set i."""

    def __init__(self, kind: str, quant: str, tokens: int, hidden: int, sets: int, device):
        import torch

        q = _quant()
        self.q, self.kind, self.quant = q, kind, quant
        op, p = case_params(kind, quant, tokens, hidden)
        self.op, self.params = op, p
        self.x = torch.randn(sets, tokens, hidden, device=device, dtype=torch.bfloat16)
        self.w = (1 + 0.1 * torch.randn(hidden, device=device)).to(torch.bfloat16)
        self.res = torch.randn_like(self.x) if p.get("residual") else None
        self.codes = torch.empty(sets, tokens, hidden, device=device, dtype=q.QUANT_TORCH_DTYPES[quant])
        groups = hidden // p["group_size"] if op == "rms_norm_group_quant" else 1
        # Each set's scales start 16-byte aligned, as a fresh allocation does (Triton
        # specializes on pointer alignment: a misaligned set would compile another variant).
        slab = -(-tokens * groups // 4) * 4
        flat = torch.empty(sets * slab, device=device, dtype=torch.float32)
        self.scales = [flat[i * slab: i * slab + tokens * groups].view(tokens, groups) for i in range(sets)]

    def launch(self, i: int, cfg) -> None:
        q, p = self.q, self.params
        kw = dict(config=cfg)
        if self.op != "scaled_quant":
            kw.update(weight=self.w, eps=p["eps"])
        if self.res is not None:
            kw["residual"] = self.res[i]
        if self.op == "rms_norm_group_quant":
            kw["group_size"] = p["group_size"]
        q._launch_rowquant(self.x[i], self.codes[i], self.scales[i], self.quant, **kw)


def _compile_job(job):
    """Worker: launch one (kind, quant, hidden, tokens, config) once so Triton caches it."""
    kind, quant, hidden, tokens, cfg_dict = job
    try:
        import torch

        q = _quant()
        b = Buffers(kind, quant, tokens, hidden, 1, torch.device("cuda"))
        b.launch(0, q.LaunchConfig(**cfg_dict))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # reported by the main process, which compiles serially instead
        return f"{kind} {quant} H={hidden} T={tokens} {cfg_dict}: {type(e).__name__}: {e}"


def precompile(jobs, workers: int) -> list[str]:
    import multiprocessing as mp

    if not jobs or workers <= 1:
        return []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        return [e for e in ex.map(_compile_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))) if e]


def gate(kind: str, quant: str, hidden: int, cfg, device) -> str | None:
    """None if the config's outputs pass the family check against the float64 reference."""
    from normbench.kernels.base import Tolerance

    q = _quant()
    op, p = case_params(kind, quant, GATE_TOKENS, hidden)
    inputs = q.FAMILY.make_inputs(op, p, device, 11)
    ref = q.FAMILY.reference(op, p, inputs)
    p = dict(p, launch_config=cfg)
    trial = {k: v.clone() for k, v in inputs.items()}
    out = q.IMPLS["triton"][op](p)(trial)
    res = q.FAMILY.check(op, p, inputs, out, ref, Tolerance(1e-2, 2e-2, 1e-2, 0.02))
    if not res.ok:
        return res.message
    # Ours matches the reference to fp32 rounding: tie mismatches only at (near-)exact ties,
    # which exact bf16 inputs of scaled_quant hit more often (x / (amax / 448) with 8-bit x).
    limit = 1e-2 if op == "scaled_quant" else 2e-3
    if res.metrics.get("mismatch_rate", 0) > limit:
        return f"mismatch_rate {res.metrics['mismatch_rate']:.4f} > {limit} (ours should match the reference to fp32 rounding)"
    return None


def time_case(b: Buffers, cfg, sets: int, min_ms: float = 15.0) -> float:
    """Median us per call over CUDA-graph replays of `sets` launches."""
    import torch

    for i in range(min(sets, 3)):
        b.launch(i, cfg)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(g, stream=stream):
            for i in range(sets):
                b.launch(i, cfg)
    torch.cuda.synchronize()
    g.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    g.replay()
    torch.cuda.synchronize()
    est_ms = (time.perf_counter() - t0) * 1e3
    reps = max(5, min(50, int(min_ms / max(est_ms, 1e-3))))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        g.replay()
        e.record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) * 1e3 / sets for s, e in zip(starts, ends)]
    del g
    return statistics.median(samples)


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tune_quant.json", help="JSON results file")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--quant", default="fp8,int8")
    ap.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--quick", action="store_true", help="one row per program only")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1), help="parallel compile processes")
    ap.add_argument("--budget-s", type=float, default=165.0, help="stop timing new shapes after this many seconds")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("tune_quant.py needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    from normbench.ops import OPS

    t_start = time.perf_counter()
    q = _quant()
    device = torch.device("cuda")
    kinds = [k for k in args.kinds.split(",") if k]
    quants = [s for s in args.quant.split(",") if s]
    hiddens = [int(h) for h in args.hidden.split(",") if h]
    tokens_list = [int(t) for t in args.tokens.split(",") if t]
    # fp8 first: int8 then tries fp8's best three plus the heuristic's.
    plan = {(k, h): candidates(h, k, args.quick) for k in kinds for h in hiddens}
    jobs = []
    for (k, h), cfgs in plan.items():
        for quant in quants:
            for cfg in cfgs:
                # n_rows is not specialized: one variant serves every token count.
                jobs.append((k, quant, h, GATE_TOKENS, asdict(cfg)))
    errors = precompile(jobs, args.workers)
    for e in errors:
        print(f"# precompile: {e}", flush=True)
    print(f"# {len(jobs)} kernel variants compiled in {time.perf_counter() - t_start:.0f} s", flush=True)
    # CUDA is touched only now: workers compiled first (a GPU in exclusive-process mode
    # would refuse them a context while this process holds one; then the gate compiles).
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20
    copy_gbps = copy_bandwidth_gbps()
    print(f"# {props.name}, torch {torch.__version__}, triton {triton.__version__}, L2 {l2 / 2**20:.0f} MiB, "
          f"copy {copy_gbps:.0f} GB/s", flush=True)

    results = []
    out_of_time = False
    for kind in kinds:
        for h in hiddens:
            best_fp8: list = []
            for quant in quants:
                cfgs = plan[(kind, h)]
                if quant != quants[0] and best_fp8:
                    heur = q.heuristic_config(4096, h, 2)
                    cfgs = [c for c in cfgs if c in best_fp8[:3] or c == heur]
                valid = []
                for cfg in cfgs:
                    err = gate(kind, quant, h, cfg, device)
                    if err:
                        print(f"# INCORRECT {kind} {quant} H={h} {cfg}: {err}", flush=True)
                        results.append({"kind": kind, "quant": quant, "hidden": h, "config": asdict(cfg), "error": err})
                    else:
                        valid.append(cfg)
                score: dict = {}  # sum over token counts of time / best time (fp8 ranking)
                for t in tokens_list:
                    if time.perf_counter() - t_start > args.budget_s:
                        out_of_time = True
                        break
                    op, p = case_params(kind, quant, t, h)
                    nbytes = OPS[op].bytes_moved(p)
                    sets = max(1, min(MAX_SETS, math.ceil(2 * l2 / nbytes)))
                    b = Buffers(kind, quant, t, h, sets, device)
                    times = {}
                    for cfg in valid:
                        if t == 1 and cfg.rows_per_program > 1:
                            continue
                        times[cfg] = time_case(b, cfg, sets)
                    del b
                    torch.cuda.empty_cache()
                    if not times:
                        continue
                    best = min(times, key=times.get)
                    heur = q.heuristic_config(t, h, 2)
                    row = {
                        "kind": kind, "quant": quant, "hidden": h, "tokens": t, "bytes": nbytes, "sets": sets,
                        "best": asdict(best), "best_us": times[best], "best_gbps": nbytes / times[best] / 1e3,
                        "best_pct_copy": 100 * nbytes / times[best] / 1e3 / copy_gbps,
                        "heuristic": asdict(heur), "heuristic_us": times.get(heur),
                        "all_us": {json.dumps(asdict(c)): v for c, v in times.items()},
                    }
                    results.append(row)
                    hu = times.get(heur)
                    print(
                        f"{kind:22s} {quant:4s} H={h:5d} T={t:5d}  best nw={best.num_warps:2d} rows={best.rows_per_program}"
                        f"{'' if best.tuple_reduce is None else ' tuple_reduce=' + str(best.tuple_reduce)}"
                        f"  {times[best]:8.2f} us {row['best_gbps']:7.0f} GB/s {row['best_pct_copy']:5.1f}%"
                        f"  | heuristic nw={heur.num_warps} rows={heur.rows_per_program}: "
                        + (f"{hu:8.2f} us ({hu / times[best]:.3f}x)" if hu else "n/a"),
                        flush=True,
                    )
                    if t > 1:
                        for c, v in times.items():
                            score[c] = score.get(c, 0.0) + v / times[best]
                if quant == quants[0] and score:
                    best_fp8 = sorted(score, key=score.get)
                if out_of_time:
                    break
            if out_of_time:
                break
        if out_of_time:
            break
    if out_of_time:
        print(f"# budget of {args.budget_s:.0f} s reached: remaining shapes not timed", flush=True)

    summary = {
        "device": props.name, "torch": torch.__version__, "triton": triton.__version__,
        "copy_gbps": copy_gbps, "l2_bytes": l2, "elapsed_s": time.perf_counter() - t_start,
        "complete": not out_of_time, "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"# wrote {args.out} in {summary['elapsed_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
