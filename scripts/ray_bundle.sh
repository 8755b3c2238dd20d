#!/usr/bin/env bash
# Packs Ray for the lent GPU machine (no network there; a device call carries at most 64 MiB with the tree).
#
#   bash scripts/ray_bundle.sh            # writes .raybundle/ (git-excluded), about 21 MB
#
# The ray wheel (79 MB, cp312 manylinux x86-64) is unpacked and pruned of what normbench's
# executor never loads (the Java jars, rllib, data, serve, train, tune, llm, the dashboard's web
# client), then packed as one tar.xz (~20 MB); its missing dependencies there (jsonschema and
# its three) travel as wheels. scripts/gpu_bench.sh installs .raybundle/ into /tmp/site when it
# is present. Ray's core (GCS, raylet, actors, streaming generators) is all kept.
set -euo pipefail
RAY_VERSION=${RAY_VERSION:-2.60.0}
PYVER=${PYVER:-3.12}
ROOT=$(git rev-parse --show-toplevel)
OUTDIR=$ROOT/.raybundle
WORK=${RAY_BUNDLE_WORK:-$HOME/.cache/normbench-ray-bundle}
PLAT=(--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
grep -qx '/.raybundle/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.raybundle/' >> "$ROOT/.git/info/exclude"
mkdir -p "$WORK" "$OUTDIR"
cd "$WORK"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLAT[@]}" \
  -d wheels "ray==$RAY_VERSION" jsonschema jsonschema-specifications referencing rpds-py
tarball=$OUTDIR/ray-$RAY_VERSION-pruned.tar.xz
if [ ! -f "$tarball" ]; then
  rm -rf tree && mkdir tree
  (cd tree && unzip -q ../wheels/ray-"$RAY_VERSION"-*.whl)
  rm -rf tree/ray/jars tree/ray/rllib tree/ray/data tree/ray/serve tree/ray/train tree/ray/tune tree/ray/llm \
         tree/ray/dashboard/client/build
  tar -C tree -cf - . | xz -9 -T0 > "$tarball.part" && mv "$tarball.part" "$tarball"
  rm -rf tree
fi
cp wheels/jsonschema*.whl wheels/referencing*.whl wheels/rpds_py*.whl "$OUTDIR/"
ls -la "$OUTDIR"
echo "carry .raybundle (and .whl) in the device call; scripts/gpu_bench.sh installs it"
