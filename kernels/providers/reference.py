"""The float64 oracle as a provider (correctness baseline; not timed by default)."""

from normbench.kernels.providers._family import FamilyProvider

PROVIDER = FamilyProvider("reference")
