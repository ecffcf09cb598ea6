"""A trial's SNN as a NIR graph, and that graph run again in a peer simulator (snnTorch). No MLflow here.

NIR (the Neuromorphic Intermediate Representation, PyPI ``nir``) is the interchange format of the
neuromorphic tool chains. :func:`to_nir` writes the rate-coded IF network of a trial (the network
:func:`snnconv.convert.to_if` builds) as a NIR graph::

    Input -> Conv2d -> IF -> Conv2d -> IF -> AvgPool2d -> ... -> Flatten -> Affine -> IF -> Affine -> Output

* weights with batch norm folded in (one ``Conv2d`` / ``Affine`` node per weight layer);
* one ``IF`` node per activation layer: ``v_threshold`` = the layer's threshold (rnl: the RNL
  threshold, qcfs: λ), ``r`` = 1, ``v_reset`` = 0;
* the image reaches the first weight layer unchanged at every step: the "analog first layer" is a
  constant input current, as in snnconv's own simulation;
* a qcfs spike carries amplitude λ; NIR spikes are 0/1, so λ is folded into the weights of the next
  weight layer (everything between is linear: pools, flatten);
* the output node is the last layer's current; the prediction after t steps is the argmax of its sum
  over the first t steps.

What NIR 1.0's ``IF`` node cannot say, each ``IF`` node records in its ``metadata``: the reset
(``reset = "subtract"``; NIR's IF resets *to* ``v_reset``), the membrane at t = 0 (``v_init``:
0 for rnl, λ/2 for qcfs; NIR has no initial state), the comparison (``fires_at = "v >= v_threshold"``;
NIR says ``v > v_threshold``) and the spike amplitude that was folded away. PASCAL's multi-phase
neuron has no NIR node at all, so a qcfs trial is exported as its rate-coded IF network (the one its
``if_snn_acc_t`` curve measures), not as the PASCAL network of its operating point.

:func:`compare_with_snntorch` loads the graph with snnTorch's ``import_from_nir``, runs it step by
step on a data set, and compares predictions at every t and per-layer spike counts with snnconv's
own simulation of the same network. ``docs/export.md`` explains why snnTorch, what its importer
changes, and the agreement measured.

Requires the ``nir`` extra (``pip install -e '.[nir]'``: nir, nirtorch, snntorch).

The package: :mod:`~snnconv.nir.graph_export` (the graph, the file), :mod:`~snnconv.nir.snntorch_rerun`
(the peer re-run and the agreement) and ``__main__`` (the command line, ``python -m snnconv.nir RUN_ID``,
also run by ``analysis/export.py``).
"""

from .graph_export import (
    IF_FIRES_AT,
    IF_RESET,
    INSTALL_HINT,
    NIR_FORMAT,
    NIRUnavailable,
    default_steps,
    if_network,
    node_name,
    read_nir,
    require,
    to_nir,
    write_nir,
)
from .snntorch_rerun import (
    PEER_VARIANTS,
    VARIANT_CAUSES,
    Agreement,
    PeerSettings,
    StepwiseRun,
    agreement,
    agreement_table,
    compare_with_snntorch,
    import_snntorch,
    run_snnconv,
    run_snntorch,
    snntorch_network,
)

__all__ = [
    "IF_FIRES_AT", "IF_RESET", "INSTALL_HINT", "NIR_FORMAT", "PEER_VARIANTS", "VARIANT_CAUSES", "Agreement",
    "NIRUnavailable", "PeerSettings", "StepwiseRun", "agreement", "agreement_table", "compare_with_snntorch",
    "default_steps", "if_network", "import_snntorch", "node_name", "read_nir", "require", "run_snnconv",
    "run_snntorch", "snntorch_network", "to_nir", "write_nir",
]
