"""Providers: one module per provider (see ``normbench.registry.PROVIDERS``).

normbench's own (``reference``, ``torch_ops``, ``triton``) take their ops from the families'
``OWN_IMPLS``; a peer's module (``vllm``, ``flashinfer``, ``liger``, ``quack``) holds its
adapters for every family (``ADAPTERS``) and nothing else; ``unfused`` composes two providers.
"""
