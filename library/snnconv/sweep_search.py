"""What a sweep's Ray Tune run searches, and how (imports ray and optuna lazily): the param space
(:func:`build_param_space`), the search algorithm (random, grid, or Optuna's multi-objective NSGA-II) and the
scheduler (none, or one ASHA per method) (:func:`search_and_scheduler`). Tune pickles the last two to save a
sweep for ``--resume``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .config import activation_names
from .sweep_spec import LOG10_SUFFIX, OBJECTIVES, SweepSpec, method_base, selection_metric
from .sweep_trial import PROGRESS

if TYPE_CHECKING:  # pragma: no cover
    from ray.tune.search import SearchAlgorithm, Searcher


def build_param_space(spec: SweepSpec, methods: list[str]) -> dict[str, Any]:
    """The Ray Tune param space: ``method`` plus every method's entries (flat, dotted keys)."""
    from ray import tune

    base = method_base(spec, methods[0])
    grid = spec.search == "grid"
    space: dict[str, Any] = {}
    if len(methods) > 1:
        space["method"] = tune.choice(methods) if spec.search == "optuna" else tune.grid_search(methods)
    else:
        space["method"] = methods[0]
    for method in methods:
        for key, entry in (spec.space.get(method) or {}).items():
            kind = entry["type"]
            if grid and kind == "choice" and "grid" not in entry:
                space[key] = tune.grid_search(list(entry["values"]))
            elif grid:
                space[key] = tune.grid_search(list(entry["grid"]))
            elif kind == "choice":
                space[key] = tune.choice(list(entry["values"]))
            elif kind == "uniform":
                space[key] = tune.uniform(entry["low"], entry["high"])
            elif kind == "loguniform" and entry.get("zero_fraction"):
                low, high = math.log10(entry["low"]), math.log10(entry["high"])
                fraction = float(entry["zero_fraction"])
                space[key + LOG10_SUFFIX] = tune.uniform(low - (high - low) * fraction / (1 - fraction), high)
            elif kind == "loguniform":
                space[key] = tune.loguniform(entry["low"], entry["high"])
            elif kind == "per_layer":
                for index in range(len(activation_names(base.model))):
                    space[f"{key}[{index}]"] = tune.choice(list(entry["values"]))
            elif kind == "sorted_uniform":
                for index in range(int(entry["count"])):
                    space[f"{key}[{index}]"] = tune.uniform(entry["low"], entry["high"])
    return space


def search_and_scheduler(spec: SweepSpec, total: int, optuna_storage: Any = None):
    """The Tune search algorithm (random/grid or Optuna NSGA-II) and scheduler (ASHA or none).

    Optuna maximises the operating-point accuracy of ``spec.select_on`` and minimises the objective's
    metric; ``optuna_storage`` (an Optuna storage, default in memory) holds its study."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # the basic generator limits concurrency itself (TuneConfig's limit applies to Searchers only)
    search_alg: SearchAlgorithm | Searcher = BasicVariantGenerator(random_state=spec.seed,
                                                                   max_concurrent=spec.max_concurrent)
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        from .optuna_sampler import PicklableNSGAIISampler

        class FinalResultsOnly(OptunaSearch):
            """Tells Optuna a trial's values only when it finished; a trial stopped early (ASHA) is
            PRUNED and one without finite values FAILED, never a NaN Optuna cannot use."""

            def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
                if result is not None and result.get("stage") != "done":
                    result = None
                if result is not None and not all(math.isfinite(result.get(m, math.nan)) for m in self.metric):
                    result, error = None, True
                super().on_trial_complete(trial_id, result, error)

        # NSGA-II that pickles with any Optuna release (5.1's holds a lock; Tune pickles its searcher)
        sampler = PicklableNSGAIISampler(population_size=max(4, min(50, total // 2)), seed=spec.seed)
        search_alg = FinalResultsOnly(metric=[selection_metric(spec.select_on), OBJECTIVES[spec.objective]],
                                      mode=["max", "min"], sampler=sampler, seed=spec.seed, storage=optuna_storage)
    scheduler = None
    if spec.scheduler == "asha":
        from ray.tune.schedulers import FIFOScheduler

        class ASHAPerMethod(FIFOScheduler):
            """One ASHA per method: a trial is compared only with trials of its own method (rnl's Rate Norm
            ANN and qcfs's QCFS ANN are different networks), so each method keeps at least one trial that
            runs to its result (the first trial to reach a rung always goes on). Time is the fraction of
            the trial's scheduled stage done; a trial reports the end of that stage only with its result,
            so max_t never stops it before the result."""

            def __init__(self, methods: list[str]) -> None:
                super().__init__()
                # time is a fraction here: Ray annotates grace_period and max_t as int, but ASHA only
                # compares them and takes their ratio, so floats work
                self.by_method = {
                    method: ASHAScheduler(time_attr=PROGRESS, metric="val_acc", mode="max", reduction_factor=2,
                                          grace_period=spec.grace_fraction, max_t=1.0)  # type: ignore[arg-type]
                    for method in methods}

            def _of(self, trial):
                return self.by_method[trial.config["method"]]

            def set_search_properties(self, metric, mode, **more) -> bool:
                return all([asha.set_search_properties(metric, mode, **more) for asha in self.by_method.values()])

            def on_trial_add(self, tune_controller, trial) -> None:
                self._of(trial).on_trial_add(tune_controller, trial)

            def on_trial_result(self, tune_controller, trial, result: dict) -> str:
                return self._of(trial).on_trial_result(tune_controller, trial, result)

            def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
                self._of(trial).on_trial_complete(tune_controller, trial, result)

            def on_trial_error(self, tune_controller, trial) -> None:
                self._of(trial).on_trial_error(tune_controller, trial)

            def on_trial_remove(self, tune_controller, trial) -> None:
                self._of(trial).on_trial_remove(tune_controller, trial)

            def debug_string(self) -> str:
                return "; ".join(f"{method}: {asha.debug_string()}" for method, asha in self.by_method.items())

        scheduler = ASHAPerMethod(list(spec.methods))
    return search_alg, scheduler
