#!/usr/bin/env bash
# Builds docs/results/<gpu>/REPORT.md from the run records in docs/results/<gpu>/runs,
# using only normbench's own commands (show/compare/noise --format markdown, plot).
#   bash scripts/make_report.sh h200
set -euo pipefail
cd "$(dirname "$0")/.."
dir=docs/results/${1:?gpu folder, e.g. h200}
runs=$dir/runs
latest() { ls -d "$runs"/"$1"-* 2>/dev/null | sort | tail -1; }
out=$dir/REPORT.md
{
  echo "# normbench results: $(python3 -c "import sys; from normbench.store import load_run; print(load_run(sys.argv[1]).environment.get('gpu.name'))" "$(latest rmsnorm)")"
  echo
  echo "Every table below is printed by normbench from the run records in \`runs/\` (\`normbench show RUN --format markdown\`,"
  echo "\`normbench compare A B --format markdown\`). Regenerate with \`bash scripts/make_report.sh ${1}\`."
  echo
  for suite in rmsnorm fused_add_rmsnorm rmsnorm_quant quant nvfp4; do
    r=$(latest "$suite") || true
    [ -n "$r" ] && normbench show "$r" --format markdown && echo
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
  for prev in "$runs"/rmsnorm-*; do
    [ "$prev" = "$(latest rmsnorm)" ] && continue
    echo "## Before and after the kernel change: \`$(basename "$prev")\` vs \`$(basename "$(latest rmsnorm)")\`"
    echo
    normbench compare "$prev" "$(latest rmsnorm)" --format markdown
    echo
  done
} > "$out"
normbench plot "$(latest rmsnorm)" --out "$dir/plots" >/dev/null
echo "wrote $out and $dir/plots/"
