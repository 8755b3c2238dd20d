"""One source of truth per provider: every declared (provider, op) pair has an implementation and
vice versa; a peer's adapters live in ``kernels/providers/<peer>.py`` and nowhere else.

CPU only; factories are looked up, not called.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# TRITON_INTERPRET=1 without a GPU: tests/conftest.py sets it before any family module imports.

import pytest  # noqa: E402

from normbench.kernels.providers._family import FAMILIES, FamilyProvider, implementations  # noqa: E402
from normbench.ops import OPS  # noqa: E402
from normbench.registry import PROVIDERS, load  # noqa: E402

#: The implementations normbench ships inside the families (next to their references).
FIRST_PARTY = {"reference", "torch_naive", "torch_compile", "torch_rms_norm", "triton"}
PROVIDERS_DIR = Path(importlib.import_module("normbench.kernels.providers").__file__).parent


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_declared_ops_are_exactly_the_served_ones(name):
    """Declared (registry) == served (the provider's table) for every suite op; a provider may
    serve more only for internal ops (``group_quant``, the unfused compositions' half)."""
    entry = PROVIDERS[name]
    served = set(load(entry.target).ops)
    assert served & set(OPS) == set(entry.ops), f"{name}: declared {sorted(entry.ops)}, serves {sorted(served)}"
    assert all(op not in OPS for op in served - set(entry.ops)), served - set(entry.ops)
    for op in served:
        assert callable(load(entry.target).ops[op])


@pytest.mark.parametrize("name", sorted(set(PROVIDERS) - FIRST_PARTY))
def test_a_peers_adapters_live_in_its_own_module(name):
    provider = load(PROVIDERS[name].target)
    module = importlib.import_module(f"normbench.kernels.providers.{name}")
    assert isinstance(provider, FamilyProvider) and provider.adapters is module.ADAPTERS
    assert Path(inspect.getfile(module)) == PROVIDERS_DIR / f"{name}.py"
    for fam in FAMILIES:
        assert name not in importlib.import_module(fam).OWN_IMPLS, f"{fam} still holds {name}'s adapters"


@pytest.mark.parametrize("fam", FAMILIES)
def test_family_impls_derive_from_own_and_peers(fam):
    """A family's ``IMPLS`` is its own implementations plus the peers' adapters for its ops:
    derived, not a second table."""
    mod = importlib.import_module(fam)
    assert set(mod.OWN_IMPLS) <= FIRST_PARTY
    ops = {op for table in mod.OWN_IMPLS.values() for op in table}
    assert mod.IMPLS == implementations(mod.OWN_IMPLS, ops)
    for name, table in mod.IMPLS.items():
        if name not in mod.OWN_IMPLS:
            assert table == {op: f for op, f in load(PROVIDERS[name].target).adapters.items() if op in ops}


def test_provider_modules_hold_adapters_only():
    """Each peer module exports its adapters and its provider, nothing of a family's."""
    for name in sorted(set(PROVIDERS) - FIRST_PARTY):
        module = importlib.import_module(f"normbench.kernels.providers.{name}")
        assert not hasattr(module, "FAMILY") and not hasattr(module, "OWN_IMPLS") and not hasattr(module, "TUNED")
