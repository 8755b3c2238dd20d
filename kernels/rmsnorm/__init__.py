"""RMSNorm and fused add + RMSNorm: the op family ``normbench.ops`` names ``normbench.kernels.rmsnorm:FAMILY``.

Ops (``normbench.ops``):

* ``rms_norm``: ``out = x / sqrt(mean(x**2, -1) + eps) * weight`` -> ``(out,)``; with
  ``params["residual"]`` the residual is added first, as below.
* ``fused_add_rms_norm`` (``residual`` pinned to True): ``r = x + residual``,
  ``out = rms_norm(r) * weight`` -> ``(out, r)``, vLLM's ``fused_add_rms_norm``.

Tensors: ``x``, ``residual``, ``out``, ``r``: [num_tokens, hidden_size]; ``weight``:
[hidden_size]; all in ``params["dtype"]`` (bfloat16, float16 or float32).

Rounding convention of the reference: every fused kernel stores ``r`` in the activation
dtype, and the next layer reads that stored value, so the reference rounds ``x + residual``
to the dtype once and normalizes the *rounded* ``r``. Everything else is float64; ``out`` is
not rounded (a provider's output is compared with the exact value).

Sources: HuggingFace transformers ``LlamaRMSNorm`` (models/llama/modeling_llama.py) for the
eager formula; vLLM ``csrc/layernorm_kernels.cu`` (``rms_norm``, ``fused_add_rms_norm``) for
the fused op's semantics.
Modules: ``reference`` (inputs, float64 reference, check: ``FAMILY``), ``triton_kernels`` and
``triton_launch`` (our kernels and ``rms_norm``), ``configs`` (``LaunchConfig``, the formula and
the tuned table ``kernels/tuned/rmsnorm.json``), ``impls`` (the implementations this family
ships: ``reference``, ``torch_naive`` (HF formula, also what ``torch_compile`` compiles),
``torch_rms_norm``, ``triton``). ``IMPLS`` adds the peers' adapters (``vllm``, ``flashinfer``,
``liger``, ``quack``: ``kernels/providers/<peer>.py``), assembled on first use.
"""

from normbench.kernels._triton import device_facts
from normbench.kernels.providers._family import impls_attribute
from normbench.kernels.rmsnorm import configs, impls, reference, triton_kernels, triton_launch
from normbench.kernels.rmsnorm.configs import TUNED, TUNING, LaunchConfig, default_config, formula_config
from normbench.kernels.rmsnorm.impls import OWN_IMPLS, hf_rms_norm
from normbench.kernels.rmsnorm.reference import FAMILY, NORM_OPS, RMSNormFamily, has_residual
from normbench.kernels.rmsnorm.triton_launch import rms_norm

__all__ = [
    "FAMILY", "NORM_OPS", "OWN_IMPLS", "TUNED", "TUNING", "LaunchConfig", "RMSNormFamily", "configs",
    "default_config", "device_facts", "formula_config", "has_residual", "hf_rms_norm", "impls", "reference",
    "rms_norm", "triton_kernels", "triton_launch",
]

#: ``IMPLS`` (provider -> op -> factory): ``OWN_IMPLS`` and the peers' adapters.
__getattr__ = impls_attribute(__name__, OWN_IMPLS, NORM_OPS)
