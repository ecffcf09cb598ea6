"""MLflow model conventions, without Ray: what a finished trial logs besides its metrics (an
MLflow PyTorch model whose metadata rebuilds its SNN, the data set as a dataset input, the final
metrics linked to both), the experiment's kind tag, ``analysis/pareto.py --register`` and the SNN run
again from a loaded model. Two tiny digits trials logged as a sweep logs them, into a SQLite store in
a temporary folder (``slow``: about 15 s for the module). ``test_end_to_end.py`` does the same on a
real Ray sweep."""

from __future__ import annotations

import json
import math
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from snnconv import pareto_command, tracking, trial_record
from snnconv.config import TrialConfig, apply_overrides
from snnconv.data import describe_data, load_data
from snnconv.logged_model import build_snn, evaluate_snn
from snnconv.pipeline import TrialResult, run_trial
from snnconv.sweep_spec import trial_params

TINY = {"model": "small", "device": "cpu", "data.name": "digits", "stage1.epochs": 2, "stage1.lr": 0.05,
        "rnl.epochs": 1, "rnl.inspect_interval": 5, "rnl.t_max": 8, "qcfs.stage1_levels": 4,
        "qcfs.finetune_epochs": 1, "qcfs.t_max": 8}


@dataclass
class Logged:
    uri: str
    folder: Path
    tracker: tracking.SweepTracker
    run_ids: dict[str, str]  # method -> trial run id
    results: dict[str, TrialResult]


@pytest.fixture(scope="module")
def logged(new_mlflow_store, one_thread) -> Logged:
    store = new_mlflow_store("models")
    folder, uri = store.folder, store.uri
    # an experiment made before the kind tag existed (and with its artifacts in the temporary folder)
    store.client().create_experiment("snnconv", artifact_location=store.artifacts)
    tracker = tracking.start_sweep(uri, "snnconv", "sweep-tiny", {}, {tracking.SELECT_ON_TAG: "val"})
    run_ids, results = {}, {}
    for method in ("rnl", "qcfs"):
        config = apply_overrides(TrialConfig(), {**TINY, "method": method, "cache_dir": str(folder / "cache")})
        results[method] = result = run_trial(config)
        start = tracking.start_trial(tracker, f"{method}_0", f"{method}_0", trial_params(config))
        trial_record.log_trial_result(tracker, start.run_id, result, {"levels": result.levels or ""})
        tracking.end_trial(tracker, start.run_id)
        run_ids[method] = start.run_id
    tracking.end_sweep(tracker)
    return Logged(uri, folder, tracker, run_ids, results)


