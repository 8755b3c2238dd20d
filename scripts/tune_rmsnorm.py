#!/usr/bin/env python3
"""Time the launch configs of normbench's Triton RMSNorm on a GPU; print the best and the heuristic's.

Usage (repository root, CUDA GPU; the package need not be installed)::

    python3 scripts/tune_rmsnorm.py [--out FILE] [--quick] [--peers flashinfer,liger,quack,torch_compile]
                                    [--hidden 2880,4096,7168,8192] [--tokens 1,16,...] [--budget SECONDS]
    python3 scripts/tune_rmsnorm.py --table-from FILE   # the TUNED table of a (partial) JSON, no GPU

For rms_norm and fused_add_rms_norm (bf16) at every hidden_size x num_tokens it times the
candidate ``Config``s of ``normbench.kernels.rmsnorm`` (num_warps, rows per tile, persistent
grid, PDL; chunk size for rows too long for registers) and prints, per shape, the best
config with its us / GB/s / % of 3.0 TB/s, the heuristic's config and time, and the ratio.
It ends with a ``TUNED = {...}`` table to paste into kernels/rmsnorm.py and writes every
timing to JSON (default ``tune_rmsnorm.json``), rewritten after every shape so a run cut
short still leaves its results. About 90 s on an H100 (a third of it compiling); past
``--budget`` seconds the remaining shapes get the ``--quick`` candidates.

Timing: one CUDA graph of G launches, each on its own input set (x, residual, weight; the
outputs are one buffer reused by every launch, as the triton provider's factory and vLLM's
benchmark reuse theirs), replayed after an L2 flush (a 256 MiB memset
enqueued before the start event, so the GPU never idles between the events); the time
per call is (end - start) / G, and a config's time is the median of 25 replays. Back to
back launches in one graph are how a model runs and let PDL overlap them, as in the
anchor measurements. Bytes are ``normbench.ops`` bytes_moved (each tensor once).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch


# This checkout's kernels, installed or not (normbench/__init__.py maps kernels/ to
# normbench.kernels in a source checkout).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import normbench.kernels.rmsnorm as rn  # noqa: E402
import normbench.ops as nops  # noqa: E402

Config = rn.Config

PEAK_GBPS = 3000.0  # H100 SXM device copy (anchors.md); % columns are against this
L2_FLUSH_BYTES = 256 << 20
TARGET_GRAPH_US = 200.0  # launches per graph chosen so one replay lasts about this long
REPLAYS = 25
HIDDEN = (2880, 4096, 7168, 8192)
TOKENS = (1, 16, 128, 1024, 4096, 16384, 65536)
EXTRA = ((32768, (1, 128, 4096, 32768)),)  # long rows: the chunked kernel (fused-add suite)
SENTINEL = 2**31 - 1


@functools.lru_cache(maxsize=None)
def _flush_buffer(device: torch.device) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)


class Bench:
    """Input sets and the graph timing of one (op, hidden, tokens) shape."""

    def __init__(self, residual: bool, hidden: int, tokens: int, device: torch.device):
        self.residual, self.hidden, self.tokens = residual, hidden, tokens
        params = {"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "residual": residual, "eps": 1e-6}
        self.bytes = nops.OPS["rms_norm"].bytes_moved(params)
        est_us = self.bytes / (2.5e3 * 1e3) + 2.0  # 2.5 TB/s plus launch latency
        self.launches = max(2, min(64, round(TARGET_GRAPH_US / est_us)))
        g, m, n = self.launches, tokens, hidden
        mk = lambda: torch.randn(g * m, n, device=device, dtype=torch.bfloat16)  # noqa: E731
        self.x, self.w = mk(), (1 + 0.1 * torch.randn(g, n, device=device)).to(torch.bfloat16)
        self.res = mk() if residual else None
        # One output buffer for all launches, as the triton provider's factory reuses it.
        self.out = torch.empty(m, n, device=device, dtype=torch.bfloat16)
        self.res_out = torch.empty_like(self.out) if residual else None
        self.flush = _flush_buffer(device)

    def sets(self):
        m = self.tokens
        for i in range(self.launches):
            s = slice(i * m, (i + 1) * m)
            yield {
                "x": self.x[s], "weight": self.w[i], "out": self.out,
                "residual": self.res[s] if self.residual else None,
                "residual_out": self.res_out,
            }

    def time_fn(self, call) -> float:
        """Median us per call of ``call(set)`` over graph replays (see module docstring)."""
        sets = list(self.sets())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for s in sets[:2]:  # compile / JIT / autotune outside the graph
                call(s)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for s in sets:
                call(s)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(REPLAYS + 3)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(REPLAYS + 3)]
        for st, en in zip(starts, ends):
            self.flush.zero_()
            st.record()
            graph.replay()
            en.record()
        torch.cuda.synchronize()
        times = [st.elapsed_time(en) * 1e3 / self.launches for st, en in zip(starts[3:], ends[3:])]
        del graph
        return statistics.median(times)

    def time_config(self, cfg: Config | None) -> float:
        def call(s):
            rn.rms_norm(
                s["x"], s["weight"], 1e-6, s["residual"], out=s["out"], residual_out=s["residual_out"], config=cfg
            )

        return self.time_fn(call)

    def time_peer(self, name: str) -> float:
        op = "fused_add_rms_norm" if self.residual else "rms_norm"
        params = {"num_tokens": self.tokens, "hidden_size": self.hidden, "dtype": "bfloat16",
                  "residual": self.residual, "eps": 1e-6}
        if name == "torch_compile":  # the HF formula under torch.compile, as providers.torch_ops
            fn = torch.compile(rn.IMPLS["torch_naive"][op](params))
        else:
            fn = rn.IMPLS[name][op](params)

        def call(s):
            inputs = {"x": s["x"], "weight": s["weight"]}
            if self.residual:
                inputs["residual"] = s["residual"]
            fn(inputs)

        return self.time_fn(call)

    def gbps(self, us: float) -> float:
        return self.bytes / (us * 1e3)


def candidates(hidden: int, tokens: int, pdl: bool, sms: int, quick: bool) -> list[Config]:
    """Launch configs worth timing at one bf16 shape."""
    block = 1 << (hidden - 1).bit_length()
    out: list[Config] = []
    tiles_grids = [0] if tokens <= 2 * sms else ([0, 4] if quick else [0, 1, 2, 4, 8])
    if block * 2 > rn.MAX_RESIDENT_BYTES:  # chunked kernel
        for chunk in (2048, 4096, 8192):
            for epl in (8, 16) if not quick else (16,):
                nw = chunk // (32 * epl)
                for grid in [0, 1, 2, 4] if tokens > 2 * sms else [0]:
                    out.append(Config(chunk, nw, 1, grid, pdl))
        return out
    for rows in (1, 2) if tokens >= 1024 else (1,):
        for epl in (8, 16, 32, 64) if not quick else (8, 16, 32):
            # epl = values per thread; sm_90 ptxas: 2-row tiles at 8 lose 16-byte vectors
            # and spill, and anything past 64 spills.
            nw = rows * block // (32 * epl)
            if not 1 <= nw <= 32 or (rows > 1 and epl not in (16, 32)):
                continue
            for grid in tiles_grids:
                out.append(Config(block, nw, rows, grid, pdl))
    return out


def fmt(cfg: Config | None) -> str:
    return cfg.short() if cfg is not None else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tune_rmsnorm.json", help="JSON file for every timing")
    ap.add_argument("--quick", action="store_true", help="fewer candidates (about a third of the time)")
    ap.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--no-extra", action="store_true", help="skip hidden 32768 (chunked kernel)")
    ap.add_argument(
        "--peers", default="", help="comma list to time too: flashinfer,liger,quack,vllm,torch_compile (adds JIT time)"
    )
    ap.add_argument("--budget", type=float, default=110.0, help="seconds; past it, shapes get --quick candidates")
    ap.add_argument("--table-from", metavar="FILE", help="print the TUNED table of a JSON written earlier and exit")
    args = ap.parse_args()
    if args.table_from:
        print(tuned_table(json.loads(Path(args.table_from).read_text())["records"]))
        return 0
    if not torch.cuda.is_available():
        print("tune_rmsnorm needs a CUDA GPU", file=sys.stderr)
        return 2

    t0 = time.time()
    device = torch.device("cuda", torch.cuda.current_device())
    sms, pdl_ok = rn.device_facts(device)
    import triton

    env = {"gpu": torch.cuda.get_device_name(device), "sms": sms, "pdl": pdl_ok,
           "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda}
    print(f"# {env}", flush=True)
    shapes = [(h, t) for h in map(int, args.hidden.split(",")) for t in map(int, args.tokens.split(","))]
    if not args.no_extra:
        shapes += [(h, t) for h, ts in EXTRA for t in ts]
    peers = [p for p in args.peers.split(",") if p]
    records = []
    header = (f"{'op':5} {'tokens x hidden':>15} | {'best config':26} {'us':>8} {'GB/s':>6} {'%':>4} | "
              f"{'heuristic':26} {'us':>8} {'heur/best':>9} | {'no-PDL best':>11}")
    print(header + ("".join(f" | {p:>10}" for p in peers)), flush=True)
    for residual in (False, True):
        for hidden, tokens in shapes:
            quick = args.quick or time.time() - t0 > args.budget
            bench = Bench(residual, hidden, tokens, device)
            timed: dict[Config, float] = {}

            def run(cfg: Config) -> float:
                if cfg not in timed:
                    try:
                        timed[cfg] = bench.time_config(cfg)
                    except Exception as e:  # a config that does not compile or launch
                        print(f"  {fmt(cfg)}: {type(e).__name__}: {e}", file=sys.stderr)
                        timed[cfg] = math.inf
                return timed[cfg]

            for cfg in candidates(hidden, tokens, pdl_ok, sms, quick):
                run(cfg)
            ranked = sorted(timed, key=timed.get)
            # PDL is timed on the leaders only: it shifts every config by about the same amount.
            no_pdl = {}
            if pdl_ok:
                for cfg in ranked[:3]:
                    alt = dataclasses.replace(cfg, pdl=False)
                    no_pdl[alt] = run(alt)
            heur = rn.default_config(tokens, hidden, 2, residual, pdl_ok)
            heur_us = run(heur)
            best = min(timed, key=timed.get)
            best_no_pdl = min(no_pdl.values()) if no_pdl else math.nan
            peer_us = {}
            for p in peers:
                try:
                    peer_us[p] = bench.time_peer(p)
                except Exception as e:
                    print(f"  peer {p}: {type(e).__name__}: {e}", file=sys.stderr)
                    peer_us[p] = math.nan
            us = timed[best]
            print(
                f"{'add' if residual else 'norm':5} {f'{tokens}x{hidden}':>15} | {fmt(best):26} {us:8.2f} "
                f"{bench.gbps(us):6.0f} {100 * bench.gbps(us) / PEAK_GBPS:4.0f} | {fmt(heur):26} {heur_us:8.2f} "
                f"{heur_us / us:9.3f} | {best_no_pdl:11.2f}" + "".join(f" | {peer_us[p]:10.2f}" for p in peers),
                flush=True,
            )
            records.append({
                "op": "fused_add_rms_norm" if residual else "rms_norm", "residual": residual,
                "hidden_size": hidden, "num_tokens": tokens, "dtype": "bfloat16", "bytes": bench.bytes,
                "launches_per_graph": bench.launches,
                "best": {"config": best.__dict__, "us": us, "gbps": bench.gbps(us)},
                "heuristic": {"config": heur.__dict__, "us": heur_us},
                "peers_us": peer_us,
                "all": [{"config": c.__dict__, "us": t} for c, t in sorted(timed.items(), key=lambda kv: kv[1])],
            })
            del bench
            torch.cuda.empty_cache()
            tmp = Path(args.out + ".tmp")
            tmp.write_text(json.dumps({"env": env, "records": records}, indent=1))
            tmp.replace(args.out)

    print(f"# wrote {args.out}; {time.time() - t0:.0f} s", flush=True)
    print(tuned_table(records))
    return 0


def tuned_table(records: list[dict]) -> str:
    """A ``TUNED`` literal for kernels/rmsnorm.py from the best config of each shape."""
    table: dict[tuple[bool, int], list[tuple[int, dict]]] = {}
    for r in records:
        table.setdefault((r["residual"], r["hidden_size"]), []).append((r["num_tokens"], r["best"]["config"]))
    lines = ["TUNED: dict[tuple[bool, int], tuple[tuple[int, Config], ...]] = {"]
    for key in sorted(table):
        rows = sorted(table[key])
        # Each swept token count bounds the range up to the next one; the last covers the rest.
        bounds = [t for t, _ in rows[:-1]] + [SENTINEL]
        lines.append(f"    {key}: (")
        for bound, (_, c) in zip(bounds, rows):
            lines.append(
                f"        ({bound}, Config({c['block_n']}, {c['num_warps']}, {c['rows']}, "
                f"{c['programs_per_sm']}, {c['pdl']})),"
            )
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
