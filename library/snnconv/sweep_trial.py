"""One sweep trial, as it runs in a Ray worker (imports ray lazily).

:func:`_trainable` is the function Ray Tune runs for each trial (module level: Ray pickles it by name):
it opens the trial's MLflow run, runs :func:`snnconv.pipeline.run_trial`, reports progress to Tune (and
so to ASHA) and logs the result; with ``repeats`` > 1 it runs the drawn configuration once per seed
(:func:`_repeated_trial`). The driver's side of the sweep is :mod:`snnconv.sweep`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import repeats, tracking, trial_record
from .cache_dir import default_cache_dir
from .config import apply_overrides, from_dict
from .method_registry import ConversionMethod, ensure_registered
from .sweep_spec import SweepSpec, decode_params, trial_params
from .tracking_retry import TrackingUnavailable

#: the keys every tune.report carries (Tune checks searcher / scheduler metrics on each result);
#: ``val_acc`` is what ASHA compares: the validation accuracy during stage 2 / the fine-tune
REPORT_KEYS = ("val_acc", "val_acc_op", "acc_op", "t_op", "energy_op_mj", "omega")
#: progress stages reported to Tune (and so to ASHA); stage-1 epochs only go to MLflow
SCHEDULED_STAGES = ("stage2", "finetune")
#: ASHA's time: the fraction (0-1) of the trial's scheduled stage done; 1 only in the final report
PROGRESS = "stage_progress"
#: in a trial's final report: 1 when its result could not be logged and waits in its checkpoint
WAITING = "result_waiting"


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


def cache_dir_on_this_node(given: str | None) -> str:
    """The stage-1 cache folder a Ray worker uses: the one the sweep file gave, else this node's own default
    ($SNNCONV_CACHE as `ray start` saw it on a cluster); absolute. Trials and the stage-1 tasks both use it."""
    return str(Path(given or default_cache_dir()).resolve())


# Tune saves the trainable's name with the sweep and --resume refuses another: keep ``_trainable``
def _trainable(params: dict[str, Any], *, spec: SweepSpec, bases: dict[str, dict[str, Any]],
               tracker: tracking.SweepTracker, threads: int, methods: tuple[ConversionMethod, ...] = ()) -> None:
    import ray
    import torch
    from ray import tune

    from .pipeline import run_trial

    torch.set_num_threads(threads)
    ensure_registered(methods)  # the driver's methods, should one be registered only there
    context = tune.get_context()
    trial_id = context.get_trial_id()
    config = trial_config(params, spec, bases)
    config.cache_dir = cache_dir_on_this_node(config.cache_dir)
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


def trial_name(trial) -> str:
    """``rnl_<trial id>``: readable in Tune's table and as the MLflow run name."""
    return f"{trial.config.get('method', 'trial')}_{trial.trial_id}"
