"""Cross-check normbench's timing method against ``triton.testing.do_bench``.

For every point of the given suites' kernel stages with ``num_tokens >= --min-tokens``,
build the ``--provider`` callable once (``torch_compile`` by default), then time that
same callable in this process two ways:

* normbench: ``normbench.timing.time_cuda`` (CUDA-graph replay over input sets that
  span 2x L2), median;
* ``triton.testing.do_bench`` (CUDA events around each call, a 256 MB cache flush
  before each call), median.

Timing the same compiled function both ways isolates the method: the stored run's
figure may come from a differently specialized compile (torch.compile makes the token
dimension dynamic after the first shape, a fresh process compiles the first shape
statically). Target: agreement within 5%.

Usage: python3 scripts/crosscheck_do_bench.py [--suite rmsnorm ...] [--provider P]
       [--filter KEY=VALUE ...] [--out FILE]   (filters as ``normbench run --filter``)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton.testing

from normbench.expand import Capabilities, apply_filters, expand
from normbench.kernels.providers._family import family_of
from normbench.ops import OPS
from normbench.registry import PROVIDERS, load
from normbench.runners.kernel import point_seed
from normbench.suite import load_suite
from normbench.timing import input_sets_needed, l2_bytes, summarize, time_cuda


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", action="append", default=None, help="suite files or names (default: rmsnorm, fused_add_rmsnorm)")
    ap.add_argument("--provider", default="torch_compile")
    ap.add_argument("--min-tokens", type=int, default=1024)
    ap.add_argument("--filter", action="append", default=[], help="as normbench run --filter (repeatable)")
    ap.add_argument("--out")
    args = ap.parse_args()
    suites = args.suite or ["rmsnorm", "fused_add_rmsnorm"]
    provider = load(PROVIDERS[args.provider].target)
    caps = Capabilities.detect()
    device = torch.device("cuda")
    rotate = 2 * l2_bytes()
    rows = []
    for name in suites:
        path = Path(name) if name.endswith(".yaml") else Path(__file__).resolve().parents[1] / "suites" / f"{name}.yaml"
        loaded = load_suite(path)
        seen = set()
        for case in apply_filters(expand(loaded.suite, caps), args.filter):
            if case.provider != args.provider or case.skip or case.param_dict["num_tokens"] < args.min_tokens:
                continue
            if case.params in seen:
                continue
            seen.add(case.params)
            params, op = case.param_dict, case.op
            family = family_of(op)
            inputs = family.make_inputs(op, params, device, point_seed(case.settings.seed, case))
            fn = provider.make(op, params)
            fn({k: v.clone() for k, v in inputs.items()})  # compile outside both timings
            sets = [{k: v.clone() for k, v in inputs.items()} for _ in range(input_sets_needed(OPS[op].bytes_moved(params), rotate))]
            ours = summarize(time_cuda([(lambda s=s: fn(s)) for s in sets]).samples_us)["median"]
            ms = triton.testing.do_bench(lambda: fn(sets[0]), warmup=25, rep=200, return_mode="median")
            rows.append({"case": case.fingerprint, "normbench_us": ours, "do_bench_us": ms * 1e3, "ratio": ours / (ms * 1e3)})
            print(f"{case.fingerprint[:80]:80s} normbench {ours:9.2f} us  do_bench {ms * 1e3:9.2f} us  ratio {ours / (ms * 1e3):.3f}", flush=True)
            del inputs, sets
            torch.cuda.empty_cache()
    bands = {}
    for r in rows:
        n = int(r["case"].split("num_tokens=")[1].split(",")[0])
        bands.setdefault(n, []).append(abs(r["ratio"] - 1))
    for n, diffs in sorted(bands.items()):
        print(f"num_tokens={n}: worst disagreement {100 * max(diffs):.1f}% over {len(diffs)} cases")
    worst = max((abs(r["ratio"] - 1) for r in rows), default=float("nan"))
    print(f"{len(rows)} cases; worst disagreement {100 * worst:.1f}% (target: within 5%)")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "worst_rel_diff": worst}, indent=1))


if __name__ == "__main__":
    main()
