"""Run a rate-coded SNN (from :func:`snnconv.convert.to_if`) for ``t_max`` steps over a data set.

One pass to ``t_max`` gives the accuracy after every prefix t = 1..t_max (the acc(t) curve), since
the read-out is the running sum of the output layer over time. Time steps run one after another and
only the membranes persist, so memory does not grow with T. Everything stays on the model's device;
which images are right after each step, and the spike counts, are kept there and read once at the end.

Synaptic operations: a spike of layer l drives the synapses of the weight layers it reaches
(``spike_fan_out``); the weight layers fed with the analog image do multiply-accumulates at every
step (``input_macs``). Energy uses the per-operation constants of :mod:`snnconv.metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import graph as dataflow
from .layers import autocast_off
from .metrics import energy_mj, synaptic_operations, weight_layer_macs
from .neurons import IFNeuron, StaticInput, if_neurons, reset_state

#: t_eff when acc(t) never comes within the tolerance in t_max steps
T_EFF_NOT_REACHED = math.inf


@dataclass
class SimulationResult:
    """What a simulation measured. Per-image quantities are averaged over the images simulated.

    * ``acc_curve[t-1]``: accuracy in percent after t steps (argmax of the summed outputs);
    * ``firing_rates[layer]``: spikes per neuron per step; ``spike_counts[layer]``: spikes per image
      over ``t_max`` steps; ``neurons[layer]``: neurons per image;
    * ``synops``: spike-driven accumulates per image over ``t_max`` steps (spikes x fan-out);
      ``synops_curve[t-1]`` the same after t steps; ``fan_out[layer]``: synapses per spike;
    * ``input_macs``: multiply-accumulates per image of the layers fed with the analog image, over
      ``t_max`` steps (they see the image at every step);
    * ``energy_mj``: per image, E_AC * synops + E_MAC * input_macs;
    * ``image_correct[t-1, i]``: whether image i (in the loader's order) is classified right after t steps,
      a (t_max, num_images) bool tensor on the CPU.
    """

    acc_curve: list[float]
    firing_rates: dict[str, float]
    spike_counts: dict[str, float]
    neurons: dict[str, int]
    fan_out: dict[str, float]
    synops: float
    synops_curve: list[float]
    input_macs: float
    energy_mj: float
    t_max: int
    num_images: int
    seconds: float
    image_correct: torch.Tensor

    @property
    def snn_acc(self) -> float:
        """Accuracy in percent after ``t_max`` steps."""
        return self.acc_curve[-1]

    def energy_at(self, t: int) -> float:
        """Energy estimate in mJ per image of a simulation stopped after ``t`` steps."""
        if not 1 <= t <= self.t_max:
            raise ValueError(f"t must be in 1..{self.t_max}, got {t}")
        return energy_mj(self.synops_curve[t - 1], self.input_macs * t / self.t_max)


def first_step_within(acc_curve: Sequence[float], ann_acc: float, tolerance: float = 1.0) -> float:
    """Latency: the first t (1-based) with ``acc_curve[t-1] >= ann_acc - tolerance`` (percentage
    points), or :data:`T_EFF_NOT_REACHED` (infinity) when no step reaches it."""
    target = ann_acc - tolerance
    for t, accuracy in enumerate(acc_curve, start=1):
        if accuracy >= target:
            return float(t)
    return T_EFF_NOT_REACHED


def spike_fan_out(snn: nn.Module) -> dict[str, float]:
    """Synapses driven by one spike of each IF layer: the sum over the weight layers it reaches of
    :func:`snnconv.graph.synapses_per_input` (times the spread of any overlapping average pool
    on the way). Untraceable models fall back to the next weight layer in registration order."""
    graph = dataflow.trace(snn)
    neurons = if_neurons(snn)
    if graph is not None:
        return {
            name: sum(dataflow.synapses_per_input(snn.get_submodule(link.weight_name)) * link.spread
                      for link in dataflow.downstream_weight_layers(snn, graph, name))
            for name, _ in neurons
        }
    fan_out, pending = {}, []
    for name, module in snn.named_modules():
        if isinstance(module, IFNeuron):
            pending.append(name)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            for waiting in pending:
                fan_out[waiting] = dataflow.synapses_per_input(module)
            pending = []
    fan_out.update({name: 0.0 for name in pending})
    return fan_out


def _input_layers(snn: nn.Module) -> list[nn.Module]:
    """The weight layers that see the analog image (inside StaticInput, or found by tracing)."""
    static = [module.layer for module in snn.modules() if isinstance(module, StaticInput)]
    if static:
        return static
    graph = dataflow.trace(snn)
    if graph is None:
        return [next(m for m in snn.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))]
    return [snn.get_submodule(name) for name in dataflow.input_weight_layers(snn, graph)]


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def simulate(snn: nn.Module, loader: Iterable, t_max: int, device: torch.device | str | None = None,
             ) -> SimulationResult:
    """Simulate ``snn`` for ``t_max`` steps on every ``(images, labels)`` batch of ``loader``.

    ``snn`` comes from :func:`snnconv.convert.to_if` (IF neurons, state reset per batch); it runs on
    ``device`` (default: where its parameters are). The image is presented at every step; the
    output layer's outputs are summed over steps and the prediction after t steps is their argmax.
    It runs in the model's own float type even inside an autocast region (autocast is off for the
    simulation), so membranes, currents and summed outputs never become bfloat16.
    """
    if isinstance(t_max, bool) or int(t_max) != t_max or t_max < 1:
        raise ValueError(f"t_max must be a positive integer, got {t_max!r}")
    neurons = if_neurons(snn)
    if not neurons:
        raise ValueError("simulate needs a converted model with IF neurons (see snnconv.convert.to_if)")
    device = torch.device(device) if device is not None else _device_of(snn)
    snn.to(device).eval()
    start = time.perf_counter()
    correct: list[torch.Tensor] = []  # per batch, (t_max, batch) bool
    spikes = {name: torch.zeros(t_max, dtype=torch.float64, device=device) for name, _ in neurons}
    neuron_counts: dict[str, int] = {}
    input_layers = _input_layers(snn)
    input_macs: dict[int, float] = {}
    hooks = [layer.register_forward_hook(
        lambda m, i, o: input_macs.__setitem__(id(m), weight_layer_macs(m, o))) for layer in input_layers]
    seen = 0
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            reset_state(snn)
            with autocast_off(device.type):
                correct.append(_run_batch(snn, images, labels, t_max))
            for name, module in neurons:
                if module.step_spikes:
                    spikes[name] += torch.stack(module.step_spikes).double()
                if name not in neuron_counts and module.membrane is not None:
                    neuron_counts[name] = module.membrane[0].numel()
            seen += labels.shape[0]
            for hook in hooks:  # one step is enough to know each input layer's MACs
                hook.remove()
            hooks = []
    finally:
        for hook in hooks:
            hook.remove()
        reset_state(snn)
    if seen == 0:
        raise ValueError("simulate needs a loader with at least one batch")
    return _summarise(snn, torch.cat(correct, dim=1).cpu(), spikes, neuron_counts, sum(input_macs.values()),
                      t_max, seen, time.perf_counter() - start)


def _run_batch(snn: nn.Module, images: torch.Tensor, labels: torch.Tensor, t_max: int) -> torch.Tensor:
    """t_max steps on one batch; (t_max, batch) bool: whether each image is right after each step."""
    summed = None
    correct = torch.empty(t_max, labels.shape[0], dtype=torch.bool, device=labels.device)
    for t in range(t_max):
        outputs = snn(images)
        summed = outputs.clone() if summed is None else summed.add_(outputs)
        correct[t] = summed.argmax(1) == labels
    return correct


def _summarise(snn: nn.Module, image_correct: torch.Tensor, spikes: dict[str, torch.Tensor],
               neuron_counts: dict[str, int], input_macs_per_step: float, t_max: int, seen: int,
               seconds: float) -> SimulationResult:
    correct_host = image_correct.sum(dim=1)
    spike_curves = {name: counts.cpu().double().cumsum(0) / seen for name, counts in spikes.items()}
    fan_out = spike_fan_out(snn)
    spike_counts = {name: float(curve[-1]) for name, curve in spike_curves.items()}
    firing_rates = {
        name: count / (neuron_counts[name] * t_max) if neuron_counts.get(name) else math.nan
        for name, count in spike_counts.items()
    }
    synops_curve = [
        synaptic_operations({name: float(curve[t]) for name, curve in spike_curves.items()}, fan_out)
        for t in range(t_max)
    ]
    input_macs = input_macs_per_step * t_max
    return SimulationResult(
        acc_curve=(correct_host.double() * 100.0 / seen).tolist(),
        firing_rates=firing_rates, spike_counts=spike_counts, neurons=neuron_counts, fan_out=fan_out,
        synops=synops_curve[-1], synops_curve=synops_curve, input_macs=input_macs,
        energy_mj=energy_mj(synops_curve[-1], input_macs), t_max=t_max, num_images=seen, seconds=seconds,
        image_correct=image_correct,
    )
