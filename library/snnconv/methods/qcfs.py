"""QCFS + PASCAL: a QCFS ANN (uniform L, Bu et al. ICLR 2022) fine-tuned with a layerwise L, then run
as PASCAL's exact spiking network; its latency is PASCAL's T_eff.

Trial: stage 1 (cached, QCFS with the uniform ``stage1_levels``) -> the AL metric on calibration
batches -> the layerwise L list (``levels``: a list, a named profile or the AL policy,
:mod:`snnconv.levels`) -> fine-tune -> PASCAL inference on validation and test (exact, float64) ->
the operating point at PASCAL's T_eff. A rate-coded QCFS -> IF simulation (v(0) = λ/2) is logged
beside it as a comparison curve. Formulas: ``docs/methods.md`` §1 and §3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..config import ConfigError, TrialConfig, activation_names, choice, in_range, non_negative, positive, setting
from ..convert import to_if
from ..layers import QCFS
from ..levels import LEVEL_CHOICES, LEVEL_POLICIES, PASCAL_LISTS, levels_from_al, profile_levels
from ..method_registry import ConversionMethod
from ..metrics import al_per_layer, ann_macs, energy_mj, qcfs_omega, t_eff_table
from ..models import activation_layers
from ..operating_point import PASCAL_T_EFF, OperatingPoint
from ..pascal import evaluate_pascal
from ..simulate import first_step_within, simulate
from ..train import batches, evaluate, finetune_levels, seed_everything
from ..trial import (
    ProgressCallback,
    TrialResult,
    calibration_images,
    device_record,
    epoch_metrics,
    model_record,
    reseed_loader,
    stage1,
    stage1_progress,
    stage1_warnings,
)


@dataclass
class QcfsConfig:
    """QCFS + PASCAL: uniform-L stage 1, layerwise-L fine-tune, PASCAL inference."""

    stage1_levels: int = positive(8, doc="uniform L of stage 1")
    levels: list[int] | str | None = setting(None, doc=(
        "layerwise L of the fine-tune: a list (one L per activation layer), a named profile, or \"al\" (the AL-"
        "metric policy); None keeps the uniform stage-1 L"))
    threshold_init: float = positive(8.0, doc="initial QCFS threshold lambda: 8.0 (QCFS) or 1.0 (PASCAL)")
    finetune_epochs: int = non_negative(3, doc="layerwise-L fine-tune epochs (0: only set the L list)")
    finetune_lr: float = positive(0.01, doc="fine-tune learning rate")
    al_thresholds: list[float] = in_range([20.0, 30.0, 40.0], ascending=True, doc=(
        "AL-policy thresholds (ascending): AL above the k-th threshold lowers L by k powers of two"))
    calibration_batches: int = positive(2, doc="batches of the training set used to compute the AL metric")
    t_max: int = positive(32, doc=(
        "length of the plain QCFS -> IF comparison simulation (rate coding), logged as if_snn_acc_t"))
    latency_tolerance: float = non_negative(1.0, doc=(
        "the plain IF's latency if_t_eff = first t with acc(t) >= ann_acc - latency_tolerance (points)"))
    snn_dtype: str = choice("float64", ("float32", "float64"), doc=(
        "float type of the spike-level PASCAL run and its equivalence check: float64 keeps the SNN equal to the "
        "ANN (float32 flips ~1e-5 of the neurons at rounding boundaries by one quantum)"))


def validate(config: TrialConfig) -> None:
    """The L list or profile against the model: one L per activation layer, each in {1, 2, 4, 8, 16}."""
    qcfs = config.qcfs
    if isinstance(qcfs.levels, list):
        validate_level_list(config.model, qcfs.levels, "qcfs.levels")
    elif isinstance(qcfs.levels, str):
        validate_level_policy(config.model, qcfs.levels, qcfs.stage1_levels)


def trial_levels(config: TrialConfig, num_layers: int, al_values: list[float]) -> list[int]:
    """The trial's per-layer L list from ``qcfs.levels``: an explicit list, a named profile,
    ``"al"`` (the AL policy on ``al_values``, one per layer) or None (the uniform stage-1 L)."""
    qcfs = config.qcfs
    if qcfs.levels is None:
        return [qcfs.stage1_levels] * num_layers
    if isinstance(qcfs.levels, list):
        return list(qcfs.levels)
    if qcfs.levels == "al":
        return levels_from_al(al_values, qcfs.al_thresholds, qcfs.stage1_levels)
    return profile_levels(qcfs.levels, config.model, num_layers, qcfs.stage1_levels)


def validate_level_list(model_name: str, levels: list[int], path: str = "levels") -> None:
    """Refuse a per-layer L list of the wrong length or with a value outside {1, 2, 4, 8, 16}."""
    names = activation_names(model_name)
    if len(levels) != len(names):
        raise ConfigError(
            f"{path}: {model_name} has {len(names)} activation layers but the list has {len(levels)} "
            f"entries; give one L per layer, in this order: {', '.join(names)}"
        )
    for index, value in enumerate(levels):
        if value not in LEVEL_CHOICES:
            raise ConfigError(
                f"{path}[{index}] ({names[index]}): L = {value!r} is not allowed; choose from "
                f"{', '.join(map(str, LEVEL_CHOICES))}"
            )


def validate_level_policy(model_name: str, policy: str, base: int, path: str = "qcfs.levels") -> None:
    """Refuse an unknown L profile name, the "pascal" profile for a model it has no list for, and a
    stage-1 L outside {1, 2, 4, 8, 16} where a profile or the AL policy derives L from it."""
    if policy not in LEVEL_POLICIES:
        raise ConfigError(f"{path}: unknown L profile {policy!r}; known: {', '.join(LEVEL_POLICIES)} "
                          "(or give a list with one L per layer)")
    if policy == "pascal":
        if model_name not in PASCAL_LISTS:
            raise ConfigError(f"{path}: the 'pascal' profile has lists for {', '.join(PASCAL_LISTS)} only, "
                              f"not {model_name!r}")
        validate_level_list(model_name, PASCAL_LISTS[model_name], path)
    elif base not in LEVEL_CHOICES:
        raise ConfigError(f"qcfs.stage1_levels: the {policy!r} L policy derives every layer's L from the stage-1 L, "
                          f"which must then be one of {', '.join(map(str, LEVEL_CHOICES))}, got {base!r}")


def run(config: TrialConfig, on_progress: ProgressCallback, device: torch.device) -> TrialResult:
    """One QCFS + PASCAL trial (see the module docstring); reports ``on_progress("finetune", ...)``
    after every fine-tune epoch (and ``"stage1"`` epochs when stage 1 is trained)."""
    start = time.perf_counter()
    qcfs = config.qcfs
    first = stage1(config, on_epoch=stage1_progress(on_progress), device=device)
    model, data, device = first.model, first.data, first.device
    layers = activation_layers(model)

    reseed_loader(data.train, config.data.split_seed + 1)
    al = al_per_layer(model, calibration_images(data.train, qcfs.calibration_batches, device))
    levels = trial_levels(config, len(layers), list(al.values()))
    reseed_loader(data.train, config.data.split_seed + 1)
    seed_everything(config.seed)
    history = finetune_levels(model, levels, data.train, config.stage1, device, epochs=qcfs.finetune_epochs,
                              lr=qcfs.finetune_lr, val_loader=data.val,
                              on_epoch=lambda stats: on_progress("finetune", {
                                  **epoch_metrics(stats), "progress": stats.epoch / max(1, qcfs.finetune_epochs)}))

    ann_acc, val_ann_acc = evaluate(model, data.test, device), evaluate(model, data.val, device)
    # stage 1 built the model with QCFS activations (stage1_activation): every activation layer is a QCFS
    thresholds = [float(cast(QCFS, layer.module).threshold.detach()) for layer in layers]
    nonpositive = [layer.name for layer, value in zip(layers, thresholds) if value <= 0]
    warnings = stage1_warnings(first)
    if nonpositive:
        warnings["nonpositive_threshold"] = (
            f"the fine-tune drove λ to zero or below in {', '.join(nonpositive)} (lowest {min(thresholds):.4g}): "
            "those layers fire on negative input; PASCAL stays exact for any non-zero λ, but a rate-coded IF "
            "neuron cannot use such a threshold")
    # plain QCFS -> IF (rate coding, v(0) = theta/2) on the same model: an optional comparison curve,
    # logged under its own names; the trial's operating point is PASCAL's and never depends on it
    comparison: dict[str, Any] = {}
    try:
        if_network = to_if(model, v_init="half")
        comparison["test"] = simulate(if_network, data.test, qcfs.t_max, device)
        comparison["val"] = simulate(if_network, data.val, qcfs.t_max, device)
    except ValueError as error:
        warnings["skipped_if_comparison"] = f"the rate-coded IF comparison was not run: {error}"
    dtype = torch.float64 if qcfs.snn_dtype == "float64" else torch.float32
    snn = evaluate_pascal(model, data.test, device, dtype)
    val_snn = evaluate_pascal(model, data.val, device, dtype)
    omega = qcfs_omega(model, (images for images, _ in batches(data.val, device)))
    teff_rows = t_eff_table(model)
    teff_by_layer = {row.name: row.t_eff for row in teff_rows}
    t_eff = float(sum(teff_by_layer.values()) / len(teff_by_layer))
    # PASCAL is exact at its own latency: no curve to settle, so always "converged"
    point = OperatingPoint(t_op=t_eff, val_acc_op=val_snn.accuracy, acc_op=snn.accuracy,
                           energy_op_mj=energy_mj(val_snn.synops, val_snn.macs), converged=True, kind=PASCAL_T_EFF)
    equivalence = snn.equivalence
    rows = []
    for layer, level, threshold in zip(layers, levels, thresholds):
        spikes = snn.spikes_per_neuron[layer.name]
        rows.append({
            "name": layer.name, "fan_in": layer.fan_in, "levels": level,
            "threshold": threshold, "al": al[layer.name],
            "equiv_abs_err": equivalence.layers[layer.name].max_abs_err,
            "count_mismatches": equivalence.layers[layer.name].mismatches,
            "spikes_per_neuron": spikes, "firing_rate": spikes / level,
            "t_eff_layer": teff_by_layer.get(layer.weight_name, math.nan),
        })
    images, _ = next(iter(data.test))
    macs = sum(ann_macs(model, images.to(device)).values())  # the ANN's own energy: its dense MACs per image
    extra = {"stage1_val_acc": first.val_acc, "stage1_test_acc": first.test_acc,
             "finetune_val_acc": history[-1].val_acc if history else math.nan,
             "ann_macs": macs, "ann_energy_mj": energy_mj(0.0, macs),
             "macs": snn.macs, "equiv_logits_abs_err": equivalence.logits_abs_err,
             "equiv_mismatches": float(equivalence.mismatches), "min_threshold": min(thresholds),
             "nonpositive_thresholds": float(len(nonpositive))}
    curves = {}
    if comparison:
        rate_coded = comparison["test"]
        curves = {"if_snn_acc_t": rate_coded.acc_curve, "val_if_snn_acc_t": comparison["val"].acc_curve}
        extra.update({"if_snn_acc": rate_coded.snn_acc,
                      "if_t_eff": first_step_within(rate_coded.acc_curve, ann_acc, qcfs.latency_tolerance),
                      "if_synops": rate_coded.synops, "if_energy_mj": rate_coded.energy_mj})
    return TrialResult(
        method="qcfs", ann_acc=ann_acc, val_ann_acc=val_ann_acc, snn_acc=snn.accuracy,
        val_snn_acc=val_snn.accuracy, operating_point=point, latency_tolerance=qcfs.latency_tolerance,
        omega=omega, t_eff=t_eff, synops=snn.synops, energy_mj=energy_mj(snn.synops, snn.macs),
        curves=curves, warnings=warnings,
        equiv_max_abs_err=equivalence.max_abs_err,
        levels=levels, layers=rows,
        tables={"t_eff": [dataclasses.asdict(row) for row in teff_rows],
                "finetune": [dataclasses.asdict(stats) for stats in history]},
        extra_metrics=extra,
        stage1_key=first.key, stage1_cache_hit=first.cache_hit, stage1_seconds=first.seconds,
        seconds=time.perf_counter() - start, model=model, **model_record(config, data, point, rows, levels),
        **device_record(device),
        image_correct={"val": val_snn.image_correct.numpy(), "test": snn.image_correct.numpy()},
    )


def stage1_activation(config: TrialConfig) -> dict[str, Any]:
    """QCFS with the uniform stage-1 L and the initial threshold λ."""
    return {"kind": "qcfs", "levels": config.qcfs.stage1_levels, "threshold": config.qcfs.threshold_init}


def params(config: TrialConfig) -> dict[str, Any]:
    """The trial's QCFS params (the tracking contract, ``docs/tracking.md``)."""
    qcfs = config.qcfs
    profile = qcfs.levels if isinstance(qcfs.levels, str) else ("custom" if qcfs.levels else "uniform")
    return dict(lr=qcfs.finetune_lr, levels_profile=profile, stage1_levels=qcfs.stage1_levels,
                threshold_init=qcfs.threshold_init, finetune_epochs=qcfs.finetune_epochs,
                al_thresholds=qcfs.al_thresholds, t_max=qcfs.t_max,
                latency_tolerance=qcfs.latency_tolerance, latency_unit=METHOD.latency_unit)


