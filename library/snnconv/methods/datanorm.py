"""Data-based normalisation, the classic conversion baseline (Diehl et al. 2015; Rueckauer et al. 2017).

A plain ReLU ANN (stage 1, with the same recipe as the other methods) is converted without any
training of its own: each ReLU layer l gets the threshold

    θ_l = the p-th percentile of layer l's positive activations on ``calibration_batches`` training batches,

p = 100 being Diehl's max norm and p = 99.9 / 99.99 Rueckauer's robust norm. The ANN it stands for
clips each layer at its threshold (:class:`snnconv.layers.ClippedReLU`: ``min(relu(x), θ_l)``), and
the SNN replaces each clipped ReLU by an IF neuron with reset by subtraction, threshold θ_l and spike
amplitude θ_l. That is the papers' weight normalisation (``W_l · θ_{l-1} / θ_l``, threshold 1) written
with thresholds instead of rescaled weights: the two networks spike alike. The acc(t) curve is
simulated for ``t_max`` steps and the operating point chosen on validation by the rnl rule
(:func:`snnconv.operating_point.if_operating_point`); Ω is measured on ``a / θ`` as for QCFS.
Formulas and a worked example: ``docs/methods.md`` §8.

Two choices are ours rather than the papers': the percentile is taken over the positive activations
only (as the SNN toolbox does; zeros would pull a sparse layer's percentile to 0), and the thresholds
keep the weights as trained instead of rescaling them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import TrialConfig, choice, in_range, non_negative, positive
from ..layers import ClippedReLU
from ..method_registry import ConversionMethod
from ..metrics import layer_outputs
from ..models import activation_layers
from ..train import seed_everything
from ..trial import (
    ProgressCallback,
    TrialResult,
    calibration_images,
    evaluate_if_network,
    if_trial_result,
    reseed_loader,
    stage1,
    stage1_progress,
)


@dataclass
class DatanormConfig:
    """Data-based normalisation: per-layer thresholds from activation percentiles, IF simulation."""

    percentile: float = in_range(99.99, above=0, at_most=100, doc=(
        "the percentile (0-100] of each layer's positive training activations that becomes its threshold: 100 = "
        "the maximum (Diehl et al. 2015), 99.9 or 99.99 = robust normalisation (Rueckauer et al. 2017)"))
    calibration_batches: int = positive(4, doc=(
        "training batches (data.batch_size images each) whose activations give the percentiles"))
    v_init: str = choice("zero", ("zero", "half"), doc=(
        "initial membrane of the IF neurons: zero (the papers) | half (theta/2)"))
    t_max: int = positive(64, doc="simulation length; acc(t) is recorded for every t = 1..t_max")
    latency_tolerance: float = non_negative(1.0, doc=(
        "the operating point t_op = first t from which the validation acc(t) stays within this many percentage "
        "points of its value at t_max (also the band of t_eff = first t with acc(t) >= ann_acc - it)"))


def percentile_of(values: torch.Tensor, percentile: float) -> float:
    """The ``percentile`` (0-100) of a 1-D tensor, interpolated linearly between the two nearest ranks
    (numpy's default): at position ``q (n - 1)`` of the sorted values, q = percentile / 100.
    Uses ``torch.kthvalue``, so any size works (``torch.quantile`` stops at 2**24 values)."""
    count = values.numel()
    if count == 0:
        raise ValueError("no values to take a percentile of")
    position = percentile / 100.0 * (count - 1)
    low, high = math.floor(position), math.ceil(position)
    below = float(torch.kthvalue(values, low + 1).values)
    above = below if high == low else float(torch.kthvalue(values, high + 1).values)
    return below + (above - below) * (position - low)


@torch.no_grad()
def layer_thresholds(model: nn.Module, images: Sequence[torch.Tensor], percentile: float) -> dict[str, float]:
    """``{layer name: θ}``: the ``percentile`` of each ReLU layer's positive outputs over ``images`` (a list of
    batches ``[B, C, H, W]``), the model in eval mode. A layer that never fires on them raises ValueError."""
    layers = [layer for layer in activation_layers(model) if isinstance(layer.module, nn.ReLU)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no ReLU layer to normalise; build it with activation 'relu'")
    positive_outputs = layer_outputs(model, [(layer.name, layer.module) for layer in layers], images,
                                     keep=lambda output: output[output > 0].float().flatten())
    thresholds = {}
    for name, chunks in positive_outputs.items():
        values = torch.cat(chunks) if chunks else torch.empty(0)
        if values.numel() == 0:
            raise ValueError(f"layer {name!r} gave no positive activation on the calibration images; "
                             "data-based normalisation cannot set its threshold")
        thresholds[name] = percentile_of(values, percentile)
    return thresholds


def clip_at(model: nn.Module, thresholds: Mapping[str, float]) -> nn.Module:
    """A deep copy of ``model`` with each ReLU named in ``thresholds`` replaced by a :class:`ClippedReLU` at its θ."""
    clipped = copy.deepcopy(model)
    for name, threshold in thresholds.items():
        parent_name, _, child = name.rpartition(".")
        parent = clipped.get_submodule(parent_name) if parent_name else clipped
        setattr(parent, child, ClippedReLU(threshold).to(next(model.parameters()).device))
    return clipped


def run(config: TrialConfig, on_progress: ProgressCallback, device: torch.device) -> TrialResult:
    """Stage 1 (cached ReLU ANN) -> percentiles on calibration batches -> clipped ANN -> IF simulation -> metrics."""
    start = time.perf_counter()
    settings = config.datanorm
    first = stage1(config, on_epoch=stage1_progress(on_progress), device=device)
    data, device = first.data, first.device
    reseed_loader(data.train, config.data.split_seed + 1)
    seed_everything(config.seed)
    thresholds = layer_thresholds(first.model, calibration_images(data.train, settings.calibration_batches, device),
                                  settings.percentile)
    model = clip_at(first.model, thresholds).eval()
    measured = evaluate_if_network(model, data, device, v_init=settings.v_init, t_max=settings.t_max,
                                   latency_tolerance=settings.latency_tolerance, on_progress=on_progress)
    test = measured.test
    layers = [{"name": layer.name, "fan_in": layer.fan_in, "threshold": thresholds[layer.name],
               "omega": measured.omega.per_layer[layer.name], "firing_rate": test.firing_rates[layer.name],
               "spikes_per_image": test.spike_counts[layer.name], "fan_out": test.fan_out[layer.name]}
              for layer in activation_layers(model)]
    extra = {"stage1_val_acc": first.val_acc, "stage1_test_acc": first.test_acc,
             "min_threshold": min(thresholds.values()), "max_threshold": max(thresholds.values())}
    return if_trial_result("datanorm", config, first, data, device, model, measured,
                           latency_tolerance=settings.latency_tolerance, layers=layers, extra=extra, start=start)


def stage1_activation(config: TrialConfig) -> dict[str, Any]:
    """A plain ReLU: the network data-based normalisation converts is an ordinary ANN."""
    return {"kind": "relu"}


def params(config: TrialConfig) -> dict[str, Any]:
    """The trial's data-norm params (the tracking contract, ``docs/tracking.md``)."""
    settings = config.datanorm
    return dict(percentile=settings.percentile, calibration_batches=settings.calibration_batches,
                v_init=settings.v_init, t_max=settings.t_max, latency_tolerance=settings.latency_tolerance,
                latency_unit=METHOD.latency_unit)


def setting_label(row: Mapping[str, Any]) -> str:
    """``p=99.9`` (the percentile); empty when the run has none."""
    try:
        percentile = float(row.get("percentile"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return f"p={percentile:g}" if math.isfinite(percentile) else ""


METHOD = ConversionMethod(
    name="datanorm", title="data-based normalisation", settings=DatanormConfig, run=run,
    stage1_activation=stage1_activation, params=params,
    param_names=("percentile", "calibration_batches", "v_init", "t_max", "latency_tolerance", "latency_unit"),
    search_space={"datanorm.percentile": {"type": "choice", "values": [99.9, 99.99, 100.0]}},
    snn="if", latency_unit="IF time steps", step_curves=("val_snn_acc_t", "snn_acc_t"),
    omega_meaning="Ω on a/θ (clipped ReLU)", colour="tab:green", marker="^", setting_label=setting_label,
)
