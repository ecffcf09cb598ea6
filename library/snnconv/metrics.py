"""Conversion metrics: omega (RNL), AL and T_eff (PASCAL), firing rates, synaptic operations, energy.

Formulas follow ``docs/methods.md``; each function's docstring names its section there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .layers import QCFS, ClippedReLU, RateNorm

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
    """What turns a layer's output into a firing rate in [0, 1]: 1 for RateNorm, the threshold (lambda) for
    QCFS and for a clipped ReLU."""
    if isinstance(module, RateNorm):
        return 1.0
    if isinstance(module, (QCFS, ClippedReLU)):
        return module.threshold
    raise TypeError(f"{type(module).__name__} is not a RateNorm, QCFS or clipped ReLU layer")


class OmegaRecorder:
    """Forward hooks recording k of every RateNorm / QCFS / clipped ReLU layer's output on the latest forward.

    Use as a context manager; the hooks return nothing, so the model's outputs are unchanged.
    ``values[name]`` is a 0-d tensor per layer, in forward order of registration; with
    ``detach=False`` it keeps the graph (for a loss), otherwise it is detached.
    """

    def __init__(self, model: nn.Module, detach: bool = True) -> None:
        self.layers = [(name, module) for name, module in model.named_modules()
                       if isinstance(module, (RateNorm, QCFS, ClippedReLU))]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no RateNorm, QCFS or clipped ReLU layer to compute omega on")
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

    def __enter__(self) -> OmegaRecorder:
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
# how sure an accuracy is: the Wilson score interval

#: the standard normal quantile of a two-sided 95 % interval
Z95 = 1.959963984540054


def wilson_interval(accuracy: float, images: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of an accuracy measured on ``images`` images, in
    percent: ``(low, high)``. With p = accuracy / 100 and n = images::

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)

    Unlike the normal approximation it stays inside [0, 100] and is not empty at 0 % or 100 %.
    NaN in, or no images: (NaN, NaN).

    >>> [round(v, 2) for v in wilson_interval(50.0, 100)]
    [40.38, 59.62]
    >>> [round(v, 2) for v in wilson_interval(100.0, 10)]
    [72.25, 100.0]
    """
    if images <= 0 or not math.isfinite(accuracy):
        return math.nan, math.nan
    p, n = accuracy / 100.0, float(images)
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denominator
    return 100.0 * max(centre - half, 0.0), 100.0 * min(centre + half, 1.0)


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

def al_metric(values: Any, num_bins: int = 5) -> float:
    """PASCAL's AL metric of one layer's QCFS outputs, exactly as the authors' ``get_stats.py``.

    ``values``: the layer's outputs (tensor or array, any shape; flattened). With
    ``c = numpy.histogram(values, bins=num_bins)`` counts (equal-width bins between the data
    min and max), ``N = sum(c)``, ``m`` = number of bins with ``c_j >= N/B``:
    ``A = 1 - (m - 1)/(B - 1)``; skewness ``g`` and excess kurtosis ``k`` of the B *counts*
    (population moments); ``AL = A * (g^2 + 1) * (k + 3 B^2 / ((B - 2)(B - 3)))``.
    Returns NaN where it is undefined: no values, or a uniform histogram (zero spread of counts).
    """
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 4:
        raise ValueError(f"al_metric: num_bins must be an integer >= 4 (the formula divides by (B-2)(B-3)), "
                         f"got {num_bins!r}")
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    array = array.ravel()
    if array.size == 0:
        return math.nan
    if not np.isfinite(array).all():
        raise ValueError("al_metric: values contain NaN or infinity")
    counts = np.histogram(array, bins=int(num_bins))[0].astype(np.float64)
    bins = float(num_bins)
    heavy = int((counts >= counts.sum() / bins).sum())
    peakedness = 1.0 - (heavy - 1) / (bins - 1)
    mean, spread = counts.mean(), counts.std()
    if spread == 0:
        return math.nan
    skew = ((counts - mean) ** 3).mean() / spread ** 3
    kurtosis = ((counts - mean) ** 4).mean() / spread ** 4 - 3.0
    return float(peakedness * (skew ** 2 + 1.0) * (kurtosis + 3.0 * bins ** 2 / ((bins - 2) * (bins - 3))))


