#!/usr/bin/env python3
"""Tune one kernel family's launch configs on a GPU, measured as the suites measure, and write its table.

Usage (repository root, CUDA GPU; normbench need not be installed)::

    python3 scripts/tune.py FAMILY [--out RESULTS.json] [--table PATH] [--quick] [--budget SECONDS]
                            [--hidden 4096,8192] [--tokens 1024,4096] [--residual 0|1] [--variant fp8]
                            [--peers flashinfer,vllm] [--copy] [--jobs N] [--finalists 3]
    python3 scripts/tune.py FAMILY --table-from RESULTS.json [--table PATH]   # no GPU
    python3 scripts/tune.py FAMILY --list                                     # no GPU

FAMILY is ``rmsnorm``, ``quant`` or ``nvfp4``. What to measure comes from the family
(``kernels/<family>/configs.py``: ``TUNING``): the points (the suites' shapes, bfloat16), the
candidate configs per point, refinements around the leaders, the baselines, the preflight
cases and probes. The method is the same for every family:

1. **Compile** every config any round may try, in ``--jobs`` worker processes (one pool), so
   Triton's on-disk cache serves this process. The pool also reads the device facts: this
   process touches CUDA only once the workers are done (a GPU in exclusive-process mode would
   refuse them a context).
2. **Correct before fast.** The family's probes (nvfp4: inline PTX against its float64 model)
   and preflight cases (what the points do not cover: other dtypes, scales, layouts), then
   every config at a ragged token count where every program of a persistent grid walks >= 2
   tiles, against the float64 reference with the suites' tolerance and the family's stricter
   judge. A config that fails is reported INCORRECT and never timed; the run then exits 1.
3. **Time** with ``normbench.timing.time_cuda`` over input sets rotated through 2 x L2 (the
   suites' method; at most ``--max-sets`` sets): round 1, the candidates (``--screen-reps``);
   round 1b, the family's refinements around the round-1 leaders; final round, the
   ``--finalists`` fastest, the current default, the family's baselines and the best without
   PDL (``--final-reps``), then the ``--peers``. Points that differ only by variant (quant:
   fp8 / int8) share a table row: a later variant times the first one's ``--follow`` best
   configs, the default and the baselines. Past ``--budget`` seconds, points get the quick
   candidate set.
4. **Write the table.** Per key and token count, the config with the least sum over variants
   of ``t / best_t`` among those every variant timed in its final round; rows bounded at the
   geometric midpoints between the measured token counts, equal neighbours merged; merged
   into the checkout's ``kernels/tuned/FAMILY.json`` (keys this run did not measure are kept)
   and written to ``--table`` (default: that file). Every timing goes to ``--out`` (rewritten
   after each point, so ``--table-from`` can finish a run cut short).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import importlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's normbench (it maps kernels/ to normbench.kernels)
    sys.path.insert(0, str(ROOT))

FAMILIES = ("rmsnorm", "quant", "nvfp4")
#: Device facts that ``--list`` plans for (an H100 / H200: 132 SMs, PDL, the sm_89+ PTX).
PLAN_FACTS = dict(sms=132, capability=(9, 0), l2_bytes=50 * 2**20, pdl=True, ptx_fp8=True)
GATE_SEED, BENCH_SEED = 11, 1234


def family(name: str):
    """The family package ``normbench.kernels.<name>`` (its ``TUNING``, ``FAMILY``, ``OWN_IMPLS``)."""
    if name not in FAMILIES:
        raise SystemExit(f"unknown family {name!r}: one of {', '.join(FAMILIES)}")
    return importlib.import_module(f"normbench.kernels.{name}")


def cfg_key(cfg) -> str:
    """A config as the JSON text that keys the results (stable field order)."""
    return json.dumps(cfg.as_dict())


# --------------------------------------------------------------------------- points and configs


def select_points(tuning, args) -> list:
    """The family's points, narrowed by ``--hidden``, ``--tokens``, ``--residual``, ``--variant``."""
    hidden = {int(h) for h in args.hidden.split(",") if h}
    tokens = {int(t) for t in args.tokens.split(",") if t}
    variants = {v for v in args.variant.split(",") if v}
    out = []
    for p in tuning.points():
        params = p.param_dict
        if hidden and params["hidden_size"] not in hidden or tokens and p.num_tokens not in tokens:
            continue
        if args.residual is not None and bool(params.get("residual")) != (args.residual == "1"):
            continue
        if variants and p.variant not in variants:
            continue
        out.append(p)
    return out


