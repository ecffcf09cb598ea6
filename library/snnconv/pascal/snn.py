"""The PASCAL SNN module (:class:`PascalSNN`, :func:`to_pascal`): exact inference in the count domain
(``snn(images)``) and the spike-level path (``snn.run_spikes(images)``, :mod:`snnconv.pascal.spikes`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .compile import Affine, Neuron, Op, _neurons, compile_model
from .neuron import quantise_count
from .spikes import SpikeRun, _SpikeRunner, _Train

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
