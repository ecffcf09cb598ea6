"""A real two-node Ray cluster on this machine plus an MLflow tracking server on 127.0.0.1.

`ray start --head` and `ray start --address` run as separate node processes; the sweep joins with
`--address` and logs with `--tracking-uri http://127.0.0.1:PORT`. Everything started here is stopped
in `finally`, also when an assertion fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@pytest.mark.timeout(900)
def test_sweep_on_two_nodes_logs_to_an_mlflow_server(tmp_path):
    import ray
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    # the nodes are started with the shared cache folder; the driver's shell does not know it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "SNNCONV_CACHE": str(tmp_path / "shared-cache"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    driver_env = {key: value for key, value in env.items() if key != "SNNCONV_CACHE"}
    gcs_port, mlflow_port = 6390, free_port()
    ip = ray.util.get_node_ip_address()
    server = None
    ray_cli = str(BIN / "ray")
    try:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
             "--port", str(mlflow_port), "--workers", "1"],
            cwd=tmp_path, env=env, stdout=open(tmp_path / "mlflow.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        subprocess.run([ray_cli, "start", "--head", f"--port={gcs_port}", "--num-cpus=1", "--num-gpus=0",
                        "--include-dashboard=false"], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_cli, "start", f"--address={ip}:{gcs_port}", "--num-cpus=1", "--num-gpus=0",
                        '--resources={"worker": 1}'], env=env, check=True, capture_output=True, timeout=120)
        wait_for(f"http://127.0.0.1:{mlflow_port}/health", 120)

        spec = {
            "name": "cluster", "methods": ["rnl"], "num_samples": 4, "search": "random", "max_concurrent": 2,
            "cpus_per_trial": 1,
            "trial": {"model": "small", "device": "cpu", "data": {"name": "digits"},
                      "stage1": {"epochs": 3, "lr": 0.05}, "rnl": {"epochs": 2, "inspect_interval": 5, "t_max": 8}},
            "space": {"rnl": {"rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0}}},
        }
        spec_path = tmp_path / "cluster.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        uri = f"http://127.0.0.1:{mlflow_port}"
        sweep = subprocess.run(
            [sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", str(spec_path),
             "--address", f"{ip}:{gcs_port}", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray")],
            cwd=tmp_path, env=driver_env, capture_output=True, text=True, timeout=600,
        )
        assert sweep.returncode == 0, sweep.stdout[-4000:] + sweep.stderr[-4000:]
        assert f"stage-1 cache of the trials: {tmp_path / 'shared-cache'} (the default on node" in sweep.stdout

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("snnconv")
        parents = client.search_runs([experiment.experiment_id], "tags.`snnconv.role` = 'sweep'")
        assert len(parents) == 1
        runs = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
        # both nodes ran trials: the two concurrent trials need a CPU each and each node has one. A trial that
        # a node lost (e.g. the node missed its health checks on a loaded machine) ran again elsewhere; its
        # first run was deleted, and still counts as a trial that ran on that node.
        attempts = runs + client.search_runs([experiment.experiment_id],
                                             f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
                                             run_view_type=ViewType.DELETED_ONLY)
        nodes = {r.data.tags.get("ray_node_id") for r in attempts} - {None}
        status = subprocess.run([ray_cli, "status"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert len(nodes) == 2, (f"trials ran on {len(nodes)} node(s):\n{sweep.stdout[-3000:]}\n"
                                 f"{sweep.stderr[-3000:]}\n{status}")
        hits = sorted(r.data.metrics["stage1_cache_hit"] for r in runs)
        # stage 1 trained exactly once, before the trials (a Ray task on a node), which all load it
        assert hits == [1.0, 1.0, 1.0, 1.0], "stage 1 must be trained before the trials, once"
        assert sweep.stdout.count("stage 1 rnl: trained in") == 1, sweep.stdout[-3000:]
        assert len(list((tmp_path / "shared-cache").glob("*.pt"))) == 1
        assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"layers.csv"}
        for run in runs:  # each trial's model, uploaded through the server's artifact proxy
            (output,) = run.outputs.model_outputs
            model = client.get_logged_model(output.model_id)
            assert model.status == "READY" and {item.path for item in client.list_logged_model_artifacts(
                output.model_id)} >= {"MLmodel", "data"}

        # a cluster that may scale up: a GPU trial is waited for (warning), then refused with the numbers
        clock = time.time()
        gpu = subprocess.run(
            [sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", str(spec_path),
             "--address", f"{ip}:{gcs_port}", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"),
             "--gpus-per-trial", "1", "--pending-timeout", "6"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        assert gpu.returncode == 2 and time.time() - clock >= 6, gpu.stdout[-2000:] + gpu.stderr[-2000:]
        assert "waiting up to 6 s (--pending-timeout)" in gpu.stderr
        assert "1 GPU(s) per trial, and the Ray cluster has 0 on its largest node (waited 6 s" in gpu.stderr
        assert len(client.search_runs([experiment.experiment_id], "tags.`snnconv.role` = 'sweep'")) == 1
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        if server is not None:
            os.killpg(server.pid, 15)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
