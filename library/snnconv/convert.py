"""Trained ANN -> SNN for each method: IF neurons (RNL, plain QCFS) and PASCAL (QCFS).

A model with max pooling or a layer the conversion does not support is refused with a message
naming the layer.
"""

from __future__ import annotations

import copy
from typing import cast

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from . import graph as dataflow
from .layers import QCFS, ClippedReLU, RateNorm
from .models import VGG, BasicBlock, LeNet5, ResNet, SmallCNN
from .neurons import IFNeuron, StaticInput, v_init_fraction

# ---------------------------------------------------------------------------------------------
# rate-coded IF conversion (RNL, plain QCFS)

#: layers a rate-coded SNN keeps as they are (linear maps applied at every step, docs/methods.md §0)
RATE_CODED_LAYERS = (
    nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.Dropout, nn.Identity,
)
#: activations that become IF neurons
CONVERTIBLE_ACTIVATIONS = (RateNorm, QCFS, ClippedReLU)
#: modules that only hold other modules and whose forward is known to be convertible
KNOWN_CONTAINERS = (nn.Sequential, nn.ModuleList, SmallCNN, LeNet5, VGG, ResNet, BasicBlock)

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
              nn.AdaptiveMaxPool3d)


def _describe(name: str, module: nn.Module) -> str:
    return f"layer {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"


def check_convertible(model: nn.Module) -> None:
    """Refuse (ValueError naming the layer) a model the rate-coded IF conversion cannot handle:
    max pooling, ReLU (no threshold), any unknown layer, or a non-linear call inside a forward."""
    activations = 0
    unknown_containers = []
    for name, module in model.named_modules():
        if isinstance(module, _MAX_POOLS):
            raise ValueError(f"cannot convert {_describe(name, module)}: max pooling has no rate-coded "
                             "spiking equivalent; build the model with average pooling (nn.AvgPool2d)")
        if isinstance(module, nn.ReLU):
            raise ValueError(f"cannot convert {_describe(name, module)}: a ReLU has no firing threshold; "
                             "train the model with RateNorm ('rnl') or QCFS ('qcfs') activations")
        if isinstance(module, CONVERTIBLE_ACTIVATIONS):
            activations += 1
        elif isinstance(module, KNOWN_CONTAINERS):
            continue
        elif isinstance(module, RATE_CODED_LAYERS):
            continue
        elif any(True for _ in module.children()):
            unknown_containers.append((name, module))
        else:
            supported = ", ".join(cls.__name__ for cls in RATE_CODED_LAYERS + CONVERTIBLE_ACTIVATIONS)
            raise ValueError(f"cannot convert {_describe(name, module)}: unsupported layer; "
                             f"supported layers: {supported}")
    if activations == 0:
        raise ValueError("cannot convert a model without RateNorm, QCFS or clipped ReLU activations")
    if unknown_containers:
        _check_traced_forward(model, unknown_containers)


def _check_traced_forward(model: nn.Module, containers: list[tuple[str, nn.Module]]) -> None:
    """A module of an unknown class with children is accepted when its forward traces and calls only
    linear or shape functions (additions, flatten, average pools)."""
    graph = dataflow.trace(model)
    if graph is None:
        name, module = containers[0]
        raise ValueError(f"cannot convert {_describe(name, module)}: its forward could not be traced "
                         "with torch.fx, so the converter cannot check it for non-spiking operations")
    bad = dataflow.nonlinear_calls(graph)
    if bad:
        raise ValueError(f"cannot convert the model: its forward calls {', '.join(bad)}, which has no "
                         "rate-coded spiking equivalent (use modules such as nn.AvgPool2d instead)")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def if_parameters(module: nn.Module) -> tuple[float, float]:
    """``(threshold, amplitude)`` of the IF neuron replacing ``module``:
    RateNorm -> (running_max * p + eps, 1); QCFS -> (lambda, lambda); ClippedReLU -> (its threshold, the same)."""
    if isinstance(module, RateNorm):
        return module.threshold().item(), 1.0
    if isinstance(module, (QCFS, ClippedReLU)):
        threshold = module.threshold.item()
        return threshold, threshold
    raise TypeError(f"{type(module).__name__} has no IF equivalent")