def configs_to_compile(tuning, point, facts) -> list:
    """Every config any round may time at ``point`` (round 1b around any leader included)."""
    cands = tuning.candidates(point, facts, False)
    cfgs = cands + tuning.refine(point, cands, facts, False) + [tuning.default(point, facts)]
    cfgs += list(tuning.baselines(point, facts).values())
    cfgs += [dataclasses.replace(c, pdl=False) for c in cfgs if c.pdl]
    return list(dict.fromkeys(cfgs))


def case_key(op: str, params: dict) -> tuple:
    """What a compiled kernel depends on: the case without its token count."""
    return (op,) + tuple(sorted((k, v) for k, v in params.items() if k != "num_tokens"))


def compile_jobs(fam_name: str, tuning, points, facts) -> list[tuple]:
    """(family, op, case params, run overrides) jobs, one per distinct kernel: each point's
    configs at their gate token count, and the preflight cases."""
    jobs: dict[tuple, tuple] = {}
    for p in points:
        for cfg in configs_to_compile(tuning, p, facts):
            # programs_per_sm only sizes a persistent grid (every family): one kernel for all k > 0
            cfg = dataclasses.replace(cfg, programs_per_sm=min(cfg.programs_per_sm, 1))
            params = dict(p.param_dict, num_tokens=tuning.gate_tokens(cfg, facts))
            jobs.setdefault(case_key(p.op, params) + (cfg_key(cfg),), (fam_name, p.op, params, {"launch_config": cfg}))
    for _, op, params, overrides in tuning.preflight(facts):
        cfg = overrides.get("launch_config")
        key = case_key(op, params) + (cfg_key(cfg) if cfg else "",) + tuple(sorted(
            (k, v) for k, v in overrides.items() if k != "launch_config"))
        jobs.setdefault(key, (fam_name, op, params, overrides))
    return list(jobs.values())


# --------------------------------------------------------------------------- worker processes


def _facts_job() -> dict:
    """Worker: the device facts of cuda:0 (as a dict)."""
    import torch

    from normbench.kernels._triton import device_facts

    return dataclasses.asdict(device_facts(torch.device("cuda", 0)))


def _compile_job(job: tuple) -> str | None:
    """Worker: run one (op, params, overrides) once so that Triton caches its kernel; the error, or None."""
    fam_name, op, params, overrides = job
    try:
        import torch

        mod = family(fam_name)
        device = torch.device("cuda", 0)
        mod.OWN_IMPLS["triton"][op]({**params, **overrides})(mod.FAMILY.make_inputs(op, params, device, GATE_SEED))
        torch.cuda.synchronize()
        return None
    except Exception as e:  # reported; the main process compiles (or fails) it again
        return f"{op} H={params.get('hidden_size')} {overrides}: {type(e).__name__}: {str(e)[:300]}"


# --------------------------------------------------------------------------- checking and timing


def tolerance(op: str, dtype: str):
    """The suites' default tolerance of ``op`` at ``dtype`` (``normbench.suite`` + the op's own)."""
    from normbench.kernels.base import Tolerance
    from normbench.ops import OPS
    from normbench.suite import DEFAULT_TOLERANCE

    merged = dict(DEFAULT_TOLERANCE[dtype])
    if op in OPS:
        merged.update(OPS[op].tolerance.get(dtype, {}))
    return Tolerance(**merged)


