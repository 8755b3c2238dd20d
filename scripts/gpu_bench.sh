#!/usr/bin/env bash
# Runs normbench on the lent GPU machine (the device tool), one mode per call.
#
#   bash scripts/gpu_bench.sh MODE [MODE ...]
#
# Modes: probe (GPU facts + smoke suite), probe:NAME (scripts/probe_NAME.py, a diagnostic), gputests (pytest -m gpu: kernels compiled on this GPU), tune:FAMILY (scripts/tune.py FAMILY; the table comes back as tuned/FAMILY.json), suites names (e.g.
# `suite:rmsnorm`, `suite:quant:FILTER...`, `suite:smoke:FILTER:--profile=ncu`: a part starting with
# -- is a `normbench run` option), aa (an A/A pair + an A/B pair with a
# deliberately slowed provider), crosscheck (do_bench vs normbench for torch.compile),
# multigpu (suites/rmsnorm.yaml: 1 GPU cold, --gpus all, --executor ray if ray imports (carry
# .raybundle from scripts/ray_bundle.sh), 1 GPU warm, --gpus all again; wall times in
# $OUTDIR/multigpu_times.txt, compares against the warm 1-GPU run in multigpu_compare_*.md).
# Everything lands in /tmp/nbout and is packed into $OUT/<label>.tgz on exit, so it
# comes back even when a step times out. Peers (FlashInfer, Liger, quack) come from
# ../shared/tools/device-peers; source /tmp/peers-site/env.sh first when present.
set -u
export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-160}
OUTDIR=/tmp/nbout
RUNS=$OUTDIR/runs
mkdir -p "$RUNS"
LABEL=${NB_LABEL:-results}
pack() { [ -n "${OUT:-}" ] && tar -C "$OUTDIR" -czf "$OUT/$LABEL.tgz" . 2>/dev/null; }
trap pack EXIT
trap 'pack; exit 143' TERM INT
step() {  # step SECONDS NAME CMD...
  local secs=$1 name=$2; shift 2
  echo "=== $name (limit ${secs}s) $(date -u +%T)"
  timeout --signal=INT --kill-after=20 "$secs" "$@" > >(tee "$OUTDIR/$name.log") 2>&1
  local rc=$?
  echo "=== $name rc=$rc $(date -u +%T)"
  pack  # after every step: what finished comes back even if the call is cut short
  return 0
}