@torch.no_grad()
def layer_outputs(model: nn.Module, layers: Sequence[tuple[str, nn.Module]], batches: Iterable[torch.Tensor],
                  keep: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """``{name: [keep(output) per batch]}`` of each ``(name, module)`` of ``layers``, recorded by forward hooks
    while ``model`` runs in eval mode over ``batches`` (image tensors ``[B, C, H, W]``); the model's mode is
    restored and the hooks removed afterwards, also on an error."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    handles = [module.register_forward_hook(lambda mod, inp, out, name=name: outputs[name].append(keep(out)))
               for name, module in layers]
    was_training = model.training
    model.eval()
    try:
        for images in batches:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return outputs


def _qcfs_layers(model: nn.Module) -> list[tuple[str, QCFS]]:
    from .layers import QCFS

    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, QCFS)]
    if not layers:
        raise ValueError("the model has no QCFS layer")
    return layers


@torch.no_grad()
def al_per_layer(model: nn.Module, batches: Iterable[torch.Tensor], num_bins: int = 5) -> dict[str, float]:
    """AL metric (:func:`al_metric`) of every QCFS layer's outputs on ``batches`` of images.

    ``batches`` yields image tensors ``[B, C, H, W]``; a layer's outputs over all batches are
    pooled before the histogram (the authors dump a layer's outputs and histogram them at once).
    Runs the model in eval mode; returns ``{layer name: AL}`` in forward order.
    """
    layers = _qcfs_layers(model)
    outputs = layer_outputs(model, layers, batches, keep=torch.flatten)
    if not outputs[layers[0][0]]:
        raise ValueError("al_per_layer got no calibration batches")
    return {name: al_metric(torch.cat(outputs[name]), num_bins) for name, _ in layers}


def t_eff_layer(steps: int, r: float) -> float:
    """PASCAL's energy-normalised timesteps of one layer: ``T (1 + (5T - 2) r) / (1 + T r)``.

    ``steps`` = T_l (the layer's L), ``r`` = the layer's neuron-to-synapse cost ratio
    (:func:`pascal_r`). r = 0 gives T; r -> infinity gives 5T - 2 (section 3.11).
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"t_eff_layer: steps must be a positive integer, got {steps!r}")
    if not (r >= 0) or not math.isfinite(r):
        raise ValueError(f"t_eff_layer: r must be finite and >= 0, got {r!r}")
    return steps * (1.0 + (5 * steps - 2) * r) / (1.0 + steps * r)


def pascal_r(fan_in: int) -> float:
    """``r_l = 4 / (3 fan_in_l)``: the rule behind PASCAL's VGG constants (4/81 for a 3x3 conv on RGB)."""
    if fan_in < 1:
        raise ValueError(f"fan_in must be positive, got {fan_in!r}")
    return 4.0 / (3.0 * fan_in)


@dataclass(frozen=True)
class TeffRow:
    """One weight layer's share of T_eff: its fan-in, r, step count T and T_eff,l."""

    name: str
    fan_in: int
    r: float
    steps: int
    t_eff: float


def t_eff_table(model: nn.Module, include_readout: bool = False) -> list[TeffRow]:
    """T_eff,l of every weight layer of a QCFS model (``models.weight_layers`` order).

    T_l is the L of the QCFS neuron the layer's current flows into (``pascal.weight_layer_steps``):
    a ResNet shortcut conv takes the L of its block's output neuron, like the block's second conv.
    The read-out classifier feeds no neuron; like the authors' ``get_Teff.py`` (whose VGG list
    pairs 15 neurons with the first 15 of 16 layers) it is left out, unless ``include_readout``,
    which counts it with the L of the last neuron (the steps its input spike train lasts).
    """
    from .models import weight_layers
    from .pascal import weight_layer_steps

    steps = weight_layer_steps(model)
    last_levels = _qcfs_layers(model)[-1][1].levels
    rows = []
    for layer in weight_layers(model):
        layer_steps = steps.get(layer.name)
        if layer_steps is None:
            if not include_readout:
                continue
            layer_steps = last_levels
        r = pascal_r(layer.fan_in)
        rows.append(TeffRow(layer.name, layer.fan_in, r, layer_steps, t_eff_layer(layer_steps, r)))
    return rows


def t_eff(model: nn.Module, include_readout: bool = False) -> float:
    """PASCAL's T_eff of a QCFS model: the mean of :func:`t_eff_table`'s T_eff,l (section 3.11)."""
    rows = t_eff_table(model, include_readout)
    return float(np.mean([row.t_eff for row in rows]))


@torch.no_grad()
def qcfs_omega(model: nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """Omega of a QCFS model, defined like RNL's stage-1 validation Omega (section 2.4).

    Per batch: ``k`` of every QCFS layer's normalised output ``a / lambda`` (in [0, 1], the firing
    rate per available step) and of the read-out ``relu(logits) / max(logits)``, averaged over the
    N + 1 terms (the read-out term is dropped when max(logits) <= 0); the result is the mean over
    batches. ``batches`` yields image tensors ``[B, C, H, W]``; the model runs in eval mode.
    """
    layers = _qcfs_layers(model)
    captured: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(lambda mod, inp, out, name=name: captured.__setitem__(name, out))
               for name, module in layers]
    was_training = model.training
    model.eval()
    values = []
    try:
        for images in batches:
            logits = model(images)
            terms = [layer_omega(captured[name].double() / module.threshold) for name, module in layers]
            peak = logits.max()
            if peak > 0:
                terms.append(layer_omega(torch.relu(logits.double()) / peak))
            values.append(sum(terms) / len(terms))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not values:
        raise ValueError("qcfs_omega got no batches")
    return float(np.mean(values))
