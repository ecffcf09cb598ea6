"""Spiking neurons for rate-coded simulation (``docs/methods.md`` §0).

:class:`IFNeuron` is an integrate-and-fire neuron with reset by subtraction. It is stateful: each
call is one time step, and the membrane persists until :func:`reset_state`. Only the membrane
(one tensor the size of the layer's output) is kept between steps, so simulating T steps needs no
more memory than one step.

:class:`StaticInput` wraps a layer whose input is the image: the image is the same at every step,
so the layer runs once per batch and its output is reused.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .layers import REDUCED_PRECISION

#: accepted ``v_init`` names: the membrane at t = 0 as a fraction of the threshold
V_INIT_FRACTIONS = {"zero": 0.0, "half": 0.5}


def v_init_fraction(v_init: str) -> float:
    """0.0 for ``"zero"`` (RNL, the authors), 0.5 for ``"half"`` (QCFS: v(0) = theta / 2)."""
    if v_init not in V_INIT_FRACTIONS:
        raise ValueError(f"v_init must be one of {', '.join(V_INIT_FRACTIONS)}, got {v_init!r}")
    return V_INIT_FRACTIONS[v_init]


class IFNeuron(nn.Module):
    """Integrate-and-fire with reset by subtraction; one call = one time step.

    Per step, with input current ``I [B, ...]``, threshold ``theta`` and spike amplitude ``A``::

        v  <- v + I                    (v = v_init + I at the first step)
        s  =  1 if v >= theta else 0
        v  <- v - s * theta
        out = A * s                    (same shape as I)

    ``threshold`` and ``amplitude`` are Python floats (fixed after conversion; no host syncs in the
    loop). With ``record`` the number of spikes of every step is kept on the device as a 0-d
    tensor in :attr:`step_spikes` (read and cleared by the simulator). ``owns_input`` (set by the
    converter when nothing else reads the input current) lets the neuron write its spikes into the
    input's memory from the second step on instead of allocating.

    The membrane is float32 at least: a bfloat16 / float16 current (a layer run under autocast) is
    cast up before it is integrated, so the state never accumulates rounding of a coarse type.
    """

    def __init__(self, threshold: float, amplitude: float = 1.0, v_init: float = 0.0,
                 record: bool = True, owns_input: bool = False) -> None:
        super().__init__()
        if not threshold > 0:
            raise ValueError(f"IF threshold must be positive, got {threshold!r}")
        self.threshold = float(threshold)
        self.amplitude = float(amplitude)
        self.v_init = float(v_init)
        self.record = record
        self.owns_input = owns_input
        self.membrane: torch.Tensor | None = None
        self.step_spikes: list[torch.Tensor] = []

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        if current.dtype in REDUCED_PRECISION:  # a fresh float32 tensor: nothing else reads it
            current = current.float()
        if self.membrane is None:
            # the first step allocates membrane and spikes apart from the input, so that the heap
            # is left with free blocks of the per-step sizes next to the long-lived membranes;
            # writing into the input here instead made glibc trim and re-fault the heap at every
            # later step (VGG16, batch 32, 2 threads: ~9600 page faults per step, 10 % slower)
            membrane = current + self.v_init if self.v_init else current.clone()
            spikes = torch.empty_like(membrane)
        else:
            membrane = self.membrane.add_(current)
            # an input nothing else reads is dead now: its memory takes the spikes
            spikes = current if self.owns_input else torch.empty_like(membrane)
        # comparing straight into a float tensor is one pass (bool, then float, would be two)
        torch.ge(membrane, self.threshold, out=spikes)
        membrane.sub_(spikes, alpha=self.threshold)
        self.membrane = membrane
        if self.record:
            # float32 sum of 0/1 values: exact while a layer fires fewer than 2**24 spikes per step
            self.step_spikes.append(spikes.sum())
        if self.amplitude != 1.0:
            spikes.mul_(self.amplitude)
        return spikes

    def reset_state(self) -> None:
        """Forget the membrane and the recorded spike counts (call before each new batch)."""
        self.membrane = None
        self.step_spikes = []

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:.6g}, amplitude={self.amplitude:.6g}, v_init={self.v_init:.6g}"


class StaticInput(nn.Module):
    """Runs ``layer`` once per input tensor and returns the cached output while the same tensor
    object comes back (a simulation feeds the same image at every step)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x is not self._input:
            self._output = self.layer(x)
            self._input = x
        # set together with _input: not None once an input has come
        return cast(torch.Tensor, self._output)

    def reset_state(self) -> None:
        self._input = None
        self._output = None


def reset_state(model: nn.Module) -> None:
    """Reset every stateful module of ``model`` (membranes, cached inputs, spike records)."""
    for module in model.modules():
        if isinstance(module, (IFNeuron, StaticInput)):
            module.reset_state()


def if_neurons(model: nn.Module) -> list[tuple[str, IFNeuron]]:
    """Every :class:`IFNeuron` of ``model`` as ``(qualified name, module)``, in registration order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, IFNeuron)]
