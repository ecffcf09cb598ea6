"""Trained ANN -> SNN for each method: IF neurons (RNL, plain QCFS) and PASCAL (QCFS).

A model with max pooling or a layer the conversion does not support is refused with a message
naming the layer.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# rate-coded IF conversion (RNL, plain QCFS)


# ---------------------------------------------------------------------------------------------
# PASCAL (spike accumulation, count coding)

from .pascal import PascalSNN, to_pascal  # noqa: E402  (implemented in pascal.py)
