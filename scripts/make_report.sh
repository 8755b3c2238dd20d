#!/usr/bin/env bash
# Builds docs/results/<gpu>/REPORT.md from the run records in docs/results/<gpu>/runs,
# using only normbench's own commands (show/compare/noise --format markdown, plot).
#   bash scripts/make_report.sh h200
set -euo pipefail
cd "$(dirname "$0")/.."
dir=docs/results/${1:?gpu folder, e.g. h200}
runs=$dir/runs
# Every record read once: "<run dir> <status> <1 if profiled (normbench run --profile), else 0>", by name.
mapfile -t facts < <(python3 - "$runs" <<'PY'
import sys
from pathlib import Path
from normbench.store import load_run
for p in sorted(d for d in Path(sys.argv[1]).iterdir() if d.is_dir()):
    r = load_run(p)
    print(p, r.status, int(any(c.profile for c in r.cases)))
PY
)
# The newest complete run of a suite, else its newest run (interrupted ones hold part of a sweep, e.g. a
# --profile pass over a --filter).
latest() {
  local f d s newest="" complete=""
  for f in "${facts[@]}"; do
    read -r d s _ <<< "$f"
    case $(basename "$d") in "$1"-*) newest=$d; [ "$s" = complete ] && complete=$d;; esac
  done
  [ -z "${complete:-$newest}" ] || echo "${complete:-$newest}"
}
status_of() { local f d s; for f in "${facts[@]}"; do read -r d s _ <<< "$f"; [ "$d" = "$1" ] && echo "$s"; done; }
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
  for f in "${facts[@]}"; do
    read -r r _ profiled <<< "$f"
    [ "$profiled" = 1 ] || continue
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
  for prev in $(ls -d "$runs"/rmsnorm-* 2>/dev/null); do  # every earlier rmsnorm run against the latest
    [ "$prev" = "$(latest rmsnorm)" ] && continue
    echo "## Before and after the kernel change: \`$(basename "$prev")\` vs \`$(basename "$(latest rmsnorm)")\`"
    echo
    normbench compare "$prev" "$(latest rmsnorm)" --format markdown
    echo
  done
} > "$out"
# plots of a complete rmsnorm run only (an interrupted one lacks points and providers)
r=$(latest rmsnorm)
if [ -n "$r" ] && [ "$(status_of "$r")" = complete ]; then
  normbench plot "$r" --out "$dir/plots" >/dev/null
  echo "wrote $out and $dir/plots/"
else
  echo "wrote $out (no plots: no complete rmsnorm run)"
fi
