"""normbench.kernels: the kernels normbench ships and measures.

One package per op family (``rmsnorm/``, ``quant/``, ``nvfp4/``): the float64 reference and
check, the Triton kernels and their launcher, the launch configs (read from the tuned tables
``tuned/<family>.json``, which ``scripts/tune.py`` writes) and the implementations normbench
ships. ``_triton.py`` holds what the families share (the Triton import guard, device facts,
the launch-config base); ``providers/`` adapts every implementation to ``base.Provider``, a
peer's adapters in its own module (``providers/<peer>.py``). Installed as
``normbench.kernels`` (the folder is ``kernels/`` in the repository).
"""
