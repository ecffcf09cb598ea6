"""PASCAL at the neuron level: the PASC-IF neuron (``docs/methods.md`` §3.3), literally and on tensors.

:func:`pasc_if_reference` runs one neuron step by step in plain (or exact rational) numbers;
:func:`integrate` (phase A), :func:`correct` (phase B, closed form) and :func:`pasc_if` run whole
tensors of neurons; :func:`quantise_count` is the QCFS count the neurons must reproduce and
:func:`spike_train` the front-loaded output train (phase C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

Number = int | float | Fraction



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
