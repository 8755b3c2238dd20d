#!/usr/bin/env bash
# Compresses finished run records for committing: RUN_DIR/run.json -> RUN_DIR/run.json.xz (xz -9,
# about 1/8 of the size here). normbench show|compare|export|plot|noise read run.json.xz (and
# run.json.gz) as they read run.json; `normbench run --resume` needs the plain file back (xz -d).
#   bash scripts/compress_runs.sh RUN_DIR [RUN_DIR ...]
# Refuses a run with a cases.jsonl journal (in progress, or left by a crash: finish it with
# `normbench run --resume` first). run.json is removed only after the .xz has been read back whole.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 RUN_DIR [RUN_DIR ...]" >&2; exit 2; }
for d in "$@"; do
  d=${d%/}
  [ "$(basename "$d")" = run.json ] && d=$(dirname "$d")
  if [ ! -f "$d/run.json" ]; then
    if [ -f "$d/run.json.xz" ] || [ -f "$d/run.json.gz" ]; then echo "$d: already compressed"; continue; fi
    echo "$d: not a run (no run.json)" >&2; exit 2
  fi
  [ ! -e "$d/cases.jsonl" ] || { echo "$d: unfinished (cases.jsonl present); finish it with normbench run --resume first" >&2; exit 2; }
  xz -9 -k -f -T1 "$d/run.json"
  xz -dc "$d/run.json.xz" | cmp -s - "$d/run.json" || { echo "$d: run.json.xz does not read back as run.json" >&2; exit 1; }
  python3 -c "import sys; from normbench.store import load_run; load_run(sys.argv[1])" "$d/run.json.xz"
  rm "$d/run.json"
  echo "$d/run.json.xz ($(stat -c %s "$d/run.json.xz") bytes)"
done
