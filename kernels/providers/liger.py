"""The liger peer: adapters live next to each op's reference in the family modules."""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("liger", packages=("liger_kernel",), needs_cuda=True)
