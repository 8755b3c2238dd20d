#!/usr/bin/env bash
# suites/fp8_fusion.yaml on the lent GPU machine, in one call or resumed across several.
#
#   bash scripts/fp8_fusion_gpu.sh            # make the model (if absent), start the run
#   bash scripts/fp8_fusion_gpu.sh --resume   # a later call on the same warm machine: go on
#   bash scripts/fp8_fusion_gpu.sh --resume-from .e2erun/fp8_fusion_run.tgz
#                                             # another machine or session: unpack the run an earlier
#                                             # call sent back (carry the folder; git-exclude it), remake
#                                             # the model (seeded: the same weights on the same device
#                                             # kind) and go on
#
# The caller makes vLLM importable (PYTHONPATH, or /tmp/vllm-site/env.sh from the vLLM
# bundle); guidellm and lm-eval must import too (normbench's preflight says which is missing).
# Steps:
#   1. normbench make-model --preset llama3-8b --layers $NB_LAYERS --quant fp8-static
#      --device cuda --out $NORMBENCH_MODEL_DIR (+ its gsm8k.jsonl); kept when its
#      config.json already has that many layers and FP8 static scales;
#   2. normbench run suites/fp8_fusion.yaml --repeat 2 (kernel cases twice; every end-to-end
#      stage has repeats: 2) into $RUNS, stopped with SIGINT after $NB_STEP_SECONDS so that
#      the call returns in time; finished cases are kept and --resume goes on from there;
#   3. once the run is complete: normbench compare --variants (Markdown, JSON and rich) and
#      normbench show;
#   4. every call copies the evidence lines of the server and latency logs (fusion passes,
#      effective config, compile and start-up times) into $OUT/fp8_fusion_evidence.txt and
#      packs the run (records + logs) into $OUT/fp8_fusion_run.tgz.
# Environment knobs: NB_LAYERS (4), NB_STEP_SECONDS (540), NORMBENCH_MODEL_DIR
# (/tmp/nb-model/llama3-8b-fp8), OUTDIR (/tmp/nbout; keep it: --resume finds the run there),
# NB_E2E_REPEATS (2: every end-to-end stage's repeats; a copy of the suite with another value
# is run from $OUTDIR), NB_LATENCY_INPUT_LENS (e.g. "2048": the latency stage's input lengths,
# same copy), NB_RUN_FILTERS (space-separated `normbench run --filter`s, e.g.
# "variant=default,plus_rms_norm_fused stage=startup,guidellm,serve,gsm8k,latency": a variant
# filter drops the kernel stages, which have no variant), NB_VARIANTS (e.g. "default plus_rms_norm
# plus_rms_norm_fused": a copy of the suite with only these variants; kernel stages kept),
# NB_REPEAT (2: normbench run --repeat, the kernel stages' repeats). Note: with 2 repeats a side no end-to-end row can be `faster`/`slower`
# (Mann-Whitney's smallest two-sided p at 2 vs 2 is 0.33; normbench/stats.py: 4 a side to
# resolve a change at 95%): 2 repeats give spreads and "within noise", 4 can give verdicts.
set -u
export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-160}
RESUME=0 FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --resume) RESUME=1; shift ;;
    --resume-from) RESUME=1; FROM=${2:?--resume-from needs the .tgz an earlier call sent back}; shift 2 ;;
    *) echo "usage: $0 [--resume | --resume-from RUN.tgz]"; exit 2 ;;
  esac
done
LAYERS=${NB_LAYERS:-4}
STEP_SECONDS=${NB_STEP_SECONDS:-540}
export NORMBENCH_MODEL_DIR=${NORMBENCH_MODEL_DIR:-/tmp/nb-model/llama3-8b-fp8}
OUTDIR=${OUTDIR:-/tmp/nbout}
RUNS=$OUTDIR/fp8_fusion_runs
mkdir -p "$RUNS"
OUT=${OUT:-$OUTDIR/out}
mkdir -p "$OUT"
NB=(python3 -m normbench.cli)