def replace_activations(model: nn.Module, v_init: str, record: bool = True) -> list[str]:
    """Swap every RateNorm / QCFS / ClippedReLU of ``model`` (in place) for an IF neuron; returns their names."""
    fraction = v_init_fraction(v_init)
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, CONVERTIBLE_ACTIVATIONS):
            threshold, amplitude = if_parameters(module)
            if not threshold > 0:
                raise ValueError(f"cannot convert {_describe(name, module)}: its threshold is {threshold}, "
                                 "an IF neuron needs a positive one")
            _set_module(model, name, IFNeuron(threshold, amplitude, fraction * threshold, record))
            names.append(name)
    return names


def fold_batchnorm(model: nn.Module, graph) -> list[str]:
    """Fold each eval-mode BatchNorm that directly follows a Conv2d / Linear into it (in place);
    the BN becomes nn.Identity. Returns the folded BN names. Same function, one pass less per step."""
    folded = []
    for weight_name, bn_name in dataflow.conv_bn_pairs(model, graph):
        # conv_bn_pairs gives Conv2d -> BatchNorm2d and Linear -> BatchNorm1d pairs only
        weight = model.get_submodule(weight_name)
        bn = cast(nn.BatchNorm1d | nn.BatchNorm2d, model.get_submodule(bn_name))
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        fused: nn.Module
        if isinstance(weight, nn.Conv2d):
            fused = fuse_conv_bn_eval(weight.eval(), bn.eval())
        else:
            fused = fuse_linear_bn_eval(cast(nn.Linear, weight).eval(), bn.eval())
        _set_module(model, weight_name, fused)
        _set_module(model, bn_name, nn.Identity())
        folded.append(bn_name)
    return folded


def cache_static_inputs(model: nn.Module, graph) -> list[str]:
    """Wrap each weight layer fed by the image itself in :class:`StaticInput` (in place)."""
    names = dataflow.input_weight_layers(model, graph)
    for name in names:
        _set_module(model, name, StaticInput(model.get_submodule(name)))
    return names


def mark_owned_inputs(model: nn.Module, graph) -> list[str]:
    """Let each IF neuron whose input current nothing else reads reuse that memory (in place)."""
    neurons = {name: module for name, module in model.named_modules() if isinstance(module, IFNeuron)}
    owned = dataflow.exclusive_inputs(model, graph, set(neurons))
    for name in owned:
        neurons[name].owns_input = True
    return sorted(owned)


def to_if(model: nn.Module, v_init: str = "zero", *, fold_bn: bool = True, static_input: bool = False,
          record: bool = True) -> nn.Module:
    """A converted deep copy of ``model`` for rate-coded simulation (sections 1.5 and 2.3).

    * RateNorm -> IF with theta = running_max * p + eps, spike amplitude 1;
    * QCFS -> IF with theta = lambda, spike amplitude lambda;
    * ClippedReLU (data-based normalisation) -> IF with theta = its threshold, spike amplitude theta;
    * ``v_init``: ``"zero"`` (v(0) = 0, the RNL authors) or ``"half"`` (v(0) = theta / 2, QCFS);
    * weights, biases and BN are kept (applied unchanged at every step); the last layer has no
      neuron and the simulator sums its outputs over time.

    Speed options that do not change the function: ``fold_bn`` folds each BN into the conv before
    it; ``static_input`` computes the first layer (which sees the same image at every step) once per
    batch, about 3 % faster on VGG16 but it holds that layer's output for the whole batch (one
    activation of the largest layer, which is why it is off by default; see docs/library.md, the IF
    simulation engine); and a neuron whose input current nothing else reads (found by tracing)
    reuses it for its spikes.
    ``record`` keeps per-step spike counts for firing rates and synaptic operations.
    The copy is in eval mode with gradients off. Refuses unsupported models (see
    :func:`check_convertible`) before copying.
    """
    v_init_fraction(v_init)
    check_convertible(model)
    snn = copy.deepcopy(model).eval()
    for parameter in snn.parameters():
        parameter.requires_grad_(False)
    replace_activations(snn, v_init, record)
    graph = dataflow.trace(snn)
    if graph is not None:
        if fold_bn:
            fold_batchnorm(snn, graph)
        if static_input:
            cache_static_inputs(snn, graph)
        mark_owned_inputs(snn, dataflow.trace(snn))
    return snn


# ---------------------------------------------------------------------------------------------
# PASCAL (spike accumulation, count coding)

from .pascal import PascalSNN, to_pascal  # noqa: E402, F401  (public here; implemented in the pascal package)

__all__ = ["PascalSNN", "check_convertible", "fold_batchnorm", "if_parameters", "to_if", "to_pascal"]
