"""The user's path on a real tiny sweep: `lambda_sweep.py` with the default store, then
`analysis/pareto.py`, then `mlflow ui` (started in the same folder with no arguments) serving the runs;
and `analysis/pareto.py --register`, whose registered model loads with `mlflow.pytorch.load_model` and,
run as an SNN, gives its trial's logged accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml

from tests.servers import free_port

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SPEC = {
    "name": "e2e", "methods": ["rnl", "qcfs", "datanorm"], "num_samples": 3, "max_concurrent": 2,
    "cpus_per_trial": 1,
    "trial": {"model": "small", "device": "cpu", "data": {"name": "digits"}, "stage1": {"epochs": 4, "lr": 0.05},
              "rnl": {"epochs": 1, "inspect_interval": 5, "t_max": 12},
              "qcfs": {"stage1_levels": 4, "finetune_epochs": 1, "t_max": 12},
              "datanorm": {"calibration_batches": 2, "t_max": 12}},
    "space": {"rnl": {"rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0, "zero_fraction": 0.3}},
              "qcfs": {"qcfs.levels": {"type": "choice", "values": ["uniform", "halve-middle", "front-heavy"]}},
              "datanorm": {"datanorm.percentile": {"type": "uniform", "low": 99.0, "high": 100.0}}},
    # figures made up for this test, printed beside the report's fixed-latency table
    "published": [{"label": "made up", "method": "qcfs", "source": "this test", "ann": 90.0, "accuracy": {4: 50.0}},
                  {"label": "also made up", "method": "rnl", "source": "this test", "accuracy": {8: 60.0, 64: 70.0}}],
}


def recompute_front(runs, cost: str, within_method: bool) -> set[str]:
    """Run ids no other finished run beats: validation accuracy at the operating point >= and ``cost``
    <= with one of them strict (among runs of the same method when ``within_method``)."""
    points = {run.info.run_id: (run.data.params["method"], run.data.metrics["val_acc_op"], run.data.metrics[cost])
              for run in runs if run.info.status == "FINISHED"}

    def beats(q, p):
        return (q[0] == p[0] or not within_method) and q[1] >= p[1] and q[2] <= p[2] and (q[1], q[2]) != (p[1], p[2])

    return {run_id for run_id, p in points.items() if not any(beats(q, p) for q in points.values())}


#: the environment of every command here: MLflow's default store (./mlflow.db), no other
ENV = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


@dataclass
class Sweep:
    """The tiny sweep, run once for the module in ``folder`` (its store: ``folder/mlflow.db``)."""

    folder: Path
    stdout: str


@pytest.fixture(scope="module")
def e2e_sweep(tmp_path_factory) -> Sweep:
    folder = tmp_path_factory.mktemp("e2e")
    spec = dict(SPEC, trial={**SPEC["trial"], "cache_dir": str(folder / "cache")})
    (folder / "e2e.yaml").write_text(yaml.safe_dump(spec))
    sweep = subprocess.run([sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", "e2e.yaml",
                            "--num-cpus", "2"], cwd=folder, env=ENV, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    return Sweep(folder, sweep.stdout)


@pytest.mark.timeout(600)
def test_sweep_then_report_then_mlflow_ui(e2e_sweep):
    from mlflow import MlflowClient

    tmp_path, env, sweep = e2e_sweep.folder, ENV, e2e_sweep
    assert (tmp_path / "mlflow.db").is_file(), "the default store is ./mlflow.db"
    lines = [line for line in sweep.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 9 and all(" done " in line for line in lines)
    assert "mlflow ui" in sweep.stdout and "python analysis/pareto.py --sweep" in sweep.stdout

    report = subprocess.run([sys.executable, str(ROOT / "analysis" / "pareto.py"), "--out", "report"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    folder = tmp_path / "report"
    for name in ("report.html", "report.md", "pareto.csv", "front_latency.png", "front_energy.png",
                 "front_omega.png", "acc_curves.png"):
        assert (folder / name).is_file(), name
    for png in folder.glob("*.png"):
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, png.name
    assert "data:image/png;base64," in (folder / "report.html").read_text()

    # the sweep's pareto_* tags match a recomputation from the logged metrics (written out here, not
    # through snnconv.pareto), and the report's front membership agrees with them
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("snnconv")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # mlflow ui: training views
    table = pd.read_csv(folder / "pareto.csv")
    assert len(table) == 9 and set(table["method"]) == {"rnl", "qcfs", "datanorm"}
    # the baseline is on the report's table with its own setting, and drawn on the fronts
    markdown = (folder / "report.md").read_text()
    assert "| datanorm | p=99." in markdown or "| datanorm | p=100 |" in markdown
    assert "datanorm" in (folder / "report.html").read_text()
    runs = {row["run_id"]: client.get_run(row["run_id"]) for _, row in table.iterrows()}
    for front, cost in (("latency", "t_op"), ("energy", "energy_op_mj"), ("omega", "omega")):
        expected = recompute_front(runs.values(), cost, within_method=front == "omega")
        tags = {run_id: run.data.tags[f"pareto_{front}"] for run_id, run in runs.items()}
        assert tags == {run_id: str(run_id in expected).lower() for run_id in runs}, front
        assert expected, front
        assert set(table.loc[table[f"front_{front}"], "run_id"]) == expected, front
    assert "pareto_latency (" in sweep.stdout and "pareto_omega (" in sweep.stdout

    # the papers' table: at each T, the run with the best validation accuracy there (recomputed here from the
    # logged curves), its test accuracy; the published figures beside it, ours minus theirs
    fixed = pd.DataFrame(json.loads((folder / "summary.json").read_text())["fixed_latency"])
    assert "accuracy at fixed latencies" in report.stdout and "[made up] this test" in report.stdout
    for method, (val_key, test_key) in {"rnl": ("val_snn_acc_t", "snn_acc_t"),
                                        "qcfs": ("val_if_snn_acc_t", "if_snn_acc_t"),
                                        "datanorm": ("val_snn_acc_t", "snn_acc_t")}.items():
        rows = fixed[fixed["method"] == method].set_index("latency")
        mine = [run for run in runs.values() if run.data.params["method"] == method]
        for step in (1, 2, 4, 8, 16):
            row = rows.loc[f"T = {step} IF steps"]
            if step > 12:  # beyond T_max
                assert row["run"] == "-"
                continue
            def history(run, key):
                return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}

            curves = {run.info.run_name: (history(run, val_key), history(run, test_key)) for run in mine}
            best = max(value[0][step] for value in curves.values())
            assert curves[row["run"]][0][step] == best and row["test acc"] == curves[row["run"]][1][step]
    qcfs = fixed[fixed["method"] == "qcfs"].set_index("latency")
    assert qcfs.loc["T = 4 IF steps", "published"] == "50.00 [made up]"
    difference = qcfs.loc["T = 4 IF steps", "test acc"] - 50
    assert qcfs.loc["T = 4 IF steps", "ours − published"] == f"{difference:+.2f} [made up]"
    assert qcfs.loc["ANN", "published"] == "90.00 [made up]"
    assert fixed.loc[fixed["method"] == "rnl"].set_index("latency").loc["T = 64 IF steps", "published"] == \
        "70.00 [also made up]"
    assert sum(latency.startswith("PASCAL T_eff") for latency in qcfs.index) >= 1

    # `mlflow ui` started in that folder with no arguments serves the same runs
    port = free_port()
    ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--port", str(port)], cwd=tmp_path, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, payload = time.time() + 120, None
        while time.time() < deadline and payload is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=snnconv")
                with urllib.request.urlopen(request, timeout=2) as response:
                    payload = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert payload is not None, "mlflow ui did not start"
        experiment_id = payload["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.load(response)["runs"]
        assert len(runs) == 10  # the sweep's parent run and its nine trials
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(30)


#: what a user runs to load a registered model and run it as an SNN (docs/pareto.md), for each URI
#: given as an argument; prints {uri: [accuracy, the metadata's method]} as JSON
LOAD = """
import json, sys
import mlflow
from snnconv.logged_model import evaluate_snn

