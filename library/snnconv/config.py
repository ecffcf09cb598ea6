"""Typed trial configuration, loadable from YAML, validated before any work starts.

A :class:`TrialConfig` holds everything one trial needs: the data, the model, stage 1 (ANN
training, cached), and one section per registered conversion method (``config.rnl``,
``config.qcfs``, ``config.datanorm``: each method's settings dataclass, defined in its module of
:mod:`snnconv.methods`). Sweeps override single fields with dotted names (``"rnl.lam"``,
``"stage1.lr"``) through :func:`apply_overrides`.

Each field declares what it means and what it allows once, in its metadata (:func:`setting`,
:func:`choice`, :func:`positive`, :func:`non_negative`, :func:`in_range`): :func:`validate` checks
those declarations and the docs' reference table (``snnconv.config_reference``) prints them.
Checks across fields are written out in :func:`validate` and in each method's ``validate``. Every
invalid value raises :class:`ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .method_registry import get_method, method_names, registered

DATASETS = ("digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet")
#: the data sets read from data.data_dir (prepared beforehand with ``python -m snnconv.data prepare``)
FOLDER_SETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet")
#: the devices a trial may name (``cuda:N`` for any GPU index N)
DEVICES = ("auto", "cpu", "cuda", "cuda:N")


class ConfigError(ValueError):
    """An invalid configuration value (raised before any work starts)."""


# ---------------------------------------------------------------------------------------------
# what a field allows, declared once in its metadata


@dataclass(frozen=True)
class Rule:
    """What a config field allows. ``choices`` (a tuple, or a callable giving one when the choices are
    only known at run time, such as the registered methods), or bounds on a number (or on every item of
    a list); ``ascending`` for a list. None passes every rule (an optional field left unset)."""

    choices: tuple[Any, ...] | Callable[[], Sequence[Any]] = ()
    #: the value must be above this (exclusive) / at least this (inclusive)
    above: float | None = None
    at_least: float | None = None
    #: the value must be below this (exclusive) / at most this (inclusive)
    below: float | None = None
    at_most: float | None = None
    ascending: bool = False

    def allowed(self) -> tuple[Any, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def text(self) -> str:
        """The rule as the reference table prints it: "one of `a`, `b`", "> 0", "in [0, 1)", "ascending"."""
        parts = []
        if self.choices:
            values = [str(value).lower() if isinstance(value, bool) else str(value) for value in self.allowed()]
            parts.append(f"`{values[0]}`" if len(values) == 1 else "one of " + ", ".join(f"`{v}`" for v in values))
        low = high = None
        if self.at_least is not None or self.above is not None:
            low = f"[{self.at_least:g}" if self.at_least is not None else f"({self.above:g}"
        if self.below is not None or self.at_most is not None:
            high = f"{self.below:g})" if self.below is not None else f"{self.at_most:g}]"
        if low is not None and high is not None:
            parts.append(f"in {low}, {high}")
        elif self.above is not None:
            parts.append(f"> {self.above:g}")
        elif self.at_least is not None:
            parts.append(f">= {self.at_least:g}")
        elif self.below is not None:
            parts.append(f"< {self.below:g}")
        if self.ascending:
            parts.append("ascending")
        return "; ".join(parts)

    def check(self, path: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``path`` when ``value`` breaks the rule."""
        if value is None:
            return
        if self.choices and not _is_choice(value, self.allowed()):
            raise ConfigError(f"{path}: unknown value {value!r}; allowed: {', '.join(map(str, self.allowed()))}")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                self._check_number(path, item)
        if self.ascending and list(value) != sorted(value):
            raise ConfigError(f"{path}: must be ascending, got {value!r}")

    def _check_number(self, path: str, value: float) -> None:
        finite = math.isfinite(value)
        lowest = -math.inf if self.at_least is None else self.at_least
        highest = math.inf if self.at_most is None else self.at_most
        bounded_below = self.above is not None or self.at_least is not None
        if bounded_below and (self.below is not None or self.at_most is not None):
            inside = finite and lowest <= value <= highest and (self.above is None or value > self.above) \
                and (self.below is None or value < self.below)
            if not inside:
                raise ConfigError(f"{path}: must be {self.text()}, got {value!r}")
        elif self.above == 0 and not (finite and value > 0):
            raise ConfigError(f"{path}: must be positive, got {value!r}")
        elif self.at_least == 0 and not (finite and value >= 0):
            raise ConfigError(f"{path}: must be zero or positive, got {value!r}")
        elif self.above is not None and not (finite and value > self.above):
            raise ConfigError(f"{path}: must be above {self.above:g}, got {value!r}")
        elif self.at_least is not None and not (finite and value >= self.at_least):
            raise ConfigError(f"{path}: must be at least {self.at_least:g}, got {value!r}")


