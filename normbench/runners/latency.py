"""``vllm bench latency``: one offline engine per (variant, input length), no server.

Command (``latency_command``)::

    vllm bench latency --model <model> --input-len N --output-len M --batch-size B
        --num-iters I --num-iters-warmup W --output-json <logs>/<case>.json
        [--compilation-config '<json>'] <server args minus serve-only> <variant args> <extra_args>

(the server args without the HTTP-frontend options: ``Engine.offline_args``,
``normbench.engines.vllm.strip_serve_only``). Only engines with an offline
latency tool (``Engine.offline_latency``: vLLM) run latency stages.

``vllm bench latency`` draws dummy prompt token ids below 10000, so the
model's vocabulary must have at least 10000 entries.

Its ``--output-json`` (``vllm/benchmarks/latency.py``) holds ``avg_latency``
(s), ``latencies`` (s, one per iteration) and ``percentiles`` ({"10": s, "25",
"50", "75", "90", "99"}). Normalized metrics, all in ms, lower is better, one
sample each (one repeat): ``latency_avg`` and ``latency_p10`` ... ``latency_p99``.
The per-iteration latencies stay in the record's ``latencies_ms`` field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError
from normbench.engines.vllm import compilation_config_arg
from normbench.store import Metric

PERCENTILES = ("10", "25", "50", "75", "90", "99")


def latency_command(
    exe: list[str], model: str, input_len: int, stage: Any, compilation_config: dict[str, Any],
    engine_args: list[str], out_json: Path,
) -> list[str]:
    cmd = [
        *exe, "bench", "latency",
        "--model", model,
        "--input-len", str(input_len),
        "--output-len", str(stage.output_len),
        "--batch-size", str(stage.batch_size),
        "--num-iters", str(stage.num_iters),
        "--num-iters-warmup", str(stage.num_iters_warmup),
        "--output-json", str(out_json),
    ]
    if compilation_config:
        cmd += ["--compilation-config", compilation_config_arg(compilation_config)]
    return cmd + list(engine_args) + list(stage.extra_args)


def parse_latency_json(data: dict[str, Any]) -> tuple[dict[str, Metric], list[float]]:
    """Metrics (ms) and per-iteration latencies (ms) from ``vllm bench latency --output-json``.

    Raises:
        NormbenchError: no ``avg_latency`` in the JSON.
    """
    if "avg_latency" not in data:
        raise NormbenchError("not a `vllm bench latency --output-json` file (no avg_latency)")

    def m(seconds: float) -> Metric:
        ms = float(seconds) * 1000.0
        return Metric(value=ms, unit="ms", higher_is_better=False, samples=[ms])

    out = {"latency_avg": m(data["avg_latency"])}
    pct = data.get("percentiles") or {}
    for p in PERCENTILES:
        if p in pct:
            out[f"latency_p{p}"] = m(pct[p])
    iters = [float(x) * 1000.0 for x in data.get("latencies") or []]
    return out, iters
