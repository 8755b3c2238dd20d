"""normbench's own Triton kernels (``kernels/rmsnorm.py``, ``quant.py``, ``nvfp4.py``).

On a CPU device they would run only under ``TRITON_INTERPRET=1``, which is for
tests, not timings: the provider needs CUDA.
"""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("triton", packages=("triton",), needs_cuda=True)
