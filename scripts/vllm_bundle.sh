#!/usr/bin/env bash
# Packs vLLM (the version pinned in pyproject.toml's `vllm` extra) for the lent GPU machine, which has no
# network, into parts that each fit one device call (64 MiB per call, the repository included).
#
#   bash scripts/vllm_bundle.sh                      # kernels only: vllm._custom_ops (issue: vLLM provider)
#   bash scripts/vllm_bundle.sh --serve              # + what `vllm serve`/`vllm bench`, guidellm, lm-eval need
#   bash scripts/vllm_bundle.sh --parts 14,14,40     # MiB per part (first ones small to share a call with
#                                                    # ../shared/tools/device-peers parts); default: 44 MiB each
#
# Writes .vllmbundle/part1..N (git-excluded). On the GPU machine, in N calls made back to back (the machine
# keeps /tmp ~30 s after a call):
#   calls 1..N-1:  carry [".vllmbundle/partK"], command: bash .vllmbundle/partK/install.sh
#   call N:        carry [".vllmbundle/partN"], command: E=$(bash .vllmbundle/partN/install.sh) && eval "$E" && ...
# The last call reassembles the parts (sha256-checked), unpacks vLLM into /tmp/vllm-site, installs the wheels
# there, puts a `vllm` command in /tmp/vllm-site/bin, imports vllm._custom_ops and prints the one line
# `export PYTHONPATH=... PATH=...`. Later calls on the same warm machine: `. /tmp/vllm-site/env.sh && ...`.
#
# What travels: vLLM's Python package with one compiled extension, _C_stable_libtorch.abi3.so (the
# RMSNorm, fused-add, FP8/INT8 quant and static-FP8 norm kernels), plus the small extensions; left out are the
# flash-attention builds (serve with --attention-backend TRITON_ATTN), _moe_C, _flashmla, _qutlass,
# third_party/{deep_gemm,fmha_sm100} and the vllm-rs binary. Wheels: only distributions the GPU image lacks
# (scripts/gpu_image_packages.txt), found by scripts/wheel_closure.py.
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
PIN=$(sed -n 's/^vllm = \["vllm==\([^"]*\)"\].*/\1/p' pyproject.toml)
[ -n "$PIN" ] || { echo "vllm_bundle: no 'vllm = [\"vllm==X\"]' pin in pyproject.toml" >&2; exit 1; }
SERVE=0 PARTS=""
while [ $# -gt 0 ]; do
  case $1 in
    --serve) SERVE=1; shift;;
    --parts) PARTS=${2:?--parts needs MiB,MiB,...}; shift 2;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) echo "vllm_bundle: unknown argument $1" >&2; exit 2;;
  esac
done
CACHE=${VLLM_BUNDLE_CACHE:-$HOME/.cache/normbench-vllm-bundle}
TVM_FFI_PIN=0.1.15.post2  # the serve set's apache-tvm-ffi: see step 2
OUTDIR=$ROOT/.vllmbundle
grep -qx '/.vllmbundle/' .git/info/exclude 2>/dev/null || echo '/.vllmbundle/' >> .git/info/exclude
mkdir -p "$CACHE/wheels"
say() { echo "vllm_bundle: $*" >&2; }

