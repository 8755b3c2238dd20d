"""A fake of vLLM 0.25.1's kernel API, for normbench's CPU tests. Not vLLM.

Only what normbench's ``vllm`` adapters reach exists here:

* ``vllm._custom_ops``: ``rms_norm``, ``fused_add_rms_norm``,
  ``rms_norm_dynamic_per_token_quant``, ``rms_norm_per_block_quant``, ``scaled_fp8_quant``,
  ``scaled_int8_quant``, ``scaled_fp4_quant``;
* ``vllm.model_executor.layers.quantization.utils.fp8_utils.per_token_group_quant_fp8`` and
  ``...int8_utils.per_token_group_quant_int8``;
* ``vllm._fake_kernels.OPS``: stand-ins for the ``torch.ops._C`` kernels those wrappers
  launch, plus ``rms_norm_static_fp8_quant`` / ``fused_add_rms_norm_static_fp8_quant``
  (no Python wrapper in 0.25.1). A test installs ``OPS`` as ``torch.ops._C``
  (``monkeypatch.setattr(torch.ops, "_C", OPS)``), as importing the real
  ``vllm._custom_ops`` loads the kernel library that registers ``torch.ops._C``.

Every function has exactly vLLM 0.25.1's Python signature (parameter names, order, kinds,
defaults, annotations; ``tests/unit/test_vllm_adapters.py`` compares them with the 0.25.1
sources when those are on the machine) and returns what 0.25.1 returns (shapes, dtypes,
strides of the outputs, in-place updates). Each is wrapped by ``_fake_support.api``, which
binds every call to that signature, checks the arguments against the annotations and
records the call, so a renamed, reordered or mistyped argument raises ``TypeError``.

The arithmetic is plain torch on the CPU (float64 where it matters): the right result of
each kernel by the rules of ``normbench.kernels.quant`` / ``nvfp4`` (and vLLM's sources named
there), not vLLM's exact rounding. The ``torch.ops._C`` schemas live in vLLM's C++
(``csrc/torch_bindings.cpp``), which is not in the 0.25.1 Python sources: the names of their
parameters are the ones vLLM's Python calls them by (``compilation/passes``), see
``_fake_kernels``.
"""

__version__ = "0.25.1"
__version_tuple__ = (0, 25, 1)
