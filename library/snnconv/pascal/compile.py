"""PASCAL's view of a model: :func:`compile_model` turns a QCFS model into ops in forward order
(:class:`Neuron`, :class:`Affine`, ResNet :class:`Block`), refusing what count coding cannot convert;
:func:`weight_layer_steps` maps each weight layer to the L of the neuron it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from ..layers import QCFS, RateNorm
from ..models import VGG, BasicBlock, LeNet5, ResNet, SmallCNN


@dataclass
class Neuron:
    """A QCFS layer, run as PASC-IF neurons (``name`` = its qualified name in the model)."""

    name: str
    module: QCFS

    @property
    def levels(self) -> int:
        return self.module.levels

    @property
    def threshold(self) -> float:
        return float(self.module.threshold.detach())


@dataclass
class Affine:
    """A linear layer between neurons (conv, linear, batch norm, pooling, flatten)."""

    name: str
    module: nn.Module


@dataclass
class Block:
    """A ResNet BasicBlock: ``out(residual(x) + shortcut(x))``; ``shortcut == []`` is the identity."""

    name: str
    residual: list[Op]
    shortcut: list[Op]
    out: Neuron


Op = Neuron | Affine | Block

_AFFINE = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)
_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_SEQUENTIAL = (nn.Sequential, SmallCNN, LeNet5, VGG, ResNet)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _compile(module: nn.Module, name: str) -> list[Op]:
    """The ops of ``module`` in forward order; refuses what count coding cannot convert."""
    if isinstance(module, QCFS):
        return [Neuron(name, module)]
    if isinstance(module, BasicBlock):
        return [_compile_block(module, name)]
    if isinstance(module, _AFFINE):
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.running_mean is None:
            raise ValueError(f"layer {name!r}: batch norm without running statistics cannot be converted")
        return [Affine(name, module)]
    if isinstance(module, _SKIPPED):
        return []
    if isinstance(module, _SEQUENTIAL):
        return [op for child_name, child in module.named_children() for op in _compile(child, _join(name, child_name))]
    if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
        raise ValueError(f"layer {name!r}: max pooling does not commute with the time sum of count coding; "
                         "build the model with average pooling")
    if isinstance(module, (nn.ReLU, RateNorm)):
        raise ValueError(f"layer {name!r}: PASCAL converts QCFS activations, found {type(module).__name__}")
    raise ValueError(f"layer {name or 'model'!r}: {type(module).__name__} is not supported by the PASCAL "
                     "conversion (supported: Sequential/SmallCNN/LeNet5/VGG/ResNet of Conv2d, Linear, BatchNorm, "
                     "AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, QCFS, BasicBlock)")


def _block_neuron(block: BasicBlock, name: str, part: str) -> Neuron:
    activation = getattr(block, part)
    if not isinstance(activation, QCFS):
        raise ValueError(f"layer {_join(name, part)!r}: PASCAL converts QCFS activations, "
                         f"found {type(activation).__name__}")
    return Neuron(_join(name, part), activation)


def _compile_block(block: BasicBlock, name: str) -> Block:
    mid, out = _block_neuron(block, name, "act_mid"), _block_neuron(block, name, "act_out")
    residual: list[Op] = [Affine(_join(name, "conv1"), block.conv1), Affine(_join(name, "bn1"), block.bn1), mid,
                          Affine(_join(name, "conv2"), block.conv2), Affine(_join(name, "bn2"), block.bn2)]
    return Block(name, residual, _compile(block.shortcut, _join(name, "shortcut")), out)


def compile_model(model: nn.Module) -> list[Op]:
    """The model as PASCAL ops in forward order (references ``model``'s modules, copies nothing).

    Raises ValueError naming the layer for anything the conversion does not support, for a model
    without QCFS layers, a zero threshold, or a residual block before the first QCFS layer.
    """
    ops = _compile(model, "")
    neurons = list(_neurons(ops))
    if not neurons:
        raise ValueError("the model has no QCFS layer to convert")
    for neuron in neurons:
        if neuron.threshold == 0.0 or not math.isfinite(neuron.threshold):
            raise ValueError(f"layer {neuron.name!r}: threshold lambda = {neuron.threshold!r} "
                             "is not a usable quantum (QCFS divides by it)")
    for op in ops:
        if isinstance(op, Neuron):
            break
        if isinstance(op, Block):
            raise ValueError(f"layer {op.name!r}: a residual block before the first QCFS layer is not supported")
    return ops


def _neurons(ops: Sequence[Op]) -> Iterable[Neuron]:
    for op in ops:
        if isinstance(op, Neuron):
            yield op
        elif isinstance(op, Block):
            yield from _neurons(op.residual)
            yield from _neurons(op.shortcut)
            yield op.out


def weight_layer_steps(model: nn.Module) -> dict[str, int | None]:
    """For each Conv2d / Linear (by qualified name): L of the QCFS neuron its current flows into.

    A ResNet shortcut conv feeds the block's output neuron (``act_out``), like ``conv2``. Weight
    layers after the last neuron (the read-out classifier) map to None: they have no neuron.
    """
    steps: dict[str, int | None] = {}

    def walk(ops: Sequence[Op], pending: list[str]) -> list[str]:
        for op in ops:
            if isinstance(op, Affine):
                if isinstance(op.module, (nn.Conv2d, nn.Linear)):
                    pending.append(op.name)
            elif isinstance(op, Neuron):
                steps.update({name: op.levels for name in pending})
                pending = []
            else:
                pending = walk(op.residual, pending)
                pending = walk(op.shortcut, pending)
                steps.update({name: op.out.levels for name in pending})
                pending = []
        return pending

    for name in walk(compile_model(model), []):
        steps[name] = None
    return steps
