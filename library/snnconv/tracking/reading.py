"""Reading sweeps and their trial runs: :func:`load_sweep` (a sweep's parent run and its trial table),
:func:`search_children`, :func:`trials_frame`, metric histories, per-image results and the published
figures a sweep logged. MLflow is imported lazily.

Every function takes the tracking URI (or a client) explicitly and talks to it through its own
``MlflowClient``: nothing here changes MLflow's process-wide tracking URI (``mlflow.set_tracking_uri``
also rewrites the ``MLFLOW_TRACKING_URI`` environment variable, which a library should not do behind a
caller's back).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from ..paired import IMAGE_RESULTS_TAG
from ..tracking_retry import RetryingClient, TrackingUnavailable
from .contract import (
    DEFAULT_EXPERIMENT,
    INTERVAL_METRICS,
    NUMERIC_PARAMS,
    PARENT_TAG,
    ROLE_TAG,
    SELECT_ON_TAG,
    TRIAL_METRICS,
    TRIAL_TAGS,
    TrackingError,
    trial_param_names,
)
from .uri import resolve_tracking_uri

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Experiment, Run



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
    base = ["run_id", "run_name", "status", "start_time", *TRIAL_TAGS, *trial_param_names(), *TRIAL_METRICS]
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

    from ..paired import IMAGE_RESULTS_FILE, ImageResults

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
    from ..fixed_latency import PUBLISHED_FILE

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
