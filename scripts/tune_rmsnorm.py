#!/usr/bin/env python3
"""Tune the launch configs of normbench's Triton RMSNorm on a GPU, measured exactly as the suites measure.

Usage (repository root, CUDA GPU; the package need not be installed)::

    python3 scripts/tune_rmsnorm.py [--out FILE] [--peers flashinfer,liger,quack,torch_compile]
                                    [--suites suites/rmsnorm.yaml,suites/fused_add_rmsnorm.yaml]
                                    [--shapes 8192x1024,r4096x16384,...] [--hidden ...] [--tokens ...]
                                    [--residual 0|1] [--quick] [--budget SECONDS] [--jobs N]
    python3 scripts/tune_rmsnorm.py --table-from FILE   # the TUNED table of a (partial) JSON, no GPU
    python3 scripts/tune_rmsnorm.py --list              # shapes and round-1 candidates, no GPU

Shapes: every distinct (residual, hidden_size, num_tokens) bf16 point of the suites' ``triton``
cases (84 for the two default suites), narrowed by ``--shapes`` (``[r]HIDDENxTOKENS``, ``r`` =
with residual), ``--hidden``, ``--tokens``, ``--residual``.

Timing: ``normbench.timing.time_cuda`` over ``input_sets_needed(bytes, 2 x L2)`` clones of the
inputs, each config run through a factory like the ``triton`` provider's (outputs reused per
factory): the method and input rotation of ``normbench run``, so a number here is a number
in the suite. Search, per shape:

1. round 1a: kernel structures (block, warps, rows per tile, re-read or register-resident
   row, chunked for long rows), one program per tile, PDL where supported, eviction hints;
2. round 1b: around the three best: no eviction hints, no PDL, persistent grids of 1-8
   programs per SM (256-16384 tokens), software-pipelined persistent loops
   (``tl.range(num_stages=2|3)``), plus Liger's exact launch and the current heuristic.
   Rounds 1a/1b take ``--screen-reps`` (10) replays per config;
3. round 2: the ``--finalists`` (4; 2 below 256 tokens) fastest configs that pass the
   suite's correctness check (float64 reference, bf16 tolerance, on a sample of rows),
   the heuristic, Liger's launch and the ``--peers``, all with the suite stage's own
   warmup and repetitions (10 / 50). The fastest config is the table's.

Every candidate of every shape is compiled first, in ``--jobs`` worker processes (Triton's
on-disk cache then serves the main process), so compilation costs seconds, not minutes. The JSON (default
``tune_rmsnorm.json``) is rewritten after every shape; ``--table-from`` prints the table of a
run cut short. The run ends with a ``TUNED = {...}`` literal for kernels/rmsnorm.py. Past
``--budget`` seconds (120) the remaining shapes get the ``--quick`` search.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import torch

# This checkout's kernels, installed or not (normbench/__init__.py maps kernels/ to
# normbench.kernels in a source checkout).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import normbench.kernels.rmsnorm as rn  # noqa: E402

Config = rn.Config

SUITES = ("suites/rmsnorm.yaml", "suites/fused_add_rmsnorm.yaml")
SENTINEL = 2**31 - 1
LONG_ROW_BYTES = 64 * 1024  # whole-row candidates up to this many bytes per row (32768 bf16)


# --------------------------------------------------------------------------- shapes


@dataclasses.dataclass(frozen=True)
class Shape:
    residual: bool
    hidden: int
    tokens: int

    @property
    def label(self) -> str:
        return f"{'r' if self.residual else ''}{self.hidden}x{self.tokens}"


def suite_shapes(paths: list[str]) -> tuple[dict[Shape, tuple[str, dict, dict]], dict]:
    """Shape -> (op, params, bf16 tolerance) of the first ``triton`` bf16 case at it, and the
    (first norm stage's) timing options."""
    from normbench.expand import Capabilities, expand_kernel_stage
    from normbench.suite import KernelStage, load_suite

    shapes: dict[Shape, tuple[str, dict]] = {}
    timing = None
    for path in paths:
        suite = load_suite(ROOT / path if not Path(path).is_absolute() else path).suite
        for i, stage in enumerate(suite.stages):
            if not isinstance(stage, KernelStage) or stage.op not in rn.NORM_OPS:
                continue
            timing = timing or {"warmup": stage.timing.warmup, "repetitions": stage.timing.repetitions,
                                "mode": stage.timing.mode, "rotate_bytes": stage.timing.rotate_bytes}
            tol = stage.tolerance_for("bfloat16")
            for case in expand_kernel_stage(stage, i, Capabilities()):
                p = case.param_dict
                if case.provider != "triton" or p["dtype"] != "bfloat16":
                    continue
                key = Shape(rn.has_residual(case.op, p), int(p["hidden_size"]), int(p["num_tokens"]))
                shapes.setdefault(key, (case.op, p, tol))
    return shapes, timing


def parse_shapes(spec: str) -> set[Shape]:
    out = set()
    for item in filter(None, spec.split(",")):
        res = item.startswith("r")
        h, t = item.lstrip("r").split("x")
        out.add(Shape(res, int(h), int(t)))
    return out


# --------------------------------------------------------------------------- candidates


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def liger_config(hidden: int) -> Config | None:
    """Liger's launch (``calculate_settings``): one row per program, BLOCK = next_pow2, warps by
    BLOCK (4; 8 from 2048; 16 from 8192; 32 from 32768), no PDL, no eviction hints."""
    block = _pow2(hidden)
    if block * 2 > LONG_ROW_BYTES:
        return None
    nw = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    return Config(block, nw, 1, 0, False, hints=False)


def structures(s: Shape, pdl: bool, quick: bool) -> list[Config]:
    """Round 1a: kernel structures at one program per tile, PDL where supported, hints on."""
    block = _pow2(s.hidden)
    out: list[Config] = []
    if block * 2 <= LONG_ROW_BYTES:
        long_row = block * 2 > 16 * 1024
        rows_opts = (1, 2) if s.tokens >= 1024 and not long_row else (1,)
        if s.tokens < 256:
            epls = (8, 16, 32)  # latency-bound: a short reduction matters more than rows per SM
        elif quick:
            epls = (16, 32, 64)
        else:
            epls = (8, 16, 32, 64)
        reloads = (False, True) if s.tokens >= 256 else (False,)
        for rows in rows_opts:
            for epl in epls:
                nw = rows * block // (32 * epl)  # epl = values of the tile per thread
                # sm_90 ptxas: 2-row tiles at 8 values per thread lose 16-byte vectors and spill.
                if not 1 <= nw <= 32 or (rows > 1 and epl == 8):
                    continue
                for reload in reloads:
                    out.append(Config(block, nw, rows, 0, pdl, reload=reload))
    if block * 2 > rn.MAX_RESIDENT_BYTES:  # long rows: the chunked two-pass kernel too
        for chunk in (4096, 8192, 16384):
            if chunk >= s.hidden:
                continue
            for epl in (8, 16, 32) if not quick else (16, 32):
                nw = chunk // (32 * epl)
                if 1 <= nw <= 32:
                    out.append(Config(chunk, nw, 1, 0, pdl))
    return out


def variants(parent: Config, s: Shape, pdl: bool, sms: int, quick: bool) -> list[Config]:
    """Round 1b around a round-1a leader: eviction hints, PDL, persistent and pipelined grids."""
    out = [dataclasses.replace(parent, hints=False)]
    if pdl:
        out.append(dataclasses.replace(parent, pdl=False))
    chunked = parent.block_n < s.hidden
    tiles = math.ceil(s.tokens / parent.rows)
    # A register cap that lets every tile be resident at once (one wave), where that takes
    # a plausible cap: e.g. 1024 rows of 8192 at 4 warps: 8 programs per SM at <= 64
    # registers (sm_90: 65 with PDL, 64 + 8 bytes of spills capped). Only a re-reading
    # kernel can live with it: a register-resident row needs ~2 registers per value.
    threads = 32 * parent.num_warps
    per_sm = min(math.ceil(tiles / sms), 2048 // threads, 32)
    cap = 65536 // (per_sm * threads) // 8 * 8
    if parent.reload and s.tokens >= 256 and 40 <= cap <= 128:
        out.append(dataclasses.replace(parent, maxnreg=cap))
    # A persistent whole-row kernel keeps the weight in registers across its loop: at 64 KiB
    # rows (32768) that spills unless the row is re-read.
    spills = not chunked and not parent.reload and parent.block_n * 2 > rn.MAX_RESIDENT_BYTES
    if 256 <= s.tokens <= 16384 and not spills:
        for pps in (1, 2, 4, 8) if not quick else (2, 4):
            if tiles > pps * sms:  # otherwise the same grid as one program per tile
                out.append(dataclasses.replace(parent, programs_per_sm=pps))
        if not chunked and not (parent.reload and s.residual):
            for pps, stages in ((1, 3), (2, 2)) if not quick else ((1, 3),):
                if tiles > pps * sms:
                    out.append(dataclasses.replace(parent, programs_per_sm=pps, stages=stages))
    return out


def all_candidates(s: Shape, pdl: bool, sms: int) -> list[Config]:
    """Every config the search may time at a shape (rounds 1a and 1b with any leaders)."""
    base = structures(s, pdl, False)
    extra = [rn.default_config(s.tokens, s.hidden, 2, s.residual, pdl), liger_config(s.hidden)]
    return base + [v for c in base for v in variants(c, s, pdl, sms, False)] + [c for c in extra if c]


# --------------------------------------------------------------------------- parallel compilation

_WORKER_DEVICE = None


def _compile_job(job: tuple[int, bool, dict]) -> tuple[tuple, str | None]:
    """Worker: compile one (hidden, residual, config) into Triton's on-disk cache."""
    global _WORKER_DEVICE
    hidden, residual, cfg = job
    try:
        if _WORKER_DEVICE is None:
            _WORKER_DEVICE = torch.device("cuda", torch.cuda.current_device())
        rn.compile_config(hidden, torch.bfloat16, residual, Config(**cfg), _WORKER_DEVICE)
        return job_key(job), None
    except Exception as e:  # a config that does not compile is reported, not fatal
        return job_key(job), f"{type(e).__name__}: {str(e)[:300]}"


def job_key(job) -> tuple:
    hidden, residual, cfg = job
    return (hidden % 16 == 0, residual, tuple(sorted(cfg.items())))


class Compiler:
    """Compiles configs in worker processes (``jobs`` > 0), each distinct kernel once.

    Kernels that differ only in hidden_size share a binary when both are multiples of 16
    (Triton specializes on divisibility), as do grids (programs_per_sm).
    """

    def __init__(self, jobs: int):
        self.done: dict[tuple, str | None] = {}
        self.pool = None
        if jobs > 0:
            ctx = multiprocessing.get_context("spawn")
            self.pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)

    def ensure(self, items: list[tuple[Shape, Config]]) -> None:
        if self.pool is None:
            return
        jobs = {}
        for s, cfg in items:
            c = dataclasses.replace(cfg, programs_per_sm=min(cfg.programs_per_sm, 1))
            job = (s.hidden, s.residual, dataclasses.asdict(c))
            k = job_key(job)
            if k not in self.done and k not in jobs:
                jobs[k] = job
        if not jobs:
            return
        try:
            for k, err in self.pool.map(_compile_job, list(jobs.values())):
                self.done[k] = err
        except Exception as e:  # a broken pool: the main process compiles on first launch
            print(f"# parallel compilation failed ({type(e).__name__}: {e}); compiling serially", flush=True)
            self.pool.shutdown(cancel_futures=True)
            self.pool = None
            return
        errors = [e for e in self.done.values() if e]
        if errors:
            print(f"# {len(errors)} of {len(self.done)} kernels failed to compile in a worker (retried on use); "
                  f"first: {errors[0]}", flush=True)
        if errors and len(errors) == len(self.done):  # the workers cannot compile at all
            self.pool.shutdown(cancel_futures=True)
            self.pool = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


# --------------------------------------------------------------------------- measuring


class Bench:
    """One shape's inputs, rotated input sets and (sampled) reference, as the kernel runner builds them."""

    def __init__(self, s: Shape, op: str, params: dict, tol: dict, timing: dict, device: torch.device):
        from normbench.kernels.base import Tolerance
        from normbench.ops import OPS
        from normbench.timing import input_sets_needed, l2_bytes

        self.s, self.op, self.params, self.timing, self.device = s, op, params, timing, device
        self.tol = Tolerance(**tol)
        self.eps = float(params["eps"])
        inputs = rn.FAMILY.make_inputs(op, params, device, seed=1234)
        self.nbytes = OPS[op].bytes_moved(params)
        rotate = timing["rotate_bytes"] or 2 * l2_bytes(device)
        self.n_sets = input_sets_needed(self.nbytes, rotate)
        # Peers that work in place (FlashInfer's fused add) overwrite their sets; the
        # pristine inputs are only ever cloned.
        self.pristine = inputs
        self.sets = [{k: v.clone() for k, v in inputs.items()} for _ in range(self.n_sets)]
        # Correctness on a sample of at most ~4096 rows spread over the tensor (every tile
        # position of a persistent loop is represented), against the float64 reference.
        self.step = max(1, s.tokens // 4096)
        sample = {k: (v[:: self.step].clone() if v.dim() == 2 else v.clone()) for k, v in inputs.items()}
        self.ref = rn.FAMILY.reference(op, {**params, "num_tokens": sample["x"].shape[0]}, sample)
        self.sample_params = {**params, "num_tokens": sample["x"].shape[0]}
        self.sample_inputs = sample

    def triton_fn(self, cfg: Config):
        """The ``triton`` provider's callable with a fixed config (outputs reused per factory)."""
        bufs, eps = rn._Buffers(), self.eps

        if self.s.residual:
            def fn(inputs):
                x = inputs["x"]
                return rn.rms_norm(x, inputs["weight"], eps, inputs["residual"], out=bufs.like("out", x),
                                   residual_out=bufs.like("residual_out", x), config=cfg)
        else:
            def fn(inputs):
                x = inputs["x"]
                return rn.rms_norm(x, inputs["weight"], eps, out=bufs.like("out", x), config=cfg)
        return fn

    def check(self, fn) -> str | None:
        """None if ``fn``'s outputs pass the suite's check on the sampled rows, else why not."""
        out = fn({k: v.clone() for k, v in self.pristine.items()})
        torch.cuda.synchronize()
        out = tuple(o[:: self.step] for o in out)
        res = rn.FAMILY.check(self.op, self.sample_params, self.sample_inputs, out, self.ref, self.tol)
        return None if res.ok else res.message

    def time(self, fn, final: bool, screen_reps: int) -> float:
        """Median us per call under ``normbench.timing.time_cuda`` (the suite's settings when ``final``)."""
        from normbench.timing import time_cuda

        fns = [(lambda s=s: fn(s)) for s in self.sets]
        if final:
            res = time_cuda(fns, self.timing["repetitions"], self.timing["warmup"], self.timing["mode"])
        else:
            res = time_cuda(fns, screen_reps, 2, self.timing["mode"])
        return statistics.median(res.samples_us)

    def gbps(self, us: float) -> float:
        return self.nbytes / (us * 1e3)


def peer_fn(name: str, b: Bench):
    """A peer provider's callable for the shape, built as the kernel runner builds it."""
    from normbench.kernels.providers._family import Unsupported
    from normbench.registry import PROVIDERS, load

    provider = load(PROVIDERS[name].target)
    reason = provider.unavailable() or provider.unsupported(b.op, b.params, b.device)
    if reason:
        raise Unsupported(reason)
    return provider.make(b.op, b.params)


# --------------------------------------------------------------------------- search


def tune_shape(b: Bench, s: Shape, ctx: dict, quick: bool) -> dict:
    """Rounds 1a, 1b and 2 for one shape; returns its JSON record."""
    pdl, sms, comp, args = ctx["pdl"], ctx["sms"], ctx["compiler"], ctx["args"]
    screened: dict[Config, float] = {}
    failed: dict[str, str] = {}

    def screen(cfgs: list[Config]) -> None:
        comp.ensure([(s, c) for c in cfgs])
        for c in cfgs:
            if c in screened or c.short() in failed:
                continue
            # A worker's compile error is not trusted (its process may lack the GPU): the
            # config is tried here regardless and fails here if it really does not compile.
            try:
                screened[c] = b.time(b.triton_fn(c), False, args.screen_reps)
            except Exception as e:  # a config that does not compile or launch here
                failed[c.short()] = f"{type(e).__name__}: {str(e)[:300]}"
                screened[c] = math.inf

    heur = rn.default_config(s.tokens, s.hidden, 2, s.residual, pdl)
    liger = liger_config(s.hidden)
    screen(structures(s, pdl, quick))
    n_leaders = 1 if s.tokens < 256 else 2 if quick else 3
    leaders = [c for c in sorted(screened, key=screened.get) if math.isfinite(screened[c])][:n_leaders]
    more = [v for c in leaders for v in variants(c, s, pdl, sms, quick)]
    screen(more + [heur] + ([liger] if liger else []))

    # Round 2: the fastest correct configs, the heuristic and Liger's launch, at the suite's settings.
    k = args.finalists if s.tokens >= 256 else min(2, args.finalists)
    finalists: list[Config] = []
    incorrect: dict[str, str] = {}
    for c in sorted(screened, key=screened.get):
        if len(finalists) >= k or not math.isfinite(screened[c]):
            break
        err = b.check(b.triton_fn(c))
        if err:
            incorrect[c.short()] = err
        else:
            finalists.append(c)
    final: dict[Config, float] = {}
    for c in dict.fromkeys(finalists + [heur] + ([liger] if liger and s.tokens >= 256 else [])):
        if c.short() in incorrect or c.short() in failed:
            continue
        if c not in finalists:
            err = b.check(b.triton_fn(c))
            if err:
                incorrect[c.short()] = err
                continue
        final[c] = b.time(b.triton_fn(c), True, args.screen_reps)
    if not final:
        raise RuntimeError(f"{s.label}: no config compiled, ran and passed the check")
    best = min(final, key=final.get)

    peers: dict[str, float] = {}
    if s.tokens >= args.peers_min_tokens:
        for name in ctx["peers"]:
            try:
                fn = peer_fn(name, b)
                err = b.check(fn)
                peers[name] = math.nan if err else b.time(fn, True, args.screen_reps)
                if err:
                    print(f"  peer {name} {s.label}: incorrect: {err}", file=sys.stderr)
            except Exception as e:
                print(f"  peer {name} {s.label}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                peers[name] = math.nan

    for name, err in list(failed.items()) + list(incorrect.items()):
        print(f"  {s.label} {name}: {err}", file=sys.stderr)
    return {
        "op": b.op, "residual": s.residual, "hidden_size": s.hidden, "num_tokens": s.tokens, "dtype": "bfloat16",
        "bytes": b.nbytes, "input_sets": b.n_sets, "quick": quick,
        "best": {"config": dataclasses.asdict(best), "us": final[best], "gbps": b.gbps(final[best])},
        "heuristic": {"config": dataclasses.asdict(heur), "us": final.get(heur, math.nan)},
        "liger_like": {"config": dataclasses.asdict(liger), "us": final.get(liger, math.nan)} if liger else None,
        "final": [{"config": dataclasses.asdict(c), "us": t} for c, t in sorted(final.items(), key=lambda kv: kv[1])],
        "screen": [{"config": dataclasses.asdict(c), "us": t}
                   for c, t in sorted(screened.items(), key=lambda kv: kv[1])],
        "failed": failed, "incorrect": incorrect, "peers_us": peers,
    }


def line(rec: dict, peers: list[str], peak: float) -> str:
    best = Config(**rec["best"]["config"])
    us = rec["best"]["us"]
    heur_us = rec["heuristic"]["us"]
    lig = rec["liger_like"]["us"] if rec["liger_like"] else math.nan
    peer_us = [rec["peers_us"].get(p, math.nan) for p in peers]
    finite = [t for t in peer_us if math.isfinite(t)]
    vs = f"{us / min(finite):6.3f}" if finite else f"{'-':>6}"
    op = "add" if rec["residual"] else "norm"
    return (
        f"{op:4} {rec['num_tokens']:>6}x{rec['hidden_size']:<5} | {best.short():34} {us:9.2f} "
        f"{rec['best']['gbps']:6.0f} {100 * rec['best']['gbps'] / peak:4.0f} | {heur_us:9.2f} {heur_us / us:6.3f} "
        f"| {lig:9.2f}"
        + "".join(f" | {t:9.2f}" for t in peer_us) + (f" | {vs}" if peers else "")
    )


def header(peers: list[str]) -> str:
    return (
        f"{'op':4} {'tokens x hidden':>12} | {'best config':34} {'us':>9} {'GB/s':>6} {'%cp':>4} | "
        f"{'heur us':>9} {'h/best':>6} | {'liger-like':>9}" + "".join(f" | {p[:9]:>9}" for p in peers)
        + (f" | {'best/peer':>6}" if peers else "")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tune_rmsnorm.json", help="JSON file for every timing")
    ap.add_argument("--suites", default=",".join(SUITES), help="suite files whose triton cases give the shapes")
    ap.add_argument("--shapes", default="", help="only these: comma list of [r]HIDDENxTOKENS (r = with residual)")
    ap.add_argument("--hidden", default="", help="only these hidden sizes (comma list)")
    ap.add_argument("--tokens", default="", help="only these token counts (comma list)")
    ap.add_argument("--residual", choices=("0", "1"), help="only without (0) or with (1) the residual")
    ap.add_argument("--quick", action="store_true", help="fewer candidates (about half the time)")
    ap.add_argument("--peers", default="", help="comma list for round 2: flashinfer,liger,quack,vllm,torch_compile")
    ap.add_argument("--peers-min-tokens", type=int, default=256, help="time peers only from this many tokens")
    ap.add_argument("--finalists", type=int, default=4, help="configs re-timed at the suite's settings")
    ap.add_argument("--screen-reps", type=int, default=10, help="graph replays per config in round 1")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds; past it, shapes get --quick candidates")
    ap.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1), help="compile processes (0: serial)")
    ap.add_argument("--table-from", metavar="FILE", help="print the TUNED table of a JSON written earlier and exit")
    ap.add_argument("--list", action="store_true", help="print the shapes and round-1a candidate counts and exit")
    args = ap.parse_args()
    all_shapes, timing = suite_shapes(args.suites.split(","))
    if args.table_from:
        print(tuned_table(json.loads(Path(args.table_from).read_text())["records"], list(all_shapes)))
        return 0

    want = parse_shapes(args.shapes)
    shapes = [
        s for s in sorted(all_shapes, key=lambda s: (s.residual, s.hidden, s.tokens))
        if (not want or s in want)
        and (not args.hidden or s.hidden in {int(h) for h in args.hidden.split(",")})
        and (not args.tokens or s.tokens in {int(t) for t in args.tokens.split(",")})
        and (args.residual is None or s.residual == (args.residual == "1"))
    ]
    missing = want - set(all_shapes)
    if missing:
        print(f"# not in the suites, skipped: {', '.join(sorted(s.label for s in missing))}", file=sys.stderr)
    if args.list:  # an H100/H200: 132 SMs, PDL
        keys = set()
        for s in shapes:
            cands = all_candidates(s, True, 132)
            keys |= {
                (s.hidden % 16 == 0, s.residual, dataclasses.replace(c, programs_per_sm=min(c.programs_per_sm, 1)))
                for c in cands
            }
            n1 = len(structures(s, True, args.quick))
            print(f"{s.label:>12}: {n1:3} structures, {len(cands):3} candidates in all")
        print(f"# {len(shapes)} shapes, {len(keys)} kernels to compile")
        return 0
    if not torch.cuda.is_available():
        print("tune_rmsnorm needs a CUDA GPU", file=sys.stderr)
        return 2

    t0 = time.time()
    device = torch.device("cuda", torch.cuda.current_device())
    torch.empty(1, device=device)  # this process's context first
    sms, pdl = rn.device_facts(device)
    compiler = Compiler(args.jobs)
    # Every config any round may try compiles (in parallel) while this process measures
    # the copy bandwidth: about 400 kernels, a few seconds on 16 cores.
    everything = [(s, c) for s in shapes for c in all_candidates(s, pdl, sms)]
    pre = cf.ThreadPoolExecutor(1).submit(compiler.ensure, everything)
    import triton

    from normbench.env import measure_copy_bandwidth

    peak = measure_copy_bandwidth("cuda")["peak_bandwidth_gbps"]
    pre.result()
    compiler.close()  # idle workers would hold GPU memory; anything new compiles here
    env = {"gpu": torch.cuda.get_device_name(device), "sms": sms, "pdl": pdl, "torch": torch.__version__,
           "triton": triton.__version__, "cuda": torch.version.cuda, "copy_gbps": round(peak, 1),
           "timing": timing}
    print(f"# {env}; {len(shapes)} shapes; compiled {len(compiler.done)} kernels in {time.time() - t0:.0f} s",
          flush=True)
    peers = [p for p in args.peers.split(",") if p]
    ctx = {"pdl": pdl, "sms": sms, "compiler": compiler, "args": args, "peers": peers}
    print(header(peers), flush=True)
    records = []
    # The bandwidth-bound shapes first: past --budget the rest get the quick search.
    for s in sorted(shapes, key=lambda s: s.tokens < 256):
        quick = args.quick or time.time() - t0 > args.budget
        t_shape = time.time()
        try:
            b = Bench(s, *all_shapes[s], timing, device)
            rec = tune_shape(b, s, ctx, quick)
        except Exception as e:  # one shape's failure (memory, no valid config) is not the run's end
            print(f"{s.label}: FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        finally:
            b = None
            torch.cuda.empty_cache()
        rec["seconds"] = round(time.time() - t_shape, 2)
        records.append(rec)
        print(line(rec, peers, peak), flush=True)
        tmp = Path(args.out + ".tmp")
        tmp.write_text(json.dumps({"env": env, "records": records}, indent=1))
        tmp.replace(args.out)
    print(f"# wrote {args.out}; {time.time() - t0:.0f} s", flush=True)
    print(tuned_table(records, list(all_shapes)))
    return 0


def tuned_table(records: list[dict], shapes: list[Shape] = ()) -> str:
    """A ``TUNED`` literal for kernels/rmsnorm.py from the best config of each shape.

    Each tuned token count bounds the range up to it; the last covers the rest. A suite
    shape without a record (a run narrowed by ``--shapes``, or cut short) keeps the current
    heuristic's config, so the table still covers every suite point. A row is dropped when
    the next row has the same config (the next bound covers it).
    """
    table: dict[tuple[bool, int], dict[int, Config]] = {}
    for r in records:
        table.setdefault((r["residual"], r["hidden_size"]), {})[r["num_tokens"]] = Config(**r["best"]["config"])
    for s in shapes:
        if s.tokens not in table.get((s.residual, s.hidden), {}):
            cfg = rn.default_config(s.tokens, s.hidden, 2, s.residual, pdl=True)
            table.setdefault((s.residual, s.hidden), {})[s.tokens] = cfg
    table = {k: list(v.items()) for k, v in table.items()}
    lines = ["TUNED: dict[tuple[bool, int], tuple[tuple[int, Config], ...]] = {"]
    for key in sorted(table):
        rows = sorted(table[key], key=lambda tc: tc[0])
        bounds = [t for t, _ in rows[:-1]] + [SENTINEL]
        kept = [(b, c) for i, (b, (_, c)) in enumerate(zip(bounds, rows)) if i + 1 == len(rows) or rows[i + 1][1] != c]
        lines.append(f"    {key}: (")
        lines += [f"        ({b}, {c.literal()})," for b, c in kept]
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
