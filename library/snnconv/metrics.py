"""Conversion metrics: omega (RNL), AL and T_eff (PASCAL), firing rates, synaptic operations, energy.

Formulas follow ``shared/reference/algorithms.md``; each function's docstring names its section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .layers import QCFS, RateNorm

# ---------------------------------------------------------------------------------------------
# RNL: omega (section 2.4)

#: epsilon in the denominator of k (the authors' code)
OMEGA_EPS = 1e-5

#: how hidden layers and the output layer are averaged into one omega (section 2.4):
#: "mean" = (sum_l k_l + k_out) / (N + 1), the paper's mean over layers and the authors' stage-1
#: validation; "doubled" = (2 sum_l k_l + k_out) / (2N + 1), what the authors' stage-2 loss computes
#: because its two forward passes both trigger the hooks
OMEGA_WEIGHTINGS = ("mean", "doubled")


def omega_tensor(rates: torch.Tensor, normaliser: float | torch.Tensor = 1.0) -> torch.Tensor:
    """k(a, M) = sum(a/M) / (||a/M||^2 + 1e-5) over the whole tensor (all samples and units pooled).

    ``rates`` has any shape (e.g. ``[B, C, H, W]``); the result is a 0-d tensor, differentiable in
    ``rates`` and ``normaliser``. For rates in [0, 1] it is >= 1 (up to the epsilon), and 1 when
    every non-zero rate is 1.
    """
    normalised = rates / normaliser
    return normalised.sum() / (normalised.square().sum() + OMEGA_EPS)


def output_omega_tensor(logits: torch.Tensor) -> torch.Tensor:
    """k of the output layer: ``k(relu(logits), max(logits))``, max over the whole batch tensor.

    ``logits [B, classes]``; 0-d tensor. Where no logit is positive (the authors' code divides by
    a max <= 0 without a guard) this returns 0: relu(logits) is all zero then.
    """
    top = logits.max()
    return omega_tensor(torch.relu(logits), top.clamp_min(torch.finfo(logits.dtype).tiny))


def layer_omega(a: torch.Tensor) -> float:
    """k of one hidden layer's output tensor ``a`` (rates in [0, 1], any shape), section 2.4."""
    return float(omega_tensor(a.detach()))


def output_omega(logits: torch.Tensor) -> float:
    """k of the output layer's logits ``[B, classes]`` (normalised by their maximum), section 2.4."""
    return float(output_omega_tensor(logits.detach()))


def aggregate_omega(hidden: Sequence[float | torch.Tensor], output: float | torch.Tensor,
                    weighting: str = "mean") -> float | torch.Tensor:
    """Average N hidden-layer k values and the output layer's k into one omega.

    ``weighting="mean"``: (sum k_l + k_out) / (N + 1). ``weighting="doubled"``:
    (2 sum k_l + k_out) / (2N + 1), the authors' stage-2 loss. Tensors in, tensor out (for a loss).
    """
    if weighting not in OMEGA_WEIGHTINGS:
        raise ValueError(f"omega weighting must be one of {', '.join(OMEGA_WEIGHTINGS)}, got {weighting!r}")
    count = len(hidden)
    total = sum(hidden, 0.0)
    if weighting == "mean":
        return (total + output) / (count + 1)
    return (2 * total + output) / (2 * count + 1)


def rate_normaliser(module: nn.Module) -> float | torch.Tensor:
    """What turns a layer's output into a firing rate in [0, 1]: 1 for RateNorm, lambda for QCFS."""
    if isinstance(module, RateNorm):
        return 1.0
    if isinstance(module, QCFS):
        return module.threshold
    raise TypeError(f"{type(module).__name__} is not a RateNorm or QCFS layer")


