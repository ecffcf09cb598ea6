"""MLflow glue: the only library module (with sweep.py) that imports mlflow.

Tracking contract (DESIGN.md section 5): one parent run per sweep (tag ``snnconv.role=sweep``),
one child run per trial (tags ``mlflow.parentRunId``, ``snnconv.role=trial``, ``trial_id``) with
the trial's params, the metrics ``ann_acc``, ``snn_acc``, ``snn_acc_t`` (step = t), ``omega``,
``t_eff``, ``synops``, ``energy_mj``, ``equiv_max_abs_err``, a per-layer table ``layers.csv`` and
the final weights ``model/weights.pt``. After the sweep every child gets ``pareto_omega`` and
``pareto_t_eff`` tags.

With no ``--tracking-uri`` and no ``MLFLOW_TRACKING_URI`` the store is ``sqlite:///mlflow.db`` in
the current folder, MLflow 3's own default, so ``mlflow ui`` started there opens it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from .pipeline import TrialResult

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "snnconv"
ROLE_TAG = "snnconv.role"
PARENT_TAG = "mlflow.parentRunId"


# ---------------------------------------------------------------------------------------------
# writing (the sweep)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``; relative SQLite paths and
    plain folders are made absolute (Ray Tune workers run in other directories)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


def _client(tracking_uri: str) -> "MlflowClient":
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: "MlflowClient", name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)


def _text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


def _batch(client: "MlflowClient", run_id: str, metrics: Mapping[str, float] | None = None,
           params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None, step: int = 0) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
        params=[Param(k, _text(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, _text(v)) for k, v in (tags or {}).items()],
    )


@dataclass(frozen=True)
class SweepTracker:
    """Where a sweep logs: picklable, so Ray ships it to every trial."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    @property
    def client(self) -> "MlflowClient":
        return _client(self.tracking_uri)


def start_sweep(tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, Any],
                tags: Mapping[str, Any]) -> SweepTracker:
    """Create the experiment if needed and open the sweep's parent run."""
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags={ROLE_TAG: "sweep", **tags})
    _batch(client, run.info.run_id, params=params)
    return SweepTracker(tracking_uri, experiment_id, run.info.run_id)


def reopen_sweep(tracker: SweepTracker) -> None:
    """Mark a resumed sweep's parent run RUNNING again."""
    tracker.client.update_run(tracker.parent_run_id, status="RUNNING")


def child_runs(tracker: SweepTracker, status: str | None = None) -> list:
    """The sweep's trial runs (optionally only those with ``status``)."""
    query = f"tags.`{PARENT_TAG}` = '{tracker.parent_run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return tracker.client.search_runs([tracker.experiment_id], query, max_results=50000)


def start_trial(tracker: SweepTracker, trial_id: str, run_name: str, params: Mapping[str, Any],
                tags: Mapping[str, str] | None = None) -> str:
    """Open the child run of ``trial_id``; an unfinished run left by an interrupted attempt of the
    same trial is deleted first, so a resumed sweep never holds two runs of one trial."""
    client = tracker.client
    for run in child_runs(tracker):
        if run.data.tags.get("trial_id") == trial_id and run.info.status != "FINISHED":
            client.delete_run(run.info.run_id)
    run = client.create_run(
        tracker.experiment_id, run_name=run_name,
        tags={PARENT_TAG: tracker.parent_run_id, ROLE_TAG: "trial", "trial_id": trial_id, **(tags or {})},
    )
    _batch(client, run.info.run_id, params=params)
    return run.info.run_id


def log_progress(tracker: SweepTracker, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Intermediate metrics (e.g. stage-2 validation) at ``step``."""
    finite = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if finite:
        _batch(tracker.client, run_id, metrics=finite, step=step)


def log_trial_result(tracker: SweepTracker, run_id: str, result: "TrialResult", extra_params: Mapping[str, Any]) -> None:
    """Final metrics, the acc(t) curve as ``snn_acc_t`` (one batch), per-layer tables and weights."""
    import pandas as pd
    import torch
    from mlflow.entities import Metric

    client = tracker.client
    metrics = {k: v for k, v in result.metrics().items() if math.isfinite(v)}
    _batch(client, run_id, metrics=metrics, params=extra_params)
    now = int(time.time() * 1000)
    curve = [Metric("snn_acc_t", float(acc), now, t) for t, acc in enumerate(result.acc_curve, start=1)]
    for start in range(0, len(curve), 1000):
        client.log_batch(run_id, metrics=curve[start:start + 1000])
    with tempfile.TemporaryDirectory() as folder:
        folder_path = Path(folder)
        if result.layers:
            pd.DataFrame(result.layers).to_csv(folder_path / "layers.csv", index=False)
            client.log_artifact(run_id, str(folder_path / "layers.csv"))
        if result.acc_curve:
            pd.DataFrame({"t": range(1, len(result.acc_curve) + 1), "snn_acc": result.acc_curve}).to_csv(
                folder_path / "acc_curve.csv", index=False)
            client.log_artifact(run_id, str(folder_path / "acc_curve.csv"))
        for name, rows in result.tables.items():
            if rows:
                pd.DataFrame(rows).to_csv(folder_path / f"{name}.csv", index=False)
                client.log_artifact(run_id, str(folder_path / f"{name}.csv"), "tables")
        if result.model is not None:
            torch.save(result.model.state_dict(), folder_path / "weights.pt")
            client.log_artifact(run_id, str(folder_path / "weights.pt"), "model")


def end_trial(tracker: SweepTracker, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
    """Close a child run: FINISHED, or FAILED with the error text as the ``error`` tag."""
    client = tracker.client
    if error is not None:
        client.set_tag(run_id, "error", error[:5000])
    client.set_terminated(run_id, status)


def close_unfinished(tracker: SweepTracker, status: str = "KILLED", reason: str = "") -> int:
    """End every child run still RUNNING (e.g. stopped by ASHA or an interrupt); returns how many."""
    client = tracker.client
    runs = child_runs(tracker, "RUNNING")
    for run in runs:
        if reason:
            client.set_tag(run.info.run_id, "stopped", reason)
        client.set_terminated(run.info.run_id, status)
    return len(runs)


def end_sweep(tracker: SweepTracker, status: str = "FINISHED") -> None:
    tracker.client.set_terminated(tracker.parent_run_id, status)


def set_run_tags(tracker: SweepTracker, tags_by_run: Mapping[str, Mapping[str, str]]) -> None:
    """Set several tags on several runs (one batch per run)."""
    client = tracker.client
    for run_id, tags in tags_by_run.items():
        _batch(client, run_id, tags=tags)


def log_artifacts(tracker: SweepTracker, run_id: str, paths: Iterable[Path], artifact_path: str) -> None:
    client = tracker.client
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


def runs_url(tracking_uri: str, experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page listing the experiment's runs (for a server URI, the server itself)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else host
    return f"{base}/#/experiments/{experiment_id}/runs"
