"""PASCAL: exact, count-coded SNN inference of QCFS models (Ramesh & Srinivasan 2025).

Formulas: ``docs/methods.md`` §3 (the sections cited below are its). Every QCFS layer i becomes a
spike-accumulating IF neuron ("PASC-IF") with its own window of ``T_i = L_i`` steps and quantum
(threshold and spike amplitude) ``q_i = lambda_i / L_i``. A layer's output is a front-loaded spike
train: ``n`` spikes of amplitude ``q`` on steps ``1..n``, zeros on the other ``T - n`` steps, and the
time-sum ``n * q`` equals the QCFS activation exactly (count coding, section 3.4).

Two ways to run the SNN, on the same converted module (:class:`PascalSNN`):

* **exact inference** (``snn(images)``): the count domain. Each PASC-IF's output count equals
  ``clip(floor(z/q + 1/2), 0, T)`` of its summed input current ``z`` whatever the order in which the
  input arrives (section 3.4), so the counts are computed straight from ``z``, with the same float
  operations as the QCFS layer. Cost: one ANN forward.
* **spike level** (``snn.run_spikes(images)``): every layer really runs on spike trains. Weight
  layers see ``[T_in * B, ...]`` batches of per-step inputs with their biases and batch-norm shifts
  divided by ``T_in`` (section 3.5); each neuron integrates its ``P = T_in`` input steps (phase A,
  step by step on whole tensors), corrects with forward and reverse spikes (phase B, closed form)
  and emits ``T_out`` front-loaded spikes (phase C). This path yields the synaptic operations and
  the layer-by-layer equivalence check against the QCFS ANN (:func:`compare_with_ann`).

Spike counts are integers throughout: no firing tolerance, no counts re-created from float sums
(the authors' 8e-5 tolerance flips about 1e-5 of the neurons by one quantum, section 5 item 9).
Bit-level agreement of the spike path with the ANN still depends on float summation order, so
exactness checks run in float64 (see :func:`evaluate_pascal`).

Supported models: ``nn.Sequential`` and the library's SmallCNN / LeNet5 / VGG / ResNet (whose ``forward``
applies their children in registration order), built from Conv2d, Linear, BatchNorm, AvgPool2d,
AdaptiveAvgPool2d, Flatten, Dropout (identity in eval), QCFS and ResNet BasicBlocks.

The package, by job: :mod:`~snnconv.pascal.neuron` (the PASC-IF neuron, literal and vectorised),
:mod:`~snnconv.pascal.compile` (a model as PASCAL ops), :mod:`~snnconv.pascal.spikes` (the spike-level
runner), :mod:`~snnconv.pascal.snn` (:class:`PascalSNN` and its exact path) and
:mod:`~snnconv.pascal.equivalence` (the check against the ANN and :func:`evaluate_pascal`).
"""

from .compile import Affine, Block, Neuron, Op, compile_model, weight_layer_steps
from .equivalence import (
    EquivalenceReport,
    LayerEquivalence,
    PascalEvaluation,
    ann_trace,
    compare_with_ann,
    evaluate_pascal,
)
from .neuron import (
    Number,
    PascIfTrace,
    correct,
    integrate,
    pasc_if,
    pasc_if_reference,
    quantise_count,
    spike_train,
)
from .snn import PascalSNN, to_pascal
from .spikes import SpikeRun

__all__ = [
    "Affine", "Block", "EquivalenceReport", "LayerEquivalence", "Neuron", "Number", "Op", "PascIfTrace",
    "PascalEvaluation", "PascalSNN", "SpikeRun", "ann_trace", "compare_with_ann", "compile_model", "correct",
    "evaluate_pascal", "integrate", "pasc_if", "pasc_if_reference", "quantise_count", "spike_train", "to_pascal",
    "weight_layer_steps",
]