@pytest.fixture
def mlflow_store(logged, monkeypatch):
    """``mlflow.*`` functions (which read MLflow's process-wide tracking URI) on the test's store,
    for this test only."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def test_data_facts_name_the_splits_and_fingerprint_them():
    config = TrialConfig().data
    facts = describe_data(load_data(config), config)
    assert facts.name == "digits" and facts.sizes == {"train": 1257, "val": 180, "test": 360}
    assert len(facts.digest) == 10 and facts.source["split_seed"] == 0
    assert describe_data(load_data(config), config).digest == facts.digest  # deterministic
    other = apply_overrides(TrialConfig(), {"data.split_seed": 1}).data
    assert describe_data(load_data(other), other).digest != facts.digest  # another split, another digest


@pytest.mark.slow  # the two trials and the store: about 8 s for the module
def test_each_trial_logs_an_mlflow_model_its_dataset_and_linked_metrics(logged):
    client = tracking.client_for(logged.uri)
    assert client.get_experiment(logged.tracker.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == (
        "custom_model_development")
    for method, run_id in logged.run_ids.items():
        run = client.get_run(run_id)
        model_id = tracking.run_model_id(client, run)
        assert model_id is not None and tracking.find_run_model(logged.uri, run_id) == model_id
        model = client.get_logged_model(model_id)
        assert model.name == "model" and model.source_run_id == run_id and model.model_type == f"snnconv-{method}"
        assert model.experiment_id == logged.tracker.experiment_id and model.params["method"] == method
        files = {item.path for item in client.list_logged_model_artifacts(model_id)}
        assert {"MLmodel", "data", "requirements.txt", "input_example.json"} <= files
        requirements = Path(urllib.request.url2pathname(urllib.parse.urlparse(model.artifact_location).path))
        names = {line.split("==")[0] for line in (requirements / "requirements.txt").read_text().split()}
        assert names == {"mlflow", "torch", "cloudpickle", "snnconv"}  # given, not inferred
        (dataset_input,) = run.inputs.dataset_inputs
        dataset = dataset_input.dataset
        facts = logged.results[method].data
        assert (dataset.name, dataset.digest) == ("digits", facts.digest) and dataset.source_type == "code"
        assert json.loads(dataset.profile) == {"train": 1257, "val": 180, "test": 360}
        assert json.loads(dataset.schema)["mlflow_tensorspec"]["features"]  # images [-1, 1, 8, 8]
        linked = {metric.key: metric for metric in model.metrics}
        assert linked["acc_op"].value == run.data.metrics["acc_op"]
        assert (linked["acc_op"].dataset_name, linked["acc_op"].dataset_digest) == ("digits", facts.digest)
        assert "snn_acc_t" not in linked  # the curves stay the run's


@pytest.mark.slow  # the two trials and the store: about 8 s for the module
def test_the_model_metadata_rebuilds_the_snn(logged, mlflow_store):
    import mlflow

    for method, run_id in logged.run_ids.items():
        uri = f"runs:/{run_id}/model"
        info = mlflow.models.get_model_info(uri)
        metadata = info.metadata
        result = logged.results[method]
        assert metadata["method"] == method and metadata["snn"] == {"rnl": "if", "qcfs": "pascal"}[method]
        assert metadata["t_op"] == result.operating_point.t_op and metadata["acc_op"] == result.operating_point.acc_op
        assert metadata["input_shape"] == [1, 8, 8] and metadata["num_classes"] == 10
        assert metadata["dataset"]["digest"] == result.data.digest and metadata["config"]["method"] == method
        assert len(metadata["thresholds"]) == 4
        if method == "rnl":
            assert metadata["v_init"] == "zero" and metadata["t_max"] == 8 and isinstance(metadata["t_op"], int)
        else:
            assert metadata["levels"] == result.levels and metadata["snn_dtype"] == "float64"
        assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 1, 8, 8]
        model = mlflow.pytorch.load_model(uri)
        assert type(build_snn(model, metadata)).__name__ == {"rnl": "SmallCNN", "qcfs": "PascalSNN"}[method]
        assert evaluate_snn(model, metadata) == result.operating_point.acc_op  # exact, on the test split


@pytest.mark.slow  # the two trials and the store: about 8 s for the module
def test_register_puts_the_latency_knee_in_the_registry(logged, mlflow_store, tmp_path, capsys):
    import mlflow

    out = tmp_path / "report"
    code = pareto_command.main(["--tracking-uri", logged.uri, "--out", str(out), "--register", "tiny-snn"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    knee = json.loads((out / "summary.json").read_text())["fronts"]["latency"]["knee_run_id"]
    assert "as tiny-snn version 1: load it with mlflow.pytorch.load_model('models:/tiny-snn/1')" in stdout
    client = tracking.client_for(logged.uri)
    version = client.get_model_version("tiny-snn", "1")
    assert version.run_id == knee and version.source == f"models:/{tracking.find_run_model(logged.uri, knee)}"
    assert version.tags["snnconv.front"] == "latency" and version.tags["snnconv.sweep"] == logged.tracker.parent_run_id
    method = next(m for m, run_id in logged.run_ids.items() if run_id == knee)
    model = mlflow.pytorch.load_model("models:/tiny-snn/1")
    metadata = mlflow.models.get_model_info("models:/tiny-snn/1").metadata
    assert evaluate_snn(model, metadata) == client.get_run(knee).data.metrics["acc_op"]
    assert metadata["method"] == method
    code = pareto_command.main(["--tracking-uri", logged.uri, "--out", str(out), "--register", "tiny-snn"])
    assert code == 0 and "as tiny-snn version 2" in capsys.readouterr().out  # a new version each time


@pytest.mark.slow  # the two trials and the store: about 8 s for the module
def test_register_refuses_a_run_without_a_model_before_writing(logged, tmp_path, capsys):
    tracker = tracking.start_sweep(logged.uri, "snnconv", "sweep-without-models", {},
                                   {tracking.SELECT_ON_TAG: "val"})
    result = logged.results["qcfs"]
    bare = TrialResult(**{**result.__dict__, "model": None})
    start = tracking.start_trial(tracker, "bare", "qcfs_bare", {"method": "qcfs"})
    trial_record.log_trial_result(tracker, start.run_id, bare, {})
    tracking.end_trial(tracker, start.run_id)
    tracking.end_sweep(tracker)
    out = tmp_path / "report"
    code = pareto_command.main(["--tracking-uri", logged.uri, "--sweep", tracker.parent_run_id, "--out", str(out),
                               "--register", "x"])
    stderr = capsys.readouterr().err
    assert code == 2 and stderr == f"error: run qcfs_bare ({start.run_id[:8]}) has no logged model\n"
    assert not out.exists()
    code = pareto_command.main(["--tracking-uri", logged.uri, "--sweep", tracker.parent_run_id, "--out", str(out),
                               "--fronts", "omega", "--register", "x"])
    stderr = capsys.readouterr().err
    assert code == 2 and "--register registers the knee of the latency front, which was not analysed" in stderr
    assert not out.exists()


@pytest.mark.slow  # the two trials and the store: about 8 s for the module
def test_batched_logging_loses_nothing_when_the_run_ends(logged):
    """A trial writes its progress once per stage (``ProgressLog``) and its final values in a
    few batched calls and one artifact upload. Every value is counted afterwards, also the last
    stage's, which only the flush before the results writes."""
    tracker = tracking.start_sweep(logged.uri, "snnconv", "sweep-batched", {}, {tracking.SELECT_ON_TAG: "val"})
    result = logged.results["rnl"]
    start = tracking.start_trial(tracker, "batched", "rnl_batched", {"method": "rnl"})
    client = tracking.client_for(logged.uri)
    progress = tracking.ProgressLog(tracker, start.run_id)
    for step in range(1, 41):  # two stages of 20 epochs
        stage = "first" if step <= 20 else "second"
        progress.add(stage, {f"test_{stage}_acc": float(step), f"test_{stage}_loss": -step}, step)
        if step == 21:  # the second stage began: the first one's 20 steps are in the store, in one call
            assert len(client.get_metric_history(start.run_id, "test_first_acc")) == 20
            assert client.get_metric_history(start.run_id, "test_second_acc") == []
    progress.flush()
    trial_record.log_trial_result(tracker, start.run_id, result, {"levels": ""})
    tracking.end_trial(tracker, start.run_id)
    tracking.end_sweep(tracker)
    client = tracking.client_for(logged.uri)
    run = client.get_run(start.run_id)
    assert run.info.status == "FINISHED"
    for key, steps in (("test_first_acc", range(1, 21)), ("test_first_loss", range(1, 21)),
                       ("test_second_acc", range(21, 41)), ("test_second_loss", range(21, 41))):
        history = client.get_metric_history(start.run_id, key)
        assert sorted(m.step for m in history) == list(steps), key
    final = {k for k, v in result.metrics().items() if not math.isnan(v)}
    assert final <= set(run.data.metrics)
    stored = {k: math.inf if run.data.metrics[k] >= sys.float_info.max else run.data.metrics[k] for k in final}
    # (MLflow stores inf as the largest float)
    assert {k: stored[k] for k in final} == pytest.approx({k: result.metrics()[k] for k in final})
    for name, values in result.curves.items():
        history = sorted(client.get_metric_history(start.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, len(values) + 1)) and [m.value for m in history] == values
    assert {item.path for item in client.list_artifacts(start.run_id)} >= {"layers.csv", "acc_curves.csv", "tables"}
    assert {item.path for item in client.list_artifacts(start.run_id, "tables")} == {
        f"tables/{name}.csv" for name, rows in result.tables.items() if rows}
