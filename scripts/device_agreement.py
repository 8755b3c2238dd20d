"""Per-device agreement of a sharded run with a single-GPU run of the same suite.

    python scripts/device_agreement.py BASELINE_RUN SHARDED_RUN [--results-dir DIR]

For each device of the sharded run (``device_info.label``): how many OK cases ran
there, the median relative change of ``time_us`` against the baseline run, and
how many cases moved by more than 2% (split at 16 tokens, where kernels take a
few microseconds and launch-bound differences between two GPUs show most).
It separates "the sharding changed the numbers" (every device disagrees) from
"one GPU differs from the other" (only the device the baseline did not run on
disagrees). Verdicts with confidence intervals come from ``normbench compare``.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from normbench import store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline")
    ap.add_argument("sharded")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args()
    base_dir = store.results_dir(args.results_dir)
    base = store.load_run(store.resolve_run(args.baseline, base_dir))
    shard = store.load_run(store.resolve_run(args.sharded, base_dir))
    ref = {c.case_id: c for c in base.cases if c.status == "OK" and "time_us" in c.metrics}
    by_device: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for c in shard.cases:
        if c.status != "OK" or c.case_id not in ref or "time_us" not in c.metrics:
            continue
        label = (getattr(c, "device_info", None) or {}).get("label", "?")
        delta = c.metrics["time_us"].value / ref[c.case_id].metrics["time_us"].value - 1.0
        by_device[label].append((delta, int(c.params.get("num_tokens", 0))))
    print(f"{shard.run_id} vs {base.run_id}")
    print("| device | cases | median Δ | |Δ| > 2% | of which <= 16 tokens |")
    print("|---|--:|--:|--:|--:|")
    for label, rows in sorted(by_device.items()):
        big = [r for r in rows if abs(r[0]) > 0.02]
        print(f"| {label} | {len(rows)} | {100 * statistics.median(d for d, _ in rows):+.2f}% | {len(big)} | "
              f"{sum(1 for _, n in big if n <= 16)} |")


if __name__ == "__main__":
    main()
