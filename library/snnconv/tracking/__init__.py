"""MLflow glue: with ``snnconv.sweep``, ``snnconv.tracking_retry`` and ``snnconv.trial_record``, the only
library code that imports mlflow, and only lazily (inside functions, or under ``TYPE_CHECKING``).

The package, by job: :mod:`~snnconv.tracking.contract` (the tracking contract's names: default store and
experiment, tags, trial params and metrics, :class:`TrackingError`; no MLflow),
:mod:`~snnconv.tracking.reading` (reading sweeps and their trial runs: :func:`load_sweep`),
:mod:`~snnconv.tracking.models` (each trial's logged model and the Model Registry),
:mod:`~snnconv.tracking.writing` (writing the sweep: :func:`start_sweep`, :func:`start_trial`, ...) and
:mod:`~snnconv.tracking.uri` (resolving and checking a tracking URI: :func:`check_tracking_uri`).
``docs/tracking.md`` states the contract in full. Every name is re-exported here: callers write
``from snnconv import tracking`` and ``tracking.start_sweep(...)``.

Every function takes the tracking URI explicitly and talks to it through its own ``MlflowClient``:
nothing here changes MLflow's process-wide tracking URI (``mlflow.set_tracking_uri`` also rewrites
the ``MLFLOW_TRACKING_URI`` environment variable, which a library should not do behind a caller's back).
"""

from .contract import (
    COMMON_PARAMS,
    DATASET_CONTEXT_TAG,
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    INTERVAL_METRICS,
    MODEL_NAME,
    NUMERIC_PARAMS,
    PARENT_TAG,
    ROLE_TAG,
    SELECT_ON_TAG,
    TRIAL_METRICS,
    TRIAL_TAGS,
    TrackingError,
    trial_param_names,
)
from .models import (
    RegisteredVersion,
    find_run_model,
    load_run_model,
    log_run_outputs,
    register_run_model,
    run_model_id,
)
from .models import _quiet_pickle_notice as _quiet_pickle_notice  # used by trial_record
from .reading import (
    SweepLocation,
    SweepRuns,
    client_for,
    find_experiment,
    find_sweep,
    image_results,
    load_sweep,
    metric_histories,
    published_figures,
    run_metrics,
    search_children,
    sweep_runs_frame,
    trials_frame,
)
from .uri import (
    CREDENTIALS_HINT,
    DATABASE_HINT,
    DATABASE_SCHEMES,
    DRIVER_HINT,
    HEALTH_PATH,
    MISSING_HINT,
    PROBE_PATH,
    SERVER_HINT,
    URI_HINT,
    check_tracking_uri,
    resolve_tracking_uri,
)
from .writing import (
    ProgressLog,
    SweepTracker,
    TrialStart,
    attach_report,
    close_unfinished,
    end_sweep,
    end_trial,
    log_artifacts,
    log_progress,
    metric,
    metric_history,
    prepare_store,
    record_pruned,
    record_trial_failure,
    reopen_sweep,
    run_status,
    runs_url,
    set_run_tags,
    start_configuration,
    start_sweep,
    start_trial,
    trial_runs,
)
from .writing import _log_lists as _log_lists  # used by trial_record
from .writing import _text as _text  # used by trial_record

__all__ = [
    "CREDENTIALS_HINT", "DATABASE_HINT", "DATABASE_SCHEMES", "DATASET_CONTEXT_TAG", "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI", "DRIVER_HINT", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FAILURE_TAG", "HEALTH_PATH",
    "INTERVAL_METRICS", "MISSING_HINT", "MODEL_NAME", "NUMERIC_PARAMS", "PARENT_TAG", "PROBE_PATH", "ROLE_TAG",
    "SELECT_ON_TAG", "SERVER_HINT", "TRIAL_METRICS", "COMMON_PARAMS", "TRIAL_TAGS", "URI_HINT",
    "ProgressLog", "RegisteredVersion", "SweepLocation", "SweepRuns", "SweepTracker", "TrackingError", "TrialStart",
    "attach_report", "check_tracking_uri", "client_for", "close_unfinished", "end_sweep", "end_trial",
    "find_experiment", "find_run_model", "find_sweep", "image_results", "load_run_model", "load_sweep",
    "log_artifacts", "log_progress", "log_run_outputs", "metric", "metric_histories", "metric_history",
    "prepare_store", "published_figures", "record_pruned", "record_trial_failure", "register_run_model",
    "reopen_sweep", "resolve_tracking_uri", "run_metrics", "run_model_id", "run_status", "runs_url",
    "search_children", "set_run_tags", "start_configuration", "start_sweep", "start_trial", "sweep_runs_frame",
    "trial_param_names", "trial_runs", "trials_frame",
]
