"""A finished trial's result, written to its own folder first, then logged to MLflow from there.

A trial computes for minutes or hours; the tracking server may be busy or away when it ends. So the
result is first written to a folder, the **record** (:func:`save_trial_record`), in files MLflow can
take as they are; then :func:`log_trial_record` sends the folder to the trial's run, retried with
backoff for at most the sweep's ``retry_s`` (``tracking_retry.py``). A record that still cannot be
logged is handed to Tune as the trial's checkpoint, so it lands in the sweep's storage folder, and
``--resume`` logs it (:func:`waiting_records`, :func:`log_waiting_records`).

The folder::

    snnconv_record.json   where to log (tracking URI, experiment, parent run, run, trial id) and what:
                          metrics (key, value, timestamp in ms, step, linked to the model or not),
                          params, tags, the dataset input, the logged model's type
    artifacts/            layers.csv, acc_curves.csv, tables/<name>.csv, image_results.json (which images the
                          trial gets right at its operating point: ``snnconv.paired``)
    model/                the final model in MLflow's PyTorch format (mlflow.pytorch.save_model)

Logging a record is idempotent: every metric keeps the timestamp it got when the record was written
(MLflow's store skips a metric it already holds with the same key, step, timestamp and value), the
run's logged model is looked up before one is created, the dataset input and model output are added
only when the run lacks them, artifacts are overwritten by the same files. So a record logged twice
(a retry after a request the server did carry out, or ``--resume`` after a crash) is in MLflow once.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paired, tracking
from .tracking_retry import TrackingUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from .pipeline import TrialResult

#: the record's description file; its presence marks a folder as a record
RECORD_FILE = "snnconv_record.json"
#: written beside it once the record is in MLflow (by the driver or --resume)
LOGGED_FILE = "logged"
RECORD_FORMAT = 1


def save_trial_record(result: TrialResult, extra_params: Mapping[str, Any], folder: Path,
                      tracker: tracking.SweepTracker, run_id: str, trial_id: str = "",
                      unwritten: Sequence[Any] = ()) -> Path:
    """Write ``result`` (its final metrics linked to its model and data set, each accuracy curve as a
    stepped metric with step = t, per-layer tables, the model in MLflow's PyTorch format, the data set as
    a dataset input) and ``extra_params`` into ``folder`` (created), for run ``run_id`` of ``tracker``'s
    sweep. ``unwritten``: progress metrics (MLflow ``Metric`` entities) the trial could not write yet.
    Params: the result's own (``device``, ``gpu_name``: :meth:`TrialResult.params`) and ``extra_params``.
    Returns ``folder``. Nothing here talks to the tracking server."""
    import pandas as pd

    folder = Path(folder)
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    data = result.data
    metrics = [[k, float(v), now, 0, True] for k, v in result.metrics().items()
               if not math.isnan(v)]  # inf stays: "never reached"
    metrics += [[name, float(acc), now, t, False] for name, values in result.curves.items()
                for t, acc in enumerate(values, start=1)]
    metrics += [[m.key, float(m.value), int(m.timestamp), int(m.step), False] for m in unwritten]
    if result.layers:
        pd.DataFrame(result.layers).to_csv(folder / "artifacts" / "layers.csv", index=False)
    if result.curves:
        steps = max(len(values) for values in result.curves.values())
        table = pd.DataFrame({"t": range(1, steps + 1)})
        for name, values in result.curves.items():
            table[name] = pd.Series(values, dtype=float)
        table.to_csv(folder / "artifacts" / "acc_curves.csv", index=False)
    for name, rows in result.tables.items():
        if rows:
            (folder / "artifacts" / "tables").mkdir(exist_ok=True)
            pd.DataFrame(rows).to_csv(folder / "artifacts" / "tables" / f"{name}.csv", index=False)
    tags = {f"warning.{name}": tracking._text(text) for name, text in result.warnings.items()}
    if result.image_correct and data is not None:
        image_results = paired.ImageResults(data.digest, result.image_correct)
        (folder / "artifacts" / paired.IMAGE_RESULTS_FILE).write_text(json.dumps(image_results.to_json()))
        tags[paired.IMAGE_RESULTS_TAG] = paired.IMAGE_RESULTS_FILE
    if result.model is not None:
        _save_model(result, folder / "model", run_id)
    record = {
        "format": RECORD_FORMAT, "tracking_uri": tracker.tracking_uri, "experiment_id": tracker.experiment_id,
        "parent_run_id": tracker.parent_run_id, "run_id": run_id, "trial_id": trial_id,
        "metrics": metrics,
        "params": {k: tracking._text(v) for k, v in {**result.params(), **extra_params}.items()},
        "tags": tags,
        "dataset": _dataset_input(result) if data is not None else None,
        "model_type": f"snnconv-{result.method}" if result.model is not None else None,
    }
    (folder / RECORD_FILE).write_text(json.dumps(record))
    return folder


def read_record(folder: Path) -> dict[str, Any]:
    """The description (``snnconv_record.json``) of the record in ``folder``."""
    return json.loads((Path(folder) / RECORD_FILE).read_text())


def record_tracker(record: Mapping[str, Any], retry_s: float) -> tracking.SweepTracker:
    """The sweep a record belongs to, as a tracker with the bound ``retry_s`` (s)."""
    return tracking.SweepTracker(record["tracking_uri"], record["experiment_id"], record["parent_run_id"], retry_s)


def log_trial_record(folder: Path, retry_s: float) -> str:
    """Log the record in ``folder`` to its run (every part only once, see the module's docstring), each
    call retried with backoff while the server fails transiently, for at most ``retry_s`` seconds
    (:class:`TrackingUnavailable` after). The run is not closed here. Returns the run id."""
    record = read_record(folder)
    _log_record(record_tracker(record, retry_s), Path(folder), record)
    return record["run_id"]


def log_trial_result(tracker: tracking.SweepTracker, run_id: str, result: TrialResult,
                     extra_params: Mapping[str, Any]) -> None:
    """:func:`save_trial_record` into a temporary folder, then :func:`log_trial_record` from it (the run
    stays open): a result logged at once, for code that needs no record kept."""
    with tempfile.TemporaryDirectory() as folder:
        save_trial_record(result, extra_params, Path(folder), tracker, run_id)
        log_trial_record(Path(folder), tracker.retry_s)


def _log_record(tracker: tracking.SweepTracker, folder: Path, record: Mapping[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    client = tracker.client
    run_id = record["run_id"]
    run = client.get_run(run_id)
    if run.info.lifecycle_stage == "deleted":  # deleted meanwhile (a rerun of its trial): the result wins back
        client.restore_run(run_id)
    if record["dataset"] is not None:
        digests = {item.dataset.digest for item in (run.inputs.dataset_inputs if run.inputs else [])}
        if record["dataset"]["digest"] not in digests:
            client.log_inputs(run_id, datasets=[_dataset_entity(record["dataset"])])
    model_id = None
    if record["model_type"] is not None:
        model_id, ready = _run_model(client, tracker, run, record)
    data = record["dataset"] or {}
    metrics = [Metric(key, value, timestamp, step,
                      model_id=model_id if linked else None,
                      dataset_name=data.get("name") if linked else None,
                      dataset_digest=data.get("digest") if linked else None)
               for key, value, timestamp, step, linked in record["metrics"]]
    params = [Param(k, v) for k, v in record["params"].items()]
    tags = [RunTag(k, v) for k, v in record["tags"].items()]
    tracking._log_lists(client, run_id, metrics, params, tags)
    if any((folder / "artifacts").iterdir()):
        client.log_artifacts(run_id, str(folder / "artifacts"))
    if model_id is not None and not ready:
        _send_model(client, run_id, model_id, folder / "model")
    if model_id is not None:
        outputs = {item.model_id for item in (run.outputs.model_outputs if run.outputs else [])}
        if model_id not in outputs:
            from mlflow.entities import LoggedModelOutput

            client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])


def _run_model(client: MlflowClient, tracker: tracking.SweepTracker, run: Any,
               record: Mapping[str, Any]) -> tuple[str, bool]:
    """(id, is READY) of the run's logged model named ``model``: an existing one (READY first, else one left
    PENDING or FAILED by an attempt that did not finish), or a new PENDING one with the run's params."""
    run_id = run.info.run_id
    found = client.search_logged_models([tracker.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    mine = [model for model in found if model.name == tracking.MODEL_NAME]
    for model in mine:
        if str(model.status) == "READY":
            return model.model_id, True
    if mine:
        return mine[0].model_id, False
    params = {**run.data.params, **record["params"]}
    logged = client.create_logged_model(tracker.experiment_id, name=tracking.MODEL_NAME, source_run_id=run_id,
                                        params=params, model_type=record["model_type"])
    # a double made by a create request sent twice (its first answer lost) goes
    for model in client.search_logged_models([tracker.experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if model.model_id != logged.model_id and model.name == tracking.MODEL_NAME:
            client.delete_logged_model(model.model_id)
    return logged.model_id, False


def _dataset_input(result: TrialResult) -> dict[str, Any]:
    """The trial's data set as the fields of an MLflow dataset input: name, digest, source (how it was
    loaded), profile (images per split, ``{"train": n, "val": n, "test": n}``), context ``train+val+test``
    and schema (images [-1, C, H, W] float32, labels [-1] int64)."""
    import numpy as np
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types import Schema, TensorSpec

    data = result.data
    assert data is not None
    source = CodeDatasetSource(tags={key: str(value) for key, value in data.source.items()})
    schema = None
    shape = result.model_metadata.get("input_shape")
    if shape:
        schema = json.dumps(TensorDatasetSchema(  # {"mlflow_tensorspec": ...}, as mlflow.data's numpy sets
            features=Schema([TensorSpec(np.dtype(np.float32), (-1, *shape), "images")]),
            targets=Schema([TensorSpec(np.dtype(np.int64), (-1,), "labels")])).to_dict())
    return {"name": data.name, "digest": data.digest, "source_type": source._get_source_type(),
            "source": source.to_json(), "schema": schema, "profile": json.dumps(data.sizes),
            "context": "+".join(data.sizes)}


def _dataset_entity(fields: Mapping[str, Any]) -> Any:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=fields["name"], digest=fields["digest"], source_type=fields["source_type"],
                      source=fields["source"], schema=fields["schema"], profile=fields["profile"])
    return DatasetInput(dataset, tags=[InputTag(tracking.DATASET_CONTEXT_TAG, fields["context"])])


def model_requirements() -> list[str]:
    """The logged models' pip requirements, given so that MLflow infers none (a slow import scan
    per trial): pinned torch and cloudpickle (``mlflow.pytorch``'s defaults) and snnconv, whose
    classes the pickled model is made of."""
    import mlflow.pytorch

    try:
        snnconv = f"snnconv=={importlib.metadata.version('snnconv')}"
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without install
        snnconv = "snnconv"
    return [*mlflow.pytorch.get_default_pip_requirements(), snnconv]


def _save_model(result: TrialResult, path: Path, run_id: str) -> None:
    """Write ``result.model`` (a CPU copy, eval mode) to ``path`` in MLflow's PyTorch model format, with
    its signature, an input example, pinned requirements and the metadata that rebuilds its SNN. The
    logged model's id is written into its ``MLmodel`` file when it is sent (:func:`_send_model`).

    This and :func:`_send_model` are what ``mlflow.pytorch.log_model`` does (see ``docs/tracking.md``),
    split so that the model is on disk before the server is asked for anything: that function logs
    wherever MLflow's process-wide tracking URI points and puts the model in the process's active
    experiment, not in the run's.
    """
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema, TensorSpec

    assert result.model is not None
    model = copy.deepcopy(result.model).cpu().eval()
    metadata = result.model_metadata
    example = result.example_input.numpy() if result.example_input is not None else None
    signature = None
    if metadata.get("input_shape") and metadata.get("num_classes"):
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *metadata["input_shape"]))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, metadata["num_classes"]))]))
    tracking._quiet_pickle_notice()
    if path.exists():
        shutil.rmtree(path)
    mlflow.pytorch.save_model(
        model, str(path), mlflow_model=Model(run_id=run_id), signature=signature, input_example=example,
        pip_requirements=model_requirements(), metadata=dict(metadata), serialization_format="pickle")