def check_case(mod, op: str, params: dict, overrides: dict, device) -> str | None:
    """None when the ``triton`` provider, built with ``params`` and the run ``overrides`` (e.g. a
    ``launch_config``), passes the family's check and judge on fresh inputs; else why not."""
    import torch

    fam = mod.FAMILY
    inputs = fam.make_inputs(op, params, device, GATE_SEED)
    ref = fam.reference(op, params, inputs)
    try:
        out = mod.OWN_IMPLS["triton"][op]({**params, **overrides})({k: v.clone() for k, v in inputs.items()})
        torch.cuda.synchronize()
    except Exception as e:  # a config that does not compile or launch here
        return f"{type(e).__name__}: {str(e)[:300]}"
    res = fam.check(op, params, inputs, out, ref, tolerance(op, params["dtype"]))
    return mod.TUNING.judge(op, params, out, ref, res)


class Bench:
    """One point's input sets, rotated as ``normbench run`` rotates them, and its timings."""

    def __init__(self, mod, point, device, rotate_bytes: int, max_sets: int):
        from normbench.ops import OPS
        from normbench.timing import input_sets_needed

        self.mod, self.point, self.device = mod, point, device
        self.op, self.params = point.op, point.param_dict
        self.nbytes = OPS[self.op].bytes_moved(self.params)
        inputs = mod.FAMILY.make_inputs(self.op, self.params, device, BENCH_SEED)
        self.n_sets = min(max_sets, input_sets_needed(self.nbytes, rotate_bytes))
        self.sets = [{k: v.clone() for k, v in inputs.items()} for _ in range(self.n_sets)]

    def config_fn(self, cfg):
        """The ``triton`` provider's callable with ``cfg``, built as the kernel runner builds it."""
        return self.mod.OWN_IMPLS["triton"][self.op]({**self.params, "launch_config": cfg})

    def time(self, fn, reps: int, warmup: int) -> float:
        """Median microseconds per call of ``fn`` over the rotated sets (``time_cuda``)."""
        return _median_us([(lambda s=s: fn(s)) for s in self.sets], reps, warmup)

    def copy_us(self, reps: int) -> float:
        """A device copy of the same bytes (half read, half written), rotated and timed the same way."""
        import torch

        half = max(16, self.nbytes // 2)
        bufs = [(torch.empty(half, dtype=torch.uint8, device=self.device),
                 torch.empty(half, dtype=torch.uint8, device=self.device)) for _ in range(self.n_sets)]
        return _median_us([(lambda a=a, b=b: b.copy_(a)) for a, b in bufs], reps, 5)


def _median_us(fns, reps: int, warmup: int) -> float:
    from normbench.timing import time_cuda

    return statistics.median(time_cuda(fns, reps, warmup).samples_us)


def peer_fn(name: str, bench: Bench):
    """A registered provider's callable for the point, built as the kernel runner builds it."""
    from normbench.kernels.providers._family import Unsupported
    from normbench.registry import PROVIDERS, load

    provider = load(PROVIDERS[name].target)
    why = provider.unavailable() or provider.unsupported(bench.op, bench.params, bench.device)
    if why:
        raise Unsupported(why)
    return provider.make(bench.op, bench.params)


# --------------------------------------------------------------------------- search


class Tuner:
    """Gates, screens and finalizes the configs of one family's points (see the module docstring)."""

    def __init__(self, mod, facts, device, args):
        self.mod, self.tuning, self.facts, self.device, self.args = mod, mod.TUNING, facts, device, args
        self.gated: dict[tuple, str | None] = {}
        self.leaders: dict[tuple, list] = {}  # (key, num_tokens) -> the first variant's final ranking

    def gate(self, point, cfg) -> str | None:
        """Why ``cfg`` is incorrect for ``point``'s case, or None (checked once per case and config)."""
        params = dict(point.param_dict, num_tokens=self.tuning.gate_tokens(cfg, self.facts))
        k = case_key(point.op, params) + (cfg_key(cfg),)
        if k not in self.gated:
            self.gated[k] = check_case(self.mod, point.op, params, {"launch_config": cfg}, self.device)
            if self.gated[k]:
                print(f"# INCORRECT {point.label} {cfg.short()}: {self.gated[k]}", flush=True)
        return self.gated[k]

    def tune(self, point, quick: bool, rotate_bytes: int) -> dict:
        """Rounds 1, 1b and final at one point; its record."""
        args, tuning, facts = self.args, self.tuning, self.facts
        bench = Bench(self.mod, point, self.device, rotate_bytes, args.max_sets)
        default, baselines = tuning.default(point, facts), tuning.baselines(point, facts)
        group = (point.key, point.num_tokens)
        leading = group not in self.leaders
        first = tuning.candidates(point, facts, quick) if leading else self.leaders[group][: args.follow]
        screened: dict[Any, float] = {}

        def screen(cfgs):
            for c in dict.fromkeys(cfgs):
                if c in screened:
                    continue
                err = self.gate(point, c)
                if err is None:
                    try:
                        screened[c] = bench.time(bench.config_fn(c), args.screen_reps, 2)
                    except Exception as e:  # noqa: BLE001 - e.g. out of resources at this shape
                        print(f"# FAILED {point.label} {c.short()}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                        err = f"{type(e).__name__}: {e}"
                if err is not None:
                    screened[c] = math.inf

        screen(first + [default] + list(baselines.values()))
        if leading:
            ranked = [c for c in sorted(screened, key=screened.get) if math.isfinite(screened[c])]
            screen(tuning.refine(point, ranked, facts, quick))
        ranked = [c for c in sorted(screened, key=screened.get) if math.isfinite(screened[c])]
        if not ranked:
            raise RuntimeError(f"{point.label}: no config compiled, ran and passed the check")
        final_cfgs = ranked[: args.finalists] + [c for c in [default, *baselines.values()] if c in ranked]
        if ranked[0].pdl:
            no_pdl = dataclasses.replace(ranked[0], pdl=False)
            screen([no_pdl])
            final_cfgs += [no_pdl] if math.isfinite(screened[no_pdl]) else []
        final = {c: bench.time(bench.config_fn(c), args.final_reps, 10) for c in dict.fromkeys(final_cfgs)}
        best = min(final, key=final.get)
        if leading:
            self.leaders[group] = sorted(final, key=final.get)
        peers = {}
        for name in (args.peers.split(",") if args.peers else []):
            try:
                fn = peer_fn(name, bench)
                peers[name] = bench.time(fn, args.final_reps, 10)
            except Exception as e:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
                print(f"#   peer {name} {point.label}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                peers[name] = math.nan
        copy = bench.copy_us(args.final_reps) if args.copy and point.num_tokens >= 1024 else None
        return {
            "key": list(point.key), "num_tokens": point.num_tokens, "variant": point.variant, "op": point.op,
            "params": point.param_dict, "bytes": bench.nbytes, "input_sets": bench.n_sets, "quick": quick,
            "best": best.as_dict(), "best_us": final[best], "best_gbps": bench.nbytes / final[best] / 1e3,
            "default": default.as_dict(), "default_us": final.get(default, screened.get(default, math.nan)),
            "baselines": {n: {"config": c.as_dict(), "us": final.get(c, math.nan)} for n, c in baselines.items()},
            "final_us": {cfg_key(c): t for c, t in final.items()},
            "screen_us": {cfg_key(c): t for c, t in sorted(screened.items(), key=lambda kv: kv[1])},
            "peers_us": peers, "copy_same_bytes_us": copy,
        }


# --------------------------------------------------------------------------- the table


def choose(by_variant: dict[str, dict[str, float]], primary: str) -> str:
    """The config (JSON key) with the least sum over variants of ``t / best_t``, among those every
    variant timed in its final round; the primary variant's fastest where they share none."""
    best = {v: min(times.values()) for v, times in by_variant.items()}
    shared = set.intersection(*(set(times) for times in by_variant.values()))
    if not shared:
        times = by_variant[primary]
        return min(times, key=times.get)
    return min(sorted(shared), key=lambda c: sum(by_variant[v][c] / best[v] for v in by_variant))


def rows_from_records(records: list[dict], config_type) -> dict[tuple, tuple]:
    """Table rows (key -> ascending (bound, config)) of a run's records (see the module docstring)."""
    from normbench.kernels import tuned

    per: dict[tuple, dict[int, dict[str, dict[str, float]]]] = {}
    primary: dict[tuple, str] = {}
    for r in records:
        if not r.get("final_us"):
            continue
        key = tuple(r["key"])
        per.setdefault(key, {}).setdefault(r["num_tokens"], {})[r.get("variant", "")] = r["final_us"]
        primary.setdefault((key, r["num_tokens"]), r.get("variant", ""))
    rows = {}
    for key, by_tokens in per.items():
        tokens = sorted(by_tokens)
        chosen = [config_type.from_dict(json.loads(choose(by_tokens[t], primary[(key, t)]))) for t in tokens]
        bounded = list(zip(tuned.bounds(tokens), chosen))
        rows[key] = tuple(bc for i, bc in enumerate(bounded) if i + 1 == len(bounded) or bounded[i + 1][1] != bc[1])
    return rows


def merged_table(tuning, new_rows: dict, source: str, base_path: Path):
    """The checkout's table with ``new_rows`` replacing (or adding) their keys; the source names
    both runs where rows of the old one remain."""
    from normbench.kernels import tuned

    old = tuned.load(tuning.family, tuning.config_type, tuning.key, base_path)
    if set(old.rows) - set(new_rows):
        source = f"{source}; other keys: {old.source}"
    return tuned.Table(tuning.family, old.key_fields, source, {**old.rows, **new_rows})


def write_table(tuning, records: list[dict], source: str, path: Path) -> Path | None:
    """Merge the rows of ``records`` into the family's table and write it to ``path`` (nothing
    when the records hold no finished point)."""
    from normbench.kernels import tuned

    new_rows = rows_from_records(records, tuning.config_type)
    if not new_rows:
        return None
    table = merged_table(tuning, new_rows, source, tuned.path_of(tuning.family))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tuned.dump(table))
    tmp.replace(path)
    return path


def source_line(fam_name: str, env: dict, out: str) -> str:
    return (f"scripts/tune.py {fam_name}, {env.get('gpu', '?')}, triton {env.get('triton', '?')}, "
            f"torch {env.get('torch', '?')} ({Path(out).name})")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", choices=FAMILIES)
    ap.add_argument("--out", help="results JSON (default: tune_FAMILY.json)")
    ap.add_argument("--table", help="where to write the merged table (default: kernels/tuned/FAMILY.json)")
    ap.add_argument("--table-from", metavar="RESULTS", help="write the table of a results file and exit (no GPU)")
    ap.add_argument("--list", action="store_true", help="print the points and candidate counts and exit (no GPU)")
    ap.add_argument("--hidden", default="", help="only these hidden sizes (comma list)")
    ap.add_argument("--tokens", default="", help="only these token counts (comma list)")
    ap.add_argument("--residual", choices=("0", "1"), help="only without (0) or with (1) the residual")
    ap.add_argument("--variant", default="", help="only these variants (quant: fp8,int8)")
    ap.add_argument("--quick", action="store_true", help="the families' quick candidate sets")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds; past it, points get the quick candidates")
    ap.add_argument("--peers", default="", help="registered providers timed at each point (comma list)")
    ap.add_argument("--copy", action="store_true", help="also time a device copy of the same bytes (>= 1024 tokens)")
    ap.add_argument("--finalists", type=int, default=3, help="fastest round-1 configs re-timed in the final round")
    ap.add_argument("--follow", type=int, default=2, help="a later variant times the first variant's best N")
    ap.add_argument("--screen-reps", type=int, default=10, help="graph replays per config in round 1")
    ap.add_argument("--final-reps", type=int, default=30, help="graph replays per config in the final round")
    ap.add_argument("--max-sets", type=int, default=512, help="input sets at most (rotation over 2 x L2)")
    ap.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1), help="compile processes (0: serial)")
    args = ap.parse_args(argv)
    args.out = args.out or f"tune_{args.family}.json"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    mod = family(args.family)
    tuning = mod.TUNING
    from normbench.kernels import tuned
    from normbench.kernels._triton import DeviceFacts

    table_path = Path(args.table) if args.table else tuned.path_of(args.family)
    if args.table_from:
        data = json.loads(Path(args.table_from).read_text())
        path = write_table(tuning, data["records"], source_line(args.family, data.get("env", {}), args.table_from),
                           table_path)
        print(f"# wrote {path}" if path else f"# {args.table_from} holds no finished point: no table written")
        return 0 if path else 1
    points = select_points(tuning, args)
    if args.list:
        facts = DeviceFacts(**PLAN_FACTS)
        for p in points:
            print(f"{p.label:>32}: {len(tuning.candidates(p, facts, args.quick)):3} candidates, "
                  f"{len(configs_to_compile(tuning, p, facts)):3} configs in all")
        print(f"# {len(points)} points, {len(compile_jobs(args.family, tuning, points, facts))} kernels to compile")
        return 0

    import torch

    if not torch.cuda.is_available():  # (no CUDA context is created here)
        print(f"tune.py {args.family} needs a CUDA GPU (--list and --table-from do not)", file=sys.stderr)
        return 2
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        facts_d = pool.submit(_facts_job).result()
        facts = DeviceFacts(**{**facts_d, "capability": tuple(facts_d["capability"])})
        jobs = compile_jobs(args.family, tuning, points, facts)
        errors = [e for e in pool.map(_compile_job, jobs, chunksize=max(1, len(jobs) // (4 * max(1, args.jobs))))
                  if e] if args.jobs > 0 else []
    print(f"# compiled {len(jobs)} kernels in {time.time() - t0:.0f} s"
          + (f"; {len(errors)} failed in a worker (retried here), first: {errors[0]}" if errors else ""), flush=True)

    import triton

    from normbench.env import measure_copy_bandwidth

    device = torch.device("cuda", 0)
    copy_gbps = measure_copy_bandwidth("cuda")["peak_bandwidth_gbps"]
    env = {"gpu": torch.cuda.get_device_name(device), "facts": dataclasses.asdict(facts), "torch": torch.__version__,
           "triton": triton.__version__, "cuda": torch.version.cuda, "copy_gbps": round(copy_gbps, 1)}
    print(f"# {env}; {len(points)} points", flush=True)

    failures = list(tuning.probe(device))
    for label, op, params, overrides in tuning.preflight(facts):
        err = check_case(mod, op, params, overrides, device)
        print(f"#   preflight {label}: {'ok' if err is None else 'FAILED ' + err}", flush=True)
        if err:
            failures.append(f"preflight {label}: {err}")
    for f in failures:
        print(f"# CHECK FAILED {f}", flush=True)

    tuner = Tuner(mod, facts, device, args)
    rotate = 2 * (facts.l2_bytes or 50 * 2**20)
    records: list[dict] = []
    print(f"{'point':>32} | {'best config':24} {'us':>9} {'GB/s':>6} {'%copy':>5} | {'default us':>10} {'x best':>6}",
          flush=True)
    for p in points:
        quick = args.quick or time.time() - t0 > args.budget
        try:
            rec = tuner.tune(p, quick, rotate)
        except Exception as e:  # noqa: BLE001 - one point's failure (memory, no valid config) is not the run's end
            print(f"{p.label:>32} | FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
            failures.append(f"{p.label}: {e}")
            continue
        finally:
            torch.cuda.empty_cache()
        records.append(rec)
        best = tuning.config_type.from_dict(rec["best"])
        print(f"{p.label:>32} | {best.short():24} {rec['best_us']:9.2f} {rec['best_gbps']:6.0f} "
              f"{100 * rec['best_gbps'] / copy_gbps:5.1f} | {rec['default_us']:10.2f} "
              f"{rec['default_us'] / rec['best_us']:6.3f}" + (" (quick)" if quick else ""), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"family": args.family, "env": env, "records": records,
                                              "incorrect": {" ".join(map(str, k)): v for k, v in tuner.gated.items()
                                                            if v}, "failures": failures}, indent=1))
    path = write_table(tuning, records, source_line(args.family, env, args.out), table_path)
    print(f"# wrote {args.out}" + (f" and {path}" if path else " (no table: no point finished)")
          + f" in {time.time() - t0:.0f} s", flush=True)
    incorrect = [v for v in tuner.gated.values() if v]
    if failures or incorrect:
        print(f"# WARNING: {len(failures)} check failures, {len(incorrect)} incorrect configs (marked above); "
              "the table holds only configs that passed", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