def _is_choice(value: Any, allowed: tuple[Any, ...]) -> bool:
    """``value`` is one of ``allowed``; a choice ending in ``:N`` admits any whole number there (``cuda:1``)."""
    if value in allowed:
        return True
    return isinstance(value, str) and any(
        isinstance(option, str) and option.endswith(":N") and value.startswith(option[:-1])
        and value[len(option) - 1:].isdigit() for option in allowed)


#: the metadata keys of a config field: its rule and its one-line meaning
RULE, DOC = "rule", "doc"


def setting(default: Any = dataclasses.MISSING, *, doc: str, factory: Callable[[], Any] | None = None,
            rule: Rule | None = None) -> Any:
    """A config dataclass field with its meaning (``doc``, what the docs' reference table prints) and, when it
    has one, its :class:`Rule`; ``factory`` for a mutable default (a list). The rule helpers below call it."""
    metadata = {DOC: doc, **({RULE: rule} if rule is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return field(default=default, metadata=metadata)


def choice(default: Any, allowed: tuple[Any, ...] | Callable[[], Sequence[Any]], *, doc: str) -> Any:
    """A config field holding one of ``allowed`` (a tuple, or a callable returning the choices)."""
    return setting(default, doc=doc, rule=Rule(choices=allowed))


def positive(default: Any, *, doc: str) -> Any:
    """A config field holding a number above 0 (or a list of such numbers)."""
    return setting(default, doc=doc, rule=Rule(above=0))


def non_negative(default: Any, *, doc: str) -> Any:
    """A config field holding a number of at least 0 (or a list of such numbers)."""
    return setting(default, doc=doc, rule=Rule(at_least=0))


def in_range(default: Any, *, doc: str, at_least: float | None = None, above: float | None = None,
             below: float | None = None, at_most: float | None = None, ascending: bool = False) -> Any:
    """A config field holding a number in the given bounds (or a list of them, ``ascending`` if asked)."""
    return setting(default, doc=doc, rule=Rule(at_least=at_least, above=above, below=below, at_most=at_most,
                                               ascending=ascending))


def field_rule(item: dataclasses.Field) -> Rule | None:
    """The :class:`Rule` a config field declares, or None."""
    return item.metadata.get(RULE)


def field_doc(item: dataclasses.Field) -> str:
    """The meaning a config field declares ('' when it declares none)."""
    return str(item.metadata.get(DOC, ""))


def check_fields(section: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``section`` (and of its nested sections) against its rule."""
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        rule = field_rule(item)
        if rule is not None:
            rule.check(f"{prefix}{item.name}", value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_fields(value, f"{prefix}{item.name}.")


# ---------------------------------------------------------------------------------------------
# the sections every trial has


@dataclass
class DataConfig:
    """Which data set, where it lives, and how it is batched and augmented."""

    name: str = choice("digits", DATASETS, doc=(
        "data set: digits is bundled; mnist, fashion-mnist, cifar10, cifar100 and imagenet need data_dir"))
    data_dir: str | None = setting(None, doc=(
        "folder holding the data set (required for mnist, fashion-mnist, cifar10, cifar100, imagenet)"))
    download: bool = choice(False, (False,), doc=(
        "must be false: trials never download; fetch and verify the data set once with `python -m snnconv.data "
        "prepare NAME --data-dir DIR` (kept so old files get this message)"))
    batch_size: int = positive(64, doc="training batch size")
    eval_batch_size: int = positive(512, doc="evaluation and simulation batch size")
    val_size: int | None = positive(None, doc=(
        "images carved from the training set for validation; None = the data set's default"))
    augment: bool = setting(True, doc=(
        "random crop + horizontal flip on CIFAR / ImageNet training images (MNIST sets: no augmentation)"))
    cutout: int = non_negative(0, doc="side of the cutout square in pixels (0 = off)")
    num_workers: int = non_negative(2, doc="DataLoader worker processes (CIFAR, ImageNet)")
    split_seed: int = setting(0, doc=(
        "seed of the train/val(/test) split, fixed so that every trial sees the same split"))
    num_classes: int = positive(10, doc="synthetic data only: number of classes")
    channels: int = positive(3, doc="synthetic data only: image channels")
    image_size: int = positive(32, doc="synthetic data only: image side in pixels")
    num_train: int = positive(1024, doc="synthetic data only: training images")
    num_val: int = positive(256, doc="synthetic data only: validation images")
    num_test: int = positive(256, doc="synthetic data only: test images")


@dataclass
class Stage1Config:
    """Stage 1: training the source ANN (cached by a hash of everything that determines it)."""

    epochs: int = positive(20, doc="stage-1 training epochs")
    optimizer: str = choice("sgd", ("sgd", "adam"), doc="stage-1 optimiser")
    lr: float = positive(0.1, doc="stage-1 learning rate")
    momentum: float = non_negative(0.9, doc="SGD momentum")
    weight_decay: float = non_negative(5e-4, doc="weight decay (all parameters, QCFS thresholds included)")
    schedule: str = choice("cosine", ("cosine", "step", "constant"), doc=(
        "learning-rate schedule; step multiplies the lr by gamma at each milestone"))
    milestones: list[int] = setting(factory=list, doc=(
        "the step schedule multiplies the lr by gamma once this many epochs have finished (MultiStepLR)"))
    gamma: float = positive(0.1, doc="step schedule factor")
    label_smoothing: float = in_range(0.0, at_least=0, below=1, doc="cross-entropy label smoothing")
    amp: bool = setting(True, doc=(
        "bfloat16 autocast on CUDA (ignored on CPU unless amp_on_cpu); QCFS and Rate Norm still quantise and clip"
        " in float32"))
    amp_on_cpu: bool = setting(False, doc=(
        "with amp, use bfloat16 autocast on the CPU too (slower than float32 on most CPUs; for tests of the GPU "
        "numerics on a CPU)"))


def _model_names() -> tuple[str, ...]:
    from .models import MODELS  # local import: models import torch

    return tuple(MODELS)


def default_method_settings() -> dict[str, Any]:
    """Each registered method's settings with their defaults: ``{name: settings dataclass instance}``."""
    return {method.name: method.settings() for method in registered()}


@dataclass
class TrialConfig:
    """One trial: data, model, stage 1, and each method's settings (``config.<method>``)."""

    method: str = choice("rnl", method_names, doc=(
        "conversion method of the trial (a registered method: ``snnconv.method_registry``)"))
    model: str = choice("small", _model_names, doc="architecture, built with the method's activation")
    dropout: float | None = in_range(None, at_least=0, below=1, doc=(
        "dropout of the model's classifier; None = the model family's default"))
    seed: int = setting(0, doc="seed of training and stage 2 (part of the stage-1 key)")
    device: str = choice("auto", DEVICES, doc=(
        "where the trial computes; auto = CUDA when available, else the CPU (an error instead when the scheduler "
        "gave the trial a GPU that torch cannot see); cpu stays on the CPU even with a GPU"))
    cache_dir: str | None = setting(None, doc="stage-1 cache folder; None = $SNNCONV_CACHE or ~/.cache/snnconv/stage1")
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    #: each registered method's settings by name; read them as ``config.<name>`` (``config.rnl.lam``),
    #: written in YAML as top-level sections (``rnl: {lam: 0.1}``)
    method_settings: dict[str, Any] = field(default_factory=default_method_settings, repr=False)

    def __getattr__(self, name: str) -> Any:
        """``config.rnl`` etc.: a registered method's settings (only called for names not found otherwise)."""
        settings = self.__dict__.get("method_settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or method section {name!r}")

    def settings(self) -> Any:
        """The settings of the trial's own method (``config.<config.method>``)."""
        return self.method_settings[self.method]

    def to_dict(self) -> dict[str, Any]:
        """The nested dict :func:`from_dict` reads back: plain fields, ``data``, ``stage1``, one section per method."""
        values = {item.name: copy.deepcopy(getattr(self, item.name)) for item in dataclasses.fields(self)
                  if item.name != "method_settings"}
        values["data"], values["stage1"] = dataclasses.asdict(self.data), dataclasses.asdict(self.stage1)
        values.update({name: dataclasses.asdict(section) for name, section in self.method_settings.items()})
        return values


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
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, path)
    raise ConfigError(f"{path}: unsupported type {hint!r}")  # pragma: no cover


def _from_dict(cls: type, data: Any, path: str = "", extra_keys: Sequence[str] = ()) -> Any:
    """An instance of dataclass ``cls`` from a mapping of its fields (type-checked, not validated);
    ``extra_keys`` are also allowed (the caller reads them)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "method_settings"]
    unknown = [key for key in data if key not in names and key not in extra_keys]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key {where}{unknown[0]!r}; allowed keys{' in ' + path if path else ''}: "
                          f"{', '.join([*names, *extra_keys])}")
    kwargs = {key: _check_type(f"{path}.{key}" if path else key, value, hints[key])
              for key, value in data.items() if key in names}
    return cls(**kwargs)


def _trial_from_dict(data: Mapping[str, Any]) -> TrialConfig:
    """A TrialConfig from a nested dict whose top-level method sections (``rnl: {...}``) fill ``method_settings``."""
    sections = method_names()
    config = _from_dict(TrialConfig, data, extra_keys=sections)
    config.method_settings = {name: _from_dict(get_method(name).settings, data.get(name) or {}, name)
                              for name in sections}
    return config


def from_dict(data: Mapping[str, Any]) -> TrialConfig:
    """Build and validate a TrialConfig from a (possibly partial) nested dict."""
    config = _trial_from_dict(data)
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


def validate(config: TrialConfig) -> None:
    """Check every field; raise ConfigError on the first invalid one. Touches no data.

    Each field's declared rule (:func:`check_fields`), then what involves several fields: the data
    folder, autocast on the CPU, and each method's own cross-field checks."""
    data = config.data
    command = "python -m snnconv.data prepare"
    if data.download:
        name = data.name if data.name in FOLDER_SETS else "NAME"
        raise ConfigError(f"data.download: must be false, got true; trials never download: prepare the data set "
                          f"once with `{command} {name} --data-dir DIR`")
    check_fields(config)
    for name, settings in config.method_settings.items():
        check_fields(settings, f"{name}.")
    if data.name in FOLDER_SETS:
        if data.data_dir is None:
            raise ConfigError(f"data.data_dir: {data.name} needs a local data directory (--data-dir); "
                              f"prepare it with `{command} {data.name} --data-dir DIR`")
        if not Path(data.data_dir).is_dir():
            raise ConfigError(f"data.data_dir: {data.data_dir!r} does not exist "
                              f"(prepare it with `{command} {data.name} --data-dir {data.data_dir}`)")
    if config.stage1.amp_on_cpu and not config.stage1.amp:
        raise ConfigError("stage1.amp_on_cpu: true needs stage1.amp: true (amp turns autocast on, "
                          "amp_on_cpu extends it to the CPU)")
    for method in registered():
        method.validate(config)


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