def setting_label(row: Mapping[str, Any]) -> str:
    """The L profile (``L=al``), or the compact L list (``L=[8,4,4,…]``); empty when the run has neither."""
    profile = row.get("levels_profile")
    if isinstance(profile, str) and profile and profile != "custom":
        return f"L={profile}"
    try:
        levels = json.loads(str(row.get("levels")))
    except ValueError:
        return ""
    if isinstance(levels, list) and levels:
        shown = ",".join(str(v) for v in levels[:6]) + (",…" if len(levels) > 6 else "")
        return f"L=[{shown}]"
    return ""


METHOD = ConversionMethod(
    name="qcfs", title="QCFS + PASCAL", settings=QcfsConfig, run=run, stage1_activation=stage1_activation,
    params=params, param_names=("lr", "levels_profile", "stage1_levels", "threshold_init", "finetune_epochs",
                                "al_thresholds", "t_max", "latency_tolerance", "latency_unit"),
    validate=validate,
    search_space={
        "qcfs.levels": {"type": "choice", "values": ["uniform", "al", "halve-middle", "front-heavy", "back-heavy"]},
        "qcfs.finetune_lr": {"type": "loguniform", "low": 0.001, "high": 0.03, "grid": [0.01]},
    },
    snn="pascal", latency_unit="PASCAL T_eff", step_curves=("val_if_snn_acc_t", "if_snn_acc_t"),
    omega_meaning="Ω on a/λ", colour="tab:orange", marker="s", setting_label=setting_label,
)
