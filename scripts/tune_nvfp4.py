#!/usr/bin/env python
"""Tune the launch config of normbench's fused RMSNorm + NVFP4 Triton kernel (GPU).

For hidden_size {2048, 4096, 8192} x num_tokens {1, 16, 128, 1024, 4096, 16384},
bfloat16, with and without the residual add, time every candidate
``(rows_per_program, num_warps)`` and the heuristic's choice
(``normbench.kernels.nvfp4.nvfp4_config``), then print the best config, its
time (us per call), bandwidth (GB/s over the bytes model of ``normbench.ops``)
and % of the measured device-to-device copy bandwidth, and write everything as
JSON.

Timing: one CUDA graph replays the kernel over K rotating input sets (each
with its own x / residual and outputs) whose bytes add up to >= 100 MB, twice
the H100's 50 MB L2, so reads come from HBM (K is capped at 256: the smallest
shapes stay L2-resident, as a decode step's activations do). Median of
``--samples`` event-timed groups of replays.

Before timing, the heuristic config is checked on a few shapes against the
float64 reference with ``FAMILY.check`` (both paths; for ``round_norm=True``
the number of bytes that differ from the reference is printed: expect 0), so a
wrong kernel is never tuned silently; the exit code is 1 if a check fails.

Usage (from the repository root, on the GPU machine; about 1-2 minutes with a
cold Triton cache):

    python scripts/tune_nvfp4.py --out tune_nvfp4.json
    python scripts/tune_nvfp4.py --quick                # 4096/8192 x 128/4096 only
    python scripts/tune_nvfp4.py --compile-baseline     # + torch.compile of torch_naive (slow)

Works with normbench installed (``pip install -e .``) or straight from a
checkout (it then loads ``kernels/`` as ``normbench.kernels`` itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import types
from pathlib import Path

HIDDEN = (2048, 4096, 8192)
TOKENS = (1, 16, 128, 1024, 4096, 16384)
ROWS = (1, 2, 4)
WARPS = (2, 4, 8, 16)
TARGET_BYTES = 100e6  # per graph: 2x the H100 L2
MAX_SETS = 256


def import_nvfp4():
    """``normbench.kernels.nvfp4`` and ``normbench.ops``, installed or from the checkout."""
    try:
        from normbench import ops
        from normbench.kernels import nvfp4

        return nvfp4, ops
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    # Bare packages: normbench/__init__.py may import CLI dependencies we do not need.
    for name, path in (("normbench", root / "normbench"), ("normbench.kernels", root / "kernels")):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]  # type: ignore[attr-defined]
            sys.modules[name] = mod
    for name, path in (("normbench.ops", root / "normbench" / "ops.py"),
                       ("normbench.kernels.nvfp4", root / "kernels" / "nvfp4.py")):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return sys.modules["normbench.kernels.nvfp4"], sys.modules["normbench.ops"]


def candidates(hidden: int, tokens: int) -> list[tuple[int, int]]:
    """(rows, warps) with 8..64 elements per thread, no more rows than tokens, and
    4 rows per program only for rows of <= 2048 elements (one compile per config
    and residual flag: ~50 compiles in all)."""
    block_n = 1 << (hidden - 1).bit_length()
    out = []
    for rows in ROWS:
        if rows > max(tokens, 1) or (rows == 4 and block_n > 2048):
            continue
        for warps in WARPS:
            per_thread = rows * block_n / (32 * warps)
            if 8 <= per_thread <= 64:
                out.append((rows, warps))
    return out


def copy_bandwidth(torch) -> float:
    """Device-to-device copy bandwidth (GB/s, read + write) of a 1 GiB buffer."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / statistics.median(times) / 1e9


