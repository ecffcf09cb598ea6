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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from . import graph as dataflow
from .convert import to_if
from .neurons import IFNeuron, StaticInput, if_neurons, reset_state

#: how to install what this module needs
INSTALL_HINT = "pip install -e '.[nir]'  (nir, nirtorch and snntorch)"
#: version of the graph-level metadata below
NIR_FORMAT = 1
#: the IF semantics NIR's IF node cannot hold, written into each IF node's metadata
IF_RESET = "subtract"
IF_FIRES_AT = "v >= v_threshold"
#: layers that leave the values unchanged in a rate-coded network (dropped from the graph)
_PASS_THROUGH = (nn.Dropout, nn.Identity)


class NIRUnavailable(ImportError):
    """The ``nir`` extra is not installed; the message says how to install it."""


def require(module_name: str) -> Any:
    """Import ``module_name`` (``nir``, ``nirtorch`` or ``snntorch``) or raise :class:`NIRUnavailable`
    with :data:`INSTALL_HINT`."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise NIRUnavailable(f"NIR export needs the {module_name!r} package: {INSTALL_HINT}") from error


def node_name(layer_name: str) -> str:
    """The NIR node name of a layer of the IF network (``features.3`` -> ``features_3``)."""
    return layer_name.replace(".", "_")


def if_network(model: nn.Module, metadata: Mapping[str, Any]) -> nn.Module:
    """The rate-coded IF network NIR export writes: ``to_if(model, v_init)`` with batch norm folded,
    ``v_init`` from the metadata for rnl and ``"half"`` (v(0) = λ/2) for qcfs."""
    method = metadata.get("method")
    if method == "rnl":
        v_init = str(metadata["v_init"])
    elif method == "qcfs":
        v_init = "half"
    else:
        raise ValueError(f"no NIR export is known for method {method!r}")
    return to_if(model, v_init=v_init, fold_bn=True)


def default_steps(metadata: Mapping[str, Any]) -> int:
    """Steps to run the exported network for: rnl its ``t_max`` (acc(t) up to it is the trial's curve);
    qcfs the ``t_max`` of its IF comparison (``config.qcfs.t_max``)."""
    if metadata.get("method") == "rnl":
        return int(metadata["t_max"])
    return int(metadata["config"]["qcfs"]["t_max"])


# ---------------------------------------------------------------------------------------------
# export


def _chain(snn: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``snn`` in dataflow order, when its forward is one chain (each module reads the
    previous one's output only). A residual addition or any other fan-in or fan-out is refused."""
    graph = dataflow.trace(snn)
    if graph is None:
        raise ValueError("NIR export needs a model whose forward traces with torch.fx")
    chain: list[tuple[str, nn.Module]] = []
    previous: fx.Node | None = None
    for node in graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            break
        if node.op != "call_module" or node.args[0] is not previous or len(previous.users) != 1:
            raise ValueError(f"NIR export handles feed-forward chains (small CNN, VGG); this model's forward "
                             f"has {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)}), "
                             "which is not one module reading the previous one (e.g. a residual addition)")
        chain.append((str(node.target), snn.get_submodule(str(node.target))))
        previous = node
    return chain


def _shapes(snn: nn.Module, chain: list[tuple[str, nn.Module]], input_shape: tuple[int, ...]
            ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(input shape, output shape)`` per chain module, without the batch dimension (one step on
    zeros; the IF state is reset afterwards)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = [module.register_forward_hook(
        lambda m, i, o, name=name: shapes.__setitem__(name, (tuple(i[0].shape[1:]), tuple(o.shape[1:]))))
        for name, module in chain]
    try:
        with torch.inference_mode():
            reset_state(snn)
            snn(torch.zeros((1, *input_shape), device=next(snn.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        reset_state(snn)
    return shapes


def _pool_node(nir_module: Any, module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    """An ``AvgPool2d`` node for nn.AvgPool2d, or for an nn.AdaptiveAvgPool2d whose input size is a
    multiple of its output size (None when it is the identity)."""
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or (module.padding not in (0, (0, 0)) and not module.count_include_pad):
            raise ValueError("NIR export handles average pools without ceil_mode and with count_include_pad")
        def pair(value: int | tuple[int, int]) -> np.ndarray:
            return np.array(value if isinstance(value, tuple) else (value, value))

        stride = module.stride if module.stride is not None else module.kernel_size
        return nir_module.AvgPool2d(kernel_size=pair(module.kernel_size), stride=pair(stride),
                                    padding=pair(module.padding))
    (height, width), (out_height, out_width) = in_shape[-2:], out_shape[-2:]
    if (height, width) == (out_height, out_width):
        return None
    if height % out_height or width % out_width:
        raise ValueError(f"NIR export: adaptive average pool from {height}x{width} to {out_height}x{out_width} "
                         "is not a fixed pool")
    kernel = np.array((height // out_height, width // out_width))
    return nir_module.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.array((0, 0)))


def to_nir(model: nn.Module, metadata: Mapping[str, Any]) -> Any:
    """The trial's rate-coded IF network (:func:`if_network`) as a ``nir.NIRGraph``.

    ``model`` is the trial's ANN (the logged model) and ``metadata`` its model metadata
    (:func:`snnconv.export.model_metadata`: method, v_init, input_shape, num_classes, ...). Node
    names are the layer names with ``.`` replaced by ``_`` (:func:`node_name`); see the module
    docstring for what each node holds. ValueError for a model that is not a chain of supported
    layers (ResNet's residual additions are refused).
    """
    nir = require("nir")
    snn = if_network(model.eval(), metadata)
    input_shape = tuple(int(size) for size in metadata["input_shape"])
    chain = _chain(snn)
    shapes = _shapes(snn, chain, input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(input_shape))}
    edges: list[tuple[str, str]] = []
    previous, amplitude = "input", 1.0

    def add(name: str, node: Any) -> None:
        nonlocal previous
        nodes[name] = node
        edges.append((previous, name))
        previous = name

    for name, module in chain:
        in_shape, out_shape = shapes[name]
        if isinstance(module, StaticInput):
            module = module.layer
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach().double().cpu().numpy() * amplitude
            bias = (module.bias.detach().double().cpu().numpy() if module.bias is not None
                    else np.zeros(weight.shape[0]))
            weight, bias = weight.astype(np.float32), bias.astype(np.float32)
            if isinstance(module, nn.Conv2d):
                if not isinstance(module.padding, tuple):
                    raise ValueError(f"NIR export: layer {name!r} uses padding={module.padding!r}; give it as numbers")
                add(node_name(name), nir.Conv2d(
                    input_shape=np.array(in_shape[-2:]), weight=weight, stride=np.array(module.stride),
                    padding=np.array(module.padding), dilation=np.array(module.dilation), groups=module.groups,
                    bias=bias))
            else:
                add(node_name(name), nir.Affine(weight=weight, bias=bias))
            amplitude = 1.0
        elif isinstance(module, IFNeuron):
            ones = np.ones(out_shape, dtype=np.float32)
            add(node_name(name), nir.IF(
                r=ones, v_threshold=ones * np.float32(module.threshold), v_reset=np.zeros_like(ones),
                metadata={"snnconv_layer": name, "reset": IF_RESET, "v_init": module.v_init,
                          "fires_at": IF_FIRES_AT, "spike_amplitude": module.amplitude}))
            amplitude = module.amplitude
        elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            pool = _pool_node(nir, module, in_shape, out_shape)
            if pool is not None:
                add(node_name(name), pool)
        elif isinstance(module, nn.Flatten):
            start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
            end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
            add(node_name(name), nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end))
        elif isinstance(module, _PASS_THROUGH):
            continue
        else:
            raise ValueError(f"NIR export: layer {name!r} ({type(module).__name__}) has no NIR node here "
                             "(a batch norm is folded only when it directly follows a conv or linear layer)")
    if amplitude != 1.0:
        raise ValueError("NIR export: the network ends in a spiking layer; the last layer must be a weight layer")
    nodes["output"] = nir.Output(output_type=np.array([int(metadata["num_classes"])]))
    edges.append((previous, "output"))
    graph_metadata = {"snnconv_format": NIR_FORMAT, "method": str(metadata["method"]),
                      "readout": "argmax of the output summed over steps",
                      "steps": default_steps(metadata)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_metadata)


def write_nir(graph: Any, path: str | Path) -> Path:
    """Write ``graph`` to ``path`` (HDF5, ``nir.write``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    require("nir").write(str(path), graph)
    return path


def read_nir(path: str | Path) -> Any:
    """The graph in the NIR file at ``path`` (``nir.read``)."""
    return require("nir").read(str(path))


# ---------------------------------------------------------------------------------------------
# the same network in snnConv and in snnTorch


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
            flatten = network.get_submodule(name)
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
