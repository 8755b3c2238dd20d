"""lm-eval ``gsm8k`` through ``local-completions`` against the variant's ``vllm serve``.

Command (``lm_eval_command``; lm-eval >= 0.4.8, tested with 0.4.13)::

    lm_eval --model local-completions
        --model_args model=<served name>,base_url=http://127.0.0.1:<port>/v1/completions,
                     num_concurrent=<concurrency>,max_retries=3,tokenized_requests=False,tokenizer_backend=None
        --tasks gsm8k --num_fewshot 5 [--limit N] [--gen_kwargs k=v,...]
        --output_path <logs>/<case>-lm_eval --log_samples [--include_path <task dir>]

``tokenized_requests=False`` with no tokenizer: gsm8k only generates, so the
prompts go as text and nothing is downloaded.

Offline data (``data_files``): normbench writes a task ``normbench_gsm8k``
whose YAML is ``include: <lm_eval>/tasks/gsm8k/gsm8k.yaml`` with
``dataset_path: json`` and ``dataset_kwargs: {data_files: {train: .., test: ..}}``
(one file serves both splits when ``data_files`` is a single path; few-shot
examples then come from the evaluated file itself). Records are gsm8k's
``{"question": .., "answer": "...\\n#### 42"}``.

Outputs read (lm-eval's ``EvaluationTracker``): ``results_<date>.json`` with
``results[task]["exact_match,strict-match"]``, ``"exact_match_stderr,strict-match"``
(a float, or ``"N/A"``), the same for ``flexible-extract``, and
``samples_<task>_<date>.jsonl``: one line per (doc, filter) with ``doc_id``,
``filter`` and ``exact_match`` (0.0 / 1.0).

Normalized:

* metrics ``exact_match,strict-match`` and ``exact_match,flexible-extract``
  (lm-eval's own names): unit
  ``fraction`` (0..1), higher is better, one sample (one repeat), with extra
  fields ``stderr`` (None for "N/A") and ``n`` (documents evaluated);
* ``items``: the per-document results, sorted by ``doc_id``:
  ``[{"doc_id": 0, "strict": 0 | 1, "flexible": 0 | 1}, ...]``. Two variants'
  ``items`` pair up by ``doc_id`` (same task, limit and few-shot seed), which
  is what McNemar's test needs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError
from normbench.store import Metric

FILTERS = {"strict": "strict-match", "flexible": "flexible-extract"}
LOCAL_TASK = "normbench_gsm8k"


def gsm8k_yaml() -> Path:
    """lm-eval's own ``tasks/gsm8k/gsm8k.yaml``.

    Raises:
        NormbenchError: lm-eval is not installed or has no gsm8k task file.
    """
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise NormbenchError("the accuracy stage needs lm-eval: pip install 'lm-eval[api]>=0.4.8'")
    path = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "gsm8k" / "gsm8k.yaml"
    if not path.is_file():
        raise NormbenchError(f"lm-eval has no {path}; normbench's accuracy stage needs lm-eval's gsm8k task")
    return path


def resolve_data_files(data_files: str | dict[str, str]) -> dict[str, str]:
    """``{"train": abs path, "test": abs path}`` from a path or a mapping.

    ``${NAME}`` / ``${NAME:-default}`` in a path come from the environment
    (``normbench.runners.server.expand_env``).

    Raises:
        NormbenchError: a file does not exist, the mapping has no ``test``, or a
            ``${NAME}`` without default is unset.
    """
    from normbench.runners.server import expand_env

    files = {"train": data_files, "test": data_files} if isinstance(data_files, str) else dict(data_files)
    files = {split: expand_env(f) for split, f in files.items()}
    if "test" not in files:
        raise NormbenchError(f"accuracy data_files needs a 'test' file, got keys {sorted(files)}")
    files.setdefault("train", files["test"])
    out = {}
    for split, f in files.items():
        p = Path(f).expanduser()
        if not p.is_file():
            raise NormbenchError(f"accuracy data_files.{split}: no such file {f} (relative paths start at {Path.cwd()})")
        out[split] = str(p.resolve())
    return out


def write_task(task_dir: Path, data_files: dict[str, str]) -> str:
    """Write the ``normbench_gsm8k`` task YAML into ``task_dir``; returns the task name."""
    task_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"include: {json.dumps(str(gsm8k_yaml()))}",
        f"task: {LOCAL_TASK}",
        "tag: []",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        *(f"    {split}: {json.dumps(path)}" for split, path in sorted(data_files.items())),
        "training_split: train",
        "fewshot_split: train",
        "test_split: test",
    ]
    (task_dir / f"{LOCAL_TASK}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LOCAL_TASK


def _gen_kwargs(gen: dict[str, Any]) -> str:
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in gen.items())


def lm_eval_command(
    exe: list[str], stage: Any, base_url: str, served_name: str, task: str, out_dir: Path, include_path: Path | None
) -> list[str]:
    model_args = ",".join([
        f"model={served_name}",
        f"base_url={base_url}/v1/completions",
        f"num_concurrent={stage.concurrency}",
        "max_retries=3",
        "tokenized_requests=False",
        "tokenizer_backend=None",
    ])
    cmd = [
        *exe,
        "--model", "local-completions",
        "--model_args", model_args,
        "--tasks", task,
        "--num_fewshot", str(stage.num_fewshot),
        "--output_path", str(out_dir),
        "--log_samples",
    ]
    if stage.limit:
        cmd += ["--limit", str(stage.limit)]
    if stage.gen_kwargs:
        cmd += ["--gen_kwargs", _gen_kwargs(stage.gen_kwargs)]
    if include_path is not None:
        cmd += ["--include_path", str(include_path)]
    return cmd + list(stage.extra_args)


def find_outputs(out_dir: Path, task: str) -> tuple[Path, Path | None]:
    """The newest ``results_*.json`` and ``samples_<task>_*.jsonl`` under ``out_dir``.

    Raises:
        NormbenchError: no results file.
    """
    results = sorted(out_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        raise NormbenchError(f"lm-eval wrote no results_*.json under {out_dir}")
    samples = sorted(out_dir.rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
    return results[-1], (samples[-1] if samples else None)


def _stderr(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" when it cannot compute one


def parse_lm_eval(results: dict[str, Any], samples: list[dict[str, Any]], task: str) -> tuple[dict[str, Metric], list[dict[str, int]]]:
    """Metrics and per-document items from lm-eval's results JSON and samples lines.

    Raises:
        NormbenchError: the task or its exact_match values are missing.
    """
    res = (results.get("results") or {}).get(task)
    if not isinstance(res, dict):
        raise NormbenchError(f"lm-eval results have no task {task!r} (tasks: {sorted(results.get('results') or {})})")
    n = ((results.get("n-samples") or {}).get(task) or {}).get("effective", res.get("sample_len"))
    metrics: dict[str, Metric] = {}
    for filt in FILTERS.values():
        key = f"exact_match,{filt}"
        if key not in res:
            raise NormbenchError(f"lm-eval results for {task} have no {key!r} (keys: {sorted(res)})")
        v = float(res[key])
        metrics[f"exact_match,{filt}"] = Metric(
            value=v, unit="fraction", higher_is_better=True, samples=[v],
            stderr=_stderr(res.get(f"exact_match_stderr,{filt}")), n=n, filter=filt,
        )
    by_doc: dict[int, dict[str, int]] = {}
    names = {filt: short for short, filt in FILTERS.items()}
    for s in samples:
        short = names.get(s.get("filter"))
        if short is None or "exact_match" not in s:
            continue
        item = by_doc.setdefault(int(s["doc_id"]), {"doc_id": int(s["doc_id"])})
        item[short] = int(round(float(s["exact_match"])))
    items = [by_doc[k] for k in sorted(by_doc)]
    return metrics, items


def read_samples(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
