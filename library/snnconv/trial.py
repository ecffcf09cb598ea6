"""What every method's trial shares: stage 1 through the cache, the :class:`TrialResult`, and the
records of the trial's model, data and device. No Ray or MLflow here.

Each conversion method (:mod:`snnconv.methods`) builds its trial from these parts: it calls
:func:`stage1` for its source ANN (trained once per cache key with the activation its registry entry
names), runs its own stage 2 and conversion, and returns a :class:`TrialResult`.
:func:`snnconv.pipeline.run_trial` picks the method's runner from the registry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from .cache import Stage1Cache, check_fits
from .cache_key import stage1_key
from .config import TrialConfig, validate
from .convert import to_if
from .data import DataBundle, DataFacts, describe_data, load_data
from .layers import ActivationFactory, RateNorm, activation_factory
from .logged_model import model_metadata
from .method_registry import get_method
from .metrics import OmegaResult, ann_macs, energy_mj, model_omega, wilson_interval
from .models import build_model
from .operating_point import OperatingPoint, if_operating_point
from .simulate import SimulationResult, first_step_within, simulate
from .train import (
    EpochCallback,
    EpochStats,
    batches,
    check_device,
    device_gpu_name,
    evaluate,
    seed_everything,
    train_model,
)

#: ``on_progress(stage, metrics)``: stage is e.g. "stage1", "stage2", "finetune", "simulate"
ProgressCallback = Callable[[str, Mapping[str, float]], None]


# ---------------------------------------------------------------------------------------------
# stage 1


def stage1_activation(config: TrialConfig) -> ActivationFactory:
    """The activation stage 1 trains with, as the trial's method names it (``ConversionMethod.stage1_activation``):
    e.g. Rate Norm with p ~ 1 (rnl), uniform-L QCFS (qcfs), ReLU (datanorm)."""
    return activation_factory(**get_method(config.method).stage1_activation(config))


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
    #: what rebuilds the trial's SNN from ``model`` (``snnconv.logged_model.model_metadata``); logged as
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
# helpers of the method runners


def ignore_progress(stage: str, metrics: Mapping[str, float]) -> None:
    return None


def epoch_metrics(stats: EpochStats) -> dict[str, float]:
    return {"epoch": stats.epoch, "val_acc": stats.val_acc, "train_loss": stats.train_loss,
            "train_acc": stats.train_acc, "lr": stats.lr}


def stage1_progress(on_progress: ProgressCallback) -> EpochCallback:
    """Stage-1 epochs as ``on_progress("stage1", ...)`` (only when stage 1 is trained, not loaded)."""
    return lambda stats: on_progress("stage1", epoch_metrics(stats))


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


class DeviceRecord(TypedDict):
    """:func:`device_record`: keyword arguments of :class:`TrialResult`."""

    device: str
    gpu_name: str


def device_record(device: torch.device) -> DeviceRecord:
    """The ``device`` and ``gpu_name`` fields of a trial's result (``cpu`` / ``none`` on the CPU)."""
    return {"device": device.type, "gpu_name": device_gpu_name(device)}


def calibration_images(loader, count: int, device: torch.device) -> list[torch.Tensor]:
    """The images of the first ``count`` batches of ``loader``, on ``device``."""
    images = []
    for batch_images, _ in batches(loader, device):
        images.append(batch_images)
        if len(images) == count:
            break
    return images


def reseed_loader(loader: Any, seed: int) -> None:
    """Restart a loader's shuffling generator, so that calibration and fine-tune see the same batches
    whether stage 1 was trained in this process (which advanced the generator) or loaded from the cache."""
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# a rate-coded IF network's evaluation, shared by the methods whose SNN it is (rnl, datanorm)


