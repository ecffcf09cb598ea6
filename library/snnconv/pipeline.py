"""One trial end to end: ``run_trial(config) -> TrialResult``. No Ray or MLflow here.

Data flow::

    TrialConfig -> data -> model(activation = rnl | qcfs)
       stage 1: ANN weights through the cache (trained once per key)
       stage 2: rnl -> RIL scale training | qcfs -> layerwise-L fine-tune
       convert -> simulate (validation and test splits) -> operating point -> metrics -> TrialResult

Every choice a sweep makes uses the validation split: a trial's operating point (``t_op``,
``val_acc_op``, see :mod:`snnconv.operating_point`), its Ω and its energy at ``t_op`` are measured on
validation images; the test split gives the accuracies reported beside them (``acc_op``, ``ann_acc``,
``snn_acc``) and the test-set operation counts (``synops``, ``energy_mj``).

Progress and intermediate metrics go to an optional ``on_progress(stage, metrics)`` callback, which
the sweep turns into ``tune.report`` calls.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cache import Stage1Cache, check_fits
from .cache_key import stage1_key
from .config import ConfigError, TrialConfig, validate
from .convert import to_if
from .data import DataBundle, DataFacts, describe_data, load_data
from .export import model_metadata
from .layers import ActivationFactory, RateNorm, activation_factory
from .levels import levels_from_al, profile_levels
from .metrics import al_per_layer, ann_macs, energy_mj, model_omega, qcfs_omega, t_eff_table, wilson_interval
from .models import activation_layers, build_model
from .operating_point import PASCAL_T_EFF, OperatingPoint, if_operating_point
from .pascal import evaluate_pascal
from .simulate import SimulationResult, first_step_within, simulate
from .train import (
    EpochCallback,
    EpochStats,
    batches,
    check_device,
    device_gpu_name,
    evaluate,
    finetune_levels,
    seed_everything,
    train_model,
    train_ril,
)

#: ``on_progress(stage, metrics)``: stage is e.g. "stage1", "stage2", "finetune", "simulate"
ProgressCallback = Callable[[str, Mapping[str, float]], None]


# ---------------------------------------------------------------------------------------------
# stage 1


def stage1_activation(config: TrialConfig) -> ActivationFactory:
    """The activation stage 1 trains with: Rate Norm with p ~ 1 (rnl) or uniform-L QCFS (qcfs)."""
    if config.method == "rnl":
        # p = sigmoid(10) = 0.99995 (the authors' "p = 1"); with |scale| mode p = 1 exactly
        raw = 10.0 if config.rnl.scale_mode == "sigmoid" else 1.0
        return activation_factory("rnl", scale_init=raw, scale_mode=config.rnl.scale_mode)
    return activation_factory("qcfs", levels=config.qcfs.stage1_levels, threshold=config.qcfs.threshold_init)


def build_trial_model(config: TrialConfig, data: DataBundle, activation: ActivationFactory | None = None) -> nn.Module:
    """The trial's model for ``data`` with the stage-1 activation (or ``activation``)."""
    return build_model(
        config.model, activation or stage1_activation(config), num_classes=data.num_classes,
        in_channels=data.in_channels, image_size=data.image_size, dropout=config.dropout,
    )