class OmegaRecorder:
    """Forward hooks recording k of every RateNorm / QCFS layer's output on the latest forward.

    Use as a context manager; the hooks return nothing, so the model's outputs are unchanged.
    ``values[name]`` is a 0-d tensor per layer, in forward order of registration; with
    ``detach=False`` it keeps the graph (for a loss), otherwise it is detached.
    """

    def __init__(self, model: nn.Module, detach: bool = True) -> None:
        self.layers = [(name, module) for name, module in model.named_modules()
                       if isinstance(module, (RateNorm, QCFS))]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no RateNorm or QCFS layer to compute omega on")
        self.detach = detach
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.layers]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            rates = output.detach() if self.detach else output
            self.values[name] = omega_tensor(rates, rate_normaliser(module))
        return hook

    def hidden(self) -> list[torch.Tensor]:
        """The recorded k of each layer, in layer order (raises if a layer did not run)."""
        missing = [name for name in self.names if name not in self.values]
        if missing:
            raise RuntimeError(f"omega hooks did not see layers {missing}; run a forward pass first")
        return [self.values[name] for name in self.names]

    def __enter__(self) -> "OmegaRecorder":
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass
class OmegaResult:
    """Omega of a model over a data set.

    ``per_layer[name]`` is each hidden layer's k (computed on each batch tensor, then averaged over
    batches weighted by batch size), ``output`` the output layer's k, ``mean`` the aggregate with
    ``weighting``; ``accuracy`` the top-1 accuracy in percent of the same pass.
    """

    per_layer: dict[str, float]
    output: float
    mean: float
    accuracy: float
    weighting: str = "mean"

    def aggregate(self, weighting: str) -> float:
        """The same per-layer values aggregated with another weighting."""
        return float(aggregate_omega(list(self.per_layer.values()), self.output, weighting))


@torch.no_grad()
def model_omega(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
                weighting: str = "mean") -> OmegaResult:
    """Per-layer and aggregate omega (section 2.4) and accuracy of ``model`` over ``loader``.

    Runs in eval mode (restored afterwards); ``loader`` yields ``(images, labels)``. One host
    synchronisation at the end.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    recorder = OmegaRecorder(model)
    hidden_sum = torch.zeros(len(recorder.layers), device=device, dtype=torch.float64)
    output_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    with recorder:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            size = labels.shape[0]
            hidden_sum += torch.stack(recorder.hidden()).to(torch.float64) * size
            output_sum += output_omega_tensor(logits).to(torch.float64) * size
            correct += (logits.argmax(1) == labels).sum()
            seen += size
    model.train(was_training)
    if seen == 0:
        raise ValueError("model_omega needs a loader with at least one image")
    hidden = (hidden_sum / seen).tolist()
    output = float(output_sum) / seen
    per_layer = dict(zip(recorder.names, hidden))
    return OmegaResult(per_layer, output, float(aggregate_omega(hidden, output, weighting)),
                       100.0 * float(correct) / seen, weighting)


# ---------------------------------------------------------------------------------------------
# spikes: firing rates, synaptic operations, energy

#: energy of one accumulate (a spike arriving at a synapse: one add), in pJ. Horowitz, "Computing's
#: energy problem", ISSCC 2014, 45 nm CMOS, 32-bit float add = 0.9 pJ
E_AC_PJ = 0.9
#: energy of one multiply-accumulate (ANN synapse, or the SNN layer fed with the analog image), in
#: pJ: 32-bit float multiply 3.7 pJ + add 0.9 pJ (same source)
E_MAC_PJ = 4.6


def energy_mj(accumulates: float, macs: float = 0.0) -> float:
    """Energy in mJ of ``accumulates`` ACs (E_AC_PJ each) and ``macs`` MACs (E_MAC_PJ each)."""
    return (E_AC_PJ * accumulates + E_MAC_PJ * macs) * 1e-9


def weight_layer_macs(module: nn.Module, output: torch.Tensor) -> float:
    """Multiply-accumulates per image of one Conv2d / Linear that produced ``output`` ([B, ...])."""
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return float(per_image * kh * kw * module.in_channels // module.groups)
    if isinstance(module, nn.Linear):
        return float(per_image * module.in_features)
    raise TypeError(f"{type(module).__name__} is not a Conv2d or Linear layer")


@torch.no_grad()
def ann_macs(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """MACs per image of every Conv2d and Linear of ``model`` for inputs like ``images [B, C, H, W]``.

    Runs one eval-mode forward with hooks (train mode restored). Sum the values for the ANN's
    total; ``energy_mj(0, total)`` is the ANN's energy estimate.
    """
    macs: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: macs.__setitem__(name, weight_layer_macs(m, o))))
    was_training = model.training
    model.eval()
    try:
        model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return macs


def synaptic_operations(spikes_per_image: Mapping[str, float], fan_out: Mapping[str, float]) -> float:
    """Spike-driven accumulates per image: sum over layers of spikes x synapses each spike drives."""
    missing = [name for name in spikes_per_image if name not in fan_out]
    if missing:
        raise KeyError(f"no fan-out known for spiking layers {missing}")
    return float(sum(count * fan_out[name] for name, count in spikes_per_image.items()))



# ---------------------------------------------------------------------------------------------
# PASCAL: AL metric (section 3.10) and T_eff (section 3.11)