found = {}
for uri in sys.argv[1:]:
    model = mlflow.pytorch.load_model(uri)
    metadata = mlflow.models.get_model_info(uri).metadata
    found[uri] = [evaluate_snn(model, metadata), metadata["method"]]
print(json.dumps(found))
"""


@pytest.mark.timeout(300)
def test_register_the_latency_knee_and_run_it_as_an_snn(e2e_sweep):
    """``--register`` registers the latency front's knee; ``models:/NAME/1`` loads with
    ``mlflow.pytorch.load_model`` and its SNN, rebuilt from the model's metadata, gives the run's
    ``acc_op`` on the test split exactly (so do one run of each method through ``runs:/<id>/model``);
    every trial run has the data set as a dataset input."""
    from mlflow import MlflowClient

    folder = e2e_sweep.folder
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    report = subprocess.run([sys.executable, str(ROOT / "analysis" / "pareto.py"), "--out", "registered",
                             "--register", "snnconv-demo"], cwd=folder, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    knee = json.loads((folder / "registered" / "summary.json").read_text())["fronts"]["latency"]["knee_run_id"]
    version = client.get_model_version("snnconv-demo", "1")
    assert version.run_id == knee and version.tags["snnconv.front"] == "latency"
    loading = "as snnconv-demo version 1: load it with mlflow.pytorch.load_model('models:/snnconv-demo/1')"
    assert loading in report.stdout

    experiment = client.get_experiment_by_name("snnconv")
    runs = client.search_runs([experiment.experiment_id], "tags.`snnconv.role` = 'trial'")
    assert len(runs) == 9
    for run in runs:  # the data set each trial saw: name, digest, split sizes
        (dataset_input,) = run.inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert dataset.name == "digits" and len(dataset.digest) == 10
        assert json.loads(dataset.profile) == {"train": 1257, "val": 180, "test": 360}
        assert {tag.key: tag.value for tag in dataset_input.tags} == {"mlflow.data.context": "train+val+test"}
        assert len(run.outputs.model_outputs) == 1
    assert len({run.inputs.dataset_inputs[0].dataset.digest for run in runs}) == 1  # one split for all

    by_id = {run.info.run_id: run for run in runs}
    one_per_method = {run.data.params["method"]: run.info.run_id for run in runs}
    uris = {"models:/snnconv-demo/1": knee, **{f"runs:/{run_id}/model": run_id for run_id in one_per_method.values()}}
    loaded = subprocess.run([sys.executable, "-c", LOAD, *uris], cwd=folder, env=ENV, capture_output=True,
                            text=True, timeout=240)
    assert loaded.returncode == 0, loaded.stdout[-3000:] + loaded.stderr[-3000:]
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert set(one_per_method) == {"rnl", "qcfs", "datanorm"}  # each method's logged model rebuilds its SNN
    for uri, run_id in uris.items():
        accuracy, method = found[uri]
        run = by_id[run_id]
        assert method == run.data.params["method"], uri
        assert accuracy == run.data.metrics["acc_op"], (uri, method)  # exact: everything is deterministic
        if method == "qcfs":
            assert accuracy == run.data.metrics["snn_acc"]  # PASCAL is exact: acc_op is its accuracy
