"""Typed trial configuration, loadable from YAML, validated before any work starts.

A :class:`TrialConfig` holds everything one trial needs: the data, the model, stage 1 (ANN
training, cached), and the settings of each conversion method. Sweeps override single fields
with dotted names (``"rnl.lam"``, ``"stage1.lr"``) through :func:`apply_overrides`.

Every invalid value raises :class:`ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .levels import LEVEL_CHOICES, LEVEL_POLICIES, PASCAL_LISTS

METHODS = ("rnl", "qcfs")
DATASETS = ("digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet")
#: the data sets read from data.data_dir (prepared beforehand with ``python -m snnconv.data prepare``)
FOLDER_SETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet")


class ConfigError(ValueError):
    """An invalid configuration value (raised before any work starts)."""


@dataclass
class DataConfig:
    """Which data set, where it lives, and how it is batched and augmented."""

    #: data set: digits is bundled; mnist, fashion-mnist, cifar10, cifar100 and imagenet need data_dir
    name: str = "digits"
    #: folder holding the data set (required for mnist, fashion-mnist, cifar10, cifar100, imagenet)
    data_dir: str | None = None
    #: must be false: trials never download; fetch and verify the data set once with
    #: `python -m snnconv.data prepare NAME --data-dir DIR` (kept so old files get this message)
    download: bool = False
    #: training batch size
    batch_size: int = 64
    #: evaluation and simulation batch size
    eval_batch_size: int = 512
    #: images carved from the training set for validation; None = the data set's default
    val_size: int | None = None
    #: random crop + horizontal flip on CIFAR / ImageNet training images (MNIST sets: no augmentation)
    augment: bool = True
    #: side of the cutout square in pixels (0 = off)
    cutout: int = 0
    #: DataLoader worker processes (CIFAR, ImageNet)
    num_workers: int = 2
    #: seed of the train/val(/test) split, fixed so that every trial sees the same split
    split_seed: int = 0
    #: synthetic data only: number of classes
    num_classes: int = 10
    #: synthetic data only: image channels
    channels: int = 3
    #: synthetic data only: image side in pixels
    image_size: int = 32
    #: synthetic data only: training images
    num_train: int = 1024
    #: synthetic data only: validation images
    num_val: int = 256
    #: synthetic data only: test images
    num_test: int = 256


@dataclass
class Stage1Config:
    """Stage 1: training the source ANN (cached by a hash of everything that determines it)."""

    #: stage-1 training epochs
    epochs: int = 20
    #: stage-1 optimiser
    optimizer: str = "sgd"
    #: stage-1 learning rate
    lr: float = 0.1
    #: SGD momentum
    momentum: float = 0.9
    #: weight decay (all parameters, QCFS thresholds included)
    weight_decay: float = 5e-4
    #: learning-rate schedule; step multiplies the lr by gamma at each milestone
    schedule: str = "cosine"
    #: the step schedule multiplies the lr by gamma once this many epochs have finished (MultiStepLR)
    milestones: list[int] = field(default_factory=list)
    #: step schedule factor
    gamma: float = 0.1
    #: cross-entropy label smoothing
    label_smoothing: float = 0.0
    #: bfloat16 autocast on CUDA (ignored on CPU unless amp_on_cpu); QCFS and Rate Norm still
    #: quantise and clip in float32
    amp: bool = True
    #: with amp, use bfloat16 autocast on the CPU too (slower than float32 on most CPUs; for tests
    #: of the GPU numerics on a CPU)
    amp_on_cpu: bool = False


@dataclass
class RnlConfig:
    """RNL + RIL (Ding et al. 2021): stage-2 scale training, IF conversion and simulation."""

    #: weight of the Rate Inference Loss's omega term
    lam: float = 0.1
    #: stage-2 learning rate (scale parameters only)
    lr: float = 0.01
    #: stage-2 optimiser (over the scale parameters only)
    optimizer: str = "sgd"
    #: stage-2 SGD momentum
    momentum: float = 0.9
    #: stage-2 weight decay (pulls the raw scale to 0, p to 0.5)
    weight_decay: float = 1e-4
    #: one scale parameter for all layers
    sharescale: bool = True
    #: raw (pre-sigmoid) initial scale of stage 2: 2.5 gives p = 0.924
    scale_init: float = 2.5
    #: how the raw scale becomes p: sigmoid(scale) (the authors) or |scale|
    scale_mode: str = "sigmoid"
    #: stage-2 epochs (at most: stage 2 stops early below the tolerance)
    epochs: int = 1
    #: stop stage 2 when validation accuracy falls this many percentage points below the start
    acc_tolerance: float = 3.0
    #: validate every this many stage-2 batches
    inspect_interval: int = 20
    #: frozen (a copy of the stage-1 model) | self (the authors' code: the same network, detached)
    teacher: str = "frozen"
    #: omega aggregation of the stage-2 loss and candidate selection: mean = (sum k_l + k_out) /
    #: (N + 1), the paper's mean over layers | doubled = (2 sum k_l + k_out) / (2N + 1), the
    #: authors' stage-2 code (its two forward passes both trigger the hooks). The trial's reported
    #: omega metric is always the mean, so trials stay comparable
    omega_weighting: str = "mean"
    #: initial membrane of the IF neurons: zero (the authors) | half (theta/2)
    v_init: str = "zero"
    #: simulation length; acc(t) is recorded for every t = 1..t_max
    t_max: int = 64
    #: the operating point t_op = first t from which the validation acc(t) stays within this many
    #: percentage points of its value at t_max (also the band of t_eff = first t with acc(t) >= ann_acc - it)
    latency_tolerance: float = 1.0


@dataclass
class QcfsConfig:
    """QCFS + PASCAL: uniform-L stage 1, layerwise-L fine-tune, PASCAL inference."""

    #: uniform L of stage 1
    stage1_levels: int = 8
    #: layerwise L of the fine-tune: a list (one L per activation layer), a named profile, or "al"
    #: (the AL-metric policy); None keeps the uniform stage-1 L
    levels: list[int] | str | None = None
    #: initial QCFS threshold lambda: 8.0 (QCFS) or 1.0 (PASCAL)
    threshold_init: float = 8.0
    #: layerwise-L fine-tune epochs (0: only set the L list)
    finetune_epochs: int = 3
    #: fine-tune learning rate
    finetune_lr: float = 0.01
    #: AL-policy thresholds (ascending): AL above the k-th threshold lowers L by k powers of two
    al_thresholds: list[float] = field(default_factory=lambda: [20.0, 30.0, 40.0])
    #: batches of the training set used to compute the AL metric
    calibration_batches: int = 2
    #: length of the plain QCFS -> IF comparison simulation (rate coding), logged as if_snn_acc_t
    t_max: int = 32
    #: the plain IF's latency if_t_eff = first t with acc(t) >= ann_acc - latency_tolerance (points)
    latency_tolerance: float = 1.0
    #: float type of the spike-level PASCAL run and its equivalence check: float64 keeps the SNN
    #: equal to the ANN (float32 flips ~1e-5 of the neurons at rounding boundaries by one quantum)
    snn_dtype: str = "float64"


@dataclass
class TrialConfig:
    """One trial: data, model, stage 1, and the method's stage 2 and simulation."""

    #: conversion method of the trial
    method: str = "rnl"
    #: architecture, built with the method's activation
    model: str = "small"
    #: dropout of the model's classifier; None = the model family's default
    dropout: float | None = None
    #: seed of training and stage 2 (part of the stage-1 key)
    seed: int = 0
    #: where the trial computes; auto = CUDA when available, else the CPU (an error instead when the
    #: scheduler gave the trial a GPU that torch cannot see); cpu stays on the CPU even with a GPU
    device: str = "auto"
    #: stage-1 cache folder; None = $SNNCONV_CACHE or ~/.cache/snnconv/stage1
    cache_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    rnl: RnlConfig = field(default_factory=RnlConfig)
    qcfs: QcfsConfig = field(default_factory=QcfsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# building from dicts and YAML


def _check_type(path: str, value: Any, hint: Any) -> Any:
    """Coerce ``value`` to the annotated type or raise ConfigError naming ``path``."""
    origin = get_origin(hint)
    if origin is Union or type(hint).__name__ == "UnionType":
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(path, value, option)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{path}: {value!r} is not allowed ({'; or '.join(errors)})")
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = get_args(hint)
        return [_check_type(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected text, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, path)
    raise ConfigError(f"{path}: unsupported type {hint!r}")  # pragma: no cover


def _from_dict(cls: type, data: Any, path: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!r}; allowed keys{' in ' + path if path else ''}: {', '.join(names)}"
        )
    kwargs = {
        key: _check_type(f"{path}.{key}" if path else key, value, hints[key]) for key, value in data.items()
    }
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> TrialConfig:
    """Build and validate a TrialConfig from a (possibly partial) nested dict."""
    config = _from_dict(TrialConfig, data)
    validate(config)
    return config


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"malformed YAML in {path}: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"malformed YAML in {path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def trial_config_from_yaml(path: str | Path) -> TrialConfig:
    """Load a TrialConfig from a YAML file (nested sections as in :class:`TrialConfig`)."""
    return from_dict(load_yaml(path))


def apply_overrides(config: TrialConfig, overrides: Mapping[str, Any]) -> TrialConfig:
    """A validated copy of ``config`` with dotted-name overrides, e.g. ``{"rnl.lam": 0.5}``."""
    data = copy.deepcopy(config.to_dict())
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config section {part!r} in override {dotted!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {dotted!r}; allowed: {', '.join(node)}")
        node[parts[-1]] = value
    return from_dict(data)


# ---------------------------------------------------------------------------------------------
# validation


def _choice(path: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}")


def _positive(path: str, value: float | int) -> None:
    if not (value > 0) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{path}: must be positive, got {value!r}")


def _non_negative(path: str, value: float | int) -> None:
    if not (value >= 0) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{path}: must be zero or positive, got {value!r}")


def validate(config: TrialConfig) -> None:
    """Check every field; raise ConfigError on the first invalid one. Touches no data."""
    from .models import MODELS  # local import: models import torch

    _choice("method", config.method, METHODS)
    _choice("model", config.model, MODELS)
    if config.dropout is not None and not 0 <= config.dropout < 1:
        raise ConfigError(f"dropout: must be in [0, 1), got {config.dropout!r}")
    if not (config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:")):
        raise ConfigError(f"device: unknown value {config.device!r}; allowed: auto, cpu, cuda, cuda:N")

    data = config.data
    _choice("data.name", data.name, DATASETS)
    for name in ("batch_size", "eval_batch_size", "num_classes", "channels", "image_size",
                 "num_train", "num_val", "num_test"):
        _positive(f"data.{name}", getattr(data, name))
    _non_negative("data.cutout", data.cutout)
    _non_negative("data.num_workers", data.num_workers)
    if data.val_size is not None:
        _positive("data.val_size", data.val_size)
    command = "python -m snnconv.data prepare"
    if data.download:
        name = data.name if data.name in FOLDER_SETS else "NAME"
        raise ConfigError(f"data.download: must be false, got true; trials never download: prepare the data set "
                          f"once with `{command} {name} --data-dir DIR`")
    if data.name in FOLDER_SETS:
        if data.data_dir is None:
            raise ConfigError(f"data.data_dir: {data.name} needs a local data directory (--data-dir); "
                              f"prepare it with `{command} {data.name} --data-dir DIR`")
        if not Path(data.data_dir).is_dir():
            raise ConfigError(f"data.data_dir: {data.data_dir!r} does not exist "
                              f"(prepare it with `{command} {data.name} --data-dir {data.data_dir}`)")

    s1 = config.stage1
    _positive("stage1.epochs", s1.epochs)
    _positive("stage1.lr", s1.lr)
    _choice("stage1.optimizer", s1.optimizer, ("sgd", "adam"))
    _choice("stage1.schedule", s1.schedule, ("cosine", "step", "constant"))
    _non_negative("stage1.momentum", s1.momentum)
    _non_negative("stage1.weight_decay", s1.weight_decay)
    _positive("stage1.gamma", s1.gamma)
    if not 0 <= s1.label_smoothing < 1:
        raise ConfigError(f"stage1.label_smoothing: must be in [0, 1), got {s1.label_smoothing!r}")
    if s1.amp_on_cpu and not s1.amp:
        raise ConfigError("stage1.amp_on_cpu: true needs stage1.amp: true (amp turns autocast on, "
                          "amp_on_cpu extends it to the CPU)")

    rnl = config.rnl
    _non_negative("rnl.lam", rnl.lam)
    _positive("rnl.lr", rnl.lr)
    _choice("rnl.optimizer", rnl.optimizer, ("sgd", "adam"))
    _choice("rnl.scale_mode", rnl.scale_mode, ("sigmoid", "abs"))
    _choice("rnl.teacher", rnl.teacher, ("frozen", "self"))
    _choice("rnl.omega_weighting", rnl.omega_weighting, ("mean", "doubled"))
    if rnl.scale_mode == "abs" and not 0 < rnl.scale_init <= 1:
        raise ConfigError(f"rnl.scale_init: with scale_mode 'abs' p = |scale_init| must be in (0, 1], "
                          f"got {rnl.scale_init!r}")
    _choice("rnl.v_init", rnl.v_init, ("zero", "half"))
    _positive("rnl.epochs", rnl.epochs)
    _positive("rnl.inspect_interval", rnl.inspect_interval)
    _positive("rnl.t_max", rnl.t_max)
    _non_negative("rnl.acc_tolerance", rnl.acc_tolerance)
    _non_negative("rnl.latency_tolerance", rnl.latency_tolerance)
    _non_negative("rnl.weight_decay", rnl.weight_decay)

    qcfs = config.qcfs
    _positive("qcfs.stage1_levels", qcfs.stage1_levels)
    _positive("qcfs.threshold_init", qcfs.threshold_init)
    _non_negative("qcfs.finetune_epochs", qcfs.finetune_epochs)
    _positive("qcfs.finetune_lr", qcfs.finetune_lr)
    _positive("qcfs.calibration_batches", qcfs.calibration_batches)
    _positive("qcfs.t_max", qcfs.t_max)
    _non_negative("qcfs.latency_tolerance", qcfs.latency_tolerance)
    if sorted(qcfs.al_thresholds) != list(qcfs.al_thresholds):
        raise ConfigError(f"qcfs.al_thresholds: must be ascending, got {qcfs.al_thresholds!r}")
    _choice("qcfs.snn_dtype", qcfs.snn_dtype, ("float32", "float64"))
    if isinstance(qcfs.levels, list):
        validate_level_list(config.model, qcfs.levels, "qcfs.levels")
    elif isinstance(qcfs.levels, str):
        validate_level_policy(config.model, qcfs.levels, qcfs.stage1_levels)


def activation_names(model_name: str) -> list[str]:
    """The activation layer names of ``model_name`` in forward order (built on the meta device)."""
    import torch

    from .layers import activation_factory
    from .models import activation_layers, build_model

    with torch.device("meta"):
        image_size = 224 if model_name.startswith(("vgg", "resnet")) else 28 if model_name == "lenet5" else 8
        model = build_model(model_name, activation_factory("relu"), num_classes=10, in_channels=3,
                            image_size=image_size)
    return [layer.name for layer in activation_layers(model)]


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