class Case:
    """K rotating input sets of one shape, built once and reused by every config."""

    def __init__(self, torch, fam, hidden: int, tokens: int, residual: bool, bytes_per_set: int):
        self.params = {"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16",
                       "eps": 1e-6, "residual": residual}
        self.k = max(2, min(MAX_SETS, math.ceil(TARGET_BYTES / bytes_per_set)))
        base = fam.make_inputs("tune", self.params, torch.device("cuda"), seed=0)
        self.sets = [base]
        g = torch.Generator(device="cuda")
        g.manual_seed(1)
        for _ in range(self.k - 1):
            s = dict(base)
            s["x"] = torch.randn(base["x"].shape, generator=g, device="cuda").to(torch.bfloat16)
            if residual:
                s["residual"] = torch.randn(base["x"].shape, generator=g, device="cuda").to(torch.bfloat16)
            self.sets.append(s)


def time_fn(torch, fn, case: Case, samples: int) -> float:
    """Median us per call of ``fn`` over the case's rotating sets, CUDA-graph replay."""
    for s in case.sets[:2]:
        fn(s)  # compile / warm up outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in case.sets:
            fn(s)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    once = start.elapsed_time(end) * 1e-3
    reps = max(1, min(200, math.ceil(5e-3 / max(once, 1e-7))))
    times = []
    for _ in range(samples):
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / (reps * case.k))
    del graph
    return statistics.median(times) * 1e6


