"""MLflow glue: the only library module (with ``sweep.py``) that imports mlflow, and only lazily.

The tracking contract (``docs/tracking.md`` states it in full) in brief: one parent run per sweep
(tag ``snnconv.role`` = ``sweep``, ``snnconv.select_on`` = ``val`` | ``test``), one nested child run
per trial (tags ``mlflow.parentRunId``, ``snnconv.role`` = ``trial``, ``trial_id``); accuracies in
percent, a ``val_`` prefix for the validation split and none for the test split; each trial's
operating point ``t_op``, ``val_acc_op``, ``acc_op``, ``energy_op_mj``, ``converged``; FAILED runs
carry an ``error`` tag; after the sweep each child has ``pareto_latency``, ``pareto_energy`` and
``pareto_omega`` tags. A finished trial logs its final model as an MLflow PyTorch model named ``model``
(a LoggedModel of the run: ``runs:/<run id>/model``) whose metadata rebuilds its SNN
(``snnconv.export``), and its data set as the run's dataset input; the experiment is tagged
``mlflow.experimentKind`` = ``custom_model_development``.

Every function takes the tracking URI explicitly and talks to it through its own ``MlflowClient``:
nothing here changes MLflow's process-wide tracking URI (``mlflow.set_tracking_uri`` also rewrites
the ``MLFLOW_TRACKING_URI`` environment variable, which a library should not do behind a caller's back).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from .paired import IMAGE_RESULTS_TAG
from .tracking_retry import DEFAULT_RETRY_S, RetryingClient, TrackingUnavailable, with_retries

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Experiment, Run


#: MLflow 3's own default store: ``mlflow.db`` in the current folder (``mlflow ui`` there opens it)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "snnconv"
ROLE_TAG = "snnconv.role"
PARENT_TAG = "mlflow.parentRunId"
#: the parent run's tag saying which split the sweep chose on: "val" (default) or "test"
SELECT_ON_TAG = "snnconv.select_on"
#: the experiment tag MLflow 3's UI reads to open an experiment on its model-training views (runs,
#: models) rather than on its GenAI ones (traces, evaluations), and the value it writes for training
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: the name of each trial's logged model: ``runs:/<run id>/model``
MODEL_NAME = "model"
#: the input tag MLflow uses for a dataset input's role (the "context" beside the dataset's name)
DATASET_CONTEXT_TAG = "mlflow.data.context"

#: the contract's trial params and metrics; a loaded frame always has these columns (NaN if absent)
TRIAL_PARAMS = ("method", "model", "dataset", "lam", "lr", "sharescale", "scale_init", "levels",
                "levels_profile", "seed", "stage1_key", "latency_tolerance", "device", "gpu_name",
                "val_images", "test_images")
TRIAL_METRICS = ("val_ann_acc", "ann_acc", "val_snn_acc", "snn_acc", "t_op", "val_acc_op", "acc_op",
                 "energy_op_mj", "converged", "omega", "t_eff", "synops", "energy_mj", "equiv_max_abs_err")
NUMERIC_PARAMS = ("lam", "lr", "scale_init", "latency_tolerance", "val_images", "test_images")
#: each accuracy's 95 % Wilson interval (``TrialResult.intervals``): metrics ``<name>_low``, ``<name>_high``
INTERVAL_METRICS = tuple(f"{name}_{end}" for name in ("val_acc_op", "acc_op", "val_ann_acc", "ann_acc")
                         for end in ("low", "high"))
TRIAL_TAGS = ("trial_id", "error")


class TrackingError(ValueError):
    """A user-facing problem with the store, experiment or run asked for (message says which)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``; relative SQLite paths and
    plain folders are made absolute (Ray Tune workers run in other directories)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


# =============================================================================================
# reading: sweeps and their trial runs
# =============================================================================================


@dataclass
class SweepRuns:
    """One sweep's parent run and its trial runs.

    ``trials`` has one row per child run: ``run_id``, ``run_name``, ``status``, ``start_time``,
    the contract's params (``lam``, ``lr``, ``scale_init`` as floats, the rest as text), metrics
    (floats; NaN where not logged; MLflow's stand-in for inf, +-float max, is turned back into inf),
    tags ``trial_id`` and ``error``, ``tag_pareto_<name>`` for each ``pareto_<name>`` tag present, and
    ``tag_snnconv.image_results`` where the run logged its per-image results (``snnconv.paired``).
    """

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    sweep_id: str
    sweep_name: str
    preset: str
    trials: pd.DataFrame
    #: the parent's ``snnconv.select_on`` tag: "val" or "test"; "" for a sweep logged before the tag
    #: existed (those chose on the test split)
    select_on: str = ""


