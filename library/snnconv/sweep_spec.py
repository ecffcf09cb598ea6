"""The sweep file: its schema (:class:`SweepSpec`), loading and validation, and the translation
between the search space and trial overrides. No Ray here: Ray Tune glue is :mod:`snnconv.sweep`.

A sweep is described by a :class:`SweepSpec` (a YAML preset in ``configs/``): a base trial config,
the methods to run, the search space per method, the search algorithm and the resources.

Search-space entries (``space: {method: {dotted.key: spec}}``), each ``spec`` a mapping:

==========================================  ===================================================
``{type: choice, values: [...]}``           one of the values (grid: every value)
``{type: uniform, low, high}``              uniform float
``{type: loguniform, low, high}``           log-uniform float; ``zero_fraction: f`` adds the
                                            value 0 with probability ~f (lambda "plus 0")
``{type: per_layer, values: [1, 2, ...]}``  one choice per activation layer -> a list (layerwise L)
``{type: sorted_uniform, low, high, count}``  ``count`` uniform floats, sorted -> a list
==========================================  ===================================================

Any spec may carry ``grid: [...]`` (the values ``--search grid`` uses).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, _from_dict, activation_names, apply_overrides, from_dict, load_yaml
from .fixed_latency import parse_published
from .method_registry import get_method, method_names
from .tracking import DEFAULT_EXPERIMENT

SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("none", "asha")
#: the cost Optuna minimises next to maximising the operating-point accuracy -> its metric name
OBJECTIVES = {"latency": "t_op", "energy": "energy_op_mj", "omega": "omega"}
#: the split every choice is made on (Optuna, the Pareto tags, the summary); "test" biases the fronts
SELECT_ON = ("val", "test")
SPACE_TYPES = ("choice", "uniform", "loguniform", "per_layer", "sorted_uniform")
#: the sweep-file keys of ASHA's former unit (reports), refused with a pointer to grace_fraction
LEGACY_ASHA_KEYS = ("grace_period", "max_t")


@dataclass
class SweepSpec:
    """A sweep: what to search, how, and with which resources (a preset YAML file)."""

    name: str = "demo"
    description: str = ""
    #: the conversion methods to sweep (registered names: rnl, qcfs, datanorm); default: every registered one
    methods: list[str] = field(default_factory=lambda: list(method_names()))
    #: trials per method
    num_samples: int = 4
    search: str = "random"
    scheduler: str = "none"
    #: the cost Optuna minimises next to maximising the operating-point accuracy: latency (t_op),
    #: energy (energy_op_mj) or omega (single-method sweeps only: Ω differs in kind between methods)
    objective: str = "latency"
    #: the split that chooses: "val" (validation, default) or "test" (biased; for reproductions only)
    select_on: str = "val"
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    experiment: str = DEFAULT_EXPERIMENT
    seed: int = 0
    #: share stage 1 between trials through the cache (false: every trial trains its own; for benchmarks)
    share_stage1: bool = True
    #: times a trial whose worker process died (OOM killer, preempted node) is retried (Tune's
    #: FailureConfig); a trial whose own code raised is not retried: it would fail the same way
    max_failures: int = 1
    #: ASHA: the fraction (0-1) of a trial's scheduled stage (rnl's stage 2, qcfs's fine-tune) done when it is
    #: first compared with the others; later rungs at 2x, 4x ... that, up to the whole stage. Both methods
    #: count progress in this fraction, and a trial is never stopped at the end of its stage, before its result
    grace_fraction: float = 0.25
    #: seeds per drawn configuration (``snnconv.repeats``): each runs with seed, seed + 1, ...; the
    #: configuration's run holds their mean and spread, and Optuna is told the mean
    repeats: int = 1
    #: the base trial config (nested, as TrialConfig)
    trial: dict[str, Any] = field(default_factory=dict)
    #: method -> nested TrialConfig values that differ for that method (e.g. the paper's stage-1 recipe)
    overrides: dict[str, Any] = field(default_factory=dict)
    #: method -> {dotted config key: spec}; a sweep file without ``space`` searches each method's standard
    #: space (its registry entry's ``search_space``: :func:`default_spaces`)
    space: dict[str, Any] = field(default_factory=dict)
    #: the papers' figures for this model and data set, printed beside the report's fixed-latency table
    #: (``snnconv.fixed_latency``): a list of {label, method, source, accuracy: {T: percent}, ann: percent}
    published: list[dict[str, Any]] = field(default_factory=list)


def load_spec(preset: str | None = None, config_file: str | None = None, presets_dir: str | Path | None = None,
              validate: bool = True) -> SweepSpec:
    """Load a preset by name (``configs/<name>.yaml``) or a sweep YAML file; validate it (unless the
    caller changes it first and validates then, as the command line does)."""
    if config_file:
        data = load_yaml(config_file)
    else:
        folder = Path(presets_dir) if presets_dir else Path.cwd() / "configs"
        preset = preset or "demo"
        path = folder / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
            raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known) or '(none found)'}")
        data = load_yaml(path)
    legacy = sorted(set(data or {}) & set(LEGACY_ASHA_KEYS))
    if legacy:
        raise ConfigError(f"{', '.join(legacy)}: ASHA no longer counts reports; it compares trials by the fraction "
                          "of their stage 2 / fine-tune done: use grace_fraction (0-1, e.g. 0.25) instead")
    spec = _from_dict(SweepSpec, data)
    if "space" not in (data or {}):  # no space at all: each method's standard one (its registry entry's)
        spec.space = default_spaces()
    resolve_paths(spec)
    if validate:
        validate_spec(spec)
    return spec


def default_spaces() -> dict[str, Any]:
    """Every registered method's standard search space (``ConversionMethod.search_space``): what a sweep file
    without a ``space`` section searches."""
    return {name: copy.deepcopy(dict(get_method(name).search_space)) for name in method_names()}


def validate_spec(spec: SweepSpec) -> None:
    """Check a sweep before any work: methods, search, resources, every space entry, the base trial."""
    known = method_names()
    if not spec.methods or any(m not in known for m in spec.methods):
        raise ConfigError(f"methods: {spec.methods!r} is not allowed; choose from {', '.join(known)}")
    for name, value, allowed in (("search", spec.search, SEARCHES), ("scheduler", spec.scheduler, SCHEDULERS),
                                 ("objective", spec.objective, tuple(OBJECTIVES)),
                                 ("select_on", spec.select_on, SELECT_ON)):
        if value not in allowed:
            raise ConfigError(f"{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")
    if spec.search == "optuna" and spec.objective == "omega" and len(spec.methods) > 1:
        raise ConfigError("objective: omega cannot rank the trials of several methods together (Ω differs in kind: "
                          "rnl's is on Rate Norm activations, qcfs's on a/λ); use --objective latency or energy, "
                          "or sweep one --method")
    if not 0 < spec.grace_fraction < 1:
        raise ConfigError(f"grace_fraction: must be between 0 and 1 (a fraction of a trial's stage 2 or fine-tune), "
                          f"got {spec.grace_fraction!r}")
    if isinstance(spec.repeats, bool) or not isinstance(spec.repeats, int) or spec.repeats < 1:
        raise ConfigError(f"repeats: must be a whole number of seeds, 1 or more, got {spec.repeats!r}")
    for name in ("num_samples", "max_concurrent", "cpus_per_trial"):
        if not getattr(spec, name) > 0:
            raise ConfigError(f"{name}: must be positive, got {getattr(spec, name)!r}")
    if spec.gpus_per_trial < 0:
        raise ConfigError(f"gpus_per_trial: must be zero or positive, got {spec.gpus_per_trial!r}")
    if spec.max_failures < 0:
        raise ConfigError(f"max_failures: must be zero or positive, got {spec.max_failures!r}")
    parse_published(spec.published, spec.methods)
    for section in ("space", "overrides"):
        unknown = [m for m in getattr(spec, section) if m not in known]
        if unknown:
            raise ConfigError(f"{section}: unknown method {unknown[0]!r}; allowed: {', '.join(known)}")
    for method in spec.methods:
        base = method_base(spec, method)
        entries = spec.space.get(method) or {}
        for key, entry in entries.items():
            path = f"space.{method}.{key}"
            _validate_entry(path, entry, spec.search)
            values = drawable_values(entry, base.model, spec.search)
            apply_overrides(base, {key: values[0]})  # the key must name a real config field
            for value in values:  # every value the search can draw
                try:
                    apply_overrides(base, {key: value})
                except ConfigError as error:
                    raise ConfigError(f"{path}: the search can draw {value!r}, which cannot run: {error}") from None


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


#: trial-config keys that hold a folder (section, key): made absolute at the driver by :func:`resolve_paths`
PATH_KEYS = (("data", "data_dir"), (None, "cache_dir"))


def resolve_paths(spec: SweepSpec, cwd: str | Path | None = None) -> None:
    """Make every folder of the sweep's trial config absolute, ``~`` expanded, relative ones against ``cwd``
    (default: this process's working directory), in ``trial`` and in each method's ``overrides``. Ray Tune
    runs each trial in a working directory of its own, so a relative folder would be looked for there."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    for section in [spec.trial, *(spec.overrides or {}).values()]:
        for group, key in PATH_KEYS:
            holder = section if group is None else (section or {}).get(group)
            if isinstance(holder, dict) and isinstance(holder.get(key), str) and holder[key]:
                holder[key] = str((base / Path(holder[key]).expanduser()).resolve())


def method_base(spec: SweepSpec, method: str):
    """The validated base TrialConfig of ``method``: ``trial`` merged with ``overrides[method]``."""
    return from_dict({**_merge(spec.trial, spec.overrides.get(method) or {}), "method": method})


def _validate_entry(path: str, entry: Any, search: str) -> None:
    if not isinstance(entry, Mapping) or entry.get("type") not in SPACE_TYPES:
        raise ConfigError(f"{path}: expected a mapping with type one of {', '.join(SPACE_TYPES)}, got {entry!r}")
    kind = entry["type"]
    required = {"choice": ("values",), "per_layer": ("values",), "uniform": ("low", "high"),
                "loguniform": ("low", "high"), "sorted_uniform": ("low", "high", "count")}[kind]
    for key in required:
        if key not in entry:
            raise ConfigError(f"{path}: a {kind} entry needs {key!r}")
    if kind in ("uniform", "loguniform", "sorted_uniform") and not entry["low"] < entry["high"]:
        raise ConfigError(f"{path}: low must be below high, got {entry['low']} and {entry['high']}")
    if kind == "loguniform" and entry["low"] <= 0:
        raise ConfigError(f"{path}: loguniform needs low > 0, got {entry['low']}")
    if search == "grid" and kind in ("uniform", "loguniform", "sorted_uniform", "per_layer") and "grid" not in entry:
        raise ConfigError(f"{path}: --search grid needs a 'grid: [...]' list of values for this {kind} entry")


def drawable_values(entry: Mapping[str, Any], model: str, search: str) -> list[Any]:
    """Every value of a choice (or grid) the search can draw, and the bounds of a range, as the
    config value they become (a per-layer entry: one list per choice, the same L in every layer)."""
    kind = entry["type"]
    if search == "grid" and "grid" in entry:
        return list(entry["grid"])
    if kind == "choice":
        return list(entry["values"])
    if kind == "per_layer":
        return [[value] * len(activation_names(model)) for value in entry["values"]]
    if kind == "sorted_uniform":
        return [[float(entry[bound])] * int(entry["count"]) for bound in ("low", "high")]
    if kind == "loguniform" and entry.get("zero_fraction"):
        return [0.0, float(entry["low"]), float(entry["high"])]
    return [float(entry["low"]), float(entry["high"])]


# ---------------------------------------------------------------------------------------------
# search space <-> trial overrides

_INDEXED = re.compile(r"^(?P<key>.+)\[(?P<index>\d+)\]$")
#: the suffix of a param Tune draws as log10 of the value (a loguniform entry with zero_fraction)
LOG10_SUFFIX = ":log10"


def count_trials(spec: SweepSpec, param_space: Mapping[str, Any]) -> int:
    """How many trials the sweep will run: Optuna ``num_samples`` per method; random search
    ``num_samples`` per method; grid search every combination of the grid values (and methods) once."""
    if spec.search == "optuna":
        return spec.num_samples * len(spec.methods)
    variants = math.prod(len(value["grid_search"]) for value in param_space.values()
                         if isinstance(value, Mapping) and "grid_search" in value)
    return variants * (1 if spec.search == "grid" else spec.num_samples)


def decode_params(params: Mapping[str, Any], spec: SweepSpec) -> dict[str, Any]:
    """Tune's sampled params -> dotted config overrides (lists assembled, log10 decoded).

    Only the entries of the trial's own method are kept.
    """
    method = params["method"]
    own = spec.space.get(method) or {}
    overrides: dict[str, Any] = {"method": method}
    lists: dict[str, dict[int, Any]] = {}
    for name, value in params.items():
        if name == "method":
            continue
        if name.endswith(LOG10_SUFFIX):
            key = name[: -len(LOG10_SUFFIX)]
            if key in own:
                overrides[key] = 0.0 if value < math.log10(own[key]["low"]) else float(10 ** value)
            continue
        match = _INDEXED.match(name)
        if match and match["key"] in own:
            lists.setdefault(match["key"], {})[int(match["index"])] = value
        elif name in own:
            overrides[name] = value
    for key, items in lists.items():
        values = [items[i] for i in sorted(items)]
        overrides[key] = sorted(values) if own[key]["type"] == "sorted_uniform" else values
    return overrides


def trial_params(config) -> dict[str, Any]:
    """The MLflow params of one trial (the tracking contract, ``docs/tracking.md``): the common ones and
    those of the trial's method (its registry entry's ``params``)."""
    params: dict[str, Any] = {
        "method": config.method, "model": config.model, "dataset": config.data.name, "seed": config.seed,
        "stage1_epochs": config.stage1.epochs, "stage1_lr": config.stage1.lr,
    }
    params.update(get_method(config.method).params(config))
    return params


def selection_metric(select_on: str) -> str:
    """The accuracy every choice uses: ``val_acc_op`` (validation) or ``acc_op`` (test)."""
    return {"val": "val_acc_op", "test": "acc_op"}[select_on]