collect() {  # what comes back from every call, finished or not
  local run
  run=$(ls -d "$RUNS"/fp8_fusion-2* 2>/dev/null | tail -1)
  [ -n "$run" ] || return 0
  tar -C "$RUNS" -czf "$OUT/fp8_fusion_run.tgz" "$(basename "$run")" 2>/dev/null
  {
    echo "# $run: the log lines that carry the fusion evidence"
    for f in "$run"/logs/*-server.log "$run"/logs/*-latency.log; do
      [ -f "$f" ] || continue
      echo "## $(basename "$f")"
      grep -E "==== normbench: (variant|case)|Replaced [0-9]+ patterns|RMSNormQuantFusionPass completed|fusion pass matches|Enabled custom fusions|torch\.compile (took|takes)|Compiling a graph for compile range|Directly load|init engine|Graph capturing finished|Using cache directory|vLLM's torch.compile cache is disabled" "$f" \
        | cut -c1-400
      grep -oE "compilation_config=\{'mode': [^,]*|'custom_ops': \[[^]]*\]|'pass_config': \{[^}]*\}" "$f" | sort | uniq -c
    done
  } > "$OUT/fp8_fusion_evidence.txt" 2>/dev/null
}
trap collect EXIT

setup() {
  [ -f /tmp/vllm-site/env.sh ] && . /tmp/vllm-site/env.sh  # scripts/vllm_bundle.sh, when used
  if ! python3 -c "import normbench.cli, normbench.kernels.rmsnorm" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/nbsite . \
      || { echo "normbench install failed"; exit 3; }
    export PYTHONPATH=/tmp/nbsite${PYTHONPATH:+:$PYTHONPATH}
    export PATH=/tmp/nbsite/bin:$PATH
  fi
  python3 - <<'EOF' || exit 3
import importlib.util
for m in ("normbench", "torch", "vllm", "guidellm", "lm_eval", "transformers", "tokenizers", "safetensors"):
    print(f"{m}: {'ok' if importlib.util.find_spec(m) else 'MISSING'}")
import torch
assert torch.cuda.is_available(), "no CUDA device"
print(torch.cuda.get_device_name(), torch.__version__)
EOF
}

model_ok() {  # the folder holds an FP8-static model with $LAYERS layers and its gsm8k file
  python3 - "$NORMBENCH_MODEL_DIR" "$LAYERS" <<'EOF'
import json, sys
from pathlib import Path
d, layers = Path(sys.argv[1]), int(sys.argv[2])
try:
    c = json.loads((d / "config.json").read_text())
except (OSError, ValueError):
    sys.exit(1)
q = c.get("quantization_config") or {}
ok = (c.get("num_hidden_layers") == layers and q.get("activation_scheme") == "static"
      and (d / "model.safetensors.index.json").is_file() and (d / "gsm8k.jsonl").is_file())
sys.exit(0 if ok else 1)
EOF
}

setup
if [ -n "$FROM" ]; then
  tar -C "$RUNS" -xzf "$FROM" || { echo "--resume-from: cannot unpack $FROM"; exit 2; }
  # the record may be compressed for the trip; --resume needs the plain run.json back
  for z in "$RUNS"/fp8_fusion-2*/run.json.xz; do [ -f "$z" ] && xz -d "$z"; done
fi
if [ "$RESUME" = 0 ] || [ -n "$FROM" ]; then  # a fresh machine: the model first
  if model_ok; then
    echo "=== model: $NORMBENCH_MODEL_DIR already has $LAYERS FP8-static layers"
  else
    echo "=== make-model $(date -u +%T)"
    "${NB[@]}" make-model --preset llama3-8b --layers "$LAYERS" --quant fp8-static --device cuda \
      --out "$NORMBENCH_MODEL_DIR" --gsm8k "$NORMBENCH_MODEL_DIR/gsm8k.jsonl" --overwrite || exit 4
  fi
  du -sh "$NORMBENCH_MODEL_DIR"
fi
if [ "$RESUME" = 0 ]; then
  SUITE=suites/fp8_fusion.yaml
  if [ "${NB_E2E_REPEATS:-2}" != 2 ] || [ -n "${NB_LATENCY_INPUT_LENS:-}" ] || [ -n "${NB_VARIANTS:-}" ]; then
    SUITE=$OUTDIR/fp8_fusion.yaml
    sed -e "s/^    repeats: 2\$/    repeats: ${NB_E2E_REPEATS:-2}/" \
        -e "s/^    input_len: \[512, 2048, 8192\]\$/    input_len: [${NB_LATENCY_INPUT_LENS:-512, 2048, 8192}]/" \
        suites/fp8_fusion.yaml > "$SUITE"
    if [ -n "${NB_VARIANTS:-}" ]; then  # keep only these variants (and in stages' `variants:` lists)
      python3 - "$SUITE" $NB_VARIANTS <<'EOF' || exit 2
import sys, yaml
path, keep = sys.argv[1], sys.argv[2:]
suite = yaml.safe_load(open(path))
unknown = set(keep) - set(suite["variants"])
assert not unknown, f"NB_VARIANTS: no such variant {sorted(unknown)}; the suite's: {sorted(suite['variants'])}"
suite["variants"] = {k: v for k, v in suite["variants"].items() if k in keep}
for st in suite["stages"]:
    if "variants" in st:
        st["variants"] = [v for v in st["variants"] if v in keep]
yaml.safe_dump(suite, open(path, "w"), sort_keys=False)
print("variants:", ", ".join(suite["variants"]))
EOF
    fi
    grep -E "^ *(repeats|input_len):" "$SUITE" | sort | uniq -c
  fi
  RUN_ARGS=(run "$SUITE" --repeat "${NB_REPEAT:-2}")
  for f in ${NB_RUN_FILTERS:-}; do RUN_ARGS+=(--filter "$f"); done
else
  last=$(ls -d "$RUNS"/fp8_fusion-2* 2>/dev/null | tail -1)
  [ -n "$last" ] || { echo "--resume: no fp8_fusion run under $RUNS"; exit 2; }
  RUN_ARGS=(run --resume "$last")
fi

echo "=== ${RUN_ARGS[*]} (stopped after ${STEP_SECONDS}s) $(date -u +%T)"
timeout --signal=INT --kill-after=60 "$STEP_SECONDS" "${NB[@]}" "${RUN_ARGS[@]}" --results-dir "$RUNS" --no-progress \
  > >(tee -a "$OUTDIR/fp8_fusion_run.log") 2>&1
rc=$?
echo "=== run rc=$rc $(date -u +%T)"
run=$(ls -d "$RUNS"/fp8_fusion-2* 2>/dev/null | tail -1)
status=$(python3 -c "import sys; from normbench.store import load_run; print(load_run(sys.argv[1]).status)" "$run" 2>/dev/null)
echo "=== $run: $status"
if [ "$status" = complete ]; then
  "${NB[@]}" compare --variants "$run" --format markdown > "$OUT/fp8_fusion_compare.md"
  "${NB[@]}" compare --variants "$run" --format json > "$OUT/fp8_fusion_compare.json"
  "${NB[@]}" compare --variants "$run" > "$OUT/fp8_fusion_compare.txt"
  "${NB[@]}" show "$run" > "$OUT/fp8_fusion_show.txt" 2>&1
  echo "=== compare written to $OUT/fp8_fusion_compare.md"
else
  echo "=== not complete: call again with --resume (same warm machine: $RUNS)"
fi
