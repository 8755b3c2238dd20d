"""Unfused RMSNorm + quantization: one provider's ``rms_norm`` then another's quantization.

``compose(norm, quant)`` builds the provider a suite names ``unfused: {norm: A, quant: B}``
(``unfused[norm=A,quant=B]``) for ``rms_norm_quant``, ``rms_norm_group_quant`` and
``rms_norm_static_quant``. It reproduces the ``unfused_fp8_impl`` / ``unfused_int8_impl`` /
``unfused_groupwise_fp8_impl`` rows of vLLM's
``benchmarks/fused_kernels/layernorm_rms_benchmarks.py``: the norm writes its dtype-rounded
output to memory, the quantization reads it back. Differences from that
script: the per-token case quantizes with *dynamic per-token* scales (the fused op's
output; vLLM's script calls ``scaled_fp8_quant`` per tensor), and ``scale_ub`` is passed
on to the per-token quantization when the case has it. For ``rms_norm_static_quant`` the
composition is what a served FP8 model with static activation scales runs without vLLM's
``fuse_norm_quant`` pass: ``rms_norm``, then ``scaled_fp8_quant(y, scale)`` (vLLM's
``static_scaled_fp8_quant``) with the checkpoint's scale.

Parts:

* norm: ``PROVIDERS[A]``'s ``rms_norm`` op with the case's ``residual`` (outputs ``(out,)``
  or ``(out, residual_out)``), built by its own factory.
* quant: ``PROVIDERS[B]``'s ``scaled_quant`` (``static_scale=False``,
  ``scale_granularity=per_token``) for ``rms_norm_quant``, or its internal ``group_quant``
  op (``normbench.kernels.quant``: ``group_size``, ``scale_layout``) for
  ``rms_norm_group_quant``, applied to the norm's output. ``torch_compile`` as B compiles
  ``torch_naive``'s quantization alone. ``rms_norm_static_quant``: ``scaled_quant`` with
  ``static_scale=True`` and the case's ``scale`` input.

Outputs are the fused op's: ``(codes, scales[, residual_out])``, checked by the quant
family like any provider's.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from normbench.kernels.base import Inputs, OpFn, Outputs, Params, Provider
from normbench.registry import UNFUSED_OPS

OPS = UNFUSED_OPS  # the suite validator (normbench.suite) checks stages against the same tuple
_COMMON = ("num_tokens", "hidden_size", "dtype", "eps")


def norm_params(params: Params) -> Params:
    """The ``rms_norm`` case the norm part runs for a fused case's ``params``."""
    out = {k: params[k] for k in _COMMON if k in params}
    out["residual"] = bool(params.get("residual", False))
    return out


def quant_part(op: str, params: Params) -> tuple[str, Params]:
    """(quant op, its params) the quant part runs for a fused case."""
    base = {k: params[k] for k in _COMMON if k in params}
    base["quant_dtype"] = params.get("quant_dtype", "fp8")
    if op == "rms_norm_static_quant":
        return "scaled_quant", {**base, "static_scale": True, "scale_granularity": "per_tensor", "scale_ub": False}
    if op == "rms_norm_quant":
        return "scaled_quant", {
            **base, "static_scale": False, "scale_granularity": "per_token",
            "scale_ub": bool(params.get("scale_ub", False)),
        }
    return "group_quant", {
        **base, "group_size": params.get("group_size", 128), "scale_layout": params.get("scale_layout", "row_major"),
    }


class UnfusedProvider(Provider):
    """``rms_norm`` of provider ``norm``, then the quantization of provider ``quant``.

    Args:
        norm, quant: names in ``normbench.registry.PROVIDERS``.

    Raises:
        normbench.errors.UnknownNameError: a name that is not registered (with a did-you-mean).
    """

    def __init__(self, norm: str, quant: str):
        from normbench.registry import provider_entry

        self.norm_name, self.quant_name = norm, quant
        self._entries = {"norm": provider_entry(norm), "quant": provider_entry(quant)}
        self._loaded: dict[str, Any] = {}
        self.name = f"unfused[norm={norm},quant={quant}]"
        self.ops: dict[str, Callable[[Params], OpFn]] = {op: self._factory(op) for op in OPS}

    def _part(self, role: str) -> Provider:
        if role not in self._loaded:
            from normbench.registry import load

            self._loaded[role] = load(self._entries[role].target)
        return self._loaded[role]

    def unavailable(self) -> str | None:
        """Which part cannot run here (missing package, failed import, its own reason)."""
        for role in ("norm", "quant"):
            entry = self._entries[role]
            missing = entry.missing_package()
            if missing:
                return f"{self.name}: {role} part: {missing}"
            try:
                why = self._part(role).unavailable()
            except Exception as e:  # a broken install is as unavailable as a missing one
                why = f"import failed: {type(e).__name__}: {e}"
            if why:
                return f"{self.name}: {role} part {entry.name}: {why}"
        return None

    def unsupported(self, op: str, params: Params, device: torch.device) -> str | None:
        if op not in self.ops:
            return f"{self.name} has no {op} (unfused compositions serve {', '.join(OPS)})"
        why = self._part("norm").unsupported("rms_norm", norm_params(params), device)
        if why:
            return f"norm part {self.norm_name}: {why}"
        q_op, q_params = quant_part(op, params)
        why = self._part("quant").unsupported(q_op, q_params, device)
        if why:
            return f"quant part {self.quant_name}: {why}"
        return None

    def _factory(self, op: str) -> Callable[[Params], OpFn]:
        def factory(params: Params) -> OpFn:
            n_params = norm_params(params)
            q_op, q_params = quant_part(op, params)
            norm_fn = self._part("norm").make("rms_norm", n_params)
            quant_fn = self._part("quant").make(q_op, q_params)
            residual = n_params["residual"]
            scale_ub = bool(q_params.get("scale_ub", False))
            static = bool(q_params.get("static_scale", False))

            def fn(inputs: Inputs) -> Outputs:
                n_in = {"x": inputs["x"], "weight": inputs["weight"]}
                if residual:
                    n_in["residual"] = inputs["residual"]
                normed = norm_fn(n_in)
                q_in = {"x": normed[0]}
                if scale_ub:
                    q_in["scale_ub"] = inputs["scale_ub"]
                if static:
                    q_in["scale"] = inputs["scale"]
                q_out = quant_fn(q_in)
                return (q_out[0], q_out[1], normed[1]) if residual else (q_out[0], q_out[1])

            return fn

        return factory


def compose(norm: str, quant: str) -> UnfusedProvider:
    """The provider ``unfused[norm=<norm>,quant=<quant>]`` (``registry.UNFUSED_TARGET``)."""
    return UnfusedProvider(norm, quant)