@dataclass
class IfEvaluation:
    """A trial's final ANN and its rate-coded IF network, measured: the ANN's test accuracy and its Ω on
    validation (whose pass also gives the validation ANN accuracy), both splits simulated for ``t_max`` steps,
    the operating point chosen on the validation acc(t), ``t_eff`` on the test acc(t), the ANN's dense MACs
    per image."""

    ann_acc: float
    omega: OmegaResult
    val: SimulationResult
    test: SimulationResult
    point: OperatingPoint
    t_eff: float
    macs: float

    def extra_metrics(self) -> dict[str, float]:
        """The metrics every IF method logs beside its own: Ω's output term, the input layer's MACs, the ANN's
        MACs and energy, the energy at ``t_eff`` (NaN past T_max) and the simulations' seconds."""
        t_max = len(self.test.acc_curve)
        return {"omega_output": self.omega.output, "input_macs": self.test.input_macs, "ann_macs": self.macs,
                "ann_energy_mj": energy_mj(0.0, self.macs),
                "energy_at_t_eff_mj": self.test.energy_at(int(self.t_eff)) if self.t_eff <= t_max else math.nan,
                "simulation_seconds": self.test.seconds + self.val.seconds}


def evaluate_if_network(model: nn.Module, data: DataBundle, device: torch.device, *, v_init: str, t_max: int,
                        latency_tolerance: float, on_progress: ProgressCallback) -> IfEvaluation:
    """Measure ``model`` (a trained ANN whose activations convert to IF neurons) and its IF network
    (``snnconv.convert.to_if``) on ``data``; reports ``on_progress("simulate", ...)`` once at the end."""
    omega = model_omega(model, data.val, device, weighting="mean")  # also the validation ANN accuracy
    ann_acc = evaluate(model, data.test, device)
    snn = to_if(model, v_init=v_init)
    val_simulation = simulate(snn, data.val, t_max, device)
    simulation = simulate(snn, data.test, t_max, device)
    point = if_operating_point(val_simulation.acc_curve, simulation.acc_curve, latency_tolerance,
                               val_simulation.energy_at)
    t_eff = first_step_within(simulation.acc_curve, ann_acc, latency_tolerance)
    images, _ = next(iter(data.test))
    macs = sum(ann_macs(model, images.to(device)).values())
    on_progress("simulate", {"val_acc_op": point.val_acc_op, "t_op": point.t_op, "synops": simulation.synops})
    return IfEvaluation(ann_acc, omega, val_simulation, simulation, point, t_eff, macs)


def if_trial_result(method: str, config: TrialConfig, first: Stage1Result, data: DataBundle, device: torch.device,
                    model: nn.Module, measured: IfEvaluation, *, latency_tolerance: float,
                    layers: list[dict[str, Any]], extra: Mapping[str, float],
                    tables: dict[str, list[dict[str, Any]]] | None = None, start: float) -> TrialResult:
    """The :class:`TrialResult` of an IF method's trial from its evaluation (``extra``: the method's own metrics,
    beside :meth:`IfEvaluation.extra_metrics`; ``start``: the trial's ``time.perf_counter()`` at its start)."""
    point, val, test = measured.point, measured.val, measured.test
    t_op = int(point.t_op)
    return TrialResult(
        method=method, ann_acc=measured.ann_acc, val_ann_acc=measured.omega.accuracy, snn_acc=test.snn_acc,
        val_snn_acc=val.snn_acc, operating_point=point, latency_tolerance=latency_tolerance,
        omega=measured.omega.mean, t_eff=measured.t_eff, synops=test.synops, energy_mj=test.energy_mj,
        curves={"snn_acc_t": test.acc_curve, "val_snn_acc_t": val.acc_curve},
        layers=layers, tables=tables or {}, extra_metrics={**extra, **measured.extra_metrics()},
        warnings=stage1_warnings(first),
        stage1_key=first.key, stage1_cache_hit=first.cache_hit, stage1_seconds=first.seconds,
        seconds=time.perf_counter() - start, model=model, **model_record(config, data, point, layers),
        **device_record(device),
        image_correct={"val": val.image_correct[t_op - 1].numpy(), "test": test.image_correct[t_op - 1].numpy()},
    )

