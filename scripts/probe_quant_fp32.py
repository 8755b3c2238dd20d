"""Why our fp32-input ``scaled_quant`` replays slower than its kernel runs (a diagnostic, not a test).

On the H100 (2026-12-07) ncu timed our static-scale fp8 kernel on a float32 4096 x 8192 input at
55.1 us (torch.compile 54.7), while graph replay, as every suite times, gave 70.5 us (torch.compile
56.2); static int8 replayed at 103 us. Per-token quantization, the same kernel and launch config but
for the scale mode, replayed at 59.4 us. float32 inputs take the untuned formula config (PDL on).
This times the float32 and bfloat16 cases, each under launch variants of that config, the way the
suites do (``normbench.timing.time_cuda``: CUDA-graph replay over input sets spanning 2 x L2) and
also with events + L2 flush, and prints median us and GB/s per (case, variant, timer):

    python3 scripts/probe_quant_fp32.py
"""

from __future__ import annotations

from dataclasses import replace

import torch

from normbench.kernels.quant.configs import default_config
from normbench.kernels.quant.impls import OWN_IMPLS
from normbench.kernels.quant.reference import FAMILY
from normbench.ops import OPS
from normbench.timing import input_sets_needed, l2_bytes, summarize, time_cuda

T, H = 4096, 8192
dev = torch.device("cuda")
rotate = 2 * l2_bytes()
for dtype in ("float32", "bfloat16"):
    elem = 4 if dtype == "float32" else 2
    for qd, static, gran in (("fp8", True, "per_tensor"), ("int8", True, "per_tensor"), ("fp8", False, "per_token")):
        params = OPS["scaled_quant"].complete({"num_tokens": T, "hidden_size": H, "dtype": dtype, "quant_dtype": qd,
                                               "static_scale": static, "scale_granularity": gran})
        base = default_config(T, H, elem, "scaled_quant", False, True)
        variants = {"default": None, "pdl_off": replace(base, pdl=False)}
        for w in (4, 8, 16):
            variants[f"w{w}"] = replace(base, num_warps=w)
            variants[f"w{w}_pdl_off"] = replace(base, num_warps=w, pdl=False)
        variants["r2"] = replace(base, rows_per_program=2)
        variants["p4s2"] = replace(base, programs_per_sm=4, stages=2)
        inputs = FAMILY.make_inputs("scaled_quant", params, dev, 7)
        nbytes = OPS["scaled_quant"].bytes_moved(params)
        sets = [{k: v.clone() for k, v in inputs.items()} for _ in range(input_sets_needed(nbytes, rotate))]
        for name, cfg in variants.items():
            fn = OWN_IMPLS["triton"]["scaled_quant"]({**params, "launch_config": cfg})
            fns = [(lambda s=s: fn(s)) for s in sets]
            line = f"{dtype:8s} {qd:4s} {'static' if static else gran:10s} {name:12s} cfg={(cfg or base).short()}"
            for mode in ("graph", "events"):
                try:
                    us = summarize(time_cuda(fns, 30, 5, mode, bytes_per_call=nbytes).samples_us)["median"]
                    line += f"  {mode} {us:7.2f} us {nbytes / us / 1e3:6.0f} GB/s"
                except Exception as e:  # noqa: BLE001 - a diagnostic: say it and go on
                    line += f"  {mode} {type(e).__name__}: {str(e)[:80]}"
            print(line, flush=True)
        del sets, inputs
        torch.cuda.empty_cache()
