"""Conversion metrics: omega (RNL), AL and T_eff (PASCAL), firing rates, synaptic operations, energy.

Formulas follow ``shared/reference/algorithms.md``; each function's docstring names its section.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# RNL: omega (section 2.4)


# ---------------------------------------------------------------------------------------------
# spikes: firing rates, synaptic operations, energy


# ---------------------------------------------------------------------------------------------
# PASCAL: AL metric (section 3.10) and T_eff (section 3.11)
