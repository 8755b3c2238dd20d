"""A serving engine in one module: ``fake_server.py`` behind ``normbench.engines.Engine``.

What a new engine (SGLang, say) adds to normbench, and nothing more: this
class, and one registry line, ``ENGINES["fake"] = "fake_engine:FakeEngine"``
(or an entry point in the ``normbench.engines`` group). Its flags are shaped
like SGLang's: ``--tp-size`` / ``--dp-size`` give the GPU count (tensor x data
parallel size); ``fake_server.py`` does not take them, so the command line
drops them. It has no settings object, no compile caches and no offline
latency tool, so a suite asking for those is refused before anything starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from normbench.engines import Engine, parallel_product, strip_options

FAKE_SERVER = Path(__file__).with_name("fake_server.py")
PARALLEL_SIZES = (("--tp-size", "--tensor-parallel-size"), ("--dp-size", "--data-parallel-size"))


class FakeEngine(Engine):
    name = "fake"
    display = "fake serve"
    install_hint = "the fake server (tests/e2e/fake_server.py)"
    health_path = "/health"
    gpu_count_source = "tensor x data parallel size"

    def installed(self) -> bool:
        return FAKE_SERVER.is_file()

    def version(self) -> str | None:
        return "0.0.0"

    def gpus(self, args: Sequence[str]) -> int:
        return parallel_product(args, PARALLEL_SIZES)

    def serve_command(self, model: str, host: str, port: int | None, served_name: str,
                      settings: Mapping[str, Any], args: Sequence[str]) -> list[str]:
        sizes = {name for names in PARALLEL_SIZES for name in names}
        return [sys.executable, str(FAKE_SERVER), "--port", str(port), *strip_options(args, sizes, set())]
