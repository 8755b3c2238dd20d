#!/usr/bin/env python
"""Tune normbench's fused RMSNorm + NVFP4 Triton kernels (GPU), or count their SASS (offline).

GPU run, from the repository root (about 2 minutes with a cold Triton cache; the
``--budget`` guard keeps it under ~150 s by timing only the formula config on the
shapes it has not reached):

    python scripts/tune_nvfp4.py --out docs/results/h200/tune_nvfp4-v5.json
    bash scripts/gpu_bench.sh tune:nvfp4            # the same, packed by the bench script

1. Device, Triton version, device-to-device copy bandwidth (1 GiB).
2. Compiles every candidate of the fast kernel in ``--jobs`` worker processes.
3. Correctness on the GPU, before any timing (exit code 1 if anything fails):
   the fast kernel's encoder helpers (packed-f16 E2M1 PTX, E4M3 cvt) against
   their float64 model on ~200k probes incl. every threshold, f16 tie and
   signed zero (must be identical); ``FAMILY.check`` of the fast kernel at
   several shapes, dtypes and configs (+ residual_out bit-exact), and of the
   generic kernel with ``round_norm``; and, while timing, every config's bytes
   against the first config's on the same input (configs must agree exactly).
4. Timing exactly as the suites do (``normbench.timing.time_cuda``: one CUDA graph
   cycling over input sets spanning 2 x L2, no flush): for hidden_size
   {2048, 4096, 8192} x num_tokens {1, 16, 128, 1024, 4096, 16384}, bf16, with and
   without the residual add. Round 1 times every candidate (warps x programs per
   SM x prefetch, PDL on) with 10 replays; round 2 re-times the 3 fastest and the
   formula's config with 30. Also per shape: the best config without PDL, the
   generic kernel at its heuristic (the previous kernel) and a device-to-device
   copy of the same number of bytes in the same rotation (what this transfer
   size allows at all: launch, ramp-up and tail included).
5. Prints the table and a paste-ready ``TUNED_FAST = {...}`` literal for
   kernels/nvfp4.py; writes everything to ``--out`` (JSON, rewritten per shape).

Offline, no GPU (``--sass``): compiles the fast kernel's candidates and the
generic kernel for sm_90 with the installed Triton and prints registers, SASS
instructions in the row loop and instructions per element.

Works with normbench installed (``pip install -e .``) or from a checkout (it then
loads ``kernels/`` as ``normbench.kernels`` itself).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HIDDEN = (2048, 4096, 8192)
TOKENS = (1, 16, 128, 1024, 4096, 16384)
#: One-wave shapes: every program normalizes at most one row, so only the warps matter.
FEW_TOKENS = 256
REPS_1, REPS_2, FINALISTS = 10, 30, 3


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
                       ("normbench.timing", root / "normbench" / "timing.py"),
                       ("normbench.kernels.nvfp4", root / "kernels" / "nvfp4.py")):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return sys.modules["normbench.kernels.nvfp4"], sys.modules["normbench.ops"]


def warp_options(hidden: int) -> list[int]:
    """Warps per program that give 16..64 elements per thread. (At 8 a program has
    more threads than blocks, Triton spreads a block's words over lanes and the row
    costs ~30 instructions per element: see ``--sass``.)"""
    block_n = 16 * max(4, 1 << max(hidden // 16 - 1, 0).bit_length())
    return [w for w in (1, 2, 4, 8, 16, 32) if 16 <= block_n // (32 * w) <= 64]


def candidates(nvfp4, hidden: int, tokens: int) -> list:
    """Fast-kernel configs timed at one shape (PDL on; see the module docstring)."""
    FC = nvfp4.FastConfig
    if tokens <= FEW_TOKENS:
        return [FC(w, 1, False, True) for w in warp_options(hidden)]
    out = []
    for w in warp_options(hidden):
        for p in (1, 2, 4, 8, 16):
            if 8 <= p * w <= 32:
                out += [FC(w, p, False, True), FC(w, p, True, True)]
    return out


# --------------------------------------------------------------------------- offline SASS

def sass_report(nvfp4) -> int:
    """Compile candidates for sm_90 (no GPU) and print registers and instructions per element."""
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    nvbin = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"

    def compile_sass(fn, sig, const, div, warps):
        names = fn.arg_names
        full = {nm: "constexpr" for nm in names}
        full.update(sig)
        attrs = {(names.index(d),): [["tt.divisibility", 16]] for d in div}
        ck = triton.compile(ASTSource(fn, full, const, attrs), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": warps})
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "nvfp4_sass.cubin"
        tmp.write_bytes(ck.asm["cubin"])
        sass = subprocess.run([str(nvbin / "nvdisasm"), "-c", str(tmp)], capture_output=True, text=True).stdout
        usage = subprocess.run([str(nvbin / "cuobjdump"), "-res-usage", str(tmp)], capture_output=True, text=True).stdout
        return sass, int(re.search(r"REG:(\d+)", usage).group(1))

    def parse(sass):
        ops, labels, lines = [], {}, sass.splitlines()
        for j, line in enumerate(lines):
            lab = re.match(r"\s*(\.L_x_\d+):", line)
            if lab:
                for nxt in lines[j + 1:]:
                    a = re.match(r"\s*/\*([0-9a-f]{4,})\*/", nxt)
                    if a:
                        labels[lab.group(1)] = int(a.group(1), 16)
                        break
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]\s+)?([A-Z][A-Z0-9_.]*)(.*)", line)
            if m:
                ops.append((int(m.group(1), 16), m.group(3), m.group(4)))
        return ops, labels

    def loop_count(sass):
        """Instructions of the largest loop (backward branch to a label): the row loop."""
        ops, labels = parse(sass)
        loops = [(labels[t.group(1)], a) for a, op, rest in ops if op == "BRA"
                 for t in [re.search(r"(\.L_x_\d+)", rest)] if t and labels.get(t.group(1), a + 1) < a]
        lo, hi = max(loops, key=lambda t: t[1] - t[0])
        body = [op for a, op, _ in ops if lo <= a <= hi and not op.startswith("NOP")]
        return len(body), collections.Counter(o.split(".")[0] for o in body)

    def data_path_count(sass):
        """Instructions up to the first unconditional EXIT (the generic kernel's data branch)."""
        ops, _ = parse(sass)
        n = 0
        for a, op, rest in ops:
            if not op.startswith("NOP"):
                n += 1
            if op == "EXIT":
                break
        return n

    sig_common = {"gs_ptr": "*fp32", "q_ptr": "*u8", "s_ptr": "*u8", "eps": "fp32"}
    print(f"triton {triton.__version__}, target sm_90; bf16; fast kernel: row-loop SASS instructions "
          f"per element (elements per thread = hidden / (32 warps)); programs/SM from registers only")
    print(f"{'res':>3} {'hidden':>6} {'warps':>5} {'pf':>2} | {'regs':>4} {'elem/thr':>8} {'loop':>5} "
          f"{'instr/elem':>10} {'progs/SM':>8} | top opcodes")
    for residual in (False, True):
        for hidden in HIDDEN:
            bk = max(4, 1 << (hidden // 16 - 1).bit_length())
            for warps in warp_options(hidden):
                for prefetch in (False, True):
                    sig = {f"{p}_ptr": "*bf16" for p in ("x", "res", "res_out", "w")}
                    sig.update(sig_common)
                    for nm in ("M", "N", "x_stride", "res_stride", "res_out_stride", "q_stride", "M_PAD", "K_PAD",
                               "K_TILES"):
                        sig[nm] = "i32"
                    div = ["x_ptr", "res_ptr", "res_out_ptr", "w_ptr", "gs_ptr", "q_ptr", "s_ptr", "N", "x_stride",
                           "res_stride", "res_out_stride", "q_stride", "K_PAD"]
                    if (hidden // 64) % 16 == 0:
                        div.append("K_TILES")
                    const = dict(HAS_RES=residual, BLOCK_K=bk, EVEN_K=bk * 16 == hidden, PREFETCH=prefetch,
                                 PDL=False, ASM=True)
                    sass, regs = compile_sass(nvfp4._nvfp4_fast_kernel, sig, const, div, warps)
                    n, ops = loop_count(sass)
                    ept = bk * 16 / (32 * warps)
                    progs = min(64 // warps, 65536 // (max(regs, 1) * 32 * warps))
                    top = " ".join(f"{k}:{v}" for k, v in ops.most_common(8))
                    print(f"{'yes' if residual else 'no':>3} {hidden:>6} {warps:>5} {int(prefetch):>2} | {regs:>4} "
                          f"{ept:>8.0f} {n:>5} {n / ept:>10.2f} {progs:>8} | {top}", flush=True)
    print("generic kernel (previous version) at its heuristic, data path to the first EXIT:")
    for residual in (False, True):
        for hidden in HIDDEN:
            rows, warps = nvfp4.nvfp4_config(16384, hidden)
            bk = max(4, 1 << (hidden // 16 - 1).bit_length())
            sig = {f"{p}_ptr": "*bf16" for p in ("x", "res", "res_out", "w")}
            sig.update(sig_common)
            for nm in ("M", "N", "x_stride", "res_stride", "res_out_stride", "q_stride", "num_data_programs",
                       "pad_row_start", "M_PAD", "K_PAD", "K_TILES"):
                sig[nm] = "i32"
            div = ["x_ptr", "res_ptr", "res_out_ptr", "w_ptr", "gs_ptr", "q_ptr", "s_ptr", "N", "x_stride",
                   "res_stride", "res_out_stride", "q_stride", "M_PAD", "K_PAD"]
            const = dict(HAS_RES=residual, BLOCK_K=bk, ROWS=rows, ZROWS=32, EXACT=False, ROUND_NORM=False)
            sass, regs = compile_sass(nvfp4._rms_norm_nvfp4_kernel, sig, const, div, warps)
            n = data_path_count(sass)
            ept = rows * bk * 16 / (32 * warps)
            print(f"{'yes' if residual else 'no':>3} {hidden:>6} rows {rows} warps {warps}: regs {regs}, "
                  f"{n} instructions, {n / ept:.2f}/elem at {ept:.0f} elem/thread", flush=True)
    return 0


# --------------------------------------------------------------------------- parallel compilation

_WORKER_DEVICE = None


def _compile_job(job):
    """Worker: compile one kernel variant into Triton's on-disk cache. ("fast", hidden,
    residual, config tuple): the fast kernel, without launching; ("prev", hidden,
    residual, tokens): the generic kernel at its heuristic, by one launch at the
    real shape (it specializes on the token count's divisibility)."""
    global _WORKER_DEVICE
    try:
        import torch

        nvfp4, _ = import_nvfp4()
        if _WORKER_DEVICE is None:
            _WORKER_DEVICE = torch.device("cuda", torch.cuda.current_device())
        kind, hidden, residual, arg = job
        if kind == "fast":
            nvfp4.compile_fast(hidden, torch.bfloat16, residual, nvfp4.FastConfig(*arg), _WORKER_DEVICE)
        else:
            x = torch.randn(arg, hidden, device=_WORKER_DEVICE).to(torch.bfloat16)
            w = torch.ones(hidden, device=_WORKER_DEVICE, dtype=torch.bfloat16)
            gs = torch.ones(1, device=_WORKER_DEVICE)
            nvfp4.rms_norm_nvfp4_quant_triton(x, w, gs, 1e-6, x.clone() if residual else None, fast=False)
            torch.cuda.synchronize()
        return job, None
    except Exception as e:  # reported; the main process compiles on first use
        return job, f"{type(e).__name__}: {str(e)[:300]}"


def compile_all(jobs_list, n_jobs: int) -> None:
    if n_jobs <= 0 or not jobs_list:
        return
    t0 = time.time()
    try:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            errors = [err for _, err in pool.map(_compile_job, jobs_list) if err]
    except Exception as e:  # a broken pool: kernels compile on first launch instead
        print(f"# parallel compilation failed ({type(e).__name__}: {e}); compiling on first use", flush=True)
        return
    print(f"# compiled {len(jobs_list)} kernel variants in {time.time() - t0:.0f} s with {n_jobs} processes"
          + (f"; {len(errors)} failed, first: {errors[0]}" if errors else ""), flush=True)


# --------------------------------------------------------------------------- GPU checks

def probe_values(torch):
    """float32 probes for the encoder: E2M1 thresholds and grid points +- a few float32
    ulps, float16 neighbours and exact f16 ties around them, zeros, f16 subnormals,
    values that overflow f16, random values; E4M3 midpoints; both signs."""
    thr = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0])
    bits = thr.view(torch.int32)
    near = torch.cat([(bits + d).view(torch.float32) for d in range(-4, 5)])
    h = thr.to(torch.float16).view(torch.int16)
    h_nb = torch.cat([(h + d).view(torch.float16).float() for d in (-2, -1, 1, 2)])
    ties = torch.cat([(h_nb.reshape(4, -1)[i] + thr) / 2 for i in range(4)])
    e4 = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    e4_mid = (e4[1:] + e4[:-1]) / 2
    e4b = e4_mid.view(torch.int32)
    e4_near = torch.cat([(e4b + d).view(torch.float32) for d in (-1, 0, 1)])
    special = torch.tensor([0.0, 1e-9, 3e-8, 6e-8, 1e-7, 5.9e-5, 6.2e-5, 448.0, 464.0, 1e5, 65504.0, 65520.0, 1e30,
                            float("inf")])
    g = torch.Generator().manual_seed(0)
    rnd = torch.cat([torch.randn(60000, generator=g) * 3, torch.rand(20000, generator=g) * 500,
                     torch.rand(10000, generator=g) * 2**-6])
    v = torch.cat([near, h_nb, ties, e4_near, special, rnd])
    v = torch.cat([v, -v])
    perm = torch.randperm(v.numel(), generator=g)  # every value lands in every slot of a word
    v = torch.cat([v, v[perm]])
    return v[: v.numel() // 8 * 8]


def check_cases(nvfp4) -> list:
    """(tokens, hidden, residual, dtype, fast configs: None = the default) checked on the GPU."""
    FC = nvfp4.FastConfig
    return [
        (1, 4096, False, "bfloat16", [None]),
        (300, 5120, True, "bfloat16", [None, FC(4, 1, True), FC(2, 2, False)]),
        (1024, 4096, False, "bfloat16", [None, FC(4, 1, True), FC(8, 2, False), FC(2, 8, True)]),
        (4096, 8192, True, "bfloat16", [None, FC(8, 1, True)]),
        (77, 2048, False, "float16", [None]),
        (257, 1536, True, "float16", [None, FC(2, 1, True)]),
    ]


def gpu_checks(torch, nvfp4, dev, cases, generic_cases=((1, 4096, False), (300, 5120, True))) -> list[str]:
    """Correctness on the GPU before any timing; returns failure messages."""
    fam = nvfp4.FAMILY
    failures = []
    v = probe_values(torch).to(dev)
    got = nvfp4.fast_encoder_probe(v)
    want = nvfp4.fast_encoder_model(v)
    for g, w, name in zip(got, want, ("E2M1 codes", "E4M3 values", "E4M3 bits")):
        bad = int((g != w).sum())
        print(f"  encoder probe: {name}: {bad} of {g.numel()} differ from the float64 model", flush=True)
        if bad:
            i = int(torch.nonzero(g != w)[0])
            src = v[i] if name == "E2M1 codes" else v[8 * i]
            failures.append(f"encoder probe {name}: {bad} wrong, first input {src.item()!r}: {g[i].item()} vs "
                            f"{w[i].item()}")
    for tokens, hidden, residual, dtype, cfgs in cases:
        op = "fused_add_rms_norm_nvfp4_quant" if residual else "rms_norm_nvfp4_quant"
        p = {"num_tokens": tokens, "hidden_size": hidden, "dtype": dtype, "eps": 1e-6, "residual": residual}
        inp = fam.make_inputs(op, p, dev, seed=7)
        ref = fam.reference(op, p, inp)
        first = None
        for cfg in cfgs:
            out = nvfp4.rms_norm_nvfp4_quant_triton(inp["x"], inp["weight"], inp["global_scale"], 1e-6,
                                                    inp["residual"] if residual else None, fast=True,
                                                    fast_config=cfg)
            res = fam.check(op, p, inp, out, ref, nvfp4.DEFAULT_TOLERANCES[dtype])
            tag = f"fast {tokens}x{hidden} {dtype} residual={residual} {cfg.name() if cfg else 'default'}"
            rates = {k: round(x, 5) for k, x in res.metrics.items() if "rate" in k or "dequant_rel" in k or "pad" in k}
            print(f"  check {tag}: {'ok' if res.ok else 'FAIL ' + res.message} {rates}", flush=True)
            if not res.ok:
                failures.append(f"{tag}: {res.message}")
            if residual and not torch.equal(out[2], ref[2]):
                failures.append(f"{tag}: residual_out differs from dtype(x + residual) in "
                                f"{int((out[2] != ref[2]).sum())} elements")
            flat = [t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t for t in out]
            if first is None:
                first = flat
            elif not all(torch.equal(a, b) for a, b in zip(first, flat)):
                print(f"  note {tag}: bytes differ from the first config's (tie flips; check passed)", flush=True)
    for tokens, hidden, residual in generic_cases:
        op = "fused_add_rms_norm_nvfp4_quant" if residual else "rms_norm_nvfp4_quant"
        p = {"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "eps": 1e-6, "residual": residual}
        inp = fam.make_inputs(op, p, dev, seed=7)
        ref = fam.reference(op, p, inp)
        out = nvfp4.IMPLS["triton"][op](dict(p, round_norm=True))(inp)
        res = fam.check(op, p, inp, out, ref, nvfp4.DEFAULT_TOLERANCES["bfloat16"])
        differ = int((out[0] != ref[0]).sum()) + int((out[1].view(torch.uint8) != ref[1].view(torch.uint8)).sum())
        print(f"  check generic round_norm {tokens}x{hidden} residual={residual}: "
              f"{'ok' if res.ok else 'FAIL ' + res.message}; {differ} bytes differ from the reference", flush=True)
        if not res.ok:
            failures.append(f"generic round_norm {tokens}x{hidden}: {res.message}")
    return failures


# --------------------------------------------------------------------------- timing

def copy_bandwidth(torch) -> float:
    """Device-to-device copy bandwidth, measured as normbench runs measure it (normbench.env)."""
    from normbench.env import measure_copy_bandwidth

    return measure_copy_bandwidth("cuda")["peak_bandwidth_gbps"]

class Shape:
    """One (residual, hidden, tokens) case: inputs rotated over sets spanning 2 x L2, as the suites."""

    def __init__(self, torch, nvfp4, ops, residual: bool, hidden: int, tokens: int, rotate: int, device):
        from normbench.timing import input_sets_needed

        self.residual, self.hidden, self.tokens = residual, hidden, tokens
        self.op = "fused_add_rms_norm_nvfp4_quant" if residual else "rms_norm_nvfp4_quant"
        self.params = {"num_tokens": tokens, "hidden_size": hidden, "dtype": "bfloat16", "eps": 1e-6,
                       "residual": residual, "quant_dtype": "nvfp4"}
        self.nbytes = ops._nvfp4_bytes(self.params)
        self.n_sets = input_sets_needed(self.nbytes, rotate)
        self.device = device
        base = nvfp4.FAMILY.make_inputs(self.op, self.params, device, seed=1234)
        self.sets = [{k: t.clone() for k, t in base.items()} for _ in range(self.n_sets)]

    def fns(self, nvfp4, **kw):
        res = self.residual

        def make(s):
            return lambda: nvfp4.rms_norm_nvfp4_quant_triton(
                s["x"], s["weight"], s["global_scale"], 1e-6, s["residual"] if res else None, **kw)

        return [make(s) for s in self.sets]

    def copy_fns(self, torch):
        """Device-to-device copies of the same total bytes (half read, half written), rotated the same way."""
        half = max(16, self.nbytes // 2)
        bufs = [(torch.empty(half, dtype=torch.uint8, device=self.device),
                 torch.empty(half, dtype=torch.uint8, device=self.device)) for _ in range(self.n_sets)]
        return [lambda a=a, b=b: b.copy_(a) for a, b in bufs]


def time_us(fns, reps: int) -> float:
    from normbench.timing import time_cuda

    res = time_cuda(fns, repetitions=reps, warmup=5, mode="graph")
    return statistics.median(res.samples_us)


def safe_time(fns, reps: int) -> float:
    """``time_us``, or NaN (printed) when it fails."""
    try:
        return time_us(fns, reps)
    except Exception as e:
        print(f"  timing failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
        return math.nan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "tune_nvfp4.json"))
    ap.add_argument("--quick", action="store_true", help="hidden 4096/8192 x tokens 128/4096 only")
    ap.add_argument("--sass", action="store_true", help="offline: SASS counts for sm_90 (no GPU needed)")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    ap.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1), help="compile processes (0: serial)")
    ap.add_argument("--budget", type=float, default=150.0,
                    help="seconds; past it, remaining shapes time only the formula and previous kernel")
    args = ap.parse_args()

    os.environ.pop("TRITON_INTERPRET", None)
    nvfp4, ops = import_nvfp4()
    if args.sass:
        return sass_report(nvfp4)

    import torch
    import triton
    from normbench.timing import l2_bytes

    if not torch.cuda.is_available():
        print("needs a CUDA GPU (or --sass)", file=sys.stderr)
        return 2
    t0 = time.time()
    dev = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    l2 = l2_bytes()
    print(f"{dev}, {sms} SMs, L2 {l2 / 2**20:.0f} MiB, torch {torch.__version__}, triton {triton.__version__}")
    copy_gbps = copy_bandwidth(torch)
    print(f"copy bandwidth: {copy_gbps:.0f} GB/s (1 GiB device-to-device)", flush=True)

    hidden_list = (4096, 8192) if args.quick else HIDDEN
    tokens_list = (128, 4096) if args.quick else TOKENS
    # the target shapes (>= 4096 tokens) first, so that the budget cuts the least important ones
    shapes = sorted(((r, h, t) for r in (False, True) for h in hidden_list for t in tokens_list),
                    key=lambda s: (s[2] < 4096, s[0], -s[2], s[1]))
    jobs = set()
    for r, h, t in shapes:
        for c in candidates(nvfp4, h, t) + [nvfp4.fast_config_formula(t, h)]:
            jobs.add(("fast", h, r, (c.num_warps, 1, c.prefetch, c.pdl)))
            jobs.add(("fast", h, r, (c.num_warps, 1, c.prefetch, False)))
        jobs.add(("prev", h, r, t))
    # the slow compiles (many registers: few warps) first
    compile_all(sorted(jobs, key=lambda j: (j[0] != "fast", j[3][0] if j[0] == "fast" else 0, j[1], j[2])),
                args.jobs)

    failures = [] if args.no_check else gpu_checks(torch, nvfp4, torch.device("cuda"), check_cases(nvfp4))
    print(f"# checks done at {time.time() - t0:.0f} s", flush=True)

    results = []
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    cuda = torch.device("cuda")
    for residual, hidden, tokens in shapes:
        shape = Shape(torch, nvfp4, ops, residual, hidden, tokens, 2 * l2, cuda)
        row = tune_shape(torch, nvfp4, shape, time.time() - t0 > args.budget, copy_gbps, failures)
        del shape
        torch.cuda.empty_cache()
        if row is None:
            continue
        results.append(row)
        report = {
            "device": dev, "sms": sms, "l2_bytes": l2, "torch": torch.__version__, "triton": triton.__version__,
            "copy_gbps": copy_gbps, "dtype": "bfloat16",
            "timing": "normbench.timing.time_cuda (CUDA graph over input sets spanning 2 x L2, no flush); "
                      f"round 1: {REPS_1} replays, round 2 and baselines: {REPS_2} replays; medians",
            "check_failures": failures, "results": results, "elapsed_s": time.time() - t0,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    print_summary(results, dev)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    if failures:
        print("CORRECTNESS FAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


HEADER = (f"{'res':>3} {'hidden':>6} {'tokens':>6} | {'best config':>16} {'us':>8} {'GB/s':>6} {'%copy':>5} "
          f"{'%size':>5} | {'prev us':>8} {'speedup':>7} | {'formula':>16} {'x best':>6} | {'no-PDL x':>8}")


def tune_shape(torch, nvfp4, shape, late: bool, copy_gbps: float, failures: list) -> dict | None:
    """Time one shape's candidates (all, or only the formula's when ``late``), print its row."""
    residual, hidden, tokens = shape.residual, shape.hidden, shape.tokens
    formula = nvfp4.fast_config_formula(tokens, hidden)
    cands = [formula] if late else candidates(nvfp4, hidden, tokens)
    if formula not in cands:
        cands.append(formula)
    ref_out = None  # every config must write the same bytes as the first, on set 0
    round1 = {}
    for cfg in cands:
        try:
            out = shape.fns(nvfp4, fast=True, fast_config=cfg)[0]()
            flat = [t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t for t in out]
            if ref_out is None:
                ref_out = flat
            elif not all(torch.equal(a, b) for a, b in zip(ref_out, flat)):
                # Configs reduce a row in different orders, so rstd can differ in its last bit
                # and flip a code at a rounding tie; FAMILY.check (above) is the correctness gate.
                print(f"  note {hidden}x{tokens} residual={residual} {cfg.name()}: bytes differ from "
                      f"{cands[0].name()}'s (tie flips)", flush=True)
            round1[cfg] = time_us(shape.fns(nvfp4, fast=True, fast_config=cfg), REPS_1)
        except Exception as e:  # e.g. out of resources: the config is skipped
            print(f"  skip {cfg.name()}: {type(e).__name__}: {str(e)[:160]}", flush=True)
    if not round1:
        failures.append(f"{hidden}x{tokens} residual={residual}: no config ran")
        return None
    finalists = sorted(round1, key=round1.get)[:FINALISTS]
    if formula in round1 and formula not in finalists:
        finalists.append(formula)
    final = {cfg: safe_time(shape.fns(nvfp4, fast=True, fast_config=cfg), REPS_2) for cfg in finalists}
    final = {cfg: t for cfg, t in final.items() if math.isfinite(t)} or {c: round1[c] for c in finalists}
    best = min(final, key=final.get)
    us = final[best]
    no_pdl = safe_time(shape.fns(nvfp4, fast=True, fast_config=dataclasses.replace(best, pdl=False)), REPS_2)
    prev = safe_time(shape.fns(nvfp4, fast=False), REPS_2)
    copy_us = safe_time(shape.copy_fns(torch), REPS_2)
    formula_us = final.get(formula, round1.get(formula, math.inf))
    gbps = shape.nbytes / (us * 1e-6) / 1e9
    row = {
        "residual": residual, "hidden_size": hidden, "num_tokens": tokens, "bytes": shape.nbytes,
        "input_sets": shape.n_sets, "best": best.name(), "best_config": dataclasses.asdict(best), "best_us": us,
        "best_gbps": gbps, "best_pct_copy": 100 * gbps / copy_gbps, "copy_same_bytes_us": copy_us,
        "pct_of_same_size_copy": 100 * copy_us / us, "previous_kernel_us": prev, "formula": formula.name(),
        "formula_us": formula_us, "no_pdl_us": no_pdl,
        "round1": {c.name(): t for c, t in sorted(round1.items(), key=lambda kv: kv[1])},
        "round2": {c.name(): t for c, t in sorted(final.items(), key=lambda kv: kv[1])},
        "budget_cut": late,
    }
    print(f"{'yes' if residual else 'no':>3} {hidden:>6} {tokens:>6} | {best.name():>16} {us:>8.2f} {gbps:>6.0f} "
          f"{100 * gbps / copy_gbps:>5.1f} {100 * copy_us / us:>5.1f} | {prev:>8.2f} {prev / us:>7.2f} | "
          f"{formula.name():>16} {formula_us / us:>6.2f} | {no_pdl / us:>8.2f}"
          + ("  (budget: formula only)" if late else ""), flush=True)
    return row


def print_summary(results: list, dev: str) -> None:
    """The paste-ready table literal and the shapes that miss 90% of copy."""
    print("\n# %copy: bytes model / time against the 1 GiB copy; %size: a copy of the same bytes in the same "
          "rotation / time (100 = as fast as a copy of this size)")
    print(f"# paste into kernels/nvfp4.py (measured on {dev}):")
    print("TUNED_FAST = {")
    for r in sorted(results, key=lambda r: (r["residual"], r["hidden_size"], r["num_tokens"])):
        c = r["best_config"]
        print(f"    ({r['residual']}, {r['hidden_size']}, {r['num_tokens']}): FastConfig({c['num_warps']}, "
              f"{c['programs_per_sm']}, {c['prefetch']}, {c['pdl']}),  # {r['best_us']:.2f} us, "
              f"{r['best_pct_copy']:.1f}% copy")
    print("}")
    if not results:
        return
    worst = max(results, key=lambda r: r["formula_us"] / r["best_us"])
    print(f"# formula within {100 * (worst['formula_us'] / worst['best_us'] - 1):.1f}% of the best everywhere "
          f"(worst: {worst['hidden_size']}x{worst['num_tokens']} residual={worst['residual']})")
    below = [r for r in results if r["num_tokens"] >= 4096 and r["best_pct_copy"] < 90]
    print("# >= 4096 tokens below 90% of copy: "
          + (", ".join(f"{'r' if r['residual'] else ''}{r['hidden_size']}x{r['num_tokens']} "
                       f"{r['best_pct_copy']:.1f}% ({r['pct_of_same_size_copy']:.0f}% of a same-size copy)"
                       for r in below) or "none"))


if __name__ == "__main__":
    sys.exit(main())
