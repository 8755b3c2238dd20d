"""The flashinfer peer: adapters live next to each op's reference in the family modules."""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("flashinfer", packages=("flashinfer",), needs_cuda=True)
