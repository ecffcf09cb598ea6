"""PASCAL's spike-level path (section 3.5 of ``docs/methods.md``): compiled ops run on spike trains,
weight-layer constants divided by the input steps, PASC-IF neurons per layer, synaptic operations
counted (:class:`SpikeRun`, the result of :meth:`snnconv.pascal.PascalSNN.run_spikes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .compile import Affine, Block, Neuron, Op
from .neuron import _count_steps, pasc_if, quantise_count, spike_train


@dataclass
class SpikeRun:
    """One batch through the spike-level SNN.

    ``logits [B, classes]``: read-out currents summed over the last layer's steps (equal to the
    QCFS ANN's logits; the authors average over those steps, which has the same argmax).
    ``counts[name] [B, ...]`` int64: output spikes per neuron; ``sums[name]``: the time-sum of each
    neuron's output train. ``synops``: accumulate operations of spike-driven weight layers and
    identity shortcuts, ``macs``: dense multiply-accumulates of the layers fed the analog image
    (totals over the batch; see :func:`evaluate_pascal` for the counting rules).
    """

    logits: torch.Tensor
    counts: dict[str, torch.Tensor]
    sums: dict[str, torch.Tensor]
    synops: float
    macs: float
    images: int


@dataclass
class _Train:
    """A signal between layers: ``values [T, B, ...]``; ``analog`` until the first neuron."""

    values: torch.Tensor
    analog: bool

    @property
    def steps(self) -> int:
        return self.values.shape[0]


class _SpikeRunner:
    """Runs compiled ops on spike trains, counting operations (one instance per batch)."""

    def __init__(self, divide_constants: bool, fanout_cache: dict) -> None:
        self.divide_constants = divide_constants
        self.fanout_cache = fanout_cache
        self.counts: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.synops = 0.0
        self.macs = 0.0

    def run(self, ops: Sequence[Op], train: _Train) -> _Train:
        for op in ops:
            if isinstance(op, Affine):
                train = self.affine(op, train)
            elif isinstance(op, Neuron):
                train = self.neuron(op, train)
            else:
                train = self.block(op, train)
        return train

    def affine(self, op: Affine, train: _Train) -> _Train:
        steps, batch = train.steps, train.values.shape[1]
        merged = train.values.reshape(steps * batch, *train.values.shape[2:])
        divisor = steps if self.divide_constants else 1
        module = op.module
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bias = None if module.bias is None else module.bias / divisor
            if isinstance(module, nn.Conv2d):
                out = F.conv2d(merged, module.weight, bias, module.stride, module.padding, module.dilation,
                               module.groups)
            else:
                out = F.linear(merged, module.weight, bias)
            self.count_ops(module, train, out)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            # per step: gamma * (x_t - mean/T) / sigma + beta/T, which sums to the ANN's BN (section 3.5)
            bias = None if module.bias is None else module.bias / divisor
            running_mean = cast(torch.Tensor, module.running_mean)  # compile_model refuses a BN without it
            out = F.batch_norm(merged, running_mean / divisor, module.running_var, module.weight, bias,
                               False, 0.0, module.eps)
        else:  # pooling and flatten: linear, no constant
            out = module(merged)
        return _Train(out.reshape(steps, batch, *out.shape[1:]), train.analog)

    def neuron(self, op: Neuron, train: _Train) -> _Train:
        threshold, levels = op.threshold, op.levels
        if train.analog:  # first layer: the analog current once, emitted as front-loaded spikes
            counts = quantise_count(train.values[0], op.module.threshold, levels).to(torch.int64)
        else:
            counts = pasc_if(train.values, threshold, levels)
        spikes = spike_train(counts, levels, threshold / levels, train.values.dtype)
        self.counts[op.name] = counts
        self.sums[op.name] = spikes.sum(0)
        return _Train(spikes, analog=False)

    def block(self, op: Block, train: _Train) -> _Train:
        residual = self.run(op.residual, train)
        shortcut = self.run(op.shortcut, train)
        if not op.shortcut:  # identity: one accumulate per input spike
            self.synops += float((train.values != 0).sum())
        if shortcut.steps == residual.steps:
            current = residual.values + shortcut.values
        else:  # section 3.6: inject the shortcut's time-sum at the residual branch's first step
            current = residual.values.clone()
            current[0] += shortcut.values.sum(0)
        return self.neuron(op.out, _Train(current, analog=False))

    def count_ops(self, module: nn.Conv2d | nn.Linear, train: _Train, out: torch.Tensor) -> None:
        """Add the operations of weight layer ``module`` (input ``train``, output ``out``) to
        ``synops`` (spike input) or ``macs`` (analog input: every output unit, dense)."""
        values = train.values
        if train.analog:
            self.macs += float(out.numel() * _fan_in(module))
            return
        fanout = self.fanout(module, values.shape[2:], values)
        active_steps = _count_steps(values != 0).sum(0, dtype=values.dtype)  # summed over images
        self.synops += float((active_steps * fanout).sum())

    def fanout(self, module: nn.Conv2d | nn.Linear, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Outputs each input unit of ``module`` reaches (``[C, H, W]`` or ``[features]``), cached."""
        key = (id(module), tuple(shape), like.dtype, like.device)
        if key not in self.fanout_cache:
            self.fanout_cache[key] = _fanout_map(module, shape, like)
        return self.fanout_cache[key]


def _fan_in(module: nn.Conv2d | nn.Linear) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    kh, kw = module.kernel_size
    return kh * kw * module.in_channels // module.groups


def _fanout_map(module: nn.Conv2d | nn.Linear, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return torch.full(tuple(shape), float(module.out_features), dtype=like.dtype, device=like.device)
    with torch.enable_grad():
        probe = torch.zeros(1, *shape, dtype=like.dtype, device=like.device, requires_grad=True)
        ones = torch.ones_like(module.weight, dtype=like.dtype)
        F.conv2d(probe, ones, None, module.stride, module.padding, module.dilation, module.groups).sum().backward()
    return cast(torch.Tensor, probe.grad)[0]  # backward() above filled the probe's gradient
