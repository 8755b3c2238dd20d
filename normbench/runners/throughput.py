"""Throughput clients against a running server (any engine's OpenAI-compatible API): guidellm and ``vllm bench serve``.

Both adapters keep the tool's raw JSON in the run's ``logs/`` and normalize it
into the same metric names (every value is one sample: one repeat):

=========================  ======  ================  =====================================
metric                     unit    higher_is_better  guidellm v2 report / vllm bench serve
=========================  ======  ================  =====================================
request_throughput         req/s   yes               requests_per_second / request_throughput
output_throughput          tok/s   yes               output_tokens_per_second / output_throughput
total_token_throughput     tok/s   yes               tokens_per_second / total_token_throughput
ttft_{mean,median,p99}     ms      no                time_to_first_token_ms / *_ttft_ms
tpot_{mean,median,p99}     ms      no                time_per_output_token_ms / *_tpot_ms
itl_{mean,median,p99}      ms      no                inter_token_latency_ms / *_itl_ms
e2el_{mean,median,p99}     ms      no                request_latency (s, x1000) / *_e2el_ms
=========================  ======  ================  =====================================

guidellm: the *successful* requests' distributions of the first benchmark in
the report (``benchmarks[0].metrics.<name>.successful.{mean,median,percentiles.p99}``;
rates are guidellm's time-averaged means). Requests cut off by ``max_seconds``
are ``incomplete``, not failures. Source: guidellm 0.8
``guidellm/benchmark/schemas`` and ``benchmark/outputs/console.py``.

vllm bench serve: the ``--save-result`` JSON of ``vllm/benchmarks/serve.py``
(``completed``, ``failed``, ``request_throughput``, ``mean_ttft_ms``,
``median_ttft_ms``, ``p99_ttft_ms``, ...), run with ``--percentile-metrics
ttft,tpot,itl,e2el --metric-percentiles 50,90,99``.

The record also gets ``requests: {"completed": n, "failed": m}``; a run where
nothing completed is FAILED.

Supported guidellm: >= 0.7 (the ``guidellm run --backend kind=openai_http,...
--profile kind=...,... --data kind=synthetic_text,... --output kind=json,path=...``
CLI, report ``metadata.version`` 2). Older versions raise ``NormbenchError``
naming the supported versions.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError
from normbench.store import Metric

GUIDELLM_MIN = (0, 7)
GUIDELLM_REPORT_VERSION = 2
SUPPORTED_GUIDELLM = "guidellm >= 0.7 (tested with 0.8.1)"
#: guidellm with max_seconds: its duration plus this much for start-up, tokenizing and the report (s).
GUIDELLM_SLACK_S = 300.0
#: guidellm 0.8.1 can deadlock between its scheduler and worker processes on an overloaded
#: machine (seen on 2 busy cores: workers wait on a sync event, the main process on their
#: messages, forever). A run stopped by its timeout is tried again this many times; the
#: record's ``attempts`` says how many it took.
GUIDELLM_RETRIES = 1

STAT_SUFFIXES = ("mean", "median", "p99")


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if not part.isdigit():
            break
    return tuple(out)


def guidellm_version() -> str | None:
    try:
        return version("guidellm")
    except PackageNotFoundError:
        return None


def check_guidellm_version(installed: str | None) -> str:
    """Return ``installed`` if normbench can drive it.

    Raises:
        NormbenchError: not installed, or older than 0.7 (whose ``guidellm
            benchmark --rate-type`` CLI and report format normbench does not read).
    """
    if installed is None:
        raise NormbenchError(
            f"the throughput client 'guidellm' is not installed; normbench supports {SUPPORTED_GUIDELLM}: "
            "pip install 'guidellm>=0.7'"
        )
    if _vtuple(installed) < GUIDELLM_MIN:
        raise NormbenchError(
            f"guidellm {installed} is installed, but normbench supports {SUPPORTED_GUIDELLM} "
            "(the `guidellm run --backend kind=openai_http,...` CLI and its version-2 JSON report): "
            "pip install -U 'guidellm>=0.7'"
        )
    return installed


def _metric(value: float, unit: str, higher: bool) -> Metric:
    return Metric(value=float(value), unit=unit, higher_is_better=higher, samples=[float(value)])


# --------------------------------------------------------------------------- guidellm
def guidellm_command(
    exe: list[str], stage: Any, base_url: str, served_name: str, tokenizer: str, out_json: Path
) -> list[str]:
    """``guidellm run ...`` for one throughput case.

    ``profile``: concurrent -> ``streams`` = ``concurrency`` or ``rate``;
    throughput -> ``max_concurrency``; constant/poisson -> ``rate``
    (+ ``max_concurrency``); synchronous -> no parameter. ``max_seconds`` ->
    ``--constraint kind=max_duration``, ``num_prompts`` -> ``kind=max_requests``.
    Requests go to ``/v1/completions`` (no chat template in the measurement).
    """
    profile = [f"kind={stage.profile}"]
    if stage.profile == "concurrent":
        streams = stage.concurrency or stage.rate
        profile.append(f"streams={int(streams)}")
    elif stage.profile in ("constant", "poisson"):
        profile.append(f"rate={stage.rate:g}")
        if stage.concurrency:
            profile.append(f"max_concurrency={stage.concurrency}")
    elif stage.profile == "throughput" and stage.concurrency:
        profile.append(f"max_concurrency={stage.concurrency}")
    cmd = [
        *exe, "run",
        "--backend", f"kind=openai_http,target={base_url},model={served_name},request_format=/v1/completions",
        "--profile", ",".join(profile),
        "--data", f"kind=synthetic_text,prompt_tokens={stage.prompt_tokens},output_tokens={stage.output_tokens}",
        "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
        "--output", f"kind=json,path={out_json}",
        "--disable-console-interactive",
    ]
    if stage.max_seconds:
        cmd += ["--constraint", f"kind=max_duration,seconds={stage.max_seconds:g}"]
    if stage.num_prompts:
        cmd += ["--constraint", f"kind=max_requests,count={stage.num_prompts}"]
    return cmd + list(stage.extra_args)


def _dist(m: dict[str, Any], name: str) -> dict[str, Any] | None:
    block = m.get(name)
    if not isinstance(block, dict):
        return None
    return block.get("successful") if isinstance(block.get("successful"), dict) else None


def parse_guidellm_report(report: dict[str, Any]) -> tuple[dict[str, Metric], dict[str, int]]:
    """Metrics and request counts from a guidellm version-2 JSON report (its first benchmark).

    Raises:
        NormbenchError: not a version-2 report, or no benchmark / metrics in it.
    """
    meta = report.get("metadata") or {}
    ver = meta.get("version")
    if ver != GUIDELLM_REPORT_VERSION:
        raise NormbenchError(
            f"guidellm report version {ver!r} (guidellm {meta.get('guidellm_version', '?')}): normbench reads "
            f"version {GUIDELLM_REPORT_VERSION}, written by {SUPPORTED_GUIDELLM}"
        )
    benches = report.get("benchmarks") or []
    if not benches or "metrics" not in benches[0]:
        raise NormbenchError("guidellm report has no benchmark results")
    m = benches[0]["metrics"]
    out: dict[str, Metric] = {}
    for name, key in (
        ("request_throughput", "requests_per_second"),
        ("output_throughput", "output_tokens_per_second"),
        ("total_token_throughput", "tokens_per_second"),
    ):
        d = _dist(m, key)
        if d is not None and d.get("mean") is not None:
            out[name] = _metric(d["mean"], "req/s" if name == "request_throughput" else "tok/s", True)
    for name, key, scale in (
        ("ttft", "time_to_first_token_ms", 1.0),
        ("tpot", "time_per_output_token_ms", 1.0),
        ("itl", "inter_token_latency_ms", 1.0),
        ("e2el", "request_latency", 1000.0),  # guidellm reports request latency in seconds
    ):
        d = _dist(m, key)
        if d is None or not d.get("count"):
            continue
        for stat in STAT_SUFFIXES:
            v = d.get("percentiles", {}).get("p99") if stat == "p99" else d.get(stat)
            if v is not None:
                out[f"{name}_{stat}"] = _metric(v * scale, "ms", False)
    totals = m.get("request_totals") or {}
    counts = {"completed": int(totals.get("successful", 0)), "failed": int(totals.get("errored", 0)),
              "incomplete": int(totals.get("incomplete", 0))}
    return out, counts


# --------------------------------------------------------------------------- vllm bench serve
def vllm_bench_serve_command(
    exe: list[str], stage: Any, base_url: str, served_name: str, tokenizer: str, result_dir: Path, result_file: str
) -> list[str]:
    """``vllm bench serve`` on the random dataset for one throughput case.

    ``profile``: concurrent -> ``--max-concurrency`` = ``concurrency`` or ``rate``;
    synchronous -> ``--max-concurrency 1``; throughput -> all at once
    (``--request-rate inf``, ``--max-concurrency`` if given); poisson ->
    ``--request-rate rate``. ``--ignore-eos`` makes every request produce
    ``output_tokens``.
    """
    cmd = [
        *exe, "bench", "serve",
        "--backend", "vllm",
        "--base-url", base_url,
        "--model", served_name,
        "--tokenizer", tokenizer,
        "--dataset-name", "random",
        "--random-input-len", str(stage.prompt_tokens),
        "--random-output-len", str(stage.output_tokens),
        "--num-prompts", str(stage.num_prompts or 1000),
        "--ignore-eos",
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
        "--save-result", "--result-dir", str(result_dir), "--result-filename", result_file,
        "--disable-tqdm",
    ]
    if stage.profile == "concurrent":
        cmd += ["--max-concurrency", str(int(stage.concurrency or stage.rate))]
    elif stage.profile == "synchronous":
        cmd += ["--max-concurrency", "1"]
    elif stage.profile == "poisson":
        cmd += ["--request-rate", f"{stage.rate:g}"]
        if stage.concurrency:
            cmd += ["--max-concurrency", str(stage.concurrency)]
    elif stage.profile == "throughput" and stage.concurrency:
        cmd += ["--max-concurrency", str(stage.concurrency)]
    return cmd + list(stage.extra_args)


def parse_vllm_bench_serve(result: dict[str, Any]) -> tuple[dict[str, Metric], dict[str, int]]:
    """Metrics and request counts from a ``vllm bench serve --save-result`` JSON.

    Raises:
        NormbenchError: the JSON lacks ``request_throughput`` (not a bench-serve result).
    """
    if "request_throughput" not in result:
        raise NormbenchError("not a `vllm bench serve --save-result` JSON (no request_throughput)")
    out: dict[str, Metric] = {
        "request_throughput": _metric(result["request_throughput"], "req/s", True),
    }
    for name in ("output_throughput", "total_token_throughput"):
        if result.get(name) is not None:
            out[name] = _metric(result[name], "tok/s", True)
    for name in ("ttft", "tpot", "itl", "e2el"):
        for stat in STAT_SUFFIXES:
            v = result.get(f"{stat}_{name}_ms")
            if v is not None:
                out[f"{name}_{stat}"] = _metric(v, "ms", False)
    counts = {"completed": int(result.get("completed", 0)), "failed": int(result.get("failed", 0))}
    return out, counts
