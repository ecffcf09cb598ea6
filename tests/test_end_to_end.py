"""The user's path on a real tiny sweep: `lambda_sweep.py` with the default store, then
`analysis/pareto.py`, then `mlflow ui` (started in the same folder with no arguments) serving the runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SPEC = {
    "name": "e2e", "methods": ["rnl", "qcfs"], "num_samples": 3, "max_concurrent": 2, "cpus_per_trial": 1,
    "trial": {"model": "small", "device": "cpu", "data": {"name": "digits"}, "stage1": {"epochs": 4, "lr": 0.05},
              "rnl": {"epochs": 1, "inspect_interval": 5, "t_max": 12},
              "qcfs": {"stage1_levels": 4, "finetune_epochs": 1, "t_max": 12}},
    "space": {"rnl": {"rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0, "zero_fraction": 0.3}},
              "qcfs": {"qcfs.levels": {"type": "choice", "values": ["uniform", "halve-middle", "front-heavy"]}}},
}


def recompute_front(runs, cost: str, within_method: bool) -> set[str]:
    """Run ids no other finished run beats: validation accuracy at the operating point >= and ``cost``
    <= with one of them strict (among runs of the same method when ``within_method``)."""
    points = {run.info.run_id: (run.data.params["method"], run.data.metrics["val_acc_op"], run.data.metrics[cost])
              for run in runs if run.info.status == "FINISHED"}

    def beats(q, p):
        return (q[0] == p[0] or not within_method) and q[1] >= p[1] and q[2] <= p[2] and (q[1], q[2]) != (p[1], p[2])

    return {run_id for run_id, p in points.items() if not any(beats(q, p) for q in points.values())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(600)
def test_sweep_then_report_then_mlflow_ui(tmp_path):
    from mlflow import MlflowClient

    spec = dict(SPEC, trial={**SPEC["trial"], "cache_dir": str(tmp_path / "cache")})
    (tmp_path / "e2e.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sweep = subprocess.run([sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", "e2e.yaml",
                            "--num-cpus", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file(), "the default store is ./mlflow.db"
    lines = [line for line in sweep.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 6 and all(" done " in line for line in lines)
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
    table = pd.read_csv(folder / "pareto.csv")
    assert len(table) == 6 and set(table["method"]) == {"rnl", "qcfs"}
    runs = {row["run_id"]: client.get_run(row["run_id"]) for _, row in table.iterrows()}
    for front, cost in (("latency", "t_op"), ("energy", "energy_op_mj"), ("omega", "omega")):
        expected = recompute_front(runs.values(), cost, within_method=front == "omega")
        tags = {run_id: run.data.tags[f"pareto_{front}"] for run_id, run in runs.items()}
        assert tags == {run_id: str(run_id in expected).lower() for run_id in runs}, front
        assert expected, front
        assert set(table.loc[table[f"front_{front}"], "run_id"]) == expected, front
    assert "pareto_latency (" in sweep.stdout and "pareto_omega (" in sweep.stdout

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
        assert len(runs) == 7  # the sweep's parent run and its six trials
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(30)
