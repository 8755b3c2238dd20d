"""Environment differences between runs (see ``normbench.compare``): flattened keys, the
important ones first, and the measurement conditions each run recorded (``with_conditions``:
the ``--lock-clocks`` state, the SM clock its cases ran at, throttled cases, power limit).
Pure: no torch, no NVML."""

from __future__ import annotations

from typing import Any

from normbench.compare.model import EnvDiff
from normbench.conditions import run_summary


def important_env_keys() -> tuple[str, ...]:
    """Environment keys shown first, in this order: the device, its clocks (``--lock-clocks`` and the
    conditions the cases recorded, ``with_conditions``), the footer's packages
    (``normbench.env.footer_packages``, derived from the provider registry), git, bandwidth."""
    from normbench.env import footer_packages

    return (
        "gpu.name", "gpu.sm", "gpu.sm_count",
        "clocks.lock", "clocks.locked_sm_mhz", "clocks.lock_note", "clocks.lock_reset",
        "conditions.sm_clock_mhz", "conditions.throttled_cases", "conditions.power_limit_w",
        "driver", "cuda", "torch.cuda",
        *(f"packages.{p}" for p in footer_packages()), "git.commit", "git.dirty",
        "peak_bandwidth_gbps", "device", "cpu", "host",
    )


def with_conditions(run: Any) -> dict[str, Any]:
    """A run's environment plus the summary of the conditions its cases recorded
    (``normbench.conditions.run_summary``: ``conditions.sm_clock_mhz``, ``conditions.throttled_cases``,
    ``conditions.power_limit_w``), so that runs measured at different clocks, power limits or lock
    states show it among their environment differences."""
    return {**run.environment, **run_summary(run)}


def flatten(env: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; keys that already hold dots are kept as they are."""
    out: dict[str, Any] = {}
    for k, v in env.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def env_get(env: dict[str, Any], key: str, default: Any = None) -> Any:
    """``env["gpu.name"]`` whether the environment is flat (``{"gpu.name": ..}``) or nested."""
    if key in env:
        return env[key]
    node: Any = env
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return flatten(env).get(key, default)
        node = node[part]
    return node


def gpu_name(env: dict[str, Any]) -> str | None:
    return env_get(env, "gpu.name") or env_get(env, "gpu_name")


def _env_value(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.4g}")
    return v


def env_differences(base: dict[str, Any], cands: dict[str, dict[str, Any]]) -> list[EnvDiff]:
    """Every environment key whose value differs between the baseline and a candidate.

    Floats are compared at 4 significant digits (a re-measured copy bandwidth
    of 2998.7 vs 2998.9 GB/s is the same machine). Important keys come first.
    """
    fb = flatten(base)
    fcs = {label: flatten(e) for label, e in cands.items()}
    keys = list(dict.fromkeys([*fb, *(k for f in fcs.values() for k in f)]))
    rank = {k: i for i, k in enumerate(important_env_keys())}
    keys.sort(key=lambda k: (rank.get(k, len(rank)), k))
    diffs = []
    for k in keys:
        b = _env_value(fb.get(k))
        vals = {label: _env_value(f.get(k)) for label, f in fcs.items()}
        if any(v != b for v in vals.values()):
            diffs.append(EnvDiff(k, fb.get(k), {label: f.get(k) for label, f in fcs.items()}))
    return diffs
