"""Conversion metrics: omega (RNL), AL and T_eff (PASCAL), firing rates, synaptic operations, energy.

Formulas follow ``shared/reference/algorithms.md``; each function's docstring names its section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------------------------------------
# RNL: omega (section 2.4)


# ---------------------------------------------------------------------------------------------
# spikes: firing rates, synaptic operations, energy


# ---------------------------------------------------------------------------------------------
# PASCAL: AL metric (section 3.10) and T_eff (section 3.11)

#: energy of one accumulate (a synaptic operation driven by a spike), picojoules, 45 nm (Horowitz 2014)
E_AC_PJ = 0.9
#: energy of one multiply-accumulate (the analog first layer), picojoules, 45 nm (Horowitz 2014)
E_MAC_PJ = 4.6


def energy_mj(synops: float, macs: float) -> float:
    """Energy per image in millijoules: ``synops * E_AC + macs * E_MAC`` (operations per image)."""
    return (synops * E_AC_PJ + macs * E_MAC_PJ) * 1e-9


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


def _qcfs_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
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
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    handles = [module.register_forward_hook(lambda mod, inp, out, name=name: outputs[name].append(out.flatten()))
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


def _omega_k(rates: torch.Tensor) -> float:
    """RNL's ``k = sum(a) / (||a||^2 + 1e-5)`` over a whole batch tensor (section 2.4)."""
    rates = rates.double()
    return float(rates.sum() / (rates.square().sum() + 1e-5))


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
            terms = [_omega_k(captured[name] / module.threshold) for name, module in layers]
            peak = logits.max()
            if peak > 0:
                terms.append(_omega_k(torch.relu(logits) / peak))
            values.append(sum(terms) / len(terms))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not values:
        raise ValueError("qcfs_omega got no batches")
    return float(np.mean(values))
