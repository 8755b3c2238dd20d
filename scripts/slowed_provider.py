"""A/B harness for the comparison engine: normbench with the ``triton`` provider slowed.

Usage: ``python3 scripts/slowed_provider.py run rmsnorm --name ab-slowed ...`` (any
``normbench`` arguments). Every ``triton`` call first copies its input ``x`` once
more, adding a read and a write of ``num_tokens x hidden_size`` elements (and one
kernel launch): a known slowdown that ``normbench compare`` must flag ``slower``
wherever it exceeds the measured noise floor. The correctness gate still passes
(the copy is discarded). This is a measurement harness, not part of normbench.
"""

from __future__ import annotations

import sys

from normbench.cli import main
from normbench.kernels.providers import triton as triton_provider

_make = triton_provider.PROVIDER.make


def slowed_make(op, params):
    fn = _make(op, params)

    def slowed(inputs):
        inputs["x"].clone()
        return fn(inputs)

    return slowed


triton_provider.PROVIDER.make = slowed_make
main(sys.argv[1:])
