"""``python -m normbench.profile.one_case CASE.json``: run one kernel case for a profiler that wraps this process.

Reads a ``normbench.profile.case.CaseSpec``, builds the case's inputs and callable, calls it
``warmup`` times, then ``launches`` times between ``cudaProfilerStart`` and
``cudaProfilerStop`` (``torch.cuda.profiler.start`` / ``stop``): under
``ncu --profile-from-start off`` exactly those calls' kernels are profiled
(``normbench.profile.ncu.profile_command``). On a machine without CUDA the calls run on
the CPU with no profiler range (a dry run of the same code path).

Exit codes: 0 done; 2 the spec cannot be read or the case cannot run here (the reason on
stderr); anything else is the callable's own failure (traceback on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

from normbench.errors import NormbenchError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m normbench.profile.one_case CASE.json", file=sys.stderr)
        return 2
    from normbench.profile.case import CaseSpec, prepare, run_profiled

    try:
        spec = CaseSpec.from_json(Path(args[0]).read_text(encoding="utf-8"))
        prep = prepare(spec)
    except (OSError, NormbenchError) as e:
        print(f"normbench.profile.one_case: {args[0]}: {e}", file=sys.stderr)
        return 2
    import torch

    if prep.device.type == "cuda":
        start, stop = torch.cuda.profiler.start, torch.cuda.profiler.stop
    else:
        start = stop = lambda: None  # noqa: E731
    run_profiled(prep, spec, start, stop)
    print(f"normbench.profile.one_case: {spec.case_id}: {spec.warmup} warm-up + {spec.launches} profiled "
          f"call(s) on {prep.device}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
