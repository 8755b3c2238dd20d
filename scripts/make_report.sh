#!/usr/bin/env bash
# Builds docs/results/<gpu>/REPORT.md from the run records in docs/results/<gpu>/runs,
# using only normbench's own commands (show/compare/noise --format markdown, plot).
#   bash scripts/make_report.sh h200
set -euo pipefail
cd "$(dirname "$0")/.."
dir=docs/results/${1:?gpu folder, e.g. h200}
runs=$dir/runs
# The newest complete run of a suite, else its newest run (interrupted ones hold part of a sweep, e.g. a
# --profile pass over a --filter).
latest() {
  local all c
  all=$(ls -d "$runs"/"$1"-* 2>/dev/null | sort) || true
  [ -n "$all" ] || return 0
  c=$(python3 -c "
import sys
from normbench.store import load_run
done = [p for p in sys.argv[1:] if load_run(p).status == 'complete']
print(done[-1] if done else '')" $all)
  if [ -n "$c" ]; then echo "$c"; else echo "$all" | tail -1; fi
}
out=$dir/REPORT.md
{
  first=$(ls -d "$runs"/*/ | head -1)
  echo "# normbench results: $(python3 -c "import sys; from normbench.store import load_run; print(load_run(sys.argv[1]).environment.get('gpu.name'))" "$first")"
  echo
  echo "Every table below is printed by normbench from the run records in \`runs/\` (\`normbench show RUN --format markdown\`,"
  echo "\`normbench compare A B --format markdown\`). Regenerate with \`bash scripts/make_report.sh ${1}\`."
  echo
  # Where our kernels stand: triton against the fastest other provider, per op and token band.
  mapfile -t kernel_runs < <(for suite in rmsnorm fused_add_rmsnorm rmsnorm_quant rmsnorm_static_quant quant nvfp4; do
    latest "$suite"; done)
  if [ ${#kernel_runs[@]} -gt 0 ]; then
    echo "## Standing: \`triton\` against every other provider"
    echo
    normbench standing "${kernel_runs[@]}"
    echo
  fi
  for suite in rmsnorm fused_add_rmsnorm rmsnorm_quant rmsnorm_static_quant quant nvfp4 fp8_fusion; do
    r=$(latest "$suite") || true
    if [ -n "$r" ]; then normbench show "$r" --format markdown; echo; fi
  done
  # profiled runs (normbench run --profile) that the sections above did not show: their profile tables
  shown=$(for suite in rmsnorm fused_add_rmsnorm rmsnorm_quant rmsnorm_static_quant quant nvfp4 fp8_fusion; do latest "$suite"; done)
  for r in $(python3 -c "
import sys
from normbench.store import load_run
print(' '.join(p for p in sys.argv[1:] if any(c.profile for c in load_run(p).cases)))" "$runs"/*/); do
    r=${r%/}
    grep -qxF "$r" <<< "$shown" && continue
    normbench show "$r" --format markdown; echo
  done
  if [ -n "$(latest aa-1)" ] && [ -n "$(latest aa-2)" ]; then
    echo "## A/A: the same code twice (expect within noise)"
    echo
    normbench compare "$(latest aa-1)" "$(latest aa-2)" --format markdown
    echo
    echo "## A/B: triton slowed by one extra copy of its input (scripts/slowed_provider.py)"
    echo
    normbench compare "$(latest aa-1)" "$(latest ab-slowed)" --format markdown
    echo
  fi
  for prev in $(ls -d "$runs"/rmsnorm-* 2>/dev/null); do
    [ "$prev" = "$(latest rmsnorm)" ] && continue
    echo "## Before and after the kernel change: \`$(basename "$prev")\` vs \`$(basename "$(latest rmsnorm)")\`"
    echo
    normbench compare "$prev" "$(latest rmsnorm)" --format markdown
    echo
  done
} > "$out"
# plots of a complete rmsnorm run only (an interrupted one lacks points and providers)
r=$(latest rmsnorm)
if [ -n "$r" ] && python3 -c "import sys; from normbench.store import load_run; sys.exit(load_run(sys.argv[1]).status != 'complete')" "$r"; then
  normbench plot "$r" --out "$dir/plots" >/dev/null
  echo "wrote $out and $dir/plots/"
else
  echo "wrote $out (no plots: no complete rmsnorm run)"
fi
