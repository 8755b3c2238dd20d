#!/usr/bin/env python3
"""Count the SASS of normbench's NVFP4 Triton kernels for sm_90, offline (no GPU needed).

Usage (repository root; Triton with its bundled ``nvdisasm`` / ``cuobjdump``)::

    python3 scripts/nvfp4_sass.py

Compiles every candidate of the fast kernel (``kernels/nvfp4/configs.py``: ``warp_options`` x
prefetch, bf16, with and without the residual) and the generic kernel at its heuristic with the
installed Triton, disassembles them, and prints registers, SASS instructions in the row loop
and instructions per element (the method of docs/kernels/nvfp4-notes.md).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, before the family is imported
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from normbench.kernels.nvfp4 import configs, triton_fast, triton_generic  # noqa: E402


def sass_report() -> int:
    """Compile the fast kernel's candidates and the generic kernel for sm_90 (no GPU) and print
    registers and instructions per element."""
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
        for hidden in configs.TUNE_HIDDEN:
            bk = max(4, 1 << (hidden // 16 - 1).bit_length())
            for warps in configs.warp_options(hidden):
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
                    sass, regs = compile_sass(triton_fast._nvfp4_fast_kernel, sig, const, div, warps)
                    n, ops = loop_count(sass)
                    ept = bk * 16 / (32 * warps)
                    progs = min(64 // warps, 65536 // (max(regs, 1) * 32 * warps))
                    top = " ".join(f"{k}:{v}" for k, v in ops.most_common(8))
                    print(f"{'yes' if residual else 'no':>3} {hidden:>6} {warps:>5} {int(prefetch):>2} | {regs:>4} "
                          f"{ept:>8.0f} {n:>5} {n / ept:>10.2f} {progs:>8} | {top}", flush=True)
    print("generic kernel (previous version) at its heuristic, data path to the first EXIT:")
    for residual in (False, True):
        for hidden in configs.TUNE_HIDDEN:
            rows, warps = configs.nvfp4_config(16384, hidden)
            bk = max(4, 1 << (hidden // 16 - 1).bit_length())
            sig = {f"{p}_ptr": "*bf16" for p in ("x", "res", "res_out", "w")}
            sig.update(sig_common)
            for nm in ("M", "N", "x_stride", "res_stride", "res_out_stride", "q_stride", "num_data_programs",
                       "pad_row_start", "M_PAD", "K_PAD", "K_TILES"):
                sig[nm] = "i32"
            div = ["x_ptr", "res_ptr", "res_out_ptr", "w_ptr", "gs_ptr", "q_ptr", "s_ptr", "N", "x_stride",
                   "res_stride", "res_out_stride", "q_stride", "M_PAD", "K_PAD"]
            const = dict(HAS_RES=residual, BLOCK_K=bk, ROWS=rows, ZROWS=32, EXACT=False, ROUND_NORM=False)
            sass, regs = compile_sass(triton_generic._rms_norm_nvfp4_kernel, sig, const, div, warps)
            n = data_path_count(sass)
            ept = rows * bk * 16 / (32 * warps)
            print(f"{'yes' if residual else 'no':>3} {hidden:>6} rows {rows} warps {warps}: regs {regs}, "
                  f"{n} instructions, {n / ept:.2f}/elem at {ept:.0f} elem/thread", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(sass_report())