def stage1_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What stage 1 trains: every parameter except the Rate Norm scales (p stays ~ 1)."""
    scales = {id(m.scale) for m in model.modules() if isinstance(m, RateNorm)}
    return [p for p in model.parameters() if id(p) not in scales]


def stage1_warnings(first: Stage1Result) -> dict[str, str]:
    """``{"stage1_cache_refused": why}`` when a cached stage-1 entry was refused and retrained."""
    return {"stage1_cache_refused": first.cache_refused} if first.cache_refused else {}


@dataclass
class Stage1Result:
    """The stage-1 model (eval mode, on ``device``), its data, accuracies (percent) and cache facts."""

    key: str
    path: Path
    cache_hit: bool
    model: nn.Module
    data: DataBundle
    device: torch.device
    val_acc: float
    test_acc: float
    seconds: float
    #: why a cache entry found under the key was refused and retrained (None when none was)
    cache_refused: str | None = None


def stage1(config: TrialConfig, *, data: DataBundle | None = None, on_epoch: EpochCallback | None = None,
           cache: Stage1Cache | None = None, device: torch.device | None = None) -> Stage1Result:
    """Train the stage-1 ANN of ``config``, or load it from the cache when its key is there.

    ``device``: where to compute (default: ``config.device`` through
    :func:`snnconv.train.check_device`, with no GPU assigned)."""
    validate(config)
    device = check_device(config.device) if device is None else device
    data = data or load_data(config.data, device)
    cache = cache or Stage1Cache(config.cache_dir)
    key = stage1_key(config)
    start = time.perf_counter()

    def train() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        seed_everything(config.seed)
        model = build_trial_model(config, data).to(device)
        history = train_model(model, data.train, config.stage1, device, val_loader=data.val,
                              params=stage1_parameters(model), on_epoch=on_epoch)
        meta = {"key": key, "config": config.to_dict(), "seconds": time.perf_counter() - start,
                "val_acc": history[-1].val_acc, "epochs": len(history)}
        return model.state_dict(), meta

    with torch.random.fork_rng(devices=[]):  # the shapes to check a cached entry against; no RNG drawn
        reference = build_trial_model(config, data).state_dict()
    entry = cache.get_or_train(key, train, check=check_fits(reference))
    model = build_trial_model(config, data)
    model.load_state_dict(entry.state_dict)
    model.to(device).eval()
    return Stage1Result(
        key=key, path=entry.path, cache_hit=entry.hit, cache_refused=entry.refused, model=model, data=data,
        device=device,
        val_acc=evaluate(model, data.val, device), test_acc=evaluate(model, data.test, device),
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# trial result


@dataclass
class TrialResult:
    """What one trial produced (accuracies in percent; ``val_`` = validation split, none = test split).

    The names are the MLflow metric names of the tracking contract (``docs/tracking.md``).
    ``operating_point`` is the trial's claim (``t_op``, ``val_acc_op``, ``acc_op``, ``energy_op_mj``,
    ``converged``); ``curves`` holds the stepped accuracy curves by metric name, each a list whose
    item t-1 is the accuracy after t time steps: rnl ``snn_acc_t`` / ``val_snn_acc_t``; qcfs its
    rate-coded IF comparison ``if_snn_acc_t`` / ``val_if_snn_acc_t`` (not its operating point).
    ``layers`` is a per-layer table (one dict per activation layer: name, fan_in, and the method's
    diagnostics such as threshold, omega, firing_rate, levels, al, equiv_abs_err).
    """

    method: str
    ann_acc: float
    val_ann_acc: float
    snn_acc: float
    val_snn_acc: float
    operating_point: OperatingPoint
    latency_tolerance: float
    omega: float
    t_eff: float
    synops: float
    energy_mj: float
    curves: dict[str, list[float]] = field(default_factory=dict)
    equiv_max_abs_err: float | None = None
    levels: list[int] | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    #: method-specific tables, e.g. the RIL candidates (lam, val_acc, omega)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: extra scalar metrics (e.g. stage-2 steps, val accuracy at the start of stage 2)
    extra_metrics: dict[str, float] = field(default_factory=dict)
    #: what the trial skipped or found doubtful, by name (logged as ``warning.<name>`` tags), e.g.
    #: "skipped_if_comparison", "nonpositive_threshold"
    warnings: dict[str, str] = field(default_factory=dict)
    stage1_key: str = ""
    stage1_cache_hit: bool = False
    stage1_seconds: float = 0.0
    seconds: float = 0.0
    #: the final model (not serialised by ``summary``)
    model: nn.Module | None = field(default=None, repr=False)
    #: the data set the trial saw: name, split sizes, digest (``snnconv.data.describe_data``)
    data: DataFacts | None = None
    #: what rebuilds the trial's SNN from ``model`` (``snnconv.export.model_metadata``); logged as
    #: the MLflow model's metadata
    model_metadata: dict[str, Any] = field(default_factory=dict)
    #: one test image [1, C, H, W] on the CPU: the logged model's input example
    example_input: torch.Tensor | None = field(default=None, repr=False)
    #: where the trial computed: the torch device type (``cpu``, ``cuda``); empty when not recorded
    device: str = ""
    #: the GPU's name (``torch.cuda.get_device_name``), ``none`` on the CPU; empty when not recorded
    gpu_name: str = ""
    #: which images of each split ("val", "test") the trial gets right at its operating point: (images,) bool
    #: in the split's order (``snnconv.paired``: the paired comparisons of the fronts)
    image_correct: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def acc_curve(self) -> list[float]:
        """The test acc(t) curve of the operating point's IF network (rnl; empty for qcfs)."""
        return self.curves.get("snn_acc_t", [])

    def params(self) -> dict[str, str]:
        """The MLflow params the result itself knows: ``device``, ``gpu_name`` (those recorded), and the image
        counts of the splits its accuracies were measured on, ``val_images`` and ``test_images``."""
        params = {name: value for name, value in (("device", self.device), ("gpu_name", self.gpu_name)) if value}
        if self.data is not None:
            params.update(val_images=str(self.data.sizes["val"]), test_images=str(self.data.sizes["test"]))
        return params

    def intervals(self) -> dict[str, float]:
        """The 95 % Wilson score interval (``metrics.wilson_interval``) of each operating-point and ANN accuracy,
        from the image counts of its split: ``<metric>_low`` and ``<metric>_high`` (percent) for
        ``val_acc_op``, ``acc_op``, ``val_ann_acc`` and ``ann_acc``; empty without the data's facts."""
        if self.data is None:
            return {}
        point = self.operating_point
        values = {}
        for name, accuracy, split in (("val_acc_op", point.val_acc_op, "val"), ("acc_op", point.acc_op, "test"),
                                      ("val_ann_acc", self.val_ann_acc, "val"), ("ann_acc", self.ann_acc, "test")):
            values[f"{name}_low"], values[f"{name}_high"] = wilson_interval(accuracy, self.data.sizes[split])
        return values

    def metrics(self) -> dict[str, float]:
        """The scalar metrics of the tracking contract plus the extras (NaN where undefined)."""
        nan = float("nan")
        point = self.operating_point
        values = {
            "val_ann_acc": self.val_ann_acc, "ann_acc": self.ann_acc,
            "val_snn_acc": self.val_snn_acc, "snn_acc": self.snn_acc,
            "t_op": point.t_op, "val_acc_op": point.val_acc_op, "acc_op": point.acc_op,
            "energy_op_mj": point.energy_op_mj, "converged": float(point.converged),
            "omega": self.omega, "t_eff": self.t_eff, "synops": self.synops, "energy_mj": self.energy_mj,
            "equiv_max_abs_err": nan if self.equiv_max_abs_err is None else self.equiv_max_abs_err,
            "stage1_seconds": self.stage1_seconds, "trial_seconds": self.seconds,
            "stage1_cache_hit": float(self.stage1_cache_hit),
        }
        values.update(self.intervals())
        values.update(self.extra_metrics)
        return {k: float(v) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------
# RNL + RIL: stage 1 (cached) -> stage 2 (RIL) -> IF conversion -> simulation


def _ignore_progress(stage: str, metrics: Mapping[str, float]) -> None:
    return None


def _epoch_metrics(stats: EpochStats) -> dict[str, float]:
    return {"epoch": stats.epoch, "val_acc": stats.val_acc, "train_loss": stats.train_loss,
            "train_acc": stats.train_acc, "lr": stats.lr}


def _stage1_progress(on_progress: ProgressCallback) -> EpochCallback:
    """Stage-1 epochs as ``on_progress("stage1", ...)`` (only when stage 1 is trained, not loaded)."""
    return lambda stats: on_progress("stage1", _epoch_metrics(stats))


def rnl_layer_table(model: nn.Module, omega: Mapping[str, float],
                    simulation: SimulationResult) -> list[dict[str, Any]]:
    """One row per Rate Norm layer of the final RNL model: name, fan_in, running_max, raw scale,
    p, threshold (the IF threshold), omega (validation set), and from ``simulation`` (test set)
    firing_rate, spikes per image over T_max, fan_out."""
    rows = []
    for layer in activation_layers(model):
        module = layer.module
        rows.append({
            "name": layer.name, "fan_in": layer.fan_in, "running_max": module.running_max.item(),
            "scale": module.scale.item(), "p": module.p().item(), "threshold": module.threshold().item(),
            "omega": omega[layer.name], "firing_rate": simulation.firing_rates[layer.name],
            "spikes_per_image": simulation.spike_counts[layer.name], "fan_out": simulation.fan_out[layer.name],
        })
    return rows


def model_record(config: TrialConfig, data: DataBundle, point: OperatingPoint, layers: list[dict[str, Any]],
                 levels: list[int] | None = None) -> dict[str, Any]:
    """The ``data``, ``model_metadata`` and ``example_input`` fields of a trial's result."""
    facts = describe_data(data, config.data)
    images, _ = next(iter(data.test))
    metadata = model_metadata(
        config, t_op=point.t_op, acc_op=point.acc_op, thresholds=[row["threshold"] for row in layers],
        levels=levels, input_shape=(data.in_channels, data.image_size, data.image_size),
        num_classes=data.num_classes, data=facts)
    return {"data": facts, "model_metadata": metadata, "example_input": images[:1].detach().float().cpu()}


def device_record(device: torch.device) -> dict[str, str]:
    """The ``device`` and ``gpu_name`` fields of a trial's result (``cpu`` / ``none`` on the CPU)."""
    return {"device": device.type, "gpu_name": device_gpu_name(device)}


def _run_rnl(config: TrialConfig, on_progress: ProgressCallback, device: torch.device) -> TrialResult:
    """RNL + RIL: stage 1 (cached) -> stage 2 (RIL) -> IF conversion -> simulation -> metrics."""
    start = time.perf_counter()
    rnl = config.rnl
    first = stage1(config, on_epoch=_stage1_progress(on_progress), device=device)
    device = first.device
    # training advanced the shuffling generator of the train loader: a cache miss gets fresh loaders
    # so that stage 2 sees the same batches whether stage 1 was trained or loaded
    data = first.data if first.cache_hit else load_data(config.data, device)
    seed_everything(config.seed)
    model = copy.deepcopy(first.model)
    steps = max(1, rnl.epochs * len(data.train))  # stage 2's training steps, for its progress fraction
    ril = train_ril(model, data.train, data.val, rnl, device,
                    on_validate=lambda row: on_progress("stage2", {**row, "progress": min(1.0, row["step"] / steps)}))
    omega = model_omega(model, data.val, device, weighting="mean")  # also the validation ANN accuracy
    ann_acc = evaluate(model, data.test, device)
    snn = to_if(model, v_init=rnl.v_init)
    val_simulation = simulate(snn, data.val, rnl.t_max, device)
    simulation = simulate(snn, data.test, rnl.t_max, device)
    point = if_operating_point(val_simulation.acc_curve, simulation.acc_curve, rnl.latency_tolerance,
                               val_simulation.energy_at)
    t_eff = first_step_within(simulation.acc_curve, ann_acc, rnl.latency_tolerance)
    images, _ = next(iter(data.test))
    macs = sum(ann_macs(model, images.to(device)).values())
    on_progress("simulate", {"val_acc_op": point.val_acc_op, "t_op": point.t_op, "synops": simulation.synops})
    extra = {
        "stage1_val_acc": first.val_acc, "stage1_test_acc": first.test_acc,
        "stage2_start_val_acc": ril.start_val_acc, "stage2_start_omega": ril.start_omega,
        "stage2_val_acc": ril.chosen["val_acc"], "stage2_val_omega": ril.chosen["omega"],
        "stage2_steps": float(ril.steps), "stage2_chosen_step": float(ril.chosen["step"]),
        "stage2_stopped_early": float(ril.stopped_early), "omega_output": omega.output,
        "omega_doubled": omega.aggregate("doubled"), "p_mean": ril.chosen["p"],
        "input_macs": simulation.input_macs, "ann_macs": macs, "ann_energy_mj": energy_mj(0.0, macs),
        "energy_at_t_eff_mj": simulation.energy_at(int(t_eff)) if t_eff <= rnl.t_max else math.nan,
        "simulation_seconds": simulation.seconds + val_simulation.seconds,
    }
    layers = rnl_layer_table(model, omega.per_layer, simulation)
    return TrialResult(
        method="rnl", ann_acc=ann_acc, val_ann_acc=omega.accuracy, snn_acc=simulation.snn_acc,
        val_snn_acc=val_simulation.snn_acc, operating_point=point, latency_tolerance=rnl.latency_tolerance,
        omega=omega.mean, t_eff=t_eff, synops=simulation.synops, energy_mj=simulation.energy_mj,
        curves={"snn_acc_t": simulation.acc_curve, "val_snn_acc_t": val_simulation.acc_curve},
        layers=layers, tables={"candidates": ril.candidates}, extra_metrics=extra,
        warnings=stage1_warnings(first),
        stage1_key=first.key, stage1_cache_hit=first.cache_hit, stage1_seconds=first.seconds,
        seconds=time.perf_counter() - start, model=model, **model_record(config, data, point, layers),
        **device_record(device),
        image_correct={"val": val_simulation.image_correct[int(point.t_op) - 1].numpy(),
                       "test": simulation.image_correct[int(point.t_op) - 1].numpy()},
    )


# ---------------------------------------------------------------------------------------------
# QCFS + PASCAL: stage 1 (uniform L, cached) -> layerwise-L fine-tune -> PASCAL inference


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


def calibration_images(loader, count: int, device: torch.device) -> list[torch.Tensor]:
    """The images of the first ``count`` batches of ``loader``, on ``device``."""
    images = []
    for batch_images, _ in batches(loader, device):
        images.append(batch_images)
        if len(images) == count:
            break
    return images


def _reseed_loader(loader: Any, seed: int) -> None:
    """Restart a loader's shuffling generator, so that calibration and fine-tune see the same batches
    whether stage 1 was trained in this process (which advanced the generator) or loaded from the cache."""
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def _run_qcfs(config: TrialConfig, on_progress: ProgressCallback, device: torch.device) -> TrialResult:
    """One QCFS + PASCAL trial (see the module docstring); reports ``on_progress("finetune", ...)``
    after every fine-tune epoch (and ``"stage1"`` epochs when stage 1 is trained)."""
    start = time.perf_counter()
    qcfs = config.qcfs
    first = stage1(config, on_epoch=_stage1_progress(on_progress), device=device)
    model, data, device = first.model, first.data, first.device
    layers = activation_layers(model)

    _reseed_loader(data.train, config.data.split_seed + 1)
    al = al_per_layer(model, calibration_images(data.train, qcfs.calibration_batches, device))
    levels = trial_levels(config, len(layers), list(al.values()))
    _reseed_loader(data.train, config.data.split_seed + 1)
    seed_everything(config.seed)
    history = finetune_levels(model, levels, data.train, config.stage1, device, epochs=qcfs.finetune_epochs,
                              lr=qcfs.finetune_lr, val_loader=data.val,
                              on_epoch=lambda stats: on_progress("finetune", {
                                  **_epoch_metrics(stats), "progress": stats.epoch / max(1, qcfs.finetune_epochs)}))

    ann_acc, val_ann_acc = evaluate(model, data.test, device), evaluate(model, data.val, device)
    thresholds = [float(layer.module.threshold.detach()) for layer in layers]
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


# ---------------------------------------------------------------------------------------------
# one trial, any method

#: ``config.method`` -> the function running that method's trial
METHOD_RUNNERS: dict[str, Callable[[TrialConfig, ProgressCallback, torch.device], TrialResult]] = {
    "rnl": _run_rnl,
    "qcfs": _run_qcfs,
}


def run_trial(config: TrialConfig, on_progress: ProgressCallback | None = None, *,
              gpus_assigned: int = 0) -> TrialResult:
    """Run one trial of ``config.method`` end to end and return its :class:`TrialResult`.

    ``on_progress(stage, metrics)`` (optional) receives progress: "stage1" per trained epoch,
    "stage2" at every RIL validation (rnl: val_acc, omega, step, ...), "finetune" per layerwise-L
    fine-tune epoch (qcfs: epoch, val_acc, ...), "simulate" once at the end (rnl). "stage2" and
    "finetune" also carry ``progress``: the fraction of that stage done (0-1; steps for rnl, epochs
    for qcfs), the unit a scheduler compares both methods in.

    ``gpus_assigned``: how many GPUs the scheduler gave the trial (Ray: ``len(ray.get_gpu_ids())``).
    The device is checked before any work (:func:`snnconv.train.check_device`): a trial given a GPU
    that torch cannot see raises :class:`snnconv.train.DeviceError` instead of running on the CPU.
    """
    validate(config)
    runner = METHOD_RUNNERS.get(config.method)
    if runner is None:
        raise ConfigError(f"method: {config.method!r} has no trial runner; implemented: {', '.join(METHOD_RUNNERS)}")
    device = check_device(config.device, gpus_assigned)
    return runner(config, on_progress or _ignore_progress, device)
