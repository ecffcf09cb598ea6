"""The PASCAL SNN against its QCFS ANN: per-layer equivalence of a spike-level run
(:func:`compare_with_ann`) and the spike-level evaluation over a data set (:func:`evaluate_pascal`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from ..layers import QCFS
from .neuron import quantise_count
from .snn import to_pascal
from .spikes import SpikeRun


@dataclass
class LayerEquivalence:
    """SNN vs ANN at one layer: largest |time-summed SNN output - QCFS output|, count mismatches."""

    max_abs_err: float = 0.0
    mismatches: int = 0
    neurons: int = 0

    def merge(self, other: LayerEquivalence) -> None:
        self.max_abs_err = max(self.max_abs_err, other.max_abs_err)
        self.mismatches += other.mismatches
        self.neurons += other.neurons


@dataclass
class EquivalenceReport:
    """Per-layer and logit-level differences between the PASCAL SNN and the QCFS ANN."""

    layers: dict[str, LayerEquivalence] = field(default_factory=dict)
    logits_abs_err: float = 0.0

    @property
    def max_abs_err(self) -> float:
        """The largest absolute difference over every layer and the logits."""
        return max([self.logits_abs_err, *(layer.max_abs_err for layer in self.layers.values())])

    @property
    def mismatches(self) -> int:
        """Neurons (over all layers and images) whose SNN spike count differs from the ANN's."""
        return sum(layer.mismatches for layer in self.layers.values())

    def merge(self, other: EquivalenceReport) -> None:
        for name, layer in other.layers.items():
            self.layers.setdefault(name, LayerEquivalence()).merge(layer)
        self.logits_abs_err = max(self.logits_abs_err, other.logits_abs_err)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


@torch.no_grad()
def ann_trace(model: nn.Module,
              images: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The QCFS ANN's logits and, per QCFS layer name, its (pre-activation z, output a)."""
    trace: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, QCFS):
            handles.append(module.register_forward_hook(
                lambda mod, inputs, output, name=name: trace.__setitem__(name, (inputs[0], output))))
    was_training = model.training
    model.eval()
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return logits, trace


@torch.no_grad()
def compare_with_ann(model: nn.Module, run: SpikeRun, images: torch.Tensor) -> EquivalenceReport:
    """Compare a spike-level ``run`` on ``images`` with the QCFS ``model`` on the same images."""
    logits, trace = ann_trace(model, images)
    report = EquivalenceReport(logits_abs_err=_max_abs(run.logits, logits))
    for name, (z, output) in trace.items():
        if name not in run.counts:
            raise ValueError(f"layer {name!r} of the ANN has no neuron in the SNN (converted from another model?)")
        module = cast(QCFS, model.get_submodule(name))  # ann_trace traces QCFS layers only
        ann_counts = quantise_count(z, module.threshold, module.levels).to(torch.int64)
        report.layers[name] = LayerEquivalence(
            max_abs_err=_max_abs(run.sums[name], output),
            mismatches=int((ann_counts != run.counts[name]).sum()),
            neurons=ann_counts.numel(),
        )
    return report


@dataclass
class PascalEvaluation:
    """The spike-level SNN over a data set: accuracy (percent), per-image operation counts,
    per-layer mean spikes per neuron, the equivalence report against the QCFS ANN, and
    ``image_correct`` (images,) bool: whether each image (in the loader's order) is classified right."""

    accuracy: float
    synops: float
    macs: float
    spikes_per_neuron: dict[str, float]
    equivalence: EquivalenceReport
    images: int
    image_correct: torch.Tensor


@torch.no_grad()
def evaluate_pascal(model: nn.Module, loader: Iterable, device: torch.device | str,
                    dtype: torch.dtype = torch.float64, chunk: int = 64) -> PascalEvaluation:
    """Run the spike-level PASCAL SNN of QCFS ``model`` over ``loader`` next to the ANN.

    ``loader`` yields ``(images, labels)``; each batch runs in slices of at most ``chunk`` images
    (the spike path holds ``T_in`` steps of every layer's activations, so this bounds memory).

    Both run in ``dtype``. float64 (default) is what makes the check exact in practice: in real
    arithmetic the spike path equals the ANN (section 3.4), but its per-step float sums round
    differently from the ANN's single sum, and in float32 about 1e-5 of the neurons sitting on a
    rounding boundary flip by one quantum (section 5 item 9); in float64 the differences stay
    near 1e-15 and counts agree.

    Operation counts (per image): ``synops`` = for every weight layer fed spikes, each input unit
    contributes (steps on which its input is non-zero) x (its fan-out into that layer, exact at
    borders), plus one accumulate per spike through an identity shortcut; pooling and batch norm
    fold into the next weight layer. ``macs`` = dense multiply-accumulates of the layers fed the
    analog image once (the first conv).
    """
    device = torch.device(device)
    ann = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    snn = to_pascal(ann)
    report = EquivalenceReport()
    images_seen = 0
    correct: list[torch.Tensor] = []
    synops = macs = 0.0
    spikes: dict[str, float] = {}
    neurons: dict[str, int] = {}
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk!r}")
    for batch_images, batch_labels in loader:
        for images, labels in zip(batch_images.split(chunk), batch_labels.split(chunk)):
            images, labels = images.to(device=device, dtype=dtype), labels.to(device)
            run = snn.run_spikes(images)
            report.merge(compare_with_ann(ann, run, images))
            correct.append((run.logits.argmax(1) == labels).cpu())
            images_seen += labels.numel()
            synops += run.synops
            macs += run.macs
            for name, counts in run.counts.items():
                spikes[name] = spikes.get(name, 0.0) + float(counts.sum())
                neurons[name] = neurons.get(name, 0) + counts.numel()
    if images_seen == 0:
        raise ValueError("evaluate_pascal got an empty loader")
    image_correct = torch.cat(correct)
    return PascalEvaluation(
        accuracy=100.0 * int(image_correct.sum()) / images_seen, synops=synops / images_seen, macs=macs / images_seen,
        spikes_per_neuron={name: spikes[name] / neurons[name] for name in spikes},
        equivalence=report, images=images_seen, image_correct=image_correct,
    )
