"""Which launches of the generic NVFP4 kernel get rows wrong on this GPU (a diagnostic, not a test).

On the H100 (2026-12-07, ``pytest -m gpu tests/kernels``) the generic kernel failed the float64
check for float32 rows without a residual at 1, 7 and 33 tokens (hidden 16 and 48: block scales off
by up to 3x), and passed at 1024 and 65537 tokens and with a residual. The default launch differs
there in ``rows_per_program`` (1 below 264 tokens, 2 above), so this runs the failing shapes, and
float16 for contrast, under each launch variant below and prints one line per (shape, variant):
``ok`` or the check's message. Its first run (``docs/results/h100/probes/``) found only the split load at
rows 1 x 2 warps wrong; the strided load is now the float32 default (``default``; ``split`` is the old
path). Run on a GPU machine (CPU: under TRITON_INTERPRET=1, all pass):

    python3 scripts/probe_nvfp4_fp32.py
"""
import torch

from normbench.kernels.nvfp4 import reference as R
from normbench.kernels.nvfp4.impls import _triton
from normbench.kernels.base import Tolerance
from normbench.suite import DEFAULT_TOLERANCE

fam = R.NVFP4Family()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
variants = {
    "default": {},  # float32: strided pairs since 2026-12-07 (the split load below failed on the H100)
    "split": {"strided_pairs": False},
    "warps1": {"num_warps": 1},
    "warps4": {"num_warps": 4},
    "rows2": {"rows_per_program": 2},
    "rows2w1": {"rows_per_program": 2, "num_warps": 1},
    "round_norm": {"round_norm": True},
    "strided": {"strided_pairs": True},
    "strided_w1": {"strided_pairs": True, "num_warps": 1},
}
for dtype in ("float32", "float16"):
    for m, n in ((1, 16), (7, 48), (33, 48), (33, 4096), (1024, 16)):
        for res in (False, True):
            params = {"num_tokens": m, "hidden_size": n, "dtype": dtype, "eps": 1e-6, "residual": res,
                      "quant_dtype": "nvfp4", "fast": False}
            op = "fused_add_rms_norm_nvfp4_quant" if res else "rms_norm_nvfp4_quant"
            inputs = fam.make_inputs(op, params, dev, 1234 + m + n)
            ref = fam.reference(op, params, {k: v.clone() for k, v in inputs.items()})
            for name, extra in variants.items():
                fn = _triton({**params, **extra})
                try:
                    out = fn({k: v.clone() for k, v in inputs.items()})
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    res_ = fam.check(op, params, inputs, out, ref, Tolerance(**DEFAULT_TOLERANCE[dtype]))
                    msg = "ok" if res_.ok else res_.message[:150]
                except Exception as e:  # noqa: BLE001
                    msg = f"{type(e).__name__}: {str(e)[:150]}"
                print(f"{dtype:8s} {m:5d}x{n:<5d} res={int(res)} {name:10s} {msg}", flush=True)
