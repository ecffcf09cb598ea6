"""The conversion methods, one module each, registered here in the order the reports list them.

* :mod:`~snnconv.methods.rnl` - RNL + RIL (Ding et al. 2021): Rate Norm layers, RIL stage 2, IF simulation;
* :mod:`~snnconv.methods.qcfs` - QCFS + PASCAL: layerwise-L fine-tune, exact spiking inference at T_eff;
* :mod:`~snnconv.methods.datanorm` - data-based normalisation (Diehl et al. 2015, Rueckauer et al. 2017),
  the classic baseline: a ReLU ANN whose thresholds are activation percentiles.

Each module ends with its :class:`snnconv.method_registry.ConversionMethod` (``METHOD``); the registry
(:mod:`snnconv.method_registry`) is what the rest of the package reads; it imports this package the
first time it is read, so the built-in methods are always registered.
"""

from __future__ import annotations

from ..method_registry import register
from . import datanorm, qcfs, rnl

BUILT_IN = (rnl.METHOD, qcfs.METHOD, datanorm.METHOD)
for _method in BUILT_IN:
    register(_method)

__all__ = ["BUILT_IN", "datanorm", "qcfs", "rnl"]