setup() {
  if [ -d .whl ]; then  # scripts/gpu_wheels.sh: normbench's own dependencies the image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  if [ -d .raybundle ]; then  # scripts/ray_bundle.sh: pruned Ray + the dependencies the image lacks
    mkdir -p /tmp/site && tar -C /tmp/site -xJf .raybundle/ray-*-pruned.tar.xz
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .raybundle/*.whl
  fi
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/nbsite . \
    || { echo "normbench install failed"; exit 3; }
  export PYTHONPATH=/tmp/nbsite:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/nbsite/bin:$PATH
  # vLLM's site first, the peers' in front of it: both carry apache-tvm-ffi, and the peers' CuTe-DSL
  # (FlashInfer, quack) fails with another version's ("make_kwargs_wrapper() got an unexpected keyword
  # argument 'map_dataclass_to_tuple'", seen on the H100 with the serve bundle's 0.1.9 in front)
  [ -f /tmp/vllm-site/env.sh ] && . /tmp/vllm-site/env.sh  # scripts/vllm_bundle.sh
  [ -f /tmp/peers-site/env.sh ] && . /tmp/peers-site/env.sh
  python3 -c "import normbench.cli, normbench.kernels.rmsnorm, pydantic; print('normbench ok, pydantic', pydantic.VERSION)" || {
    echo "normbench does not import here: carry its missing wheels (bash scripts/gpu_wheels.sh; carry .whl)" \
         "or install the vLLM bundle first (scripts/vllm_bundle.sh carries pydantic)"; exit 3; }
}

NB=(python3 -m normbench.cli)

timed() {  # timed TIMES_FILE NAME ARGS...: one `normbench run rmsnorm`, its wall time appended to TIMES_FILE
  local times=$1 name=$2; shift 2
  local t0=$(date +%s.%N)
  step "${NB_STEP_SECONDS:-540}" "$name" "${NB[@]}" run rmsnorm --name "$name" --results-dir "$RUNS" --no-progress "$@"
  local t1=$(date +%s.%N)
  printf '%-16s %8.1f s  %s\n' "$name" "$(python3 -c "print($t1 - $t0)")" "$*" | tee -a "$times"
}
latest() { ls -d "$RUNS"/"$1"-2* 2>/dev/null | tail -1; }  # the newest run of that name (/tmp outlives a call)

setup
for mode in "$@"; do
  case "$mode" in
    probe)
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
      python3 -c "import torch, triton; p=torch.cuda.get_device_properties(0); print(torch.__version__, triton.__version__, p.name, p.multi_processor_count, 'SMs', p.L2_cache_size>>20, 'MiB L2')"
      step 240 smoke "${NB[@]}" run smoke --results-dir "$RUNS" --no-progress
      ;;
    gputests)
      # The kernel tests compiled on this GPU (not the interpreter), before any timing.
      # -v: each test's outcome is in the log as it finishes, also when the step's time runs out.
      step "${NB_GPUTEST_SECONDS:-420}" gpu_tests python3 -m pytest -m gpu tests/kernels -v -rfE -p no:cacheprovider \
        --junitxml="$OUTDIR/gpu_tests.xml" ${NB_GPUTEST_ARGS:-}
      ;;
    tune:*)
      fam=${mode#tune:}
      # The merged table lands beside the results: copy it over kernels/tuned/$fam.json to adopt it.
      step 240 "tune_$fam" python3 scripts/tune.py "$fam" --out "$OUTDIR/tune_$fam.json" \
        --table "$OUTDIR/tuned/$fam.json" ${NB_TUNE_ARGS:-}
      ;;
    suite:*)
      # suite:NAME[:FILTER|:--OPTION=VALUE ...], e.g. suite:smoke:provider=triton,vllm:--profile=ncu
      spec=${mode#suite:}; suite=${spec%%:*}; args=()
      if [ "$spec" != "$suite" ]; then
        IFS=':' read -ra parts <<< "${spec#*:}"
        for f in "${parts[@]}"; do case $f in --*) args+=("$f");; *) args+=(--filter "$f");; esac; done
      fi
      step "${NB_STEP_SECONDS:-540}" "suite_$suite" "${NB[@]}" run "$suite" --results-dir "$RUNS" --no-progress ${args[@]+"${args[@]}"}
      ;;
    aa)
      # The same code twice (A/A), then B with the triton provider slowed by an extra
      # full copy of its input (scripts/slowed_provider.py): compare must call the
      # A/A pair within noise and flag B slower where the copy exceeds the noise floor.
      f=(--filter "provider=triton,torch_compile,liger" --filter "residual=False")
      step 200 aa_1 "${NB[@]}" run rmsnorm --name aa-1 --results-dir "$RUNS" --no-progress "${f[@]}"
      step 200 aa_2 "${NB[@]}" run rmsnorm --name aa-2 --results-dir "$RUNS" --no-progress "${f[@]}"
      step 200 ab_slowed python3 scripts/slowed_provider.py run rmsnorm --name ab-slowed --results-dir "$RUNS" --no-progress "${f[@]}"
      ;;
    probe:*)
      # a diagnostic script, scripts/probe_NAME.py (e.g. probe:nvfp4_fp32, probe:quant_fp32, probe:nvfp4_f16_tie)
      name=${mode#probe:}
      step "${NB_STEP_SECONDS:-240}" "probe_$name" python3 "scripts/probe_$name.py"
      ;;
    crosscheck)
      # NB_CROSSCHECK_ARGS, e.g. "--suite rmsnorm_quant --provider vllm --filter num_tokens=8192"
      step 240 crosscheck python3 scripts/crosscheck_do_bench.py --out "$OUTDIR/crosscheck.json" ${NB_CROSSCHECK_ARGS:-}
      ;;
    multigpu)
      # Wall time of the same kernel sweep on 1 GPU, sharded over every GPU (--gpus all), and
      # on a local Ray head (--executor ray); then each sharded run against the 1-GPU one
      # (per-case agreement: every case should be "within noise").
      # NB_MULTIGPU_FILTER="" runs the whole suite (longer runs amortize the workers' start-up).
      f=(); mf=${NB_MULTIGPU_FILTER-provider=torch_compile,triton,torch_rms_norm}
      [ -n "$mf" ] && f=(--filter "$mf")
      times=$OUTDIR/multigpu_times.txt
      nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$OUTDIR/multigpu_gpus.csv"
      # Order: a cold 1-GPU run fills the compile caches; every later run finds them warm, and
      # the speed-ups are taken against the warm 1-GPU run.
      timed "$times" mgpu-1gpu ${f[@]+"${f[@]}"}
      timed "$times" mgpu-local ${f[@]+"${f[@]}"} --gpus all
      if python3 -c "import ray" 2>/dev/null; then
        timed "$times" mgpu-ray ${f[@]+"${f[@]}"} --executor ray
      else
        echo "ray does not import here: skipping --executor ray" | tee -a "$times"
      fi
      timed "$times" mgpu-1gpu-warm ${f[@]+"${f[@]}"}
      timed "$times" mgpu-local-again ${f[@]+"${f[@]}"} --gpus all
      for cand in mgpu-local mgpu-ray mgpu-local-again; do
        [ -n "$(latest $cand)" ] || continue
        step 120 "compare_$cand" "${NB[@]}" compare "$(latest mgpu-1gpu-warm)" "$(latest $cand)" \
          --format markdown --output "$OUTDIR/multigpu_compare_$cand.md"
      done
      echo "=== wall times"; cat "$times"
      ;;
    multigpu-repeat)
      # The same sweep with --repeat ${NB_MULTIGPU_REPEAT:-3} (a longer run: the per-process start-up
      # is paid once either way). --gpus all first (on a fresh machine it fills the compile caches,
      # at its own expense), then 1 GPU and --gpus all again, both with warm caches.
      times=$OUTDIR/multigpu_repeat_times.txt
      rep=(--repeat "${NB_MULTIGPU_REPEAT:-3}")
      timed "$times" rep-local-cold "${rep[@]}" --gpus all
      timed "$times" rep-1gpu "${rep[@]}"
      timed "$times" rep-local "${rep[@]}" --gpus all
      step 120 compare_rep "${NB[@]}" compare "$(latest rep-1gpu)" "$(latest rep-local)" \
        --format markdown --output "$OUTDIR/multigpu_repeat_compare.md"
      echo "=== wall times"; cat "$times"
      ;;
    *) echo "unknown mode $mode"; exit 2 ;;
  esac
done
