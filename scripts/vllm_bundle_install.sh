#!/usr/bin/env bash
# Runs on the GPU machine as .vllmbundle/partK/install.sh (scripts/vllm_bundle.sh copies it there).
# Stashes this part in /tmp/vllm-stash; once every part is there, checks the sha256 sums, unpacks vLLM into
# /tmp/vllm-site, installs the carried wheels, puts a `vllm` command on PATH and checks that
# vllm._custom_ops imports with its CUDA kernels (the serve set: also what vllm serve / bench, guidellm and
# lm-eval import first). Prints `export ...` on stdout for `eval` (last part only).
# Exit codes: 0 ok (or a part stashed), 3 parts missing, 4 checksum or unpack failed, 5 import failed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STASH=/tmp/vllm-stash SITE=/tmp/vllm-site
read -r _ pin set_name nparts size sum < "$HERE/MANIFEST"
part=$(cat "$HERE/PART")
mkdir -p "$STASH"
cp -f "$HERE/piece" "$STASH/piece.$part"
missing=""
for ((k = 1; k <= nparts; k++)); do
  want=$(awk -v k=$k '$1==k{print $2}' "$HERE/MANIFEST")
  if [ ! -f "$STASH/piece.$k" ]; then missing="$missing $k"; continue; fi
  got=$(sha256sum "$STASH/piece.$k" | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "vllm-bundle: part $k checksum mismatch" >&2; exit 4; }
done
if [ -n "$missing" ]; then
  if [ "$part" = "$nparts" ]; then
    echo "vllm-bundle: part(s)$missing are not on this machine (a fresh machine?): send them again first" >&2
    exit 3
  fi
  echo "vllm-bundle: part $part of $nparts stashed" >&2
  exit 0
fi
t0=$SECONDS
rm -rf "$SITE"; mkdir -p "$SITE/bin" "$STASH/x"
for ((k = 1; k <= nparts; k++)); do cat "$STASH/piece.$k"; done > "$STASH/payload.tar"
[ "$(sha256sum "$STASH/payload.tar" | cut -d' ' -f1)" = "$sum" ] || { echo "vllm-bundle: payload checksum mismatch" >&2; exit 4; }
tar -C "$STASH/x" -xf "$STASH/payload.tar" && xz -dc "$STASH/x/vllm-tree.tar.xz" | tar -C "$SITE" -xf - \
  || { echo "vllm-bundle: unpack failed" >&2; exit 4; }
for x in "$STASH"/x/vllm-extra-*.tar.xz; do  # e.g. the FA3 extension of the serve set
  [ -f "$x" ] || continue
  xz -dc "$x" | tar -C "$SITE" -xf - || { echo "vllm-bundle: unpack of $(basename "$x") failed" >&2; exit 4; }
done
if ls "$STASH"/x/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STASH"/x/wheels/*.whl >&2 || { echo "vllm-bundle: wheel install failed" >&2; exit 4; }
fi
rm -rf "$STASH/x" "$STASH/payload.tar"
cat > "$SITE/bin/vllm" <<'EOF'
#!/bin/sh
exec python3 -m vllm.entrypoints.cli.main "$@"
EOF
chmod +x "$SITE/bin/vllm"
for tool in guidellm lm_eval; do
  if [ -d "$SITE/$tool" ]; then
    mod=$tool; [ $tool = lm_eval ] && mod="lm_eval"
    printf '#!/bin/sh\nexec python3 -m %s "$@"\n' "$mod" > "$SITE/bin/${tool/_/-}"
    [ $tool = lm_eval ] && cp "$SITE/bin/lm-eval" "$SITE/bin/lm_eval"
    chmod +x "$SITE/bin/"*
  fi
done
echo "export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH} PATH=$SITE/bin:\$PATH" > "$SITE/env.sh"
. "$SITE/env.sh"
python3 - >&2 <<'PY' || { echo "vllm-bundle: import check failed" >&2; exit 5; }
import importlib.metadata, torch
import vllm._custom_ops  # noqa: F401  (loads _C_stable_libtorch through the CUDA platform)
print("vllm", importlib.metadata.version("vllm"), "imported;",
      "torch.ops._C.rms_norm" if hasattr(torch.ops._C, "rms_norm") else "NO torch.ops._C.rms_norm",
      "on", torch.cuda.get_device_name(0))
PY
if [ "$set_name" = serve ]; then
  # What `vllm serve`, `vllm bench latency`, guidellm and lm-eval import before they do anything: a
  # failure here (xgrammar against the wrong tvm-ffi, seen on the H100) would otherwise surface
  # minutes later as every server exiting before it is healthy.
  python3 - >&2 <<'PY' || { echo "vllm-bundle: serve import check failed (the traceback above)" >&2; exit 5; }
import importlib
for m in ("xgrammar", "vllm.entrypoints.cli.main", "vllm.entrypoints.openai.api_server",
          "vllm.benchmarks.latency", "guidellm", "lm_eval"):
    importlib.import_module(m)
print("serve imports ok: xgrammar, vllm.entrypoints (cli, openai api_server), vllm.benchmarks.latency, guidellm, lm_eval")
PY
fi
echo "vllm-bundle: vllm $pin ($set_name) ready in $((SECONDS - t0)) s; later calls: . $SITE/env.sh" >&2
cat "$SITE/env.sh"
