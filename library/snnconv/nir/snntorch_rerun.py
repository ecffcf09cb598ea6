"""The exported NIR graph run again in a peer simulator (snnTorch) beside snnconv's own simulation of
the same IF network, and how far they agree (:func:`compare_with_snntorch`, :func:`agreement_table`).
``docs/export.md`` explains why snnTorch, what its importer changes, and the agreement measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..neurons import if_neurons, reset_state
from .graph_export import default_steps, if_network, require


@dataclass
class StepwiseRun:
    """One network run step by step over a data set: ``predictions [N, T]`` (argmax of the output
    summed over the first t steps, column t-1) and ``spikes[layer]`` (spikes of that layer over all
    N images and T steps)."""

    predictions: torch.Tensor
    spikes: dict[str, float]


def run_snnconv(snn: nn.Module, loader: Iterable, steps: int, max_images: int | None = None) -> StepwiseRun:
    """snnconv's own simulation of ``snn`` (an IF network from :func:`snnconv.convert.to_if`), keeping
    every image's prediction at every step. Layer names are the IF modules' names."""
    neurons = if_neurons(snn)
    predictions, spikes = [], dict.fromkeys((name for name, _ in neurons), 0.0)
    with torch.inference_mode():
        for images in _batches(loader, max_images):
            reset_state(snn)
            summed, batch = None, []
            for _ in range(steps):
                output = snn(images)
                summed = output.clone() if summed is None else summed + output
                batch.append(summed.argmax(1))
            predictions.append(torch.stack(batch, 1).cpu())
            for name, module in neurons:
                spikes[name] += float(sum(count.item() for count in module.step_spikes))
        reset_state(snn)
    return StepwiseRun(torch.cat(predictions), spikes)


def _batches(loader: Iterable, max_images: int | None) -> Iterable[torch.Tensor]:
    seen = 0
    for images, _labels in loader:
        if max_images is not None:
            if seen >= max_images:
                return
            images = images[: max_images - seen]
        seen += images.shape[0]
        yield images.float().cpu()


@dataclass(frozen=True)
class PeerSettings:
    """How each snnTorch neuron made from a NIR IF node is set before a run.

    ``beta``: membrane decay per step (1 = no leak, an IF neuron); ``reset``: ``"subtract"`` (v -= θ
    on a spike) or ``"zero"`` (v = 0 on a spike: NIR's IF with v_reset = 0); ``reset_delay``:
    snnTorch's option (True: a spike's reset is applied at the next step; False: at once, with the
    correction snnTorch adds against a double reset); ``v_init_from_metadata``: start the membrane
    at the IF node's ``metadata["v_init"]`` (else at 0).
    """

    beta: float = 1.0
    reset: str = "subtract"
    reset_delay: bool = True
    v_init_from_metadata: bool = True


#: the settings that give snnconv's IF neuron ("aligned"), and runs that each change one setting to
#: what a reader of the NIR fields alone, or snnTorch's importer, would choose
PEER_VARIANTS: dict[str, PeerSettings] = {
    "aligned": PeerSettings(),
    "nir_fields_only": PeerSettings(reset="zero", v_init_from_metadata=False),
    "importer_beta": PeerSettings(beta=0.9),
    "importer_reset_delay": PeerSettings(reset_delay=False),
    "v_init_zero": PeerSettings(v_init_from_metadata=False),
}


@dataclass
class _PeerNeuron:
    module: nn.Module
    v_init: float
    shape: tuple[int, ...]


def import_snntorch(graph: Any) -> nn.Module:
    """``snntorch.import_nir.import_from_nir(graph)`` as the importer makes it (its progress line on
    stdout silenced). It does not run as it is made: each NIR IF node becomes
    ``snntorch.Leaky(beta=0.9, reset_delay=False, init_hidden=False)``, whose (spikes, membrane)
    tuple the next layer cannot take (TypeError), and a NIR ``Flatten`` becomes
    ``torch.nn.Flatten(start_dim, end_dim)`` with NIR's dimension numbers, which do not count the
    batch, so the batch is flattened too."""
    import contextlib
    import io

    require("nirtorch")
    require("snntorch")
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):
        return import_from_nir(graph)


def snntorch_network(graph: Any, settings: PeerSettings = PeerSettings()
                     ) -> tuple[nn.Module, dict[str, _PeerNeuron]]:
    """:func:`import_snntorch` made to run (each ``Flatten`` counts the batch dimension, each IF
    node's ``Leaky`` returns its spikes only, ``init_hidden``) with its neurons set by ``settings``;
    also those neurons by snnconv layer name, each with its membrane at t = 0 and its shape (without
    the batch dimension)."""
    snntorch = require("snntorch")
    network = import_snntorch(graph)
    neurons: dict[str, _PeerNeuron] = {}
    for name, node in graph.nodes.items():
        if type(node).__name__ == "Flatten":  # NIR counts dimensions without the batch, torch with it
            flatten = cast(nn.Flatten, network.get_submodule(name))  # the importer makes a torch.nn.Flatten
            flatten.start_dim = int(node.start_dim) + 1 if node.start_dim >= 0 else int(node.start_dim)
            flatten.end_dim = int(node.end_dim) + 1 if node.end_dim >= 0 else int(node.end_dim)
        if type(node).__name__ != "IF":
            continue
        module = network.get_submodule(name)
        if not isinstance(module, snntorch.Leaky):
            raise TypeError(f"snnTorch imported the IF node {name!r} as {type(module).__name__}, not Leaky")
        module.init_hidden = True
        module.beta = torch.full_like(torch.as_tensor(module.beta, dtype=torch.float32), settings.beta)
        module.reset_mechanism = settings.reset
        module.state_function = module._base_sub if settings.reset == "subtract" else module._base_zero
        module.reset_delay = settings.reset_delay
        v_init = float(node.metadata.get("v_init", 0.0)) if settings.v_init_from_metadata else 0.0
        neurons[str(node.metadata.get("snnconv_layer", name))] = _PeerNeuron(
            module, v_init, tuple(int(size) for size in np.shape(node.v_threshold)))
    return network.eval(), neurons


def run_snntorch(graph: Any, loader: Iterable, steps: int, settings: PeerSettings = PeerSettings(),
                 max_images: int | None = None) -> StepwiseRun:
    """The NIR graph run in snnTorch (:func:`snntorch_network`) step by step over ``loader``: the
    image is the input at every step, the output is summed over steps, spikes are counted per IF
    node (under its snnconv layer name)."""
    network, neurons = snntorch_network(graph, settings)
    counted = dict.fromkeys(neurons, 0.0)
    hooks = [neuron.module.register_forward_hook(
        lambda m, i, o, name=name: counted.__setitem__(name, counted[name] + float(o.sum())))
        for name, neuron in neurons.items()]
    predictions = []
    try:
        with torch.inference_mode():
            for images in _batches(loader, max_images):
                for neuron in neurons.values():  # snnTorch keeps a membrane of the input's shape
                    neuron.module.mem = torch.full((images.shape[0], *neuron.shape), neuron.v_init)
                summed, batch = None, []
                for _ in range(steps):
                    output, _state = network(images)
                    summed = output.clone() if summed is None else summed + output
                    batch.append(summed.argmax(1))
                predictions.append(torch.stack(batch, 1))
    finally:
        for hook in hooks:
            hook.remove()
    return StepwiseRun(torch.cat(predictions), counted)


@dataclass
class Agreement:
    """snnconv's simulation against the peer's run of the exported graph, on the same images.

    ``pred_agreement``: fraction of (image, t) pairs, t = 1..steps, with the same prediction;
    ``max_spike_rel_diff``: over the IF layers, max |peer - snnconv| / snnconv of the total spike
    count; ``spikes[layer] = (snnconv, peer)``; ``first_disagreement``: the first step at which any
    image's prediction differs (None when none does).
    """

    steps: int
    images: int
    pred_agreement: float
    max_spike_rel_diff: float
    spikes: dict[str, tuple[float, float]] = field(default_factory=dict)
    first_disagreement: int | None = None

    def metrics(self, suffix: str = "") -> dict[str, float]:
        """``nir_pred_agreement`` and ``nir_max_spike_rel_diff`` (with ``suffix``) for MLflow."""
        return {f"nir_pred_agreement{suffix}": self.pred_agreement,
                f"nir_max_spike_rel_diff{suffix}": self.max_spike_rel_diff}


def agreement(own: StepwiseRun, peer: StepwiseRun) -> Agreement:
    """Compare two :class:`StepwiseRun` of the same images and steps."""
    if own.predictions.shape != peer.predictions.shape:
        raise ValueError(f"runs differ in shape: {tuple(own.predictions.shape)} vs {tuple(peer.predictions.shape)}")
    same = own.predictions == peer.predictions
    differing_steps = (~same).any(0).nonzero()
    spikes = {name: (own.spikes[name], peer.spikes.get(name, math.nan)) for name in own.spikes}
    rel = [abs(b - a) / a if a else (0.0 if b == 0 else math.inf) for a, b in spikes.values()]
    return Agreement(steps=int(own.predictions.shape[1]), images=int(own.predictions.shape[0]),
                     pred_agreement=float(same.double().mean()), max_spike_rel_diff=max(rel, default=0.0),
                     spikes=spikes,
                     first_disagreement=int(differing_steps[0]) + 1 if len(differing_steps) else None)


def compare_with_snntorch(model: nn.Module, metadata: Mapping[str, Any], graph: Any, loader: Iterable,
                          steps: int | None = None, variants: Iterable[str] = tuple(PEER_VARIANTS),
                          max_images: int | None = None,
                          progress: Callable[[str, Agreement], None] | None = None) -> dict[str, Agreement]:
    """snnconv's own simulation of the trial's IF network against snnTorch's run of ``graph`` (the
    network's NIR export, e.g. as read back from the file), for each named :data:`PEER_VARIANTS`
    setting, on the images of ``loader`` (the first ``max_images``) for ``steps`` steps (default
    :func:`default_steps`). ``progress(variant, agreement)`` is called after each run."""
    steps = default_steps(metadata) if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    own = run_snnconv(if_network(model.eval(), metadata), loader, steps, max_images)
    results = {}
    for variant in variants:
        if variant not in PEER_VARIANTS:
            raise ValueError(f"unknown peer variant {variant!r}; known: {', '.join(PEER_VARIANTS)}")
        results[variant] = agreement(own, run_snntorch(graph, loader, steps, PEER_VARIANTS[variant], max_images))
        if progress is not None:
            progress(variant, results[variant])
    return results


#: what each variant changes, for the agreement table (the cause of any divergence)
VARIANT_CAUSES: dict[str, str] = {
    "aligned": "snnTorch Leaky with beta 1, reset by subtraction, reset_delay True, v(0) from the IF "
               "node's metadata",
    "nir_fields_only": "only what NIR's IF fields say: reset to v_reset = 0, v(0) = 0 (the metadata ignored)",
    "importer_beta": "the importer's beta = 0.9 (a leak NIR's IF does not have)",
    "importer_reset_delay": "the importer's reset_delay = False (snnTorch's immediate reset path)",
    "v_init_zero": "v(0) = 0 instead of the metadata's v_init (NIR's IF has no initial state)",
}


def agreement_table(results: Mapping[str, Agreement]) -> str:
    """A Markdown table of :func:`compare_with_snntorch`'s results, one row per variant."""
    lines = ["| peer run | what differs from snnconv | predictions equal (all images, all t) | "
             "max spike-count rel. diff | first t that differs |",
             "|---|---|---:|---:|---:|"]
    for variant, result in results.items():
        first = "none" if result.first_disagreement is None else str(result.first_disagreement)
        lines.append(f"| `{variant}` | {VARIANT_CAUSES[variant]} | {result.pred_agreement:.4f} | "
                     f"{result.max_spike_rel_diff:.2e} | {first} |")
    return "\n".join(lines) + "\n"
