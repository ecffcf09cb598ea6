"""Each trial's logged model and the Model Registry: :func:`find_run_model` (the model a trial run
logged), :func:`load_run_model`, :func:`register_run_model` (a version in the registry),
:func:`log_run_outputs` (files and metrics added to a finished run). MLflow is imported lazily.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contract import MODEL_NAME, TrackingError
from .reading import _get_run, client_for
from .uri import _first_line
from .writing import _batch, _writer_client

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities import Run


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
    conversion settings, ``snnconv.logged_model.model_metadata``). ``TrackingError`` when the run logged
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