# 1. vLLM itself, pruned, as one tar.xz (cached per version).
tree_xz=$CACHE/vllm-$PIN-pruned.tar.xz
if [ ! -s "$tree_xz" ]; then
  whl=$(ls "$CACHE"/wheels/vllm-"$PIN"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    say "downloading vllm==$PIN (about 250 MB, once)"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      -d "$CACHE/wheels" "vllm==$PIN"
    whl=$(ls "$CACHE"/wheels/vllm-"$PIN"-*.whl | head -1)
  fi
  say "pruning and packing $(basename "$whl") (xz -9, a few minutes once)"
  tmp=$(mktemp -d "$CACHE/tree.XXXXXX")
  python3 - "$whl" "$tmp/t" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
DROP_PREFIX = ("vllm/third_party/deep_gemm/", "vllm/third_party/fmha_sm100/")
DROP_NAME = ("vllm/vllm-rs", "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so")
DROP_STEM = ("vllm/_moe_C", "vllm/_flashmla", "vllm/_qutlass")
z = zipfile.ZipFile(whl)
for info in z.infolist():
    n = info.filename
    if n.startswith(DROP_PREFIX) or n in DROP_NAME or n.startswith(DROP_STEM):
        continue
    z.extract(info, out)
PY
  (cd "$tmp/t" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - .) | xz -T0 -9 > "$tmp/x"
  mv "$tmp/x" "$tree_xz"; rm -rf "$tmp"
fi

# 1b. Serving imports vllm.vllm_flash_attn (models/llama.py -> layers/attention -> fa_utils), which refuses
# to import without a flash-attention extension: the serve set carries FA3 (Hopper; 146 MiB, 11 MB xz).
extra_xz=()
if [ $SERVE = 1 ]; then
  fa3_xz=$CACHE/vllm-$PIN-fa3.tar.xz
  if [ ! -s "$fa3_xz" ]; then
    whl=$(ls "$CACHE"/wheels/vllm-"$PIN"-*.whl | head -1)
    tmp=$(mktemp -d "$CACHE/fa3.XXXXXX")
    (cd "$tmp" && unzip -q "$whl" vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so &&
     tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - vllm | xz -T0 -6 > x) && mv "$tmp/x" "$fa3_xz"
    rm -rf "$tmp"
  fi
  extra_xz=("$fa3_xz")
fi

# 2. The wheels the image lacks.
set_name=kernels; roots=(pydantic pyzmq)
if [ $SERVE = 1 ]; then
  set_name=serve
  whl=$(ls "$CACHE"/wheels/vllm-"$PIN"-*.whl | head -1)
  # apache-tvm-ffi first (the first version chosen wins): vLLM 0.25.1 pins ==0.1.9, but the xgrammar its
  # server imports (0.2.x) needs >=0.1.11 (0.1.9 fails with "load_lib_module() got an unexpected keyword
  # argument 'extra_lib_paths'", seen on the H100), and the peers' CuTe-DSL needs the version
  # ../shared/tools/device-peers carries; pip would have backtracked xgrammar instead, which the walk cannot.
  roots=("apache-tvm-ffi==$TVM_FFI_PIN")
  mapfile -t -O 1 roots < <(unzip -p "$whl" "vllm-$PIN.dist-info/METADATA" | sed -n 's/^Requires-Dist: //p' |
                            grep -v 'extra ==' | sed 's/;.*//')
  roots+=("guidellm" "lm-eval[api]")
fi
# xgrammar (structured output, imported by the server) needs apache-tvm-ffi; the kernels set does not.
TVM_SKIP=apache-tvm-ffi; [ $SERVE = 1 ] && TVM_SKIP=""
wdir=$CACHE/set-$set_name
# Never carried: the image has torch and friends; the rest are GPU libraries vLLM imports only on other paths
# (FlashInfer/CUTLASS/quack travel with ../shared/tools/device-peers when a suite wants them) or not on Hopper.
python3 scripts/wheel_closure.py --out "$wdir" --skip torch torchaudio torchvision torchcodec PyNvVideoCodec \
  flashinfer-python flashinfer-cubin $TVM_SKIP tilelang nvidia-cudnn-frontend fastsafetensors \
  nvidia-cutlass-dsl quack-kernels tokenspeed-mla humming-kernels numba vllm -- "${roots[@]}" >&2

# 3. One payload (tar of the tree archive + wheels), split into parts.
rm -rf "$OUTDIR"; mkdir -p "$OUTDIR"
payload=$CACHE/payload-$set_name.tar
closure=$(python3 scripts/wheel_closure.py --out "$wdir" --skip torch torchaudio torchvision torchcodec \
  PyNvVideoCodec flashinfer-python flashinfer-cubin $TVM_SKIP tilelang nvidia-cudnn-frontend fastsafetensors \
  nvidia-cutlass-dsl quack-kernels tokenspeed-mla humming-kernels numba vllm -- "${roots[@]}" | awk 'NF==3{print $3}')
stage=$(mktemp -d "$CACHE/stage.XXXXXX"); mkdir -p "$stage/wheels"
ln -s "$tree_xz" "$stage/vllm-tree.tar.xz"
for x in ${extra_xz[@]+"${extra_xz[@]}"}; do ln -s "$x" "$stage/vllm-extra-$(basename "$x")"; done
for w in $closure; do ln -s "$wdir/$w" "$stage/wheels/$w"; done
(cd "$stage" && tar -chf "$payload" vllm-tree.tar.xz $(ls | grep '^vllm-extra-' || true) wheels); rm -rf "$stage"
size=$(stat -c %s "$payload")
IFS=',' read -ra caps <<< "${PARTS:-}"
offset=0 n=0
while [ $offset -lt $size ]; do
  cap_mib=${caps[$n]:-44}; n=$((n + 1))
  len=$((cap_mib * 1048576)); [ $((offset + len)) -gt $size ] && len=$((size - offset))
  mkdir -p "$OUTDIR/part$n"
  dd if="$payload" of="$OUTDIR/part$n/piece" bs=1M iflag=skip_bytes,count_bytes skip=$offset count=$len status=none
  offset=$((offset + len))
done
sum=$(sha256sum "$payload" | cut -d' ' -f1)
for ((k = 1; k <= n; k++)); do
  d=$OUTDIR/part$k
  { echo "vllm $PIN $set_name $n $size $sum"
    for ((j = 1; j <= n; j++)); do echo "$j $(sha256sum "$OUTDIR/part$j/piece" | cut -d' ' -f1)"; done
  } > "$d/MANIFEST"
  echo "$k" > "$d/PART"
  cp scripts/vllm_bundle_install.sh "$d/install.sh"
done
say "vllm==$PIN ($set_name): $n part(s) in $OUTDIR"
for ((k = 1; k <= n; k++)); do
  printf '  part%d  %5.1f MiB\n' "$k" "$(du -sb "$OUTDIR/part$k" | awk '{print $1/1048576}')"
done
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "The checkout travels too ($(awk -v b="$tree" 'BEGIN{printf "%.1f", b/1048576}') MiB now): keep each call under 64 MiB in all."
