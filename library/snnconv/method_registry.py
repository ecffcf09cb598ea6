"""The registry of conversion methods: a method's name -> the :class:`ConversionMethod` describing it.

A conversion method is one module of :mod:`snnconv.methods` (``rnl``, ``qcfs``, ``datanorm``). Each
holds its settings (a dataclass, the trial config's section of the same name: ``config.rnl``), its
checks, its trial runner, its MLflow params and its default search space, and ends with one
:class:`ConversionMethod` that :mod:`snnconv.methods` registers. Everything else reads this registry:
the config (which sections exist), the pipeline (which runner), the sweep (which methods and spaces),
the tracking contract (which params) and the reports (colours, units, curves).

A method of your own is one more registration::

    from snnconv.method_registry import ConversionMethod, register
    register(ConversionMethod(name="mine", title="My conversion", settings=MySettings, run=run_mine, ...))

This module imports nothing of the package when it is imported: :mod:`snnconv.config` reads it, and the
method modules import the config. The built-in methods are registered by importing :mod:`snnconv.methods`,
which this module does by name the first time the registry is read (as a plugin system loads its plugins),
so every reader sees them without importing the methods itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConversionMethod", "MethodError", "ensure_registered", "find_method", "get_method", "method_names",
           "register", "registered", "unregister"]


class MethodError(ValueError):
    """An unknown method name, or a registration that clashes with another."""


def _no_checks(config: Any) -> None:
    return None


@dataclass(frozen=True)
class ConversionMethod:
    """One ANN -> SNN conversion method, as every part of the sweep sees it.

    The callables take the whole trial config (:class:`snnconv.config.TrialConfig`); the method's own
    settings are ``getattr(config, name)``, an instance of ``settings``.
    """

    #: the name in configs, sweep files, MLflow params and reports (lower case, no dots)
    name: str
    #: what the reports call it, e.g. "RNL + RIL"
    title: str
    #: the dataclass of the method's settings: the trial config's section ``config.<name>``
    settings: type
    #: ``run(config, on_progress, device) -> TrialResult``: stage 1 (through the cache), the method's own
    #: stage 2, conversion, simulation on validation and test, the operating point and the metrics
    run: Callable[..., Any]
    #: ``stage1_activation(config) -> {"kind": ..., ...}``: the keyword arguments of
    #: ``snnconv.layers.activation_factory`` stage 1 trains with; also part of the stage-1 cache key
    stage1_activation: Callable[[Any], dict[str, Any]]
    #: ``params(config) -> {name: value}``: the MLflow params of a trial beyond the common ones (method,
    #: model, dataset, seed, stage-1 recipe)
    params: Callable[[Any], dict[str, Any]]
    #: the names ``params`` returns (the columns a sweep's table always has)
    param_names: tuple[str, ...]
    #: checks across fields of the whole config beyond each field's own choices and bounds (which the
    #: settings dataclass declares); raise ``snnconv.config.ConfigError``
    validate: Callable[[Any], None] = _no_checks
    #: the search space a sweep uses for this method when its sweep file gives none:
    #: ``{dotted config key: entry}`` as in a sweep file's ``space``
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the SNN the logged model becomes: "if" (rate-coded IF neurons, ``t_op`` in time steps) or "pascal"
    snn: str = "if"
    #: the unit of the method's latency ``t_op`` (a trial param and the fronts' axis label)
    latency_unit: str = "IF time steps"
    #: the (validation, test) acc(t) curves of the IF network, metric names stepped by t; None: no curve
    step_curves: tuple[str, str] | None = ("val_snn_acc_t", "snn_acc_t")
    #: what Ω is measured on, for the reports
    omega_meaning: str = "Ω on the normalised activations"
    #: matplotlib colour and marker of the method's points
    colour: str = "tab:gray"
    marker: str = "o"
    #: ``setting_label(row) -> text``: what distinguishes a run in the reports (row: a run's params, as
    #: a mapping); None: the run's name
    setting_label: Callable[[Mapping[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier() or self.name != self.name.lower():
            raise MethodError(f"a method's name must be a lower-case identifier, got {self.name!r}")
        if self.snn not in ("if", "pascal"):
            raise MethodError(f"method {self.name!r}: snn must be 'if' or 'pascal', got {self.snn!r}")


#: name -> method, in registration order
_REGISTRY: dict[str, ConversionMethod] = {}
#: the package whose import registers the built-in methods
BUILT_IN_PACKAGE = "snnconv.methods"


def _methods() -> dict[str, ConversionMethod]:
    """The registry, with the built-in methods in it (importing :data:`BUILT_IN_PACKAGE` once registers them;
    later calls find it in ``sys.modules``)."""
    importlib.import_module(BUILT_IN_PACKAGE)
    return _REGISTRY


def register(method: ConversionMethod, *, replace: bool = False) -> ConversionMethod:
    """Add ``method`` to the registry and return it. A second method under a registered name raises
    :class:`MethodError` unless ``replace``; registering the same object again does nothing."""
    existing = _methods().get(method.name)
    if existing is not None and existing is not method and not replace:
        raise MethodError(f"a method named {method.name!r} is already registered ({existing.title})")
    _REGISTRY[method.name] = method
    return method


def ensure_registered(methods: tuple[ConversionMethod, ...] | list[ConversionMethod]) -> None:
    """Register each of ``methods`` whose name this process does not know yet. A sweep's Ray workers call it
    with the driver's methods, so a method registered only in the driver (a plugin, a test's toy) runs there too."""
    known = _methods()
    for method in methods:
        if method.name not in known:
            register(method)


def unregister(name: str) -> None:
    """Remove a method (for tests that register one of their own)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order (the built-ins: rnl, qcfs, datanorm)."""
    return tuple(_methods())


def registered() -> tuple[ConversionMethod, ...]:
    """The registered methods, in registration order."""
    return tuple(_methods().values())


def find_method(name: object) -> ConversionMethod | None:
    """The registered method ``name``, or None (a run logged by a method this process does not know)."""
    return _methods().get(name) if isinstance(name, str) else None


def get_method(name: str) -> ConversionMethod:
    """The registered method ``name``; :class:`MethodError` naming the known ones otherwise."""
    methods = _methods()
    try:
        return methods[name]
    except KeyError:
        raise MethodError(f"unknown method {name!r}; known: {', '.join(methods) or '(none registered)'}") from None
