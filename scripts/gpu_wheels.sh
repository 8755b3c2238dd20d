#!/usr/bin/env bash
# The wheels normbench itself needs on the lent GPU machine that its image lacks (pydantic and its
# parts, and nvidia-ml-py / anything added to pyproject's dependencies later), into .whl/ (git-excluded).
# scripts/gpu_bench.sh installs .whl/*.whl when the call carries it:
#   bash scripts/gpu_wheels.sh        # here, once
#   device call: carry [".whl"], command: bash scripts/gpu_bench.sh MODE ...
# Not needed when the call also installs the vLLM bundle (scripts/vllm_bundle.sh), which carries
# pydantic too. Reads the dependency list from pyproject.toml, so it stays in step with it.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mapfile -t deps < <(python3 - <<'PY'
import tomllib
for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    print(d)
PY
)
python3 scripts/wheel_closure.py --out .whl --skip torch triton -- "${deps[@]}"
