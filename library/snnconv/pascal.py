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
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from .layers import QCFS, RateNorm
from .models import VGG, BasicBlock, LeNet5, ResNet, SmallCNN

Number = int | float | Fraction

# ---------------------------------------------------------------------------------------------
# neuron level


def quantise_count(z: torch.Tensor, threshold: torch.Tensor | float, levels: int) -> torch.Tensor:
    """QCFS spike count ``floor(clamp(z / lambda, 0, 1) * L + 1/2)`` (float tensor of integers 0..L).

    The same float operations as :class:`snnconv.layers.QCFS`, so ``count / L * lambda`` is the
    QCFS output bit for bit. Mathematically ``clip(floor(z/q + 1/2), 0, L)`` with ``q = lambda/L``,
    for either sign of lambda. ``z`` has any shape; the result has the same shape.
    """
    return torch.floor(torch.clamp(z / threshold, 0.0, 1.0) * levels + 0.5)


@dataclass
class PascIfTrace:
    """What one PASC-IF neuron did (:func:`pasc_if_reference`), in the units of its input.

    ``count_after_integrate`` / ``membrane_after_integrate``: counter and membrane after phase A;
    ``signed_count``: the counter after phase B (can be negative); ``reverse_spikes``: phase-B
    reverse (inhibitory) spikes; ``spikes``: the ``T`` output values of phase C (``q`` or 0).
    """

    count_after_integrate: int
    membrane_after_integrate: Number
    signed_count: int
    reverse_spikes: int
    spikes: list[Number]

    @property
    def count(self) -> int:
        """Output spikes: the phase-C count ``min(max(signed_count, 0), T)``."""
        return sum(1 for s in self.spikes if s != 0)


def _check_neuron(threshold: Number, levels: int) -> None:
    if isinstance(levels, bool) or int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    if threshold == 0 or not math.isfinite(float(threshold)):
        raise ValueError(f"threshold (lambda) must be finite and non-zero, got {threshold!r}")


def pasc_if_reference(inputs: Sequence[Number], threshold: Number, levels: int) -> PascIfTrace:
    """One PASC-IF neuron, step by step exactly as in section 3.3 (plain Python numbers).

    ``inputs`` is the current sequence ``x_1..x_P`` (``P = T_{i-1}``), ``threshold`` = lambda of the
    layer (either sign), ``levels`` = L = T of the layer. Pass :class:`fractions.Fraction` values
    for exact arithmetic. The negative-threshold branch (q < 0) fires on ``v <= q`` and
    reverse-spikes on ``v > 0``; it is written out here, not mirrored, so tests can check
    :func:`pasc_if`'s mirrored implementation against it.
    """
    _check_neuron(threshold, levels)
    if len(inputs) < 1:
        raise ValueError("a PASC-IF neuron needs at least one input step")
    q = threshold / levels
    positive = q > 0
    v = q / 2
    count = 0
    for x in inputs:  # phase A: integrate, at most one spike per step
        v = v + x
        if (v >= q) if positive else (v <= q):
            v = v - q
            count += 1
    count_a, v_a = count, v
    reverse = 0
    for _ in range(max(len(inputs), levels) - 1):  # phase B: correct
        if (v >= q) if positive else (v <= q):
            v = v - q
            count += 1
        elif (v < 0) if positive else (v > 0):
            v = v + q
            count -= 1
            reverse += 1
    emitted = min(max(count, 0), levels)  # phase C: emit front-loaded
    spikes = [q if step < emitted else 0 for step in range(levels)]
    return PascIfTrace(count_a, v_a, count, reverse, spikes)


def _count_steps(flags: torch.Tensor) -> torch.Tensor:
    """``flags [T, ...]`` bool -> how many steps are set, ``[...]`` (int64; byte sums when T < 256)."""
    if flags.shape[0] < 256:
        return flags.view(torch.uint8).sum(0, dtype=torch.uint8).to(torch.int64)
    return flags.sum(0)


