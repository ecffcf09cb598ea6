"""RNL + RIL (Ding et al., IJCAI 2021): Rate Norm Layers trained in stage 1, their threshold scale tuned by
the Rate Inference Loss in stage 2, then rate-coded IF neurons simulated for T_max steps.

Trial: stage 1 (cached, Rate Norm with p ~ 1) -> stage 2 (RIL over the scale parameters only, the
candidate with the lowest validation Ω within ``acc_tolerance`` kept) -> IF conversion (reset by
subtraction) -> simulation on validation and test -> operating point (``snnconv.operating_point``).
Formulas: ``docs/methods.md`` §2.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..config import ConfigError, TrialConfig, choice, non_negative, positive, setting
from ..data import load_data
from ..layers import RateNorm
from ..method_registry import ConversionMethod
from ..models import activation_layers
from ..simulate import SimulationResult
from ..train import seed_everything, train_ril
from ..trial import ProgressCallback, TrialResult, evaluate_if_network, if_trial_result, stage1, stage1_progress


@dataclass
class RnlConfig:
    """RNL + RIL (Ding et al. 2021): stage-2 scale training, IF conversion and simulation."""

    lam: float = non_negative(0.1, doc="weight of the Rate Inference Loss's omega term")
    lr: float = positive(0.01, doc="stage-2 learning rate (scale parameters only)")
    optimizer: str = choice("sgd", ("sgd", "adam"), doc="stage-2 optimiser (over the scale parameters only)")
    momentum: float = non_negative(0.9, doc="stage-2 SGD momentum")
    weight_decay: float = non_negative(1e-4, doc="stage-2 weight decay (pulls the raw scale to 0, p to 0.5)")
    sharescale: bool = setting(True, doc="one scale parameter for all layers")
    scale_init: float = setting(2.5, doc=(
        "raw (pre-sigmoid) initial scale of stage 2: 2.5 gives p = 0.924 (with scale_mode abs, p = |scale_init| "
        "must be in (0, 1])"))
    scale_mode: str = choice("sigmoid", ("sigmoid", "abs"), doc=(
        "how the raw scale becomes p: sigmoid(scale) (the authors) or |scale|"))
    epochs: int = positive(1, doc="stage-2 epochs (at most: stage 2 stops early below the tolerance)")
    acc_tolerance: float = non_negative(3.0, doc=(
        "stop stage 2 when validation accuracy falls this many percentage points below the start"))
    inspect_interval: int = positive(20, doc="validate every this many stage-2 batches")
    teacher: str = choice("frozen", ("frozen", "self"), doc=(
        "frozen (a copy of the stage-1 model) | self (the authors' code: the same network, detached)"))
    omega_weighting: str = choice("mean", ("mean", "doubled"), doc=(
        "omega aggregation of the stage-2 loss and candidate selection: mean = (sum k_l + k_out) / (N + 1), the "
        "paper's mean over layers | doubled = (2 sum k_l + k_out) / (2N + 1), the authors' stage-2 code (its two "
        "forward passes both trigger the hooks). The trial's reported omega metric is always the mean, so trials "
        "stay comparable"))
    v_init: str = choice("zero", ("zero", "half"), doc=(
        "initial membrane of the IF neurons: zero (the authors) | half (theta/2)"))
    t_max: int = positive(64, doc="simulation length; acc(t) is recorded for every t = 1..t_max")
    latency_tolerance: float = non_negative(1.0, doc=(
        "the operating point t_op = first t from which the validation acc(t) stays within this many percentage "
        "points of its value at t_max (also the band of t_eff = first t with acc(t) >= ann_acc - it)"))


def validate(config: TrialConfig) -> None:
    """With ``scale_mode: abs``, p = |scale_init| must lie in (0, 1]."""
    rnl = config.rnl
    if rnl.scale_mode == "abs" and not 0 < rnl.scale_init <= 1:
        raise ConfigError(f"rnl.scale_init: with scale_mode 'abs' p = |scale_init| must be in (0, 1], "
                          f"got {rnl.scale_init!r}")


def stage1_activation(config: TrialConfig) -> dict[str, Any]:
    """Rate Norm with p ~ 1 (sigmoid(10), or |1| in abs mode): the authors' stage 1."""
    return {"kind": "rnl", "scale_mode": config.rnl.scale_mode}


def params(config: TrialConfig) -> dict[str, Any]:
    """The trial's RNL params (the tracking contract, ``docs/tracking.md``)."""
    rnl = config.rnl
    return dict(lam=rnl.lam, lr=rnl.lr, sharescale=rnl.sharescale, scale_init=rnl.scale_init,
                scale_mode=rnl.scale_mode, teacher=rnl.teacher, v_init=rnl.v_init, t_max=rnl.t_max,
                acc_tolerance=rnl.acc_tolerance, stage2_epochs=rnl.epochs,
                latency_tolerance=rnl.latency_tolerance, latency_unit=METHOD.latency_unit)


