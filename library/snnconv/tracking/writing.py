"""Writing a sweep: its parent run (:func:`start_sweep`, a :class:`SweepTracker` that Ray ships to every
trial), each trial's child run (:func:`start_trial`, :func:`end_trial`, :class:`ProgressLog`, failures
and pruning), the tags written after it (:func:`set_run_tags`) and the analysis report
(:func:`attach_report`). Every call goes through a client that retries transient failures
(``tracking_retry.py``). MLflow is imported lazily.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..tracking_retry import DEFAULT_RETRY_S, RetryingClient, TrackingUnavailable, with_retries
from .contract import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FAILURE_TAG, PARENT_TAG, ROLE_TAG
from .reading import client_for, search_children

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Experiment, Run


def _writer_client(tracking_uri: str) -> MlflowClient:
    """A client that may create the store (unlike :func:`client_for`, which only reads)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _retrying_writer_client(tracking_uri: str, retry_s: float) -> MlflowClient:
    """:func:`_writer_client` with every call retried for up to ``retry_s`` (``tracking_retry.RetryingClient``,
    which has an ``MlflowClient``'s methods by delegation: typed as the client it wraps)."""
    return cast("MlflowClient", RetryingClient(_writer_client(tracking_uri), retry_s))


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
            experiment = cast("Experiment", client.get_experiment_by_name(name))  # made meanwhile: it exists
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
        return _retrying_writer_client(self.tracking_uri, self.retry_s)


def start_sweep(tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, Any],
                tags: Mapping[str, Any], retry_s: float = DEFAULT_RETRY_S) -> SweepTracker:
    """Create the experiment if needed and open the sweep's parent run (each call retried for up to
    ``retry_s``; a double of the parent made by a request sent twice is deleted)."""
    client = _retrying_writer_client(tracking_uri, retry_s)
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


def attach_report(tracking_uri: str, sweep_id: str, folder: Path, artifact_path: str = "report") -> None:
    """Upload every file of ``folder`` to the sweep's parent run under ``artifact_path/``."""
    client_for(tracking_uri).log_artifacts(sweep_id, str(folder), artifact_path=artifact_path)