def _send_model(client: MlflowClient, run_id: str, model_id: str, path: Path) -> None:
    """Upload the model saved at ``path`` into the LoggedModel ``model_id`` (its ``MLmodel`` file names
    that model and its artifact location) and mark it READY."""
    from mlflow.models import Model

    logged = client.get_logged_model(model_id)
    with tempfile.TemporaryDirectory() as folder:
        copy_path = Path(folder) / tracking.MODEL_NAME
        shutil.copytree(path, copy_path)
        description = Model.load(str(copy_path / "MLmodel"))
        description.model_id = description.model_uuid = model_id
        description.artifact_path = logged.artifact_location
        description.run_id = run_id
        description.save(str(copy_path / "MLmodel"))
        client.log_model_artifacts(model_id, str(copy_path))
    client.finalize_logged_model(model_id, "READY")


# ---------------------------------------------------------------------------------------------
# records that wait: kept in the sweep's storage folder (Tune's checkpoints), logged later


def waiting_records(storage_dir: Path) -> list[Path]:
    """The records kept under the sweep's storage folder (the checkpoints of trials whose result could not be
    logged when they ended) and not logged since, oldest first."""
    found = [path.parent for path in Path(storage_dir).rglob(RECORD_FILE) if not (path.parent / LOGGED_FILE).exists()]
    return sorted(found, key=lambda folder: (folder / RECORD_FILE).stat().st_mtime)