def client_for(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` on ``tracking_uri``; a local SQLite store must already exist.

    Opening a missing SQLite file would silently create an empty store, so that is an error here.
    """
    from mlflow import MlflowClient

    path = _sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise TrackingError(
            f"no MLflow store at {path} (tracking URI {tracking_uri}); run a sweep first, or pass "
            f"--tracking-uri / set MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=tracking_uri)


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (relative or absolute), None for any other scheme."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix):])


def find_experiment(client: MlflowClient, name: str) -> Experiment:
    """The experiment called ``name``; the error lists the ones that exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise TrackingError(f"no experiment named {name!r} in the store; experiments: {names or 'none'}")
    return experiment


def find_sweep(client: MlflowClient, experiment: Experiment, sweep_id: str | None) -> Run:
    """The sweep (parent) run ``sweep_id`` of ``experiment``, or its latest sweep when None."""
    if sweep_id is None:
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise TrackingError(f"experiment {experiment.name!r} has no sweep runs (tag {ROLE_TAG} = sweep); "
                                f"run a sweep first")
        return runs[0]
    run = _get_run(client, sweep_id)
    if run.info.experiment_id != experiment.experiment_id:
        raise TrackingError(f"run {sweep_id} belongs to experiment id {run.info.experiment_id}, "
                            f"not to {experiment.name!r} (id {experiment.experiment_id}); pass --experiment")
    role = run.data.tags.get(ROLE_TAG)
    if role != "sweep":
        parent = run.data.tags.get(PARENT_TAG)
        hint = f"; its sweep is {parent}" if parent else ""
        raise TrackingError(f"run {sweep_id} is not a sweep run (tag {ROLE_TAG} = {role!r}){hint}")
    return run


def _get_run(client: MlflowClient, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        raise TrackingError(f"no run with id {run_id!r} in the store ({error.message})") from None


def load_sweep(tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
               sweep_id: str | None = None) -> SweepRuns:
    """Read one sweep (default: the experiment's latest) and all its trial runs."""
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    found = find_experiment(client, experiment)
    sweep = find_sweep(client, found, sweep_id)
    children = search_children(client, found.experiment_id, sweep.info.run_id)
    return SweepRuns(
        tracking_uri=uri, experiment_id=found.experiment_id, experiment_name=found.name,
        sweep_id=sweep.info.run_id, sweep_name=sweep.info.run_name or sweep.info.run_id,
        preset=sweep.data.tags.get("snnconv.preset", ""), trials=trials_frame(children),
        select_on=sweep.data.tags.get(SELECT_ON_TAG, ""),
    )


class SweepLocation(Protocol):
    """Where a sweep's runs are (the sweep's ``SweepTracker`` has these attributes)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def sweep_runs_frame(sweep: SweepLocation) -> pd.DataFrame:
    """The trial table (see ``SweepRuns.trials``) of the sweep at ``sweep``: what ``pareto`` takes."""
    return trials_frame(search_children(client_for(sweep.tracking_uri), sweep.experiment_id, sweep.parent_run_id))


def search_children(client: MlflowClient, experiment_id: str, parent_id: str, where: str = "") -> list[Run]:
    """Every child run of ``parent_id`` (all pages of 1,000: a sweep of thousands of trials is read in
    pieces the server can answer), oldest first; ``where``: a further MLflow filter, e.g.
    ``attributes.status = 'RUNNING'`` (the server selects: far faster than reading every run)."""
    runs: list[Run] = []
    token = None
    query = f"tags.`{PARENT_TAG}` = '{parent_id}'" + (f" and {where}" if where else "")
    while True:
        page = client.search_runs([experiment_id], filter_string=query,
                                  order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trials_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run with the columns described in ``SweepRuns`` (in the contract's order)."""
    rows = [_trial_row(run) for run in runs]
    base = ["run_id", "run_name", "status", "start_time", *TRIAL_TAGS, *TRIAL_PARAMS, *TRIAL_METRICS]
    frame = pd.DataFrame(rows)
    for column in base:
        if column not in frame:
            frame[column] = math.nan
    extra = [c for c in frame.columns if c not in base]
    frame = frame[base + sorted(extra)]
    for column in (*NUMERIC_PARAMS, *TRIAL_METRICS, *(m for m in INTERVAL_METRICS if m in frame)):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _trial_row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id, "run_name": run.info.run_name or run.info.run_id,
                           "status": run.info.status, "start_time": run.info.start_time}
    row.update({name: tags[name] for name in TRIAL_TAGS if name in tags})
    row.update({f"tag_{name}": value for name, value in tags.items()
                if name.startswith("pareto_") or name == IMAGE_RESULTS_TAG})
    row.update(run.data.params)
    row.update({name: _restore_inf(value) for name, value in run.data.metrics.items()})
    return row


def _restore_inf(value: float) -> float:
    """MLflow's SQLite store saves +-inf as +-float max; give the inf back."""
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def metric_histories(tracking_uri: str, run_ids: Iterable[str], key: str = "snn_acc_t") -> dict[str, pd.Series]:
    """``{run_id: Series(value, index=step)}`` of a stepped metric; runs without it are left out. One
    request per run, 8 at a time (a server answers each in milliseconds; thousands of runs add up)."""
    import concurrent.futures

    client = client_for(tracking_uri)
    curves: dict[str, pd.Series] = {}
    run_ids = list(run_ids)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        histories = list(pool.map(lambda run_id: client.get_metric_history(run_id, key), run_ids))
    for run_id, history in zip(run_ids, histories):
        if history:
            points = {m.step: _restore_inf(m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
            curves[run_id] = pd.Series(points, name=key, dtype=float).sort_index()
    return curves


def image_results(client: MlflowClient | RetryingClient, runs: pd.DataFrame) -> dict[str, Any]:
    """``{run_id: snnconv.paired.ImageResults}`` of the runs of the trial table ``runs`` that logged them (tag
    ``snnconv.image_results``), read through ``client``: one artifact download per run, 8 at a time. A run whose
    artifact cannot be read (deleted, another format) is left out: it cannot be compared."""
    import concurrent.futures

    from .paired import IMAGE_RESULTS_FILE, ImageResults

    column = f"tag_{IMAGE_RESULTS_TAG}"
    if column not in runs.columns:
        return {}
    _quiet_downloads()
    run_ids = [run_id for run_id, tag in zip(runs["run_id"], runs[column]) if tag == IMAGE_RESULTS_FILE]
    with tempfile.TemporaryDirectory(prefix="snnconv-images-") as folder:
        def read(run_id: str) -> ImageResults | None:
            try:
                path = client.download_artifacts(run_id, IMAGE_RESULTS_FILE, str(Path(folder) / run_id))
                return ImageResults.from_json(json.loads(Path(path).read_text()))
            except TrackingUnavailable:  # the server is away: the caller's to handle
                raise
            except Exception:  # noqa: BLE001 - unreadable (deleted, another format): that run cannot be compared
                return None

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            found = dict(zip(run_ids, pool.map(read, run_ids)))
    return {run_id: results for run_id, results in found.items() if results is not None}


def run_metrics(client: MlflowClient | RetryingClient, run_id: str,
                curves: Sequence[str] = ()) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """A run's latest metric values and, for each name in ``curves`` it logged, its curve {step: value}."""
    metrics = {key: _restore_inf(value) for key, value in client.get_run(run_id).data.metrics.items()}
    stepped = {}
    for key in curves:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if history:
            stepped[key] = {m.step: _restore_inf(m.value) for m in history}
    return metrics, stepped


def _quiet_downloads() -> None:
    """No progress bar per small artifact read (MLflow draws one per download), unless the user asked for them."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def published_figures(client: MlflowClient | RetryingClient, sweep_id: str) -> list[dict[str, Any]]:
    """The papers' figures the sweep logged on its parent run (``published.json``; [] when it logged none)."""
    from .fixed_latency import PUBLISHED_FILE

    if PUBLISHED_FILE not in {item.path for item in client.list_artifacts(sweep_id)}:
        return []
    _quiet_downloads()
    with tempfile.TemporaryDirectory(prefix="snnconv-published-") as folder:
        path = client.download_artifacts(sweep_id, PUBLISHED_FILE, folder)
        entries = list(json.loads(Path(path).read_text()).get("published", []))
    for entry in entries:  # JSON keeps the time steps as text
        if isinstance(entry.get("accuracy"), dict):
            entry["accuracy"] = {int(step) if str(step).isdigit() else step: value
                                 for step, value in entry["accuracy"].items()}
    return entries


# =============================================================================================
# writing: analysis report
# =============================================================================================


def attach_report(tracking_uri: str, sweep_id: str, folder: Path, artifact_path: str = "report") -> None:
    """Upload every file of ``folder`` to the sweep's parent run under ``artifact_path/``."""
    client_for(tracking_uri).log_artifacts(sweep_id, str(folder), artifact_path=artifact_path)


# =============================================================================================
# writing: the model registry
# =============================================================================================


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version made by :func:`register_run_model`: ``models:/<name>/<version>`` loads it."""

    name: str
    version: str
    run_id: str
    model_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def run_model_id(client: MlflowClient, run: Run) -> str | None:
    """The id of the READY model named ``model`` that ``run`` logged (the latest one), else None."""
    from mlflow.exceptions import MlflowException

    outputs = run.outputs.model_outputs if run.outputs is not None else []
    for output in sorted(outputs, key=lambda item: item.step, reverse=True):
        try:
            logged = client.get_logged_model(output.model_id)
        except MlflowException:
            continue
        if logged.name == MODEL_NAME and str(logged.status) == "READY":
            return logged.model_id
    return None


def find_run_model(tracking_uri: str, run_id: str) -> str:
    """The id of the model trial run ``run_id`` logged; ``TrackingError`` when it logged none."""
    client = client_for(tracking_uri)
    run = _get_run(client, run_id)
    model_id = run_model_id(client, run)
    if model_id is None:
        old = any(item.path == MODEL_NAME for item in client.list_artifacts(run_id))
        hint = (": it ran before trials logged MLflow models (it has only a state dict, model/weights.pt); "
                "rerun the sweep" if old else "")
        raise TrackingError(f"run {run.info.run_name or run_id} ({run_id[:8]}) has no logged model{hint}")
    return model_id


def register_run_model(tracking_uri: str, run_id: str, name: str, *, description: str = "",
                       tags: Mapping[str, str] | None = None) -> RegisteredVersion:
    """Register the model trial run ``run_id`` logged (:func:`find_run_model`) as a new version of
    the registered model ``name`` (created when missing) in the store's Model Registry; the
    version's source is ``models:/<model id>``. ``TrackingError`` when the run logged no model or
    the registry refuses."""
    from mlflow.exceptions import MlflowException

    model_id = find_run_model(tracking_uri, run_id)
    client = client_for(tracking_uri)
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id,
                                              tags=dict(tags or {}), description=description or None,
                                              model_id=model_id)
    except MlflowException as error:
        raise TrackingError(f"cannot register the model of run {run_id[:8]} as {name!r}: "
                            f"{_first_line(error.message)}") from None
    return RegisteredVersion(name=name, version=str(version.version), run_id=run_id, model_id=model_id)


def load_run_model(tracking_uri: str, run_id: str) -> tuple[Any, dict[str, Any]]:
    """The model trial run ``run_id`` logged (:func:`find_run_model`), loaded with
    ``mlflow.pytorch.load_model`` from a local copy of its artifacts, and its metadata (the
    conversion settings, ``snnconv.export.model_metadata``). ``TrackingError`` when the run logged
    no model."""
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.models import Model

    model_id = find_run_model(tracking_uri, run_id)
    logged = client_for(tracking_uri).get_logged_model(model_id)
    progress_bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # eight small files: no bar
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=folder,
                                                        tracking_uri=tracking_uri)
            _quiet_pickle_notice()
            model = mlflow.pytorch.load_model(local, map_location="cpu")
            metadata = Model.load(str(Path(local) / "MLmodel")).metadata or {}
    finally:
        if progress_bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = progress_bar
    return model, dict(metadata)


def log_run_outputs(tracking_uri: str, run_id: str, files: Iterable[Path], artifact_path: str,
                    metrics: Mapping[str, float] | None = None) -> None:
    """Add ``files`` (under ``artifact_path``) and ``metrics`` to the existing run ``run_id`` (any
    status; a finished run stays finished)."""
    client = _writer_client(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
    if metrics:
        _batch(client, run_id, metrics)


# =============================================================================================
# writing: the sweep
# =============================================================================================


def _writer_client(tracking_uri: str) -> MlflowClient:
    """A client that may create the store (unlike :func:`client_for`, which only reads)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment ``name``, created if missing, tagged as a model-training experiment
    (``EXPERIMENT_KIND_TAG``) unless it already has a kind (set by a person or by MLflow's UI)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as error:  # made meanwhile (another sweep, or this request sent twice)
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def _batch(client: MlflowClient, run_id: str, metrics: Mapping[str, float] | None = None,
           params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None, step: int = 0) -> None:
    """Log in as few ``log_batch`` calls as MLflow's limits allow."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    param_list = [Param(k, _text(v)) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, _text(v)) for k, v in (tags or {}).items()]
    _log_lists(client, run_id, metric_list, param_list, tag_list)


#: MLflow's limits per log_batch call
_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}


def _log_lists(client: MlflowClient, run_id: str, metrics: Sequence[Any], params: Sequence[Any] = (),
               tags: Sequence[Any] = ()) -> None:
    """``metrics``, ``params`` and ``tags`` (MLflow entities) in the fewest ``log_batch`` calls."""
    calls = max(math.ceil(len(metrics) / _BATCH_LIMITS["metrics"]), math.ceil(len(params) / _BATCH_LIMITS["params"]),
                math.ceil(len(tags) / _BATCH_LIMITS["tags"]), 1)
    for call in range(calls):
        part = {name: items[call * _BATCH_LIMITS[name]:(call + 1) * _BATCH_LIMITS[name]]
                for name, items in (("metrics", metrics), ("params", params), ("tags", tags))}
        client.log_batch(run_id, metrics=part["metrics"], params=part["params"], tags=part["tags"])


@dataclass(frozen=True)
class SweepTracker:
    """Where a sweep logs: picklable, so Ray ships it to every trial. ``retry_s``: how long one tracking
    call may keep failing transiently before it gives up (s; see ``tracking_retry.py``)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    retry_s: float = DEFAULT_RETRY_S

    @property
    def client(self) -> MlflowClient:
        """A client whose every call is retried for up to ``retry_s`` (``tracking_retry.RetryingClient``)."""
        return RetryingClient(_writer_client(self.tracking_uri), self.retry_s)  # type: ignore[return-value]


def start_sweep(tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, Any],
                tags: Mapping[str, Any], retry_s: float = DEFAULT_RETRY_S) -> SweepTracker:
    """Create the experiment if needed and open the sweep's parent run (each call retried for up to
    ``retry_s``; a double of the parent made by a request sent twice is deleted)."""
    client = RetryingClient(_writer_client(tracking_uri), retry_s)
    experiment_id = _experiment_id(client, experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: "sweep", **tags})
    _delete_doubles(client, experiment_id, f"tags.`{ROLE_TAG}` = 'sweep' and attributes.run_name = '{run_name}'",
                    run.info.run_id)
    _batch(client, run.info.run_id, params=params)
    return SweepTracker(tracking_uri, experiment_id, run.info.run_id, retry_s)


def _delete_doubles(client: MlflowClient, experiment_id: str, query: str, keep: str) -> None:
    """Delete the RUNNING runs ``query`` finds but ``keep``: doubles a create request sent twice made
    (the server carried out the first, its answer was lost, MLflow's client sent it again)."""
    for run in client.search_runs([experiment_id], query):
        if run.info.run_id != keep and run.info.status == "RUNNING":
            client.delete_run(run.info.run_id)


def prepare_store(tracking_uri: str) -> None:
    """Create or migrate the store behind ``tracking_uri`` (one experiment search): the slow part of
    a sweep's first MLflow call, done while Ray starts."""
    _writer_client(tracking_uri).search_experiments(max_results=1)


def reopen_sweep(tracker: SweepTracker) -> None:
    """Mark a resumed sweep's parent run RUNNING again."""
    tracker.client.update_run(tracker.parent_run_id, status="RUNNING")


#: tag of a trial run that ended FAILED: "exception" (the trial's own code raised; rerunning it gives the
#: same error, so it is not retried) or "worker" (its process died: retried up to --max-failures)
FAILURE_TAG = "failure"


@dataclass(frozen=True)
class TrialStart:
    """What ``start_trial`` found or made for a trial: ``state`` is "new" (a fresh RUNNING run to log
    to), "finished" (a FINISHED run exists: do not run the trial again; ``metrics`` are its final
    metrics) or "failed" (the trial's own code failed before: ``error`` is its error tag)."""

    run_id: str
    state: str
    metrics: Mapping[str, float]
    error: str = ""


def run_status(tracker: SweepTracker, run_id: str) -> str:
    """The status of run ``run_id`` (RUNNING, FINISHED, FAILED, KILLED), "DELETED" for a deleted run."""
    run = tracker.client.get_run(run_id)
    return "DELETED" if run.info.lifecycle_stage == "deleted" else run.info.status


def trial_runs(tracker: SweepTracker, trial_id: str) -> list[Run]:
    """The active runs of ``trial_id`` in the sweep (a query for this trial only, not the whole sweep)."""
    return tracker.client.search_runs([tracker.experiment_id], _trial_query(tracker, trial_id))


def _trial_query(tracker: SweepTracker, trial_id: str) -> str:
    return f"tags.`{PARENT_TAG}` = '{tracker.parent_run_id}' and tags.trial_id = '{trial_id}'"


def start_trial(tracker: SweepTracker, trial_id: str, run_name: str, params: Mapping[str, Any],
                tags: Mapping[str, str] | None = None) -> TrialStart:
    """Open the child run of ``trial_id``, unless MLflow already holds its outcome.

    MLflow's record is the source of truth: a trial with a FINISHED run is never run again (whatever
    Tune's saved state says after a driver was killed), and one whose own code failed is not rerun.
    Any other run of the trial (RUNNING or KILLED: left by a dead worker, an interrupted driver, or an
    attempt of this call that failed after the server made the run) is deleted before the new run
    opens, so no trial ever has two active runs.
    """
    client = tracker.client
    runs = trial_runs(tracker, trial_id)
    for run in runs:
        if run.info.status == "FINISHED":
            return TrialStart(run.info.run_id, "finished", dict(run.data.metrics))
    for run in runs:
        if run.info.status == "FAILED" and run.data.tags.get(FAILURE_TAG) == "exception":
            return TrialStart(run.info.run_id, "failed", dict(run.data.metrics), run.data.tags.get("error", ""))
    for run in runs:
        client.delete_run(run.info.run_id)
    run = client.create_run(
        tracker.experiment_id, run_name=run_name,
        tags={PARENT_TAG: tracker.parent_run_id, ROLE_TAG: "trial", "trial_id": trial_id, **(tags or {})},
    )
    _delete_doubles(client, tracker.experiment_id, _trial_query(tracker, trial_id), run.info.run_id)
    _batch(client, run.info.run_id, params=params)
    return TrialStart(run.info.run_id, "new", {})


def start_configuration(tracker: SweepTracker, trial_id: str, run_name: str, params: Mapping[str, Any],
                        tags: Mapping[str, str] | None = None) -> TrialStart:
    """Like :func:`start_trial`, for a configuration run with repeats (``snnconv.repeats``), whose seed runs are
    nested under it: an unfinished run of the trial (a retry after its worker died, or ``--resume``) is taken up
    again rather than replaced, so the seed runs it already FINISHED are found and not run again."""
    runs = trial_runs(tracker, trial_id)
    unfinished = [run for run in runs if run.info.status in ("RUNNING", "KILLED")]
    if unfinished and not any(run.info.status in ("FINISHED", "FAILED") for run in runs):
        run_id = unfinished[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
        return TrialStart(run_id, "new", {})
    return start_trial(tracker, trial_id, run_name, params, tags)


def record_trial_failure(tracker: SweepTracker, trial_id: str, run_name: str, params: Mapping[str, Any],
                         error: str, kind: str = "worker") -> str:
    """Make sure ``trial_id`` has a FAILED run with an ``error`` tag (called by the driver when Tune
    gives a trial up): its unfinished run is closed FAILED, or, when the trial failed before it could
    open one, a FAILED run is created with its params. A FINISHED run or one already FAILED with an
    error is left as it is. Returns the run id."""
    client = tracker.client
    runs = trial_runs(tracker, trial_id)
    for run in runs:
        if run.info.status == "FINISHED" or (run.info.status == "FAILED" and run.data.tags.get("error")):
            return run.info.run_id
    if runs:
        run_id = runs[0].info.run_id
        for extra in runs[1:]:
            client.delete_run(extra.info.run_id)
    else:
        run_id = client.create_run(
            tracker.experiment_id, run_name=run_name,
            tags={PARENT_TAG: tracker.parent_run_id, ROLE_TAG: "trial", "trial_id": trial_id},
        ).info.run_id
        _batch(client, run_id, params=params)
    _batch(client, run_id, tags={"error": error[:5000], FAILURE_TAG: kind})
    client.set_terminated(run_id, "FAILED")
    return run_id


def record_pruned(tracker: SweepTracker, trial_id: str, scheduler: str, stage: str, progress: float,
                  val_acc: float) -> str | None:
    """Close the run of a trial the scheduler stopped as pruned: KILLED, tags ``pruned`` = "true" and
    ``stopped`` (who stopped it, where), metrics ``pruned_val_acc`` (its last validation accuracy, percent)
    and ``pruned_progress`` (the fraction of its scheduled stage done). Returns the run id (None: no run)."""
    runs = [run for run in trial_runs(tracker, trial_id) if run.info.status == "RUNNING"]
    if not runs:
        return None
    run_id = runs[0].info.run_id
    metrics = {"pruned_val_acc": val_acc, "pruned_progress": progress}
    tags = {"pruned": "true", "stopped": f"pruned by {scheduler} at {progress:.0%} of {stage}"}
    _batch(tracker.client, run_id, tags=tags, metrics={k: v for k, v in metrics.items() if math.isfinite(v)})
    tracker.client.set_terminated(run_id, "KILLED")
    return run_id


def metric_history(tracker: SweepTracker, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every value of metric ``key`` of the run, by step (the latest value of a step)."""
    history = sorted(tracker.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return sorted({m.step: m.value for m in history}.items())


def log_progress(tracker: SweepTracker, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Intermediate metrics (e.g. stage-2 validation) at ``step``, at once (see :class:`ProgressLog`)."""
    finite = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if finite:
        _batch(tracker.client, run_id, metrics=finite, step=step)


class ProgressLog:
    """A trial's progress metrics, written once per stage: :meth:`add` keeps each step's metrics and
    writes the previous stage's in one ``log_batch`` call when a new stage begins; :meth:`flush`
    writes what is kept (a trial flushes before its results and before its run ends, also when it
    fails). One call per stage instead of one per epoch: the trial waits on the store a few times,
    not dozens.

    Progress must not hold training up: a flush makes one attempt (MLflow's client retries within it), and
    what a transient failure left unwritten is kept for the next flush; :meth:`unwritten` gives it to the
    trial's record (``trial_record.py``) at the end. Each metric keeps the timestamp it got in :meth:`add`,
    so a batch sent again after a request the server did carry out is not stored twice."""

    def __init__(self, tracker: SweepTracker, run_id: str) -> None:
        self._client, self._run_id = _writer_client(tracker.tracking_uri), run_id
        self._stage: str | None = None
        self._metrics: list[Any] = []

    def add(self, stage: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if stage != self._stage:
            self.flush()
            self._stage = stage
        now = int(time.time() * 1000)
        self._metrics += [Metric(k, float(v), now, step) for k, v in metrics.items()
                          if isinstance(v, (int, float)) and math.isfinite(v)]

    def flush(self) -> bool:
        """Write what is kept; False when the server failed transiently (it stays kept)."""
        if self._metrics:
            try:
                with_retries(lambda: _log_lists(self._client, self._run_id, self._metrics), retry_s=0.0,
                             what="log progress")
            except TrackingUnavailable:
                return False
            self._metrics = []
        return True

    def unwritten(self) -> list[Any]:
        """The kept metrics (MLflow ``Metric`` entities) no flush has written yet."""
        return list(self._metrics)


class _PickleNoticeFilter(logging.Filter):
    """Drops ``mlflow.pytorch``'s warning that a pickled model runs code when it is loaded: trials
    pickle on purpose (the SNN is rebuilt from the model's own RateNorm / QCFS modules, which
    MLflow's other format, a ``torch.export`` graph, does not keep), and the warning would repeat in
    the sweep's output once per trial."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


def _quiet_pickle_notice() -> None:
    logger = logging.getLogger("mlflow.pytorch")
    if not any(isinstance(item, _PickleNoticeFilter) for item in logger.filters):
        logger.addFilter(_PickleNoticeFilter())


def end_trial(tracker: SweepTracker, run_id: str, status: str = "FINISHED", error: str | None = None,
              metrics: Sequence[Any] = ()) -> None:
    """Close a child run: FINISHED, or FAILED with the error text as the ``error`` tag (and
    ``failure`` = ``exception``: the trial's own code raised it). ``metrics``: MLflow ``Metric`` entities
    written first (made by the caller, so that a retry sends the same timestamps and stores nothing twice)."""
    client = tracker.client
    if metrics:
        _log_lists(client, run_id, metrics)
    if error is not None:
        _batch(client, run_id, tags={"error": error[:5000], FAILURE_TAG: "exception"})
    client.set_terminated(run_id, status)


def metric(key: str, value: float, step: int = 0) -> Any:
    """An MLflow ``Metric`` stamped now (ms)."""
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


def close_unfinished(tracker: SweepTracker, status: str = "KILLED", reason: str = "",
                     keep: Iterable[str] = ()) -> int:
    """End every child run still RUNNING (e.g. stopped by ASHA or an interrupt) but the runs in ``keep``
    (whose results wait to be logged), and the RUNNING seed runs of each such configuration run with repeats;
    returns how many."""
    client = tracker.client
    keep = set(keep)
    running = "attributes.status = 'RUNNING'"
    runs = [run for run in search_children(client, tracker.experiment_id, tracker.parent_run_id, running)
            if run.info.run_id not in keep]
    # a configuration with repeats: its unfinished seed runs end with it
    seeds = [seed for run in runs if "repeats" in run.data.params
             for seed in search_children(client, tracker.experiment_id, run.info.run_id, running)]
    for run in runs + seeds:
        if reason:
            client.set_tag(run.info.run_id, "stopped", reason)
        client.set_terminated(run.info.run_id, status)
    return len(runs) + len(seeds)


def end_sweep(tracker: SweepTracker, status: str = "FINISHED") -> None:
    tracker.client.set_terminated(tracker.parent_run_id, status)


def set_run_tags(tracker: SweepTracker, tags_by_run: Mapping[str, Mapping[str, str]],
                 current: Mapping[str, Mapping[str, str]] | None = None, threads: int = 8) -> int:
    """Set several tags on several runs (one batch per run, ``threads`` runs at a time); a run whose
    ``current`` tags already hold the values is skipped (a resumed sweep of thousands of trials rewrites
    only the tags that changed). Returns how many runs were written."""
    import concurrent.futures

    client = tracker.client
    current = current or {}
    changed = {run_id: tags for run_id, tags in tags_by_run.items()
               if any(current.get(run_id, {}).get(key) != value for key, value in tags.items())}
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(lambda item: _batch(client, item[0], tags=item[1]), changed.items()))
    return len(changed)


def log_artifacts(tracker: SweepTracker, run_id: str, paths: Sequence[Path], artifact_path: str) -> None:
    client = tracker.client
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


def runs_url(tracking_uri: str, experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page listing the experiment's runs (for a server URI, the server itself)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else host
    return f"{base}/#/experiments/{experiment_id}/runs"


# =============================================================================================
# checking a tracking URI before any work starts
# =============================================================================================

#: what an unknown scheme's error suggests instead
URI_HINT = "use a folder, sqlite:///FILE, http(s)://HOST:PORT or another scheme MLflow supports"
#: what an unreachable server's error suggests
SERVER_HINT = "start it (mlflow server ...) or pass another --tracking-uri"
#: what a missing store's error suggests (the wording of :func:`client_for`)
MISSING_HINT = "run a sweep first, or pass --tracking-uri / set MLFLOW_TRACKING_URI"
#: the page ``mlflow server`` answers with the body "OK"
HEALTH_PATH = "/health"


def check_tracking_uri(uri: str | None, *, create: bool, timeout_s: float = 10.0) -> str:
    """The resolved ``uri`` (see :func:`resolve_tracking_uri`; None = $MLFLOW_TRACKING_URI or the
    default) once it is known to be usable, else a one-line :class:`TrackingError`.

    ``create`` says whether the caller will write (a sweep: the store may be created) or only read
    (a report: the store must exist). Local stores (``sqlite:///FILE``, a folder, ``file://``) are
    checked on the file system: with ``create`` their folder must exist or be creatable and be
    writable, without it the store must exist. An ``http(s)`` server must answer ``GET /health``
    with "OK" within ``timeout_s`` seconds, and a one-row experiment search with the credentials
    MLflow would send (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, or
    ``MLFLOW_TRACKING_TOKEN``): a server with authentication that refuses them is an error. Any
    other scheme must be one MLflow knows, and its store
    must answer a one-row query within ``timeout_s`` seconds (MLflow's own retries are not waited for);
    a database (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE``, mysql, mssql) must first
    accept a connection within ``timeout_s`` seconds, else its driver's reason is the error (a refused
    port, a wrong password, a missing database; the password is shown as ``***``).
    Nothing is created but the folder of a local store when ``create`` is true.
    """
    resolved = resolve_tracking_uri(uri)
    scheme = urllib.parse.urlparse(resolved).scheme.lower()
    if scheme.split("+", 1)[0] == "sqlite":
        _check_sqlite_store(resolved, create)
    elif scheme in ("", "file"):
        _check_folder_store(resolved, create)
    elif scheme in ("http", "https"):
        _check_server(resolved, timeout_s)
        _check_credentials(resolved, timeout_s)
    else:
        if scheme.split("+", 1)[0] in DATABASE_SCHEMES:
            _check_database(resolved, scheme, timeout_s)
        _check_other_store(resolved, scheme, timeout_s)
    return resolved


def _check_sqlite_store(uri: str, create: bool) -> None:
    """A ``sqlite:///FILE`` store: writable (``create``) or existing (not ``create``)."""
    path = _sqlite_file(uri)
    if path is None:  # in memory: nothing on disk to check
        return
    if not create:
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {path} (tracking URI {uri}); {MISSING_HINT}")
        return
    problem = _unwritable_folder(path.parent) or _unwritable_file(path)
    if problem:
        raise TrackingError(f"cannot write the MLflow store at {path}: {problem}")


def _sqlite_file(uri: str) -> Path | None:
    """The absolute file of a SQLite URI (``sqlite:///relative`` or ``sqlite:////absolute``, any
    ``sqlite+driver`` and query string); None for an in-memory database."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    name = rest.split("?", 1)[0]
    if not name.startswith("/"):
        if name:
            raise TrackingError(f"tracking URI {uri}: a SQLite store is written sqlite:///FILE")
        return None
    name = name[1:]
    if name in ("", ":memory:"):
        return None
    return Path(name).resolve()


def _check_folder_store(uri: str, create: bool) -> None:
    """A folder store (a plain path or ``file://``): writable (``create``) or existing (not ``create``)."""
    parsed = urllib.parse.urlparse(uri)
    path = Path(urllib.request.url2pathname(parsed.path)).resolve()
    if not create:
        if not path.is_dir():
            raise TrackingError(f"no MLflow store at {path} (tracking URI {uri}); {MISSING_HINT}")
        return
    problem = _unwritable_folder(path)
    if problem:
        raise TrackingError(f"cannot write the MLflow store at {path}: {problem}")


def _unwritable_folder(folder: Path) -> str:
    """Why files cannot be created in ``folder`` ("" when they can): the folder is created if
    missing, then a probe file is written in it and removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder {folder} ({_reason(error)})"
    try:
        handle, probe = tempfile.mkstemp(prefix=".snnconv-probe-", dir=folder)
    except OSError as error:
        return f"cannot create files in {folder} ({_reason(error)})"
    os.close(handle)
    os.unlink(probe)
    return ""


def _unwritable_file(path: Path) -> str:
    """Why an existing ``path`` cannot be written ("" when it can, or does not exist yet)."""
    if not path.exists():
        return ""
    if not path.is_file():
        return "it is not a file"
    try:
        with open(path, "ab"):  # opened for appending, nothing written
            pass
    except OSError as error:
        return _reason(error)
    return ""


def _reason(error: OSError) -> str:
    """An ``OSError`` in a few words ("permission denied"), without its file name."""
    return (error.strerror or str(error)).lower()


def _check_server(uri: str, timeout_s: float) -> None:
    """An MLflow tracking server: ``GET <uri>/health`` must answer "OK" within ``timeout_s`` seconds."""
    shown = _hide_password(uri)
    url = uri.rstrip("/") + HEALTH_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read(64).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as error:
        raise TrackingError(f"tracking server {shown} is not an MLflow server ({HEALTH_PATH} answered HTTP "
                            f"{error.code}); {SERVER_HINT}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _unreachable(shown, error, timeout_s) from None
    if body != "OK":
        raise TrackingError(f"tracking server {shown} is not an MLflow server ({HEALTH_PATH} answered "
                            f"{body[:40]!r}, not 'OK'); {SERVER_HINT}")


#: an authenticated read that any user of an MLflow server may make
PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREDENTIALS_HINT = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the cluster's head holds them)"


def _check_credentials(uri: str, timeout_s: float) -> None:
    """A server with authentication (``mlflow server --app-name basic-auth``) must accept the
    credentials MLflow's client would send: ``MLFLOW_TRACKING_TOKEN`` (bearer) or
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic). A server without
    authentication accepts anything."""
    import base64

    shown = _hide_password(uri)
    request = urllib.request.Request(uri.rstrip("/") + PROBE_PATH)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
        who, check = "the token", "check MLFLOW_TRACKING_TOKEN"
    elif user:
        secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(secret).decode()}")
        who, check = f"the password of user {user!r}", "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    else:
        who, check = None, ""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as error:
        if error.code == 401 and who is None:
            raise TrackingError(f"tracking server {shown} asks for credentials (HTTP 401); "
                                f"{CREDENTIALS_HINT}") from None
        if error.code in (401, 403):
            raise TrackingError(f"tracking server {shown} refused {who} (HTTP {error.code}); {check}") from None
        raise TrackingError(f"tracking server {shown} answered HTTP {error.code} to an experiment search; "
                            f"{SERVER_HINT}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _unreachable(shown, error, timeout_s) from None


def _unreachable(shown: str, error: Exception, timeout_s: float) -> TrackingError:
    return TrackingError(f"tracking server {shown} is not reachable ({_network_reason(error, timeout_s)}); "
                         f"{SERVER_HINT}")


def _network_reason(error: Exception, timeout_s: float) -> str:
    """Why a request failed, in a few words ("connection refused", "no answer within 10 s")."""
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout_s:g} s"
    if isinstance(cause, socket.gaierror):
        return "unknown host"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def _hide_password(uri: str) -> str:
    """``uri`` with the password of ``user:password@host`` replaced by ``***``."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.password is None:
        return uri
    host = parsed.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{parsed.username}:***@{host}"))


def _check_other_store(uri: str, scheme: str, timeout_s: float) -> None:
    """Any other scheme: MLflow must know it, and its store must answer a one-row query in time."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    shown = _hide_password(uri)

    def query() -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)

    try:
        finished = _call_with_timeout(query, timeout_s)
    except UnsupportedModelRegistryStoreURIException as error:
        known = ", ".join(s for s in error.supported_uri_schemes if s)
        raise TrackingError(f"tracking URI {shown}: unknown scheme {scheme!r}; {URI_HINT} ({known})") from None
    except MlflowException as error:
        raise TrackingError(f"cannot open the MLflow store at {shown}: {_first_line(error.message)}") from None
    except Exception as error:  # a missing database driver, a refused connection, ...
        raise TrackingError(f"cannot open the MLflow store at {shown}: {type(error).__name__}: "
                            f"{_first_line(str(error))}") from None
    if not finished:
        raise TrackingError(f"the MLflow store at {shown} did not answer within {timeout_s:g} s; check it is "
                            f"running, or pass another --tracking-uri")


#: MLflow's database stores but SQLite (``mlflow.store.db.db_types``), reached through SQLAlchemy
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
DATABASE_HINT = "check its host, port, user, password and database name, or pass another --tracking-uri"
DRIVER_HINT = "for PostgreSQL write postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE (psycopg 3)"


def _check_database(uri: str, scheme: str, timeout_s: float) -> None:
    """A database store: SQLAlchemy loads its driver and opens one connection within ``timeout_s``
    seconds (the driver's connect timeout where it has one: PostgreSQL, MySQL). Unlike MLflow's
    client, which retries a refused connection for minutes, the first failure is the error."""
    import re

    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = _hide_password(uri)
    password = urllib.parse.urlsplit(uri).password

    def connect() -> None:
        # the drivers with a connect timeout (whole seconds, at least 2)
        timed = scheme.startswith(("postgresql", "mysql"))
        arguments = {"connect_timeout": max(2, math.ceil(timeout_s))} if timed else {}
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, connect_args=arguments)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    try:
        finished = _call_with_timeout(connect, timeout_s + 1)  # a second more: the driver's timeout says more
    except NoSuchModuleError:
        raise TrackingError(f"tracking URI {shown}: SQLAlchemy has no database driver {scheme!r}; "
                            f"{DRIVER_HINT}") from None
    except ImportError as error:  # the dialect is known, its driver is not installed
        raise TrackingError(f"tracking URI {shown}: its database driver is not installed ({error}); "
                            f"{DRIVER_HINT}") from None
    except ArgumentError as error:
        raise TrackingError(f"tracking URI {shown}: not a database URL ({_first_line(str(error))}); "
                            f"{DRIVER_HINT}") from None
    except Exception as error:  # the driver's own error: refused, unknown host, wrong password, no database
        # psycopg: 'connection failed: connection to server at "H", port P failed: FATAL:  <reason>'
        reason = re.sub(r"^.* failed: (?:FATAL: +)?", "", _first_line(str(getattr(error, "orig", None) or error)))
        for secret in {password, urllib.parse.unquote(password or "")} - {None, ""}:
            reason = reason.replace(secret, "***")
        reason = reason[:1].lower() + reason[1:] if reason[1:2].islower() else reason
        raise TrackingError(f"cannot connect to the database {shown}: {reason}; {DATABASE_HINT}") from None
    if not finished:
        raise TrackingError(f"the database {shown} did not answer within {timeout_s:g} s; {DATABASE_HINT}")


def _call_with_timeout(function: Callable[[], None], timeout_s: float) -> bool:
    """Run ``function`` in a daemon thread; True once it returned (its exception is re-raised here),
    False if it is still running after ``timeout_s`` seconds (it is left to finish on its own)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as error:  # handed to the caller's thread
            errors.append(error)

    worker = threading.Thread(target=target, name="snnconv-check-tracking-uri", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return False
    if errors:
        raise errors[0]
    return True


def _first_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
