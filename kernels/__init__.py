"""normbench.kernels: the kernels normbench ships and measures.

One module per op family (``rmsnorm``, ``quant``, ``nvfp4``) holds the Triton
kernels, their launchers and the float64 reference; ``providers/`` adapts each
implementation (ours and the peers') to ``base.Provider``. Installed as
``normbench.kernels`` (the folder is ``kernels/`` in the repository).
"""
