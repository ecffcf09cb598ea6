"""Ray Tune glue: the driver of a sweep of conversion trials, tracked in MLflow (imports ray lazily).

A sweep is described by a :class:`SweepSpec` (a YAML preset in ``configs/``); its schema, loading,
validation and search-space entries live in :mod:`snnconv.sweep_spec` (no Ray) and are re-exported
here. :func:`run_sweep` checks the resources, opens (or reopens) the sweep's parent run, trains the shared
stage-1 networks first (:mod:`snnconv.sweep_stage1`), runs the trials with Ray Tune (what it searches:
:mod:`snnconv.sweep_search`; each trial, in a Ray worker: :mod:`snnconv.sweep_trial`, which calls
:func:`snnconv.pipeline.run_trial` and logs to its own nested MLflow run; a line per trial:
:mod:`snnconv.sweep_progress`) and tags the Pareto fronts (:func:`finish_sweep`). Stage 1 is shared
through the on-disk cache (one training per stage-1 key, guarded by a file lock). The command line is
:mod:`snnconv.sweep_command`, its closing summary :mod:`snnconv.sweep_summary`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paired, tracking, trial_record
from .cache_dir import ENV_VAR, node_cache_dir
from .config import ConfigError
from .fixed_latency import PUBLISHED_FILE
from .sweep_progress import _error_text, _trial_config_params, sweep_callback  # noqa: F401 (see _trial_name)
from .sweep_search import build_param_space, search_and_scheduler
from .sweep_spec import (
    OBJECTIVES,
    SCHEDULERS,
    SEARCHES,
    SELECT_ON,
    SPACE_TYPES,
    SweepSpec,
    count_trials,
    decode_params,
    load_spec,
    method_base,
    resolve_paths,
    selection_metric,
    trial_params,
    validate_spec,
)
from .sweep_stage1 import stage1_plan, sweep_methods, train_stage1_first
from .sweep_trial import EarlierFailure, _trainable, final_report, trial_name
from .tracking_retry import DEFAULT_RETRY_S, TrackingUnavailable

__all__ = [
    # the sweep file (snnconv.sweep_spec)
    "OBJECTIVES", "SCHEDULERS", "SEARCHES", "SELECT_ON", "SPACE_TYPES", "SweepSpec", "count_trials", "decode_params",
    "load_spec", "method_base", "resolve_paths", "selection_metric", "trial_params", "validate_spec",
    # running it with Ray Tune
    "FRONT_TAGS", "EarlierFailure", "ResultsWaiting", "SweepOptions", "SweepOutcome", "build_param_space",
    "check_resources", "final_report", "finish_sweep", "latest_sweep_dir", "run_sweep",
]

#: why choosing on the test split is refused by default (printed when it is asked for)
TEST_SELECTION_WARNING = (
    "warning: --select-on test chooses the search's trials and the Pareto fronts on the test split; the "
    "test accuracies of the chosen points are then optimistically biased (the test set took part in the "
    "choice) and no longer estimate how they generalise. Use it only to reproduce earlier results.")
STATE_FILE = "snnconv_sweep.json"
#: with ``_error_text`` and ``_trial_config_params``: names the Tune state of a sweep saved before they moved
#: to their own modules refers to (Tune pickles the trial-name function and the progress callback; ``--resume``
#: unpickles them by these names)
_trial_name = trial_name


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


def _state_path(storage_dir: Path) -> Path:
    return storage_dir / STATE_FILE


def latest_sweep_dir(storage: Path, name: str | None) -> Path:
    """The folder of the latest sweep under ``storage`` (whose name starts with ``name``, or
    ``sweep-<name>-``); ``ConfigError`` when there is none."""
    candidates = sorted(storage.glob(f"*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime)
    if name:
        candidates = [p for p in candidates if p.parent.name.startswith((name, f"sweep-{name}-"))]
    if not candidates:
        raise ConfigError(f"--resume: no sweep to resume under {storage}" + (f" matching {name!r}" if name else ""))
    return candidates[-1].parent


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

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def run_sweep(spec: SweepSpec, options: SweepOptions | None = None) -> SweepOutcome:
    """Run (or resume) a sweep with Ray Tune; log to MLflow; write the Pareto fronts at the end.

    Before any trial: the tracking URI and the resources are checked (``ConfigError`` /
    ``tracking.TrackingError``). The parent run ends FINISHED when every trial has an outcome,
    KILLED when the sweep was interrupted (Ctrl-C, SIGTERM); ``--resume`` reopens it.
    """
    clock = time.perf_counter()
    options = options or SweepOptions()
    resolve_paths(spec)  # every trial finds the folders the driver was given, from its own working directory
    validate_spec(spec)
    tracking_uri = tracking.check_tracking_uri(options.tracking_uri, create=True)
    bases = _method_bases(spec)
    param_space = build_param_space(spec, list(spec.methods))
    total = count_trials(spec, param_space)
    ray_seconds = _start_ray_beside_the_store(spec, options, tracking_uri, total)
    cache_dir = trial_cache_dir(bases)  # asked now, answered while the parent run is made
    if options.resume is not None:
        tracker, storage_dir = _reopen_sweep(spec, options)
    else:
        tracker, storage_dir = _open_sweep(spec, options, tracking_uri, bases)
    sweep = _Sweep(spec, options, bases, param_space, total, tracker, storage_dir)
    _announce(sweep, cache_dir)
    parts = _tune_parts(sweep)
    timings = {"start": time.perf_counter() - clock, "ray": ray_seconds}
    stage1_facts, status, waiting = _run_trials(sweep, parts, timings)
    clock = time.perf_counter()
    outcome = _finish(sweep, status)
    timings["finish"] = time.perf_counter() - clock
    return dataclasses.replace(outcome, timings=timings, stage1=stage1_facts, status=status, total=total,
                               waiting=len(waiting))


@dataclass
class _Sweep:
    """What the steps of :func:`run_sweep` share, once its parent run is open."""

    spec: SweepSpec
    options: SweepOptions
    #: method -> its base trial config, as a dict (what the trials are given)
    bases: dict[str, dict[str, Any]]
    param_space: dict[str, Any]
    #: how many trials the sweep runs in all
    total: int
    tracker: tracking.SweepTracker
    #: the sweep's Tune folder; its name is the sweep's (and the parent run's) name
    storage_dir: Path


def _method_bases(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """method -> its base trial config (a dict, seeded with the sweep's seed)."""
    bases = {}
    for method in spec.methods:
        # folders are absolute (resolve_paths); no cache_dir given: each trial takes its node's default
        # ($SNNCONV_CACHE of the node, not of this driver's shell; see trial_cache_dir)
        base = method_base(spec, method).to_dict()
        base["seed"] = spec.seed
        bases[method] = base
    return bases


def _start_ray_beside_the_store(spec: SweepSpec, options: SweepOptions, tracking_uri: str, total: int) -> float:
    """Start (or join) Ray while the MLflow store is created or migrated, then check that a trial fits on the
    cluster (:func:`check_resources`). Returns the seconds spent starting Ray."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        store = pool.submit(tracking.prepare_store, tracking_uri)
        clock = time.perf_counter()
        _start_ray(options)
        seconds = time.perf_counter() - clock
        check_resources(spec, options.pending_timeout if options.address else 0.0, total)
        store.result()
    return seconds


def _reopen_sweep(spec: SweepSpec, options: SweepOptions) -> tuple[tracking.SweepTracker, Path]:
    """``--resume``: the latest matching sweep's tracker and folder; its parent run is RUNNING again, and the
    results that waited for the tracking server are logged now."""
    storage_dir = latest_sweep_dir(_storage(options), options.resume or spec.name)
    state = json.loads(_state_path(storage_dir).read_text())
    tracker = tracking.SweepTracker(state["tracking_uri"], state["experiment_id"], state["parent_run_id"],
                                    options.tracking_retry_s)
    tracking.reopen_sweep(tracker)
    logged, waiting = trial_record.log_waiting_records(storage_dir, tracker.retry_s)
    if logged or waiting:
        print(f"{logged} trial result(s) that waited were logged to MLflow"
              + (f"; {len(waiting)} still wait" if waiting else ""), flush=True)
    return tracker, storage_dir


def _open_sweep(spec: SweepSpec, options: SweepOptions, tracking_uri: str,
                bases: Mapping[str, dict[str, Any]]) -> tuple[tracking.SweepTracker, Path]:
    """A new sweep: its parent run in MLflow (the sweep file flattened into its params) and its folder, which
    keeps the tracker for ``--resume``."""
    run_name = f"sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_dir = _storage(options) / run_name
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
    return tracker, storage_dir


def _storage(options: SweepOptions) -> Path:
    """The folder that holds every sweep's Tune folder (``--storage-path``, default ./ray_results)."""
    return Path(options.storage_path or "ray_results").expanduser().resolve()


def _announce(sweep: _Sweep, cache_dir: Callable[[], str]) -> None:
    """The sweep's first lines: what it runs, where it is tracked, where the trials keep stage 1."""
    spec, tracker = sweep.spec, sweep.tracker
    if spec.select_on == "test":
        print(TEST_SELECTION_WARNING, file=sys.stderr, flush=True)
    seeds = f" x {spec.repeats} seeds each" if spec.repeats > 1 else ""
    print(f"sweep {sweep.storage_dir.name}: {sweep.total} trials{seeds} ({', '.join(spec.methods)}), search "
          f"{spec.search}, scheduler {spec.scheduler}, {spec.max_concurrent} at a time, choosing on the "
          f"{spec.select_on} split")
    print(f"tracking: {tracker.tracking_uri}  (parent run {tracker.parent_run_id})", flush=True)
    print(f"stage-1 cache of the trials: {cache_dir()}", flush=True)


def _run_trials(sweep: _Sweep, parts: tuple[Any, ...],
                timings: dict[str, float]) -> tuple[list[dict[str, Any]], str, list[str]]:
    """The shared stage-1 networks first, then the trials with Ray Tune (``parts``: :func:`_tune_parts`);
    SIGTERM stops them like Ctrl-C. Returns the stage-1 tasks' facts, the parent run's end (FINISHED when every
    trial has an outcome, else KILLED) and the runs whose results wait to be logged; adds the "stage1" and
    "tune" seconds to ``timings``."""
    restore_sigterm = _stop_gracefully_on_sigterm()
    status = "KILLED"  # until Tune says every trial has an outcome
    clock = time.perf_counter()
    try:
        # the shared stage-1 networks first, in parallel: no trial then waits on one holding its GPU share
        stage1_facts = train_stage1_first(sweep.spec, stage1_plan(sweep.spec, sweep.bases), sweep.tracker)
        timings["stage1"] = time.perf_counter() - clock
        clock = time.perf_counter()
        results = _tuner(sweep, *parts).fit()
        if results.num_terminated + results.num_errors >= sweep.total:
            status = "FINISHED"
    finally:
        restore_sigterm()
        waiting = _close_runs(sweep.tracker, sweep.storage_dir, status, sweep.storage_dir.name)
    timings["tune"] = time.perf_counter() - clock
    return stage1_facts, status, waiting


def _tune_parts(sweep: _Sweep) -> tuple[Any, Any, Any, Any]:
    """The trainable (with each trial's resources), the search algorithm, the scheduler and the progress
    reporter of the sweep's Tune run."""
    from ray import tune

    spec = sweep.spec
    threads = max(1, int(spec.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, spec=spec, bases=sweep.bases, tracker=sweep.tracker, threads=threads,
                             methods=sweep_methods(spec)),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    search_alg, scheduler = search_and_scheduler(spec, sweep.total)
    # Ray's classic status table every 30 s (its newer console output prints a box per trial start and end)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's JSON and CSV result files, but not its TensorBoard logger (which warns at every NaN,
    # and intermediate reports carry NaN for the metrics only known at the end)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    reporter = tune.CLIReporter(
        metric_columns={"val_acc_op": "val_acc_op", "t_op": "t_op", "omega": "omega", "training_iteration": "iter"},
        parameter_columns={"method": "method"}, max_report_frequency=30, max_progress_rows=10,
        print_intermediate_tables=False, sort_by_metric=False,
    )
    return trainable, search_alg, scheduler, reporter


def _tuner(sweep: _Sweep, trainable: Any, search_alg: Any, scheduler: Any, reporter: Any):
    """The sweep's ``tune.Tuner``: restored from its folder on ``--resume`` (its trials, search and callbacks
    as they were saved), else a new one."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    spec, folder = sweep.spec, sweep.storage_dir
    if sweep.options.resume is not None and tune.Tuner.can_restore(str(folder)):
        return tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=False)
    samples = sweep.total if spec.search == "optuna" else (1 if spec.search == "grid" else spec.num_samples)
    return tune.Tuner(
        trainable,
        param_space=sweep.param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=samples,
            max_concurrent_trials=spec.max_concurrent if spec.search == "optuna" else None,
            reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=folder.name, storage_path=str(folder.parent), verbose=sweep.options.verbose,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
            callbacks=[sweep_callback(sweep.total, spec, sweep.bases, sweep.tracker), JsonLoggerCallback(),
                       CSVLoggerCallback()],
            progress_reporter=reporter,
        ),
    )


def _finish(sweep: _Sweep, status: str) -> SweepOutcome:
    """The fronts (:func:`finish_sweep`), then the parent run's end; an unreachable tracking server raises
    :class:`ResultsWaiting`."""
    try:
        outcome = finish_sweep(sweep.tracker, sweep.storage_dir, sweep.spec.select_on)
        tracking.end_sweep(sweep.tracker, status)
    except TrackingUnavailable as error:
        raise ResultsWaiting(sweep.storage_dir, sweep.storage_dir.name, error) from None
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
    from . import pareto, pareto_plots

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
    files = pareto_plots.write_sweep_fronts(table, report_dir, select_on)
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
