"""normbench's own Triton kernels (``kernels/rmsnorm/``, ``quant/``, ``nvfp4/``: their ``OWN_IMPLS["triton"]``).

On a CPU device they would run only under ``TRITON_INTERPRET=1``, which is for
tests, not timings: the provider needs CUDA.
"""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("triton", packages=("triton",), needs_cuda=True)