def setting_label(row: Mapping[str, Any]) -> str:
    """``λ=<lam>`` (empty when the run has no λ)."""
    try:
        lam = float(row.get("lam"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return f"λ={lam:.3g}" if math.isfinite(lam) else ""


def layer_table(model: nn.Module, omega: Mapping[str, float], simulation: SimulationResult) -> list[dict[str, Any]]:
    """One row per Rate Norm layer of the final RNL model: name, fan_in, running_max, raw scale,
    p, threshold (the IF threshold), omega (validation set), and from ``simulation`` (test set)
    firing_rate, spikes per image over T_max, fan_out."""
    rows = []
    for layer in activation_layers(model):
        module = cast(RateNorm, layer.module)  # an RNL model's activations are Rate Norm layers
        rows.append({
            "name": layer.name, "fan_in": layer.fan_in, "running_max": module.running_max.item(),
            "scale": module.scale.item(), "p": module.p().item(), "threshold": module.threshold().item(),
            "omega": omega[layer.name], "firing_rate": simulation.firing_rates[layer.name],
            "spikes_per_image": simulation.spike_counts[layer.name], "fan_out": simulation.fan_out[layer.name],
        })
    return rows


def run(config: TrialConfig, on_progress: ProgressCallback, device: torch.device) -> TrialResult:
    """RNL + RIL: stage 1 (cached) -> stage 2 (RIL) -> IF conversion -> simulation -> metrics."""
    start = time.perf_counter()
    rnl = config.rnl
    first = stage1(config, on_epoch=stage1_progress(on_progress), device=device)
    device = first.device
    # training advanced the shuffling generator of the train loader: a cache miss gets fresh loaders
    # so that stage 2 sees the same batches whether stage 1 was trained or loaded
    data = first.data if first.cache_hit else load_data(config.data, device)
    seed_everything(config.seed)
    model = copy.deepcopy(first.model)
    steps = max(1, rnl.epochs * len(data.train))  # stage 2's training steps, for its progress fraction
    ril = train_ril(model, data.train, data.val, rnl, device,
                    on_validate=lambda row: on_progress("stage2", {**row, "progress": min(1.0, row["step"] / steps)}))
    measured = evaluate_if_network(model, data, device, v_init=rnl.v_init, t_max=rnl.t_max,
                                   latency_tolerance=rnl.latency_tolerance, on_progress=on_progress)
    extra = {
        "stage1_val_acc": first.val_acc, "stage1_test_acc": first.test_acc,
        "stage2_start_val_acc": ril.start_val_acc, "stage2_start_omega": ril.start_omega,
        "stage2_val_acc": ril.chosen["val_acc"], "stage2_val_omega": ril.chosen["omega"],
        "stage2_steps": float(ril.steps), "stage2_chosen_step": float(ril.chosen["step"]),
        "stage2_stopped_early": float(ril.stopped_early), "omega_doubled": measured.omega.aggregate("doubled"),
        "p_mean": ril.chosen["p"],
    }
    layers = layer_table(model, measured.omega.per_layer, measured.test)
    return if_trial_result("rnl", config, first, data, device, model, measured,
                           latency_tolerance=rnl.latency_tolerance, layers=layers, extra=extra,
                           tables={"candidates": ril.candidates}, start=start)


METHOD = ConversionMethod(
    name="rnl", title="RNL + RIL", settings=RnlConfig, run=run, stage1_activation=stage1_activation,
    params=params, param_names=("lam", "lr", "sharescale", "scale_init", "scale_mode", "teacher", "v_init", "t_max",
                                "acc_tolerance", "stage2_epochs", "latency_tolerance", "latency_unit"),
    validate=validate,
    search_space={
        "rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0, "zero_fraction": 0.15,
                    "grid": [0.0, 0.1, 1.0, 10.0]},
        "rnl.lr": {"type": "loguniform", "low": 0.001, "high": 0.3, "grid": [0.01, 0.1]},
        "rnl.sharescale": {"type": "choice", "values": [True, False]},
        "rnl.scale_init": {"type": "uniform", "low": 1.5, "high": 4.0, "grid": [2.5, 4.0]},
    },
    snn="if", latency_unit="IF time steps", step_curves=("val_snn_acc_t", "snn_acc_t"),
    omega_meaning="Ω on Rate-Norm activations", colour="tab:blue", marker="o", setting_label=setting_label,
)