def log_waiting_records(storage_dir: Path, retry_s: float) -> tuple[int, list[str]]:
    """Log every waiting record under ``storage_dir`` (:func:`waiting_records`) and close its run FINISHED
    (a run already FINISHED is left alone: logged before the marker was written); ``(how many were logged
    now, the run ids still waiting)``. Once the server stays unreachable for ``retry_s`` seconds the rest
    wait too (one bound for all, not one each); a record that fails for a reason that is not transient (its
    run deleted from the store, say) stays waiting. Each one left is reported in one line on stderr."""
    import sys

    from mlflow.exceptions import MlflowException

    logged, waiting, reachable = 0, [], True
    for folder in waiting_records(storage_dir):
        record = read_record(folder)
        tracker = record_tracker(record, retry_s)
        try:
            if not reachable:
                raise TrackingUnavailable("the tracking server did not answer for the records before")
            if tracking.run_status(tracker, record["run_id"]) != "FINISHED":
                log_trial_record(folder, retry_s)
                tracking.end_trial(tracker, record["run_id"], "FINISHED")
                logged += 1
            (folder / LOGGED_FILE).write_text(record["run_id"] + "\n")
        except (TrackingUnavailable, MlflowException) as error:
            reachable = reachable and not isinstance(error, TrackingUnavailable)
            print(f"the result of trial {record['trial_id']} (run {record['run_id'][:8]}) still waits in "
                  f"{folder}: {str(error).splitlines()[0][:200]}", file=sys.stderr, flush=True)
            waiting.append(record["run_id"])
    return logged, waiting
