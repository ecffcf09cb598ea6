"""Dataflow of a model, read with ``torch.fx`` symbolic tracing: which module feeds which.

The converter and the spike metrics need facts the module tree does not hold: which BatchNorm
directly follows which conv (to fold it), which weight layers see the image itself (computed once
in a simulation), and which weight layers a spiking layer drives (its fan-out, through pools,
flattening and residual additions). Tracing treats every activation and neuron as a leaf and
never runs the model. A model that cannot be traced gets ``None`` and callers fall back to
module order.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import cast

import torch
from torch import fx, nn

from .layers import QCFS, ClippedReLU, RateNorm
from .neurons import IFNeuron, StaticInput

#: modules tracing treats as opaque: activations and neurons
_LEAVES = (RateNorm, QCFS, ClippedReLU, IFNeuron, StaticInput)


class _LeafTracer(fx.Tracer):
    """torch.nn modules, activations and neurons are leaves; everything else is traced through."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _LEAVES) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.Graph | None:
    """The model's dataflow graph, or None when the model's forward cannot be traced symbolically."""
    try:
        return _LeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "unknown structure"
        return None


def _module_name(node: fx.Node) -> str:
    """The qualified module name a ``call_module`` node calls (fx gives such a node a str target)."""
    return cast(str, node.target)


def _module(model: nn.Module, node: fx.Node) -> nn.Module | None:
    return model.get_submodule(_module_name(node)) if node.op == "call_module" else None


def conv_bn_pairs(model: nn.Module, graph: fx.Graph) -> list[tuple[str, str]]:
    """``(weight layer, batch norm)`` names where the BN's only input is the weight layer's output
    and nothing else reads that output (Conv2d -> BatchNorm2d, Linear -> BatchNorm1d)."""
    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        bn = _module(model, node)
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not node.args:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            continue
        weight = _module(model, source)
        if (isinstance(weight, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or (
                isinstance(weight, nn.Linear) and isinstance(bn, nn.BatchNorm1d)):
            pairs.append((_module_name(source), _module_name(node)))
    return pairs


def input_weight_layers(model: nn.Module, graph: fx.Graph) -> list[str]:
    """Names of the Conv2d / Linear layers whose input is the model's input itself."""
    names = []
    for node in graph.nodes:
        if isinstance(_module(model, node), (nn.Conv2d, nn.Linear)) and node.args:
            source = node.args[0]
            if isinstance(source, fx.Node) and source.op == "placeholder":
                names.append(node.target)
    return names


@dataclass(frozen=True)
class Synapses:
    """A weight layer reached by a spiking layer's output, and how many of its inputs one input
    element reaches on the way (``spread``: (k/s)^2 for an average pool of kernel k, stride s)."""

    weight_name: str
    spread: float


def _pool_spread(pool: nn.Module) -> float:
    if isinstance(pool, nn.AvgPool2d):
        kh, kw = (pool.kernel_size, pool.kernel_size) if isinstance(pool.kernel_size, int) else pool.kernel_size
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        return max(1.0, kh / sh) * max(1.0, kw / sw)
    return 1.0


def downstream_weight_layers(model: nn.Module, graph: fx.Graph, name: str) -> list[Synapses]:
    """The weight layers that the output of module ``name`` reaches before any other weight layer
    or neuron (through pools, BN, flatten, dropout, additions and the like)."""
    start = [node for node in graph.nodes if node.op == "call_module" and node.target == name]
    if not start:
        raise KeyError(f"module {name!r} is not called in the traced forward")
    found: list[Synapses] = []
    stack = [(user, 1.0) for user in start[0].users]
    seen: set[fx.Node] = set()
    while stack:
        node, spread = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        module = _module(model, node)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            found.append(Synapses(node.target, spread))
            continue
        if isinstance(module, _LEAVES) or node.op == "output":
            continue
        spread_here = spread * _pool_spread(module) if module is not None else spread
        stack.extend((user, spread_here) for user in node.users)
    return found


def synapses_per_input(module: nn.Module) -> float:
    """Synapses one input element of a weight layer drives: out_channels/groups * k_h * k_w /
    (s_h * s_w) for a Conv2d (exact away from the image border; zero padding makes border
    elements drive fewer), out_features for a Linear."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        sh, sw = module.stride
        return module.out_channels / module.groups * kh * kw / (sh * sw)
    if isinstance(module, nn.Linear):
        return float(module.out_features)
    raise TypeError(f"{type(module).__name__} is not a Conv2d or Linear layer")


#: modules whose output is their input tensor or a view of it (no new memory)
_ALIASING_MODULES = (nn.Identity, nn.Dropout, nn.Flatten)
#: modules and functions whose output is a new tensor
_FRESH_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_FRESH_FUNCTIONS = {operator.add, torch.add}


def exclusive_inputs(model: nn.Module, graph: fx.Graph, names: set[str]) -> set[str]:
    """Those of the modules ``names`` whose input tensor nothing else reads: it was freshly made
    (by a conv, linear, BN, pool or addition; not the model input, not a cached output) and only
    views of it lead to the module. Such a module may overwrite its input."""
    exclusive = set()
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in names or not node.args:
            continue
        source = node.args[0]
        while isinstance(source, fx.Node) and len(source.users) == 1 and (
                isinstance(_module(model, source), _ALIASING_MODULES)
                or (source.op == "call_method" and source.target in ("flatten", "view", "reshape"))):
            source = source.args[0]
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            continue
        fresh = isinstance(_module(model, source), _FRESH_MODULES) or (
            source.op == "call_function" and source.target in _FRESH_FUNCTIONS)
        if fresh:
            exclusive.add(node.target)
    return exclusive


#: function calls a rate-coded SNN can hold (linear in their tensor inputs, or shape-only)
LINEAR_FUNCTIONS = {
    operator.add, operator.iadd, operator.getitem, torch.add, torch.cat, torch.flatten, getattr,
    nn.functional.avg_pool2d, nn.functional.adaptive_avg_pool2d, nn.functional.dropout,
}
LINEAR_METHODS = {"add", "add_", "flatten", "view", "reshape", "size", "contiguous", "mean", "dim"}


def nonlinear_calls(graph: fx.Graph) -> list[str]:
    """Function or method calls of the traced forward that are not known to be linear/shape-only,
    as ``"node name (target)"`` (e.g. a functional max pool or ReLU written inside ``forward``)."""
    bad = []
    for node in graph.nodes:
        if node.op == "call_function" and node.target not in LINEAR_FUNCTIONS:
            bad.append(f"{node.name} ({getattr(node.target, '__name__', node.target)})")
        elif node.op == "call_method" and node.target not in LINEAR_METHODS:
            bad.append(f"{node.name} (.{node.target}())")
    return bad
