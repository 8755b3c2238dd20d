"""The vllm peer: adapters live next to each op's reference in the family modules."""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("vllm", packages=("vllm._custom_ops",), needs_cuda=True)
