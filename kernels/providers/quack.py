"""The quack peer: adapters live next to each op's reference in the family modules."""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("quack", packages=("quack",), needs_cuda=True)