def check_heuristic(torch, fam_mod) -> list[str]:
    """Correctness of the heuristic config on the GPU; returns failure messages."""
    fam = fam_mod.FAMILY
    failures = []
    for tokens, hidden, residual in ((1, 4096, False), (300, 5120, True), (1024, 4096, False), (4096, 8192, True)):
        op = "fused_add_rms_norm_nvfp4_quant" if residual else "rms_norm_nvfp4_quant"
        p = {"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "eps": 1e-6, "residual": residual}
        inp = fam.make_inputs(op, p, torch.device("cuda"), seed=7)
        ref = fam.reference(op, p, inp)
        for round_norm in (False, True):
            out = fam_mod.IMPLS["triton"][op](dict(p, round_norm=round_norm))(inp)
            res = fam.check(op, p, inp, out, ref, fam_mod.DEFAULT_TOLERANCES["bfloat16"])
            tag = f"{tokens}x{hidden} residual={residual} round_norm={round_norm}"
            rates = {k: round(v, 5) for k, v in res.metrics.items() if "rate" in k or "dequant_rel" in k}
            print(f"  check {tag}: {'ok' if res.ok else 'FAIL ' + res.message} {rates}")
            if not res.ok:
                failures.append(f"{tag}: {res.message}")
            if round_norm:  # the reference's rule: expect identical bytes but for rare near-tie flips
                differ = int((out[0] != ref[0]).sum()) + int((out[1].view(torch.uint8) != ref[1].view(torch.uint8)).sum())
                print(f"    round_norm=True: {differ} bytes differ from the reference")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "tune_nvfp4.json"))
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="hidden 4096/8192 x tokens 128/4096 only")
    ap.add_argument("--compile-baseline", action="store_true",
                    help="also time torch.compile(torch_naive) (one compile per shape: slow)")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check")
    args = ap.parse_args()

    os.environ.pop("TRITON_INTERPRET", None)
    import torch
    import triton

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    nvfp4, ops = import_nvfp4()
    fam = nvfp4.FAMILY
    t0 = time.time()
    dev = torch.cuda.get_device_name()
    print(f"{dev}, torch {torch.__version__}, triton {triton.__version__}")
    copy_gbps = copy_bandwidth(torch)
    print(f"copy bandwidth: {copy_gbps:.0f} GB/s (1 GiB device-to-device)")

    failures = [] if args.no_check else check_heuristic(torch, nvfp4)

    hidden_list = (4096, 8192) if args.quick else HIDDEN
    tokens_list = (128, 4096) if args.quick else TOKENS
    results = []
    header = (f"{'res':>3} {'hidden':>6} {'tokens':>6} | {'best (rows,warps)':>17} {'us':>8} {'GB/s':>6} {'%copy':>5}"
              f" | {'heuristic':>9} {'us':>8} {'x best':>6}" + (" | compile us  x" if args.compile_baseline else ""))
    print(header)
    print("-" * len(header))
    for residual in (False, True):
        for hidden in hidden_list:
            for tokens in tokens_list:
                params = {"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "eps": 1e-6,
                          "residual": residual, "quant_dtype": "nvfp4"}
                nbytes = ops._nvfp4_bytes(params)
                case = Case(torch, fam, hidden, tokens, residual, nbytes)
                heur = nvfp4.nvfp4_config(tokens, hidden, torch.bfloat16)
                configs = candidates(hidden, tokens)
                if heur not in configs:
                    configs.append(heur)
                timings = {}
                for rows, warps in configs:
                    def fn(s, rows=rows, warps=warps):
                        return nvfp4.rms_norm_nvfp4_quant_triton(
                            s["x"], s["weight"], s["global_scale"], 1e-6,
                            s["residual"] if residual else None, rows_per_program=rows, num_warps=warps)
                    try:
                        timings[(rows, warps)] = time_fn(torch, fn, case, args.samples)
                    except Exception as e:  # e.g. out of registers / shared memory: skip the config
                        print(f"  skip {(rows, warps)}: {type(e).__name__}: {str(e)[:120]}")
                # the exact-rounding variant, at the heuristic config
                def fn_exact(s):
                    return nvfp4.rms_norm_nvfp4_quant_triton(
                        s["x"], s["weight"], s["global_scale"], 1e-6, s["residual"] if residual else None,
                        rows_per_program=heur[0], num_warps=heur[1], round_norm=True)
                exact_us = time_fn(torch, fn_exact, case, args.samples)
                if heur not in timings:
                    failures.append(f"heuristic config {heur} failed for {hidden}x{tokens} residual={residual}")
                    timings[heur] = math.inf
                best = min(timings, key=timings.get)
                us = timings[best]
                gbps = nbytes / (us * 1e-6) / 1e9
                row = {
                    "residual": residual, "hidden_size": hidden, "num_tokens": tokens, "bytes": nbytes,
                    "input_sets": case.k, "best": list(best), "best_us": us, "best_gbps": gbps,
                    "best_pct_copy": 100 * gbps / copy_gbps, "heuristic": list(heur),
                    "heuristic_us": timings[heur], "round_norm_us": exact_us,
                    "all": {f"{r}x{w}": t for (r, w), t in sorted(timings.items())},
                }
                line = (f"{'yes' if residual else 'no':>3} {hidden:>6} {tokens:>6} | {str(best):>17} {us:>8.2f}"
                        f" {gbps:>6.0f} {100 * gbps / copy_gbps:>5.1f} | {str(heur):>9} {timings[heur]:>8.2f}"
                        f" {timings[heur] / us:>6.2f}")
                if args.compile_baseline:
                    op = "fused_add_rms_norm_nvfp4_quant" if residual else "rms_norm_nvfp4_quant"
                    compiled = torch.compile(nvfp4.IMPLS["torch_naive"][op](params))
                    row["torch_compile_us"] = time_fn(torch, compiled, case, args.samples)
                    line += f" | {row['torch_compile_us']:>10.2f} {row['torch_compile_us'] / us:>4.1f}"
                print(line, flush=True)
                results.append(row)
                del case
                torch.cuda.empty_cache()

    report = {
        "device": dev, "torch": torch.__version__, "triton": triton.__version__, "copy_gbps": copy_gbps,
        "dtype": "bfloat16", "timing": f"CUDA graph over rotating input sets >= {TARGET_BYTES / 1e6:.0f} MB "
        f"(<= {MAX_SETS} sets), median of {args.samples}", "check_failures": failures, "results": results,
        "elapsed_s": time.time() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    worst = max(results, key=lambda r: r["heuristic_us"] / r["best_us"])
    print(f"heuristic within {100 * (worst['heuristic_us'] / worst['best_us'] - 1):.1f}% of the best everywhere "
          f"(worst: {worst['hidden_size']}x{worst['num_tokens']} residual={worst['residual']})")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    if failures:
        print("CORRECTNESS FAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
