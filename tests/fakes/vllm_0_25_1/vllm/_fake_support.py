"""Strict call binding and recording for the fake vLLM, and the shared quantization math.

Not part of vLLM: this module exists only in normbench's fake (``tests/fakes/vllm_0_25_1``).
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from typing import Any, Callable

import torch

#: Every call made through an ``api`` function: (name, arguments with defaults applied).
CALLS: list[tuple[str, dict[str, Any]]] = []


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` matches the annotation ``hint`` (the types the fake's API uses).

    ``float`` accepts ``int`` (PEP 484, and torch schemas do); ``int`` and ``float`` reject
    ``bool``; ``list[X]`` / ``tuple[X, ...]`` check their items; ``Any`` accepts anything.
    """
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arm) for arm in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def api(name: str) -> Callable[[Callable], Callable]:
    """Decorate a fake API function recorded as ``name``.

    The wrapper binds each call with ``inspect.signature(fn).bind`` (a ``TypeError`` for an
    unknown, missing or doubled parameter), checks every bound argument against the
    function's annotations (``TypeError`` naming the parameter), records
    ``(name, arguments)`` in ``CALLS`` and then runs the function. ``inspect.signature`` of
    the wrapper is the function's own (``functools.wraps``).
    """

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            hints = typing.get_type_hints(fn)
            for pname, value in bound.arguments.items():
                hint = hints.get(pname, Any)
                if not conforms(value, hint):
                    raise TypeError(f"{name}: argument {pname}={_describe(value)} does not match {hint}")
            CALLS.append((name, dict(bound.arguments)))
            return fn(*args, **kwargs)

        wrapper.fake_name = name  # type: ignore[attr-defined]
        return wrapper

    return decorate


# --------------------------------------------------------------------------- quantization math

#: vLLM's ``min_scaling_factor`` (``csrc/quantization/utils.cuh``): fp8 1 / (448 * 512), int8 FLT_EPSILON.
MIN_SCALE = {torch.float8_e4m3fn: 1.0 / (448.0 * 512.0), torch.int8: 2.0**-23}
QRANGE = {torch.float8_e4m3fn: (-448.0, 448.0), torch.int8: (-128.0, 127.0)}


def qmax(dtype: torch.dtype) -> float:
    if dtype not in QRANGE:
        raise RuntimeError(f"fake vLLM: unsupported quantized dtype {dtype} (float8_e4m3fn or int8)")
    return QRANGE[dtype][1]


def to_codes(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Real values ``v`` (float64) -> codes of ``dtype``: clamp, then round to nearest even."""
    lo, hi = QRANGE[dtype]
    v = v.clamp(lo, hi)
    if dtype == torch.int8:
        return torch.round(v).to(torch.int8)
    return v.to(torch.float32).to(torch.float8_e4m3fn)


def rms_norm64(h: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """float64 ``h / sqrt(mean(h^2) + eps) * weight`` over the last dimension."""
    h = h.to(torch.float64)
    y = h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * weight.to(torch.float64)


def add_residual(x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """The norm's input: ``x``, or ``x + residual`` rounded to the dtype and stored in
    ``residual`` (vLLM's in-place convention)."""
    if residual is None:
        return x
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise RuntimeError(f"fake vLLM: residual {tuple(residual.shape)} {residual.dtype} vs input {tuple(x.shape)} {x.dtype}")
    r = (x.to(torch.float64) + residual.to(torch.float64)).to(x.dtype)
    residual.copy_(r)
    return r


def check_out(name: str, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
        raise RuntimeError(f"fake vLLM: {name} must be {tuple(shape)} {dtype}, got {tuple(t.shape)} {t.dtype}")


def block_scales(y: torch.Tensor, group: int, dtype: torch.dtype, floor: float, ub: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [T, H / group] scales ``max(min(amax, ub) / qmax, floor)`` rounded to fp32."""
    t, h = y.shape
    if h % group:
        raise RuntimeError(f"fake vLLM: hidden size {h} is not a multiple of the group size {group}")
    amax = y.reshape(t, h // group, group).abs().amax(dim=-1)
    if ub is not None:
        amax = torch.minimum(amax, ub.to(torch.float64).reshape(()))
    return (amax / qmax(dtype)).clamp(min=floor).to(torch.float32).to(torch.float64)


def quantize_blocks(y: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Codes of ``y`` [T, H] with per-block ``scales`` [T, G] (float64)."""
    group = y.shape[1] // scales.shape[1]
    return to_codes(y / scales.repeat_interleave(group, dim=1), dtype)


def ceil_pow2(s: torch.Tensor) -> torch.Tensor:
    """The power of two at or above each positive ``s`` (UE8M0 scales)."""
    return torch.exp2(torch.ceil(torch.log2(s)))


def round_up(a: int, b: int) -> int:
    return (a + b - 1) // b * b


assert math.isclose(MIN_SCALE[torch.int8], torch.finfo(torch.float32).eps)
