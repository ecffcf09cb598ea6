"""Ray Tune glue: a sweep of conversion trials, tracked in MLflow (imports ray lazily).

A sweep is described by a :class:`SweepSpec` (a YAML preset in ``configs/``); its schema, loading,
validation and search-space entries live in :mod:`snnconv.sweep_spec` (no Ray) and are re-exported
here. Each Ray Tune trial calls :func:`snnconv.pipeline.run_trial` and logs to its own nested MLflow
run; stage 1 is shared through the on-disk cache (one training per stage-1 key, guarded by a file lock).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paired, repeats, tracking, trial_record
from .cache_dir import ENV_VAR, default_cache_dir, node_cache_dir
from .config import ConfigError, activation_names, apply_overrides, from_dict
from .fixed_latency import PUBLISHED_FILE
from .sweep_spec import (
    LOG10_SUFFIX,
    OBJECTIVES,
    SCHEDULERS,
    SEARCHES,
    SELECT_ON,
    SPACE_TYPES,
    SweepSpec,
    count_trials,
    decode_params,
    drawable_values,
    load_spec,
    method_base,
    resolve_paths,
    selection_metric,
    trial_params,
    validate_spec,
)
from .tracking_retry import DEFAULT_RETRY_S, TrackingUnavailable

__all__ = [
    # the sweep file (snnconv.sweep_spec)
    "OBJECTIVES", "SCHEDULERS", "SEARCHES", "SELECT_ON", "SPACE_TYPES", "SweepSpec", "count_trials", "decode_params",
    "load_spec", "method_base", "resolve_paths", "selection_metric", "trial_params", "validate_spec",
    # running it with Ray Tune
    "FRONT_TAGS", "EarlierFailure", "SweepOptions", "SweepOutcome", "build_param_space", "check_resources",
    "final_report", "finish_sweep", "main", "print_summary", "run_sweep",
]

#: the keys every tune.report carries (Tune checks searcher / scheduler metrics on each result);
#: ``val_acc`` is what ASHA compares: the validation accuracy during stage 2 / the fine-tune
REPORT_KEYS = ("val_acc", "val_acc_op", "acc_op", "t_op", "energy_op_mj", "omega")
#: why choosing on the test split is refused by default (printed when it is asked for)
TEST_SELECTION_WARNING = (
    "warning: --select-on test chooses the search's trials and the Pareto fronts on the test split; the "
    "test accuracies of the chosen points are then optimistically biased (the test set took part in the "
    "choice) and no longer estimate how they generalise. Use it only to reproduce earlier results.")
STATE_FILE = "snnconv_sweep.json"
#: progress stages reported to Tune (and so to ASHA); stage-1 epochs only go to MLflow
SCHEDULED_STAGES = ("stage2", "finetune")
#: ASHA's time: the fraction (0-1) of the trial's scheduled stage done; 1 only in the final report
PROGRESS = "stage_progress"
#: in a trial's final report: 1 when its result could not be logged and waits in its checkpoint
WAITING = "result_waiting"


# ---------------------------------------------------------------------------------------------
# the Ray Tune param space


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



# ---------------------------------------------------------------------------------------------
# the trainable (runs in a Ray worker)


class EarlierFailure(RuntimeError):
    """The trial's own code failed in an earlier attempt (its FAILED run in MLflow says why); a retry
    would fail the same way, so it is not run again."""


def final_report(metrics: Mapping[str, float]) -> dict[str, Any]:
    """The last ``tune.report`` of a finished trial, from its MLflow metrics (NaN where absent)."""
    values = {key: float(metrics.get(key, math.nan)) for key in REPORT_KEYS if key != "val_acc"}
    values["val_acc"] = float(metrics.get("val_ann_acc", math.nan))  # the final model's (ASHA's metric)
    for key in ("converged", "ann_acc", "val_ann_acc", "snn_acc", "trial_seconds", "stage1_cache_hit",
                "val_acc_op_low", "val_acc_op_high", "acc_op_low", "acc_op_high"):
        values[key] = float(metrics.get(key, math.nan))
    return {**values, "stage": "done", PROGRESS: 1.0}


def trial_config(params: Mapping[str, Any], spec: SweepSpec, bases: Mapping[str, dict[str, Any]]):
    """The validated TrialConfig of Tune's sampled ``params`` (the method's base plus the decoded overrides)."""
    return apply_overrides(from_dict(bases[params["method"]]), decode_params(params, spec))


def _cache_dir_on_this_node(given: str | None) -> str:
    """The stage-1 cache folder a Ray worker uses: the one the sweep file gave, else this node's own default
    ($SNNCONV_CACHE as `ray start` saw it on a cluster); absolute. Trials and the stage-1 tasks both use it."""
    return str(Path(given or default_cache_dir()).resolve())


def _trainable(params: dict[str, Any], *, spec: SweepSpec, bases: dict[str, dict[str, Any]],
               tracker: tracking.SweepTracker, threads: int) -> None:
    import ray
    import torch
    from ray import tune

    from .pipeline import run_trial

    torch.set_num_threads(threads)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    config = trial_config(params, spec, bases)
    config.cache_dir = _cache_dir_on_this_node(config.cache_dir)
    if not spec.share_stage1:
        config.cache_dir = str(Path(config.cache_dir) / f"trial-{trial_id}")
    node = {"ray_node_id": ray.get_runtime_context().get_node_id(), "host": os.uname().nodename}
    if spec.repeats > 1:  # the configuration's run, with one nested run per seed
        _repeated_trial(config, spec.repeats, tracker, trial_id, context.get_trial_name(), node)
        return
    clock = time.perf_counter()
    start = tracking.start_trial(tracker, trial_id, context.get_trial_name(), trial_params(config), node)
    if _earlier_outcome(start, config.method):
        return
    run_id = start.run_id
    tracking_seconds = time.perf_counter() - clock
    last = {key: math.nan for key in REPORT_KEYS}
    iteration = 0
    progress = tracking.ProgressLog(tracker, run_id)  # written once per stage

    def on_progress(stage: str, metrics: Mapping[str, float]) -> None:
        nonlocal iteration, tracking_seconds
        iteration += 1
        clock = time.perf_counter()
        progress.add(stage, {f"{stage}_{k}": v for k, v in metrics.items()}, iteration)
        tracking_seconds += time.perf_counter() - clock
        if stage in SCHEDULED_STAGES:  # what ASHA compares: stage-2 / fine-tune validation, not stage 1
            if spec.scheduler != "none":  # the scheduler may stop the trial at this report: keep what it ran
                clock = time.perf_counter()
                progress.flush()
                tracking_seconds += time.perf_counter() - clock
            if "val_acc" in metrics:
                last["val_acc"] = float(metrics["val_acc"])
            fraction = float(metrics.get("progress", 0.0))
            if fraction < 1.0:  # the stage's end is reported with the result, never where ASHA's max_t stops it
                tune.report({**last, "stage": stage, PROGRESS: fraction})

    try:
        # a trial Ray gave a GPU that torch cannot see fails here, with one clear error, not on the CPU
        result = run_trial(config, on_progress=on_progress, gpus_assigned=len(ray.get_gpu_ids()))
    except Exception as error:  # recorded, then re-raised so that Tune marks the trial ERROR
        text = f"{type(error).__name__}: {error}"
        try:
            progress.flush()  # the epochs it did run
        finally:
            tracking.end_trial(tracker, run_id, "FAILED", text + "\n" + traceback.format_exc()[-3000:])
        raise
    report = {**final_report(result.metrics()), "method": result.method, "mlflow_run_id": run_id,
              "warnings": ", ".join(result.warnings)}
    with tempfile.TemporaryDirectory(prefix="snnconv-record-") as folder:
        # the result on this node's disk first, then to MLflow from there (retried up to tracker.retry_s)
        clock = time.perf_counter()
        progress.flush()
        record = trial_record.save_trial_record(
            result, {"stage1_key": result.stage1_key, "levels": result.levels if result.levels else ""},
            Path(folder), tracker, run_id, trial_id, progress.unwritten())
        try:
            trial_record.log_trial_record(record, tracker.retry_s)
            tracking_seconds += time.perf_counter() - clock
            tracking.end_trial(tracker, run_id, "FINISHED",
                               metrics=[tracking.metric("tracking_seconds", tracking_seconds, iteration)])
        except TrackingUnavailable as error:
            # the trial is done: its record goes to the sweep's storage as its Tune checkpoint, and the driver
            # (or --resume) logs it once the server answers again
            print(f"trial {trial_id}: its result waits to be logged ({error})", file=sys.stderr, flush=True)
            tune.report({**report, "tracking_seconds": time.perf_counter() - clock + tracking_seconds,
                         WAITING: 1.0}, checkpoint=tune.Checkpoint.from_directory(str(record)))
            return
    tune.report({**report, "tracking_seconds": tracking_seconds})


def _earlier_outcome(start: tracking.TrialStart, method: str) -> bool:
    """Whether MLflow already holds the trial's outcome: a FINISHED run is reported to Tune again and not rerun
    (True; e.g. Tune's state was older), a run whose own code failed raises :class:`EarlierFailure`."""
    from ray import tune

    if start.state == "finished":
        tune.report({**final_report(start.metrics), "method": method, "mlflow_run_id": start.run_id,
                     "from_mlflow": 1.0})
        return True
    if start.state == "failed":
        raise EarlierFailure(f"failed in an earlier attempt (MLflow run {start.run_id}): "
                             f"{start.error.splitlines()[0] if start.error else 'see its error tag'}")
    return False


def _repeated_trial(config: Any, count: int, tracker: tracking.SweepTracker, trial_id: str, name: str,
                    node: Mapping[str, str]) -> None:
    """One drawn configuration run with ``count`` seeds (``snnconv.repeats``): its run under the sweep gets the
    mean and spread of its seed runs, nested under it (each opened, run and logged like a trial of its own, so
    a retry or ``--resume`` finds the seeds already FINISHED and does not run them again); Tune (and Optuna)
    are told the mean. A seed whose result cannot be logged fails the configuration (Tune retries it)."""
    import ray
    from ray import tune

    from .pipeline import run_trial

    start = tracking.start_configuration(tracker, trial_id, name, {**trial_params(config), "repeats": count}, node)
    if _earlier_outcome(start, config.method):
        return
    seeds = dataclasses.replace(tracker, parent_run_id=start.run_id)  # the seed runs are this run's children
    seed_runs = []
    try:
        for index, seeded in enumerate(repeats.seed_configs(config, count)):
            run = tracking.start_trial(seeds, f"{trial_id}-seed{seeded.seed}", f"{name}-seed{seeded.seed}",
                                       trial_params(seeded), {**node, "snnconv.seed_of": trial_id})
            if run.state != "finished":
                progress = tracking.ProgressLog(seeds, run.run_id)

                steps = iter(range(1, 1_000_000))  # the progress metrics' step: one per report

                def on_progress(stage: str, metrics: Mapping[str, float], index: int = index,
                                progress: tracking.ProgressLog = progress, steps: Any = steps) -> None:
                    progress.add(stage, {f"{stage}_{k}": v for k, v in metrics.items()}, next(steps))
                    if stage in SCHEDULED_STAGES and float(metrics.get("progress", 0.0)) < 1.0:
                        tune.report({**dict.fromkeys(REPORT_KEYS, math.nan),
                                     "val_acc": float(metrics.get("val_acc", math.nan)), "stage": stage,
                                     PROGRESS: (index + float(metrics.get("progress", 0.0))) / count})

                try:
                    # a seed given a GPU that torch cannot see fails here, with one clear error, not on the CPU
                    result = run_trial(seeded, on_progress=on_progress, gpus_assigned=len(ray.get_gpu_ids()))
                except Exception as error:  # the seed's own code failed: recorded on its run, not retried
                    progress.flush()
                    tracking.end_trial(seeds, run.run_id, "FAILED", f"{type(error).__name__}: {error}\n"
                                       + traceback.format_exc()[-3000:])
                    raise
                progress.flush()
                with tempfile.TemporaryDirectory(prefix="snnconv-record-") as folder:
                    record = trial_record.save_trial_record(
                        result, {"stage1_key": result.stage1_key, "levels": result.levels or ""}, Path(folder),
                        seeds, run.run_id, f"{trial_id}-seed{seeded.seed}", progress.unwritten())
                    trial_record.log_trial_record(record, tracker.retry_s)
                tracking.end_trial(seeds, run.run_id, "FINISHED")
            seed_runs.append(run.run_id)
        metrics, curves = zip(*(tracking.run_metrics(tracker.client, run_id, repeats.CURVES) for run_id in seed_runs))
        summary = repeats.summarise(metrics)
    except TrackingUnavailable:  # left RUNNING: Tune retries the configuration, which finds its run and its seeds
        raise
    except Exception as error:
        tracking.end_trial(tracker, start.run_id, "FAILED", f"{type(error).__name__}: {error}\n"
                           + traceback.format_exc()[-3000:])
        raise
    stepped = [tracking.metric(key, value, step) for key in repeats.CURVES if all(c.get(key) for c in curves)
               for step, value in repeats.mean_curve([c[key] for c in curves]).items()]
    tracking.end_trial(tracker, start.run_id, "FINISHED",
                       metrics=[tracking.metric(key, value) for key, value in summary.items()] + stepped)
    tune.report({**final_report(summary), "method": config.method, "mlflow_run_id": start.run_id,
                 "repeats": float(count)})


# ---------------------------------------------------------------------------------------------
# running a sweep


@dataclass
class SweepOptions:
    """Command-line settings that are not part of the preset."""

    address: str | None = None
    tracking_uri: str | None = None
    storage_path: str | None = None
    resume: str | None = None
    num_cpus: int | None = None
    verbose: int = 1
    #: joining a cluster (``address``): how long to wait for it to scale up to one trial's resources (s)
    pending_timeout: float = 600.0
    #: how long one tracking operation may keep failing transiently before a trial keeps its result for
    #: later (s; ``tracking_retry.py``)
    tracking_retry_s: float = DEFAULT_RETRY_S


@dataclass
class SweepOutcome:
    """What a finished sweep left behind."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    storage_dir: Path
    table: Any  # pandas.DataFrame, one row per trial run
    report_dir: Path | None = None
    #: wall seconds of the sweep's phases: "start" (store, parent run, Ray), "stage1" (the shared stage-1
    #: networks, trained before the trials), "tune" (the trials), "finish"; and "ray", the part of "start"
    #: spent starting or joining Ray (0 when it was already up)
    timings: dict[str, float] = field(default_factory=dict)
    #: what each stage-1 task trained before the trials (:func:`train_stage1_first`): method, key,
    #: cache_hit, val_acc, seconds, host, device
    stage1: list[dict[str, Any]] = field(default_factory=list)
    #: the split the fronts were chosen on: "val" or "test"
    select_on: str = "val"
    #: the parent run's end: FINISHED (every trial has an outcome) or KILLED (interrupted)
    status: str = "FINISHED"
    #: how many trials the sweep runs in all (``count_trials``); 0 = unknown
    total: int = 0
    #: trials that finished but whose results wait to be logged (their records, in the storage folder)
    waiting: int = 0
    #: one sentence per tie-tagged front: how many settings the data cannot tell apart (``paired.tie_summary``)
    ties: list[str] = field(default_factory=list)


def _trial_config_params(trial, spec: SweepSpec, bases: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The MLflow params of a Tune trial, computed in the driver (for a run the trial never opened)."""
    try:
        return trial_params(trial_config(trial.config, spec, bases))
    except (ConfigError, KeyError) as error:
        return {"method": trial.config.get("method", "?"), "config_error": str(error)}


def _error_text(trial) -> tuple[str, str]:
    """(kind, text) of a Tune trial's error: kind "worker" when its process died, else "exception"."""
    error_file = getattr(trial, "error_file", None)  # Tune's local record, written before the callbacks run
    if error_file and Path(error_file).is_file():
        text = Path(error_file).read_text().split("Failure # ")[-1].split("\n", 1)[-1].strip()
    else:
        text = str(trial.get_error() or "the trial failed (Tune recorded no error)")
    died = any(mark in text for mark in ("ActorDiedError", "died unexpectedly", "WorkerCrashedError", "exit code",
                                         "SIGKILL", "OutOfMemoryError"))
    if died:
        text = f"the trial's worker process died (after {trial.num_failures} attempt(s)): {text}"
    # like a dead worker, a trial that could not open its run (the tracking server away) may run again
    return ("worker" if died or "TrackingUnavailable" in text else "exception"), text


def _sweep_callback(total: int, spec: SweepSpec, bases: Mapping[str, dict[str, Any]],
                    tracker: tracking.SweepTracker):
    """A Tune callback: one line per finished, stopped or failed trial, and a FAILED MLflow run with
    an ``error`` tag for every trial Tune gives up on (however it failed, even before it logged)."""
    from ray import tune

    from .pareto import interval_text

    class SweepProgress(tune.Callback):
        def __init__(self) -> None:
            self.done = 0

        def setup(self, **info):
            # a resumed sweep counts the trials MLflow already holds an outcome for
            runs = tracking.search_children(tracker.client, tracker.experiment_id, tracker.parent_run_id,
                                            "attributes.status != 'RUNNING'")  # (MLflow has no status IN)
            self.done = len({r.data.tags.get("trial_id") for r in runs if r.info.status in ("FINISHED", "FAILED")})

        def _record(self, what: str, write: Callable[[], Any]) -> None:
            """A write of the driver's; an unreachable server is a warning (the end of the sweep closes the run)."""
            try:
                write()
            except TrackingUnavailable as error:
                print(f"warning: could not {what}: {error}", file=sys.stderr, flush=True)

        def _prefix(self, trial) -> str:
            return f"[{self.done}/{total}] {trial.trial_id} {trial.config.get('method', '?'):4s}"

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            if r.get("from_mlflow"):
                print(f"[{self.done}/{total}] {trial.trial_id} already finished in MLflow "
                      f"(run {r.get('mlflow_run_id')}): not run again", flush=True)
                return
            self.done += 1
            if r.get("stage") != "done":  # stopped by the scheduler: what it had, not a result
                progress, val_acc = float(r.get(PROGRESS, 0.0)), float(r.get("val_acc", math.nan))
                self._record("record the pruned trial", lambda: tracking.record_pruned(
                    tracker, trial.trial_id, spec.scheduler, r.get("stage", "start-up"), progress, val_acc))
                print(f"{self._prefix(trial)} stopped by {spec.scheduler} at {progress:.0%} of "
                      f"{r.get('stage', 'start-up')}: val_acc {val_acc:6.2f}%  (run KILLED, tag pruned)", flush=True)
                return
            unit = "T_eff" if trial.config.get("method") == "qcfs" else "IF steps"
            settled = "" if r.get("converged", 1.0) else "  (not converged: raise T_max)"
            if r.get("warnings"):
                settled += f"  warnings: {r['warnings']} (the run's warning.* tags say more)"
            if r.get(WAITING):
                settled += "  (its result waits to be logged: the tracking server did not answer)"
            print(f"{self._prefix(trial)} done   "
                  f"val {r.get('val_acc_op', math.nan):6.2f}% {interval_text(r, 'val_acc_op')}  "
                  f"test {r.get('acc_op', math.nan):6.2f}% {interval_text(r, 'acc_op')}  "
                  f"at t_op {r.get('t_op', math.nan):6.2f} {unit:8s}  omega {r.get('omega', math.nan):7.3f}  "
                  f"{r.get('trial_seconds', math.nan):5.1f}s{settled}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            kind, text = _error_text(trial)
            self._record("record the trial's failure", lambda: tracking.record_trial_failure(
                tracker, trial.trial_id, _trial_name(trial), _trial_config_params(trial, spec, bases), text, kind))
            first = text.splitlines()[0][:160] if text else ""
            print(f"{self._prefix(trial)} FAILED: {first} (recorded in MLflow; the sweep goes on)", flush=True)

    return SweepProgress()


# ---------------------------------------------------------------------------------------------
# stage 1 first: each stage-1 network the trials share is trained once, before them


def stage1_plan(spec: SweepSpec, bases: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """method -> its base trial config, for each method whose stage-1 network no sampled value changes
    (every value the search can draw gives the base's stage-1 key): the sweep trains these once, before the
    trials. A method whose space changes its key (a sampled ``stage1.lr``, say) is left out: its trials train
    their own. Empty when the sweep does not share stage 1 (``share_stage1: false``)."""
    from .cache_key import stage1_key

    if not spec.share_stage1:
        return {}
    plan = {}
    for method, base in bases.items():
        config = from_dict(base)
        key = stage1_key(config)
        if all(stage1_key(apply_overrides(config, {dotted: value})) == key
               for dotted, entry in (spec.space.get(method) or {}).items()
               for value in drawable_values(entry, config.model, spec.search)):
            plan[method] = base
            for offset in range(1, spec.repeats):  # --repeats: each seed has its own stage-1 network
                plan[f"{method}-seed{base['seed'] + offset}"] = {**base, "seed": base["seed"] + offset}
    return plan


def _train_stage1(base: dict[str, Any], method: str, tracker: tracking.SweepTracker, threads: int) -> dict[str, Any]:
    """A Ray task: train (or load from the cache) the stage-1 network of ``base``; each epoch's validation
    accuracy, loss and elapsed seconds go to the sweep's parent run as ``stage1_<method>_*`` (step = epoch)."""
    import ray
    import torch

    from .pipeline import stage1
    from .train import check_device

    torch.set_num_threads(threads)
    config = from_dict(base)
    config.cache_dir = _cache_dir_on_this_node(config.cache_dir)  # where the trials will look for it
    device = check_device(config.device, len(ray.get_gpu_ids()))
    clock = time.perf_counter()
    progress = tracking.ProgressLog(tracker, tracker.parent_run_id)  # one attempt per epoch: never holds training

    def on_epoch(stats) -> None:
        progress.add("stage1", {
            f"stage1_{method}_val_acc": stats.val_acc, f"stage1_{method}_train_loss": stats.train_loss,
            f"stage1_{method}_seconds": time.perf_counter() - clock}, stats.epoch)
        progress.flush()

    result = stage1(config, on_epoch=on_epoch, device=device)
    return {"method": method, "key": result.key, "cache_hit": result.cache_hit, "val_acc": result.val_acc,
            "seconds": time.perf_counter() - clock, "host": os.uname().nodename, "device": str(device)}


def train_stage1_first(spec: SweepSpec, plan: Mapping[str, dict[str, Any]], tracker: tracking.SweepTracker,
                       poll_s: float = 10.0) -> list[dict[str, Any]]:
    """Train the planned stage-1 networks (:func:`stage1_plan`) as Ray tasks, in parallel, each with the
    trial's CPUs and, when trials use GPUs, a whole GPU; print their progress (epoch, validation accuracy,
    time left) every ``poll_s`` seconds from what they log to MLflow. Returns each task's facts (method,
    key, cache_hit, val_acc, seconds, host, device); a task that failed is reported and left to the
    trials, which then train (and fail) on their own."""
    import ray

    if not plan:
        return []
    task = ray.remote(_train_stage1)
    resources = {"num_cpus": spec.cpus_per_trial, "num_gpus": 1 if spec.gpus_per_trial > 0 else 0,
                 "max_retries": spec.max_failures}
    threads = max(1, int(spec.cpus_per_trial))
    refs = {task.options(**resources).remote(base, method, tracker, threads): method for method, base in plan.items()}
    epochs = {method: from_dict(base).stage1.epochs for method, base in plan.items()}
    print(f"stage 1 first: {len(refs)} network(s) ({', '.join(plan)}) before any trial, in parallel", flush=True)
    facts, shown, pending = [], dict.fromkeys(plan, 0), list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
        for method, line in _stage1_progress(tracker, epochs, shown):
            print(f"stage 1 {method}: {line}", flush=True)
        for ref in done:
            method = refs[ref]
            try:
                fact = ray.get(ref)
            except Exception as error:  # noqa: BLE001 - any failure is the trials' to meet and record
                print(f"warning: stage 1 of {method} failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                      "its trials train it themselves", file=sys.stderr, flush=True)
                continue
            facts.append(fact)
            how = "loaded from the cache" if fact["cache_hit"] else f"trained in {fact['seconds']:.0f} s"
            print(f"stage 1 {method}: {how} on {fact['host']} ({fact['device']}), validation accuracy "
                  f"{fact['val_acc']:.2f}% (key {fact['key']})", flush=True)
    return facts


def _stage1_progress(tracker: tracking.SweepTracker, epochs: Mapping[str, int],
                     shown: dict[str, int]) -> list[tuple[str, str]]:
    """(method, line) for each planned stage 1 with epochs logged since the last call: the latest epoch,
    its validation accuracy and the time left at the pace so far."""
    lines = []
    once = dataclasses.replace(tracker, retry_s=0.0)  # progress only: no waiting on a busy server
    for method, total in epochs.items():
        try:
            history = tracking.metric_history(once, tracker.parent_run_id, f"stage1_{method}_val_acc")
            seconds = tracking.metric_history(once, tracker.parent_run_id, f"stage1_{method}_seconds")
        except TrackingUnavailable:
            continue
        if not history or history[-1][0] <= shown[method]:
            continue
        epoch, val_acc = history[-1]
        shown[method] = epoch
        elapsed = seconds[-1][1] if seconds else math.nan
        left = elapsed / epoch * (total - epoch) if epoch else math.nan
        lines.append((method, f"epoch {epoch}/{total}, validation accuracy {val_acc:.2f}%, about {left:.0f} s left"))
    return lines


def _trial_name(trial) -> str:
    """``rnl_<trial id>``: readable in Tune's table and as the MLflow run name."""
    return f"{trial.config.get('method', 'trial')}_{trial.trial_id}"


def _state_path(storage_dir: Path) -> Path:
    return storage_dir / STATE_FILE


def _latest_sweep_dir(storage: Path, name: str | None) -> Path:
    candidates = sorted(storage.glob(f"*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
    if name:
        candidates = [p for p in candidates if p.parent.name.startswith((name, f"sweep-{name}-"))]
    if not candidates:
        raise ConfigError(f"--resume: no sweep to resume under {storage}" + (f" matching {name!r}" if name else ""))
    return candidates[-1].parent


def _search_and_scheduler(spec: SweepSpec, total: int, optuna_storage: Any = None):
    """The Tune search algorithm (random/grid or Optuna NSGA-II) and scheduler (ASHA or none).

    Optuna maximises the operating-point accuracy of ``spec.select_on`` and minimises the objective's
    metric; ``optuna_storage`` (an Optuna storage, default in memory) holds its study."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # the basic generator limits concurrency itself (TuneConfig's limit applies to Searchers only)
    search_alg = BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent)
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
                self.by_method = {method: ASHAScheduler(time_attr=PROGRESS, metric="val_acc", mode="max",
                                                        grace_period=spec.grace_fraction, max_t=1.0,
                                                        reduction_factor=2) for method in methods}

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


def check_resources(spec: SweepSpec, waiting_s: float, trials: int = 1) -> None:
    """Refuse a sweep whose trial asks for more CPUs or GPUs than the Ray cluster has, before any trial
    starts (Ray would otherwise keep it PENDING for ever). ``waiting_s`` > 0 (a cluster that may scale
    up, e.g. GPU workers at ``min_workers: 0``): warn, ask the autoscaler for the resources of
    ``min(trials, max_concurrent)`` trials (``ray.autoscaler.sdk.request_resources``), and wait up to
    ``waiting_s`` for a node that fits one trial to join. The request is withdrawn when the wait ends:
    from then on the trials' own demand keeps the cluster scaled."""
    from ray.autoscaler.sdk import request_resources

    deadline = time.monotonic() + waiting_s
    requested = False
    asked = {"GPU": spec.gpus_per_trial, "CPU": spec.cpus_per_trial}
    names = {"GPU": "GPU(s)", "CPU": "CPU(s)"}
    try:
        while True:
            if _wait_for_resources(spec, asked, names, deadline, waiting_s, requested):
                return
            if not requested:
                bundle = {key: amount for key, amount in asked.items() if amount > 0}
                request_resources(bundles=[bundle] * max(1, min(trials, spec.max_concurrent)))
                requested = True
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    finally:
        if requested:
            request_resources(bundles=[])


def _wait_for_resources(spec: SweepSpec, asked: Mapping[str, float], names: Mapping[str, str], deadline: float,
                        waiting_s: float, warned: bool) -> bool:
    """True when a live node fits one trial; otherwise False after warning once (unless ``warned``), or,
    past ``deadline``, the refusal (``ConfigError``)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(all(node.get(key, 0.0) >= amount for key, amount in asked.items()) for node in nodes):
        return True  # one trial fits on some node (a trial runs on one node)
    largest = {key: max((node.get(key, 0.0) for node in nodes), default=0.0) for key in asked}
    short = [f"{amount:g} {names[key]} per trial, and the Ray cluster has {largest[key]:g} on its largest node"
             for key, amount in asked.items() if amount > largest[key]]
    short = short or [f"{spec.gpus_per_trial:g} GPU(s) and {spec.cpus_per_trial:g} CPU(s) per trial, and no "
                      "Ray node has both"]
    if time.monotonic() >= deadline:
        waited = f" (waited {waiting_s:g} s for the cluster to scale up)" if waiting_s > 0 else ""
        raise ConfigError(f"cannot place a trial: it asks for {'; '.join(short)}{waited}; lower "
                          "--gpus-per-trial / --cpus-per-trial or add nodes")
    if not warned:
        print(f"warning: a trial asks for {'; '.join(short)}; asked the autoscaler for it and waiting up to "
              f"{waiting_s:g} s (--pending-timeout) for the cluster to scale up", file=sys.stderr, flush=True)
    return False


def trial_cache_dir(bases: Mapping[str, Mapping[str, Any]]) -> Callable[[], str]:
    """Where the trials keep stage 1, in words, as a function to call later: the folder the sweep file
    gave (``trial.cache_dir``), else the default as a Ray worker resolves it (``$SNNCONV_CACHE`` from
    the node's ``ray start``, else ``~/.cache/snnconv/stage1`` of the node's user), asked of the
    cluster by a zero-CPU task that runs meanwhile."""
    import ray

    given = sorted({str(base["cache_dir"]) for base in bases.values() if base.get("cache_dir")})
    if given:
        return lambda: ", ".join(given)
    probe = ray.remote(node_cache_dir).options(num_cpus=0).remote()

    def answer() -> str:
        try:
            folder, host = ray.get(probe, timeout=120)
        except ray.exceptions.GetTimeoutError:
            return f"each node's ${ENV_VAR}, else ~/.cache/snnconv/stage1 (no node answered within 120 s)"
        return f"{folder} (the default on node {host}: ${ENV_VAR} there, else ~/.cache/snnconv/stage1)"

    return answer


def _start_ray(options: SweepOptions) -> None:
    import ray

    if not ray.is_initialized():
        init_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                     "configure_logging": True, "logging_level": "WARNING"}
        if options.address:
            init_args["address"] = options.address
        elif options.num_cpus:
            init_args["num_cpus"] = options.num_cpus
        ray.init(**init_args)


def _stop_gracefully_on_sigterm() -> Callable[[], None]:
    """SIGTERM (``kill``, ``timeout``, a scheduler ending the job) stops the sweep like Ctrl-C: Tune's
    own graceful stop (it listens to SIGUSR1 while running), or KeyboardInterrupt outside it.
    Returns a function that puts the previous SIGTERM handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum, frame):
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler is installed: let it stop
            signal.raise_signal(signal.SIGUSR1)
        else:
            raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_sweep(spec: SweepSpec, options: SweepOptions | None = None) -> SweepOutcome:
    """Run (or resume) a sweep with Ray Tune; log to MLflow; write the Pareto fronts at the end.

    Before any trial: the tracking URI and the resources are checked (``ConfigError`` /
    ``tracking.TrackingError``). The parent run ends FINISHED when every trial has an outcome,
    KILLED when the sweep was interrupted (Ctrl-C, SIGTERM); ``--resume`` reopens it.
    """
    clock = time.perf_counter()
    from ray import tune

    options = options or SweepOptions()
    resolve_paths(spec)  # every trial finds the folders the driver was given, from its own working directory
    validate_spec(spec)
    tracking_uri = tracking.check_tracking_uri(options.tracking_uri, create=True)
    storage = Path(options.storage_path or "ray_results").expanduser().resolve()
    methods = list(spec.methods)
    bases = {}
    for method in methods:
        # folders are absolute (resolve_paths); no cache_dir given: each trial takes its node's default
        # ($SNNCONV_CACHE of the node, not of this driver's shell; see trial_cache_dir)
        base = method_base(spec, method).to_dict()
        base["seed"] = spec.seed
        bases[method] = base
    param_space = build_param_space(spec, methods)
    total = count_trials(spec, param_space)
    # side by side: the MLflow store (created or migrated) while Ray starts
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        store = pool.submit(tracking.prepare_store, tracking_uri)
        ray_clock = time.perf_counter()
        _start_ray(options)
        ray_seconds = time.perf_counter() - ray_clock
        check_resources(spec, options.pending_timeout if options.address else 0.0, total)
        store.result()
    cache_dir = trial_cache_dir(bases)  # asked now, answered while the parent run is made

    if options.resume is not None:
        storage_dir = _latest_sweep_dir(storage, options.resume or spec.name)
        state = json.loads(_state_path(storage_dir).read_text())
        tracker = tracking.SweepTracker(state["tracking_uri"], state["experiment_id"], state["parent_run_id"],
                                        options.tracking_retry_s)
        tracking.reopen_sweep(tracker)
        run_name = storage_dir.name
        logged, waiting = trial_record.log_waiting_records(storage_dir, tracker.retry_s)
        if logged or waiting:
            print(f"{logged} trial result(s) that waited were logged to MLflow"
                  + (f"; {len(waiting)} still wait" if waiting else ""), flush=True)
    else:
        run_name = f"sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        storage_dir = storage / run_name
        flat = _flatten({"sweep": {k: v for k, v in dataclasses.asdict(spec).items()
                                   if k not in ("trial", "space", "published")},
                         "trial": bases, "space": spec.space})
        tracker = tracking.start_sweep(tracking_uri, spec.experiment, run_name, flat,
                                       {"snnconv.preset": spec.name, "snnconv.storage": str(storage_dir),
                                        tracking.SELECT_ON_TAG: spec.select_on}, options.tracking_retry_s)
        if spec.published:  # the papers' figures, for the report's fixed-latency table
            tracker.client.log_dict(tracker.parent_run_id, {"published": spec.published}, PUBLISHED_FILE)
        storage_dir.mkdir(parents=True, exist_ok=True)
        _state_path(storage_dir).write_text(json.dumps(dataclasses.asdict(tracker), indent=2))

    if spec.select_on == "test":
        print(TEST_SELECTION_WARNING, file=sys.stderr, flush=True)
    seeds = f" x {spec.repeats} seeds each" if spec.repeats > 1 else ""
    print(f"sweep {run_name}: {total} trials{seeds} ({', '.join(methods)}), search {spec.search}, "
          f"scheduler {spec.scheduler}, {spec.max_concurrent} at a time, choosing on the {spec.select_on} split")
    print(f"tracking: {tracker.tracking_uri}  (parent run {tracker.parent_run_id})", flush=True)
    print(f"stage-1 cache of the trials: {cache_dir()}", flush=True)

    threads = max(1, int(spec.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, spec=spec, bases=bases, tracker=tracker, threads=threads),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    search_alg, scheduler = _search_and_scheduler(spec, total)
    # Ray's classic status table every 30 s (its newer console output prints a box per trial start and end)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's JSON and CSV result files, but not its TensorBoard logger (which warns at every NaN,
    # and intermediate reports carry NaN for the metrics only known at the end)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    reporter = tune.CLIReporter(
        metric_columns={"val_acc_op": "val_acc_op", "t_op": "t_op", "omega": "omega", "training_iteration": "iter"},
        parameter_columns={"method": "method"}, max_report_frequency=30, max_progress_rows=10,
        print_intermediate_tables=False, sort_by_metric=False,
    )
    restore_sigterm = _stop_gracefully_on_sigterm()
    status = "KILLED"  # until Tune says every trial has an outcome
    timings = {"start": time.perf_counter() - clock, "ray": ray_seconds}
    clock = time.perf_counter()
    stage1_facts: list[dict[str, Any]] = []
    try:
        # the shared stage-1 networks first, in parallel: no trial then waits on one holding its GPU share
        stage1_facts = train_stage1_first(spec, stage1_plan(spec, bases), tracker)
        timings["stage1"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if options.resume is not None and tune.Tuner.can_restore(str(storage_dir)):
            tuner = tune.Tuner.restore(str(storage_dir), trainable, resume_unfinished=True, resume_errored=False)
        else:
            samples = total if spec.search == "optuna" else (1 if spec.search == "grid" else spec.num_samples)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    search_alg=search_alg, scheduler=scheduler, num_samples=samples,
                    max_concurrent_trials=spec.max_concurrent if spec.search == "optuna" else None,
                    reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=run_name, storage_path=str(storage), verbose=options.verbose,
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
                    callbacks=[_sweep_callback(total, spec, bases, tracker), JsonLoggerCallback(),
                               CSVLoggerCallback()],
                    progress_reporter=reporter,
                ),
            )
        results = tuner.fit()
        if results.num_terminated + results.num_errors >= total:
            status = "FINISHED"
    finally:
        restore_sigterm()
        waiting = _close_runs(tracker, storage_dir, status, run_name)
    timings["tune"] = time.perf_counter() - clock
    clock = time.perf_counter()
    try:
        outcome = finish_sweep(tracker, storage_dir, spec.select_on)
        tracking.end_sweep(tracker, status)
    except TrackingUnavailable as error:
        raise ResultsWaiting(storage_dir, run_name, error) from None
    timings["finish"] = time.perf_counter() - clock
    outcome.timings = timings
    outcome.stage1 = stage1_facts
    outcome.status = status
    outcome.total = total
    outcome.waiting = len(waiting)
    return outcome


class ResultsWaiting(RuntimeError):
    """The sweep ended, but the tracking server did not answer: the finished trials' results that could not
    be logged wait in the storage folder (their records), and the fronts are not drawn."""

    def __init__(self, storage_dir: Path, run_name: str, error: Exception) -> None:
        waiting = len(trial_record.waiting_records(storage_dir))
        super().__init__(f"the tracking server did not answer ({error}); {waiting} trial result(s) wait to be "
                         f"logged in {storage_dir}: once it answers, --resume {run_name} logs them and draws the "
                         f"fronts (it runs no finished trial again)")


def _close_runs(tracker: tracking.SweepTracker, storage_dir: Path, status: str, run_name: str) -> list[str]:
    """After Tune: log the results that waited (the server may be back), mark the runs still RUNNING KILLED
    (but those whose results still wait), and the parent KILLED when the sweep was interrupted. Returns the
    run ids whose results still wait. An unreachable server raises :class:`ResultsWaiting`."""
    try:
        logged, waiting = trial_record.log_waiting_records(storage_dir, tracker.retry_s)
        if logged:
            print(f"{logged} trial result(s) that waited were logged to MLflow", flush=True)
        stopped = tracking.close_unfinished(tracker, "KILLED", "stopped early by the scheduler or an interrupt",
                                            keep=waiting)
        if stopped:
            print(f"{stopped} trial run(s) stopped before finishing were marked KILLED in MLflow")
        if status == "KILLED":
            tracking.end_sweep(tracker, "KILLED")
            print(f"sweep interrupted: its parent run is KILLED; continue it with --resume {run_name}",
                  file=sys.stderr, flush=True)
    except TrackingUnavailable as error:
        raise ResultsWaiting(storage_dir, run_name, error) from None
    return waiting


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty mappings stay values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def finish_sweep(tracker: tracking.SweepTracker, storage_dir: Path, select_on: str = "val") -> SweepOutcome:
    """Pareto fronts over the finished trials, chosen on ``select_on``: ``pareto_latency``,
    ``pareto_energy`` and ``pareto_omega`` tags on each child run, CSV + PNGs on the parent run."""
    from . import pareto

    # read and written through the tracker's client: each call retried while the server is busy or away
    table = tracking.trials_frame(tracking.search_children(tracker.client, tracker.experiment_id,
                                                           tracker.parent_run_id))
    report_dir = storage_dir / "pareto"
    report_dir.mkdir(parents=True, exist_ok=True)
    tags = pareto.front_tags(table, select_on)
    ties = paired.sweep_ties(table, tracking.image_results(tracker.client, table), select_on)
    for run_id, tied in paired.tie_tags(table, ties.columns).items():
        tags[run_id].update(tied)
    current = {row["run_id"]: {flag: row.get(f"tag_{flag}") for flag in (*FRONT_TAGS, *TIE_TAGS)}
               for _, row in table.iterrows()}
    tracking.set_run_tags(tracker, tags, current)  # only the runs whose tags change (a resumed sweep: few)
    for flag in FRONT_TAGS:
        table[flag] = table["run_id"].map(lambda run_id, f=flag: tags.get(run_id, {}).get(f, "false") == "true")
    for flag in TIE_TAGS:
        table[flag] = table["run_id"].map(lambda run_id, f=flag: tags.get(run_id, {}).get(f, "-"))
    for name, values in ties.columns.items():  # the fronts' plots draw tied runs apart from dominated ones
        table[name] = values
    files = pareto.write_sweep_fronts(table, report_dir, select_on)
    tracking.log_artifacts(tracker, tracker.parent_run_id, files, "pareto")
    return SweepOutcome(tracker.parent_run_id, tracker.experiment_id, tracker.tracking_uri, storage_dir, table,
                        report_dir, select_on=select_on,
                        ties=list(paired.tie_summary(table, ties.columns, ties.members).values()))


#: the Pareto tags the sweep sets on each child run, and the front each names
FRONT_TAGS = {"pareto_latency": "accuracy vs t_op, all methods",
              "pareto_energy": "accuracy vs energy_op_mj, all methods",
              "pareto_omega": "accuracy vs omega, within each method"}
#: the tie tags (``snnconv.paired``): a run no cheaper-or-equal front member beats by an exact McNemar test
TIE_TAGS = tuple(paired.tie_tag(front) for front in paired.TIED_FRONTS)


def print_summary(outcome: SweepOutcome) -> None:
    """The trials (best selection accuracy first), the three fronts, and the commands to look further."""
    import pandas as pd

    from .pareto import converged_text, interval_text, latency_text

    table = outcome.table.copy()
    accuracy = selection_metric(outcome.select_on)
    if len(table):
        table["latency"] = [latency_text(row) or "-" for _, row in table.iterrows()]
        table["converged"] = [converged_text(row) for _, row in table.iterrows()]
        for name, column in (("val_acc_op", "val 95% CI"), ("acc_op", "test 95% CI")):
            table[column] = [interval_text(row, name) for _, row in table.iterrows()]
    columns = [c for c in ("run_name", "method", "lam", "levels_profile", "status", "val_acc_op", "val 95% CI",
                           "acc_op", "test 95% CI", "latency", "energy_op_mj", "omega", "converged", *FRONT_TAGS)
               if c in table.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print()
        if len(table):
            table["_unfinished"] = table["status"] != "FINISHED"  # finished trials first, best first
            ordered = table.sort_values(["_unfinished", accuracy], ascending=[True, False])[columns]
            print(ordered.to_string(index=False, na_rep="-"))
        print(f"\n(val_acc_op: validation accuracy at the operating point t_op, which chose; acc_op: test "
              f"accuracy at the same t_op, the result to report{'; CHOSEN ON TEST' if accuracy == 'acc_op' else ''}; "
              f"95% CI: the Wilson score interval of each, from its split's image count)")
        for flag, meaning in FRONT_TAGS.items():
            on_front = table[table[flag]] if flag in table and len(table) else table.iloc[0:0]
            names = ", ".join(f"{row['run_name']} ({row[accuracy]:.1f}% at {row['latency']})"
                              for _, row in on_front.sort_values(accuracy, ascending=False).iterrows())
            print(f"{flag} ({meaning}): {names or 'none'}")
        for sentence in outcome.ties:
            print(f"tied: {sentence}")
    finished = int((table["status"] == "FINISHED").sum()) if len(table) else 0
    unsettled = int(table["converged"].str.startswith("no").sum()) if len(table) else 0
    planned = max(outcome.total, len(table))
    print(f"\n{finished} of {planned} trials finished; Pareto fronts: {outcome.report_dir}")
    if outcome.status != "FINISHED":
        print(f"the sweep was interrupted: {planned - len(table)} trial(s) never started; --resume runs what is left")
    if outcome.waiting:
        print(f"{outcome.waiting} finished trial result(s) wait to be logged (kept in {outcome.storage_dir}): "
              f"--resume {outcome.storage_dir.name} logs them")
    if unsettled:
        print(f"{unsettled} trial(s) did not converge within T_max (their acc(t) still moves in its second half): "
              f"raise t_max for them")
    uri = outcome.tracking_uri
    ui = "mlflow ui" if uri.startswith("sqlite:") and uri.endswith(str(Path.cwd() / "mlflow.db")) else \
        f"mlflow ui --backend-store-uri {uri}"
    print("Look further:")
    print(f"  {ui}    then open {tracking.runs_url(uri, outcome.experiment_id)}")
    print(f"  python analysis/pareto.py --sweep {outcome.parent_run_id}"
          + ("" if uri.endswith(str(Path.cwd() / "mlflow.db")) else f" --tracking-uri {uri}"))


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None, presets_dir: str | Path | None = None) -> int:
    """``python sweeps/lambda_sweep.py``: run a conversion sweep (the demo preset by default)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="lambda_sweep.py",
        description="Sweep ANN->SNN conversion settings (RNL lambda, lr, shared scale, layerwise L) with Ray Tune, "
                    "tracking every trial in MLflow. With no arguments: the demo preset on this machine.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="preset name in configs/ (demo, cifar10-vgg16, cifar10-resnet18, "
                                         "cifar100-vgg16, imagenet-resnet34); default demo")
    source.add_argument("--config", help="a sweep YAML file (same keys as the presets)")
    parser.add_argument("--method", choices=["rnl", "qcfs", "both"], help="which conversion method(s) to sweep")
    parser.add_argument("--num-samples", type=int, help="trials per method")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share a GPU (e.g. 0.25)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial (also torch threads)")
    parser.add_argument("--max-concurrent", type=int, help="most trials running at once")
    parser.add_argument("--search", choices=SEARCHES, help="random, grid, or optuna (multi-objective NSGA-II: "
                                                           "max the operating-point accuracy, min the --objective)")
    parser.add_argument("--objective", choices=tuple(OBJECTIVES),
                        help="cost Optuna minimises next to the accuracy: latency (t_op), energy (energy_op_mj) "
                             "or omega (one method only)")
    parser.add_argument("--select-on", choices=SELECT_ON,
                        help="split that chooses (Optuna, Pareto tags, summary): val (default) or test (biased)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, help="asha stops trials early on stage-2 val accuracy")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db here, or "
                                               "$MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", help="MLflow experiment name (default snnconv)")
    parser.add_argument("--storage-path", help="Ray Tune results folder (default ./ray_results)")
    parser.add_argument("--resume", nargs="?", const="", help="resume the latest interrupted sweep (optionally the "
                                                             "one whose folder name starts with RESUME)")
    parser.add_argument("--seed", type=int, help="seed of the trials and the search")
    parser.add_argument("--repeats", type=int, help="run every drawn configuration with this many seeds (seed, "
                                                     "seed + 1, ...); fronts and Optuna use their mean (default 1)")
    parser.add_argument("--data-dir", help="folder holding CIFAR or ImageNet")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--max-failures", type=int, help="retries of a trial whose worker process died (default 1)")
    parser.add_argument("--pending-timeout", type=float, default=600.0,
                        help="with --address: seconds to wait for the cluster to offer one trial's CPUs/GPUs "
                             "(default 600)")
    parser.add_argument("--tracking-retry-s", type=float, default=DEFAULT_RETRY_S,
                        help="seconds a tracking call may keep failing (server busy or away) before a trial keeps "
                             f"its result to be logged by --resume (default {DEFAULT_RETRY_S:.0f})")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.preset, args.config, presets_dir, validate=False)
        if args.method:
            spec.methods = ["rnl", "qcfs"] if args.method == "both" else [args.method]
        for name in ("num_samples", "gpus_per_trial", "cpus_per_trial", "max_concurrent", "search", "objective",
                     "select_on", "scheduler", "experiment", "seed", "max_failures", "repeats"):
            if getattr(args, name) is not None:
                setattr(spec, name, getattr(args, name))
        if args.data_dir:
            spec.trial.setdefault("data", {})["data_dir"] = args.data_dir
        resolve_paths(spec)
        validate_spec(spec)
        if not args.tracking_retry_s >= 0:
            raise ConfigError(f"--tracking-retry-s must be 0 or more seconds, got {args.tracking_retry_s}")
        options = SweepOptions(address=args.address, tracking_uri=args.tracking_uri, storage_path=args.storage_path,
                               resume=args.resume, num_cpus=args.num_cpus, pending_timeout=args.pending_timeout,
                               tracking_retry_s=args.tracking_retry_s)
        if options.resume is not None:
            _latest_sweep_dir(Path(options.storage_path or "ray_results").expanduser().resolve(),
                              options.resume or spec.name)
        outcome = run_sweep(spec, options)  # checks the tracking URI, then the resources, before any trial
    except (ConfigError, tracking.TrackingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ResultsWaiting, TrackingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_summary(outcome)
    return 0 if outcome.status == "FINISHED" else 130  # interrupted: the shell's code for Ctrl-C