def integrate(currents: torch.Tensor, quantum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase A for ``q > 0``: ``currents [P, ...]`` -> (count ``[...]`` int64, membrane ``[...]``).

    ``v`` starts at ``q/2``; each step adds ``x_t`` and fires (``v -= q``, ``count += 1``) when
    ``v >= q``, at most once per step. Runs over the P steps on whole tensors.
    """
    membrane = torch.full_like(currents[0], quantum / 2)
    fired = torch.empty(currents.shape, dtype=torch.bool, device=currents.device)
    for step, current in enumerate(currents):
        membrane.add_(current)
        torch.ge(membrane, quantum, out=fired[step])
        membrane.sub_(fired[step].to(membrane.dtype), alpha=quantum)
    return _count_steps(fired), membrane


def correct(count: torch.Tensor, membrane: torch.Tensor, quantum: float, steps: int) -> torch.Tensor:
    """Phase B for ``q > 0`` in closed form: the signed count after ``steps`` correction steps.

    Step by step, the neuron fires while ``v >= q`` and reverse-spikes while ``v < 0``, one per step;
    starting from ``v`` it does ``floor(v / q)`` of them (negative: reverse spikes) and then rests
    in ``[0, q)``, so ``count + clip(floor(v / q), -steps, steps)``.
    """
    change = torch.floor(membrane / quantum).clamp(-steps, steps)
    return count + change.to(torch.int64)


def pasc_if(currents: torch.Tensor, threshold: float, levels: int) -> torch.Tensor:
    """Output spike counts ``[...]`` (int64 in 0..L) of PASC-IF neurons fed ``currents [P, ...]``.

    Phase A step by step (:func:`integrate`), phase B in closed form (:func:`correct`), phase C
    clips to ``[0, L]``. A negative threshold is the mirror image: negating inputs and quantum
    turns its branch (fire on ``v <= q``, reverse on ``v > 0``) into the positive one.
    """
    _check_neuron(threshold, levels)
    quantum = threshold / levels
    if quantum < 0:
        currents, quantum = -currents, -quantum
    count, membrane = integrate(currents, quantum)
    signed = correct(count, membrane, quantum, max(currents.shape[0], levels) - 1)
    return signed.clamp(0, levels)


def spike_train(counts: torch.Tensor, levels: int, quantum: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Front-loaded spike trains ``[L, *counts.shape]``: ``quantum`` on steps ``< count``, else 0."""
    dtype = dtype or torch.get_default_dtype()
    steps = torch.arange(levels, device=counts.device).view(levels, *([1] * counts.dim()))
    spike, silent = (torch.tensor(value, dtype=dtype, device=counts.device) for value in (quantum, 0.0))
    return torch.where(steps < counts.unsqueeze(0), spike, silent)


# ---------------------------------------------------------------------------------------------
# network structure


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


def _compile_block(block: BasicBlock, name: str) -> Block:
    for part in ("act_mid", "act_out"):
        if not isinstance(getattr(block, part), QCFS):
            raise ValueError(f"layer {_join(name, part)!r}: PASCAL converts QCFS activations, "
                             f"found {type(getattr(block, part)).__name__}")
    residual = [Affine(_join(name, "conv1"), block.conv1), Affine(_join(name, "bn1"), block.bn1),
                Neuron(_join(name, "act_mid"), block.act_mid),
                Affine(_join(name, "conv2"), block.conv2), Affine(_join(name, "bn2"), block.bn2)]
    return Block(name, residual, _compile(block.shortcut, _join(name, "shortcut")),
                 Neuron(_join(name, "act_out"), block.act_out))


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


# ---------------------------------------------------------------------------------------------
# exact inference (count domain)


def _run_exact(ops: Sequence[Op], x: torch.Tensor, counts: dict[str, torch.Tensor] | None) -> torch.Tensor:
    for op in ops:
        if isinstance(op, Affine):
            x = op.module(x)
        elif isinstance(op, Neuron):
            x = _exact_neuron(op, x, counts)
        else:
            residual = _run_exact(op.residual, x, counts)
            x = _exact_neuron(op.out, residual + _run_exact(op.shortcut, x, counts), counts)
    return x


def _exact_neuron(neuron: Neuron, z: torch.Tensor, counts: dict[str, torch.Tensor] | None) -> torch.Tensor:
    threshold = neuron.module.threshold
    count = quantise_count(z, threshold, neuron.levels)
    if counts is not None:
        counts[neuron.name] = count.to(torch.int64)
    return count / neuron.levels * threshold


# ---------------------------------------------------------------------------------------------
# spike level


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
            out = F.batch_norm(merged, module.running_mean / divisor, module.running_var, module.weight, bias,
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

    def count_ops(self, module: nn.Module, train: _Train, out: torch.Tensor) -> None:
        """Add the operations of weight layer ``module`` (input ``train``, output ``out``) to
        ``synops`` (spike input) or ``macs`` (analog input: every output unit, dense)."""
        values = train.values
        if train.analog:
            self.macs += float(out.numel() * _fan_in(module))
            return
        fanout = self.fanout(module, values.shape[2:], values)
        active_steps = _count_steps(values != 0).sum(0, dtype=values.dtype)  # summed over images
        self.synops += float((active_steps * fanout).sum())

    def fanout(self, module: nn.Module, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Outputs each input unit of ``module`` reaches (``[C, H, W]`` or ``[features]``), cached."""
        key = (id(module), tuple(shape), like.dtype, like.device)
        if key not in self.fanout_cache:
            self.fanout_cache[key] = _fanout_map(module, shape, like)
        return self.fanout_cache[key]


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    kh, kw = module.kernel_size
    return kh * kw * module.in_channels // module.groups


def _fanout_map(module: nn.Module, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return torch.full(tuple(shape), float(module.out_features), dtype=like.dtype, device=like.device)
    with torch.enable_grad():
        probe = torch.zeros(1, *shape, dtype=like.dtype, device=like.device, requires_grad=True)
        ones = torch.ones_like(module.weight, dtype=like.dtype)
        F.conv2d(probe, ones, None, module.stride, module.padding, module.dilation, module.groups).sum().backward()
    return probe.grad[0]


# ---------------------------------------------------------------------------------------------
# the converted module


class PascalSNN(nn.Module):
    """The PASCAL SNN of a QCFS model (holds a frozen, eval-mode copy of its layers).

    ``forward(images [B, C, H, W]) -> logits [B, classes]``: exact inference in the count domain;
    :meth:`run_spikes` runs the spike-level path. Move it with ``.to(device)`` / ``.double()``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(model).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.ops = compile_model(self.network)
        self._fanout_cache: dict = {}

    def train(self, mode: bool = True) -> PascalSNN:
        """The SNN is inference only: stays in eval mode (batch norm uses its running statistics)."""
        return super().train(False)

    @property
    def neurons(self) -> list[Neuron]:
        """The PASC-IF layers in forward order."""
        return list(_neurons(self.ops))

    @property
    def levels(self) -> list[int]:
        return [neuron.levels for neuron in self.neurons]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _run_exact(self.ops, images, None)

    @torch.no_grad()
    def counts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Exact-inference output counts of every neuron layer (int64 ``[B, ...]``, by name)."""
        counts: dict[str, torch.Tensor] = {}
        _run_exact(self.ops, images, counts)
        return counts

    @torch.no_grad()
    def run_spikes(self, images: torch.Tensor, *, divide_constants: bool = True) -> SpikeRun:
        """The spike-level path on ``images [B, C, H, W]``.

        ``divide_constants=False`` skips the division of biases and BN shifts by the input steps,
        the silent bug of section 5 item 3 (kept for negative-control tests and diagnostics).
        """
        runner = _SpikeRunner(divide_constants, self._fanout_cache)
        out = runner.run(self.ops, _Train(images.unsqueeze(0), analog=True))
        return SpikeRun(out.values.sum(0), runner.counts, runner.sums, runner.synops, runner.macs,
                        images.shape[0])


def to_pascal(model: nn.Module) -> PascalSNN:
    """The PASCAL SNN of a trained QCFS model; ``to_pascal(model)(images)`` gives its logits."""
    return PascalSNN(model)


# ---------------------------------------------------------------------------------------------
# equivalence check and evaluation


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
        module = model.get_submodule(name)
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
