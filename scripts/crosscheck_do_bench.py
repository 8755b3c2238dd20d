"""Cross-check normbench's timing method against ``triton.testing.do_bench``.

For every OK ``torch_compile`` case with ``num_tokens >= 1024`` in the newest stored
run of each given suite, rebuild the same inputs and callable and time it with
``triton.testing.do_bench`` (events, L2 flushed between calls, median), then print
normbench's median next to it. Target: agreement within 5%.

Usage: python3 scripts/crosscheck_do_bench.py --results-dir DIR [--suite rmsnorm] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton.testing

from normbench import store
from normbench.kernels.providers._family import family_of
from normbench.registry import PROVIDERS, load


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--suite", action="append", default=None)
    ap.add_argument("--provider", default="torch_compile")
    ap.add_argument("--min-tokens", type=int, default=1024)
    ap.add_argument("--out")
    args = ap.parse_args()
    base = Path(args.results_dir)
    suites = args.suite or ["rmsnorm", "fused_add_rmsnorm"]
    rows = []
    provider = load(PROVIDERS[args.provider].target)
    for run_dir in reversed(store.list_runs(base)):
        record = store.load_run(run_dir)
        if record.suite.name not in suites:
            continue
        suites.remove(record.suite.name)
        for c in record.cases:
            if c.provider != args.provider or c.status != "OK" or c.params["num_tokens"] < args.min_tokens:
                continue
            family = family_of(c.op)
            inputs = family.make_inputs(c.op, c.params, torch.device("cuda"), c.seed)
            fn = provider.make(c.op, c.params)
            ms = triton.testing.do_bench(lambda: fn(inputs), warmup=25, rep=200, return_mode="median")
            ours = c.metrics["time_us"].value
            rows.append({"suite": record.suite.name, "case": c.fingerprint, "normbench_us": ours,
                         "do_bench_us": ms * 1e3, "ratio": ours / (ms * 1e3)})
            del inputs
    worst = max((abs(r["ratio"] - 1) for r in rows), default=float("nan"))
    for r in rows:
        print(f"{r['case'][:90]:90s} normbench {r['normbench_us']:9.2f} us  do_bench {r['do_bench_us']:9.2f} us  ratio {r['ratio']:.3f}")
    print(f"{len(rows)} cases; worst disagreement {100 * worst:.1f}% (target: within 5%)")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "worst_rel_diff": worst}, indent=1))


if __name__ == "__main__":
    main()
