"""Faults injected on purpose, with real processes and signals: nothing finished is lost, nothing runs twice.

Every test runs the real command line (``sweeps/lambda_sweep.py``) against a real MLflow store (a
SQLite file, or an ``mlflow server`` on 127.0.0.1), kills what a crash would kill, and counts the
runs and metrics afterwards. The numbers the reliability table in ``docs/reliability.md`` quotes
come from these tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.servers import FlakyProxy, free_port

# every test here runs real processes (most of them a sweep on Ray, marked ray too)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py")]
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONUNBUFFERED": "1"}

TRIAL = {"model": "small", "device": "cpu", "data": {"name": "digits"}, "stage1": {"epochs": 3, "lr": 0.05},
         "rnl": {"epochs": 1, "inspect_interval": 5, "t_max": 8}, "qcfs": {"stage1_levels": 4, "finetune_epochs": 1,
                                                                            "t_max": 8}}
RNL_SPACE = {"rnl": {"rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0}}}


def sweep_file(folder: Path, **changes) -> Path:
    """A small rnl sweep file in ``folder`` (its own stage-1 cache), with ``changes`` applied."""
    data = {"name": "faults", "methods": ["rnl"], "num_samples": 4, "search": "random", "max_concurrent": 2,
            "cpus_per_trial": 1, "trial": json.loads(json.dumps(TRIAL)), "space": RNL_SPACE}
    data.update(changes)
    data["trial"]["cache_dir"] = str(folder / "cache")
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def command(folder: Path, uri: str, *extra: str) -> list[str]:
    return [*SWEEP, "--config", str(folder / "sweep.yaml"), "--tracking-uri", uri,
            "--storage-path", str(folder / "ray"), "--num-cpus", "2", *extra]


def start(folder: Path, argv: list[str]) -> subprocess.Popen:
    """The sweep as its own process group (so a test can clean up everything it started)."""
    return subprocess.Popen(argv, cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def read_until(process: subprocess.Popen, marker: str, lines: list[str], timeout: float = 300) -> str:
    """Read the process's output until a line contains ``marker``; returns that line."""
    deadline = time.time() + timeout
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return line
        assert time.time() < deadline, f"no {marker!r} within {timeout} s:\n" + "".join(lines[-40:])
    raise AssertionError(f"the process ended before printing {marker!r}:\n" + "".join(lines[-40:]))


def finish(process: subprocess.Popen, lines: list[str], timeout: float = 600) -> int:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    lines.append(out)
    return process.returncode


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def store(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client, client.get_experiment_by_name("snnconv").experiment_id


def sweep_runs(uri: str, deleted: bool = False):
    """(parent run, its active child runs[, deleted child runs]) of the only sweep in the store."""
    from mlflow.entities import ViewType

    client, experiment = store(uri)
    parents = client.search_runs([experiment], "tags.`snnconv.role` = 'sweep'")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    query = f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    children = client.search_runs([experiment], query)
    if not deleted:
        return parents[0], children
    return parents[0], children, client.search_runs([experiment], query, run_view_type=ViewType.DELETED_ONLY)


def trial_workers() -> list[int]:
    """PIDs of the Ray worker processes running a Tune trial (process title ``ray::ImplicitFunc...``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::ImplicitFunc"):
                pids.append(int(entry.name))
    return pids


def wait_for_finished_runs(uri: str, count: int, timeout: float = 300) -> None:
    """Poll the store (every few ms) until ``count`` child runs are FINISHED."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            _, runs = sweep_runs(uri)
            if sum(r.info.status == "FINISHED" for r in runs) >= count:
                return
        except (AssertionError, AttributeError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} runs finished within {timeout} s")


def wait_for_running_run(uri: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            _, runs = sweep_runs(uri)
            if any(r.info.status == "RUNNING" for r in runs):
                return
        except (AssertionError, AttributeError):
            pass
        time.sleep(0.2)
    raise AssertionError("no trial run started")


# ------------------------------------------------------------------ the driver dies


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_driver_killed_hard_then_resume_runs_each_trial_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_file(tmp_path, num_samples=6)
    process = start(tmp_path, command(tmp_path, uri))
    try:
        # kill the driver the moment MLflow holds a third FINISHED run: a trial closes its run before
        # Tune hears its last result, and Tune saves its own state only now and then, so Tune's state
        # is older than MLflow's record (the case that ran trials twice)
        wait_for_finished_runs(uri, 3)
        process.send_signal(signal.SIGKILL)  # the driver only, as `kill -9 <pid>` does
        process.wait(30)
        time.sleep(3)
    finally:
        kill_group(process)
    parent, before = sweep_runs(uri)
    finished_before = {r.data.tags["trial_id"] for r in before if r.info.status == "FINISHED"}
    assert 3 <= len(finished_before) < 6
    assert parent.info.status == "RUNNING"  # nothing could close it: SIGKILL

    resumed = subprocess.run(command(tmp_path, uri, "--resume"), cwd=tmp_path, env=ENV, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    parent, after = sweep_runs(uri)
    trial_ids = [r.data.tags["trial_id"] for r in after]
    assert len(after) == 6 and len(set(trial_ids)) == 6, trial_ids
    assert {r.info.status for r in after} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    # what had finished before the kill was kept, not rerun: the same run ids, no "done" line this time
    kept = {r.data.tags["trial_id"]: r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert {r.data.tags["trial_id"]: r.info.run_id for r in after if r.data.tags["trial_id"] in kept} == kept
    done_again = [line for line in resumed.stdout.splitlines()
                  if " done " in line and any(trial_id in line for trial_id in kept)]
    assert not done_again, f"trials that had finished ran again: {done_again}"
    assert "6 of 6 trials finished" in resumed.stdout


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_sigterm_stops_like_ctrl_c_and_resume_finishes_the_parent(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_file(tmp_path, num_samples=4, max_concurrent=1)
    process, lines = start(tmp_path, command(tmp_path, uri)), []
    try:
        read_until(process, "[1/4]", lines)
        process.send_signal(signal.SIGTERM)
        code = finish(process, lines, timeout=120)
    finally:
        kill_group(process)
    output = "".join(lines)
    assert code != 0 and "Traceback" not in output, output[-3000:]
    parent, runs = sweep_runs(uri)
    assert parent.info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"], "SIGTERM left a run RUNNING"
    finished = len([r for r in runs if r.info.status == "FINISHED"])
    assert finished < 4
    assert "--resume" in output and f"{finished} of 4 trials finished" in output  # of all 4, not of those begun

    resumed = subprocess.run(command(tmp_path, uri, "--resume"), cwd=tmp_path, env=ENV, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    parent, runs = sweep_runs(uri)
    assert parent.info.status == "FINISHED"
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


# ------------------------------------------------------------------ a worker dies


@pytest.mark.ray
@pytest.mark.timeout(900)
@pytest.mark.parametrize("max_failures", [1, 0])
def test_a_killed_worker_is_retried_or_recorded_with_the_reason(tmp_path, max_failures):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    trial = {**TRIAL, "rnl": {**TRIAL["rnl"], "epochs": 4}}
    sweep_file(tmp_path, num_samples=1, max_concurrent=1, trial=trial)
    process, lines = start(tmp_path, command(tmp_path, uri, "--max-failures", str(max_failures))), []
    try:
        wait_for_running_run(uri)
        workers = trial_workers()
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer or a preempted node would
        code = finish(process, lines)
    finally:
        kill_group(process)
    output = "".join(lines)
    _, runs, deleted = sweep_runs(uri, deleted=True)
    assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]
    run = runs[0]
    if max_failures:
        assert code == 0, output[-3000:]
        assert run.info.status == "FINISHED" and "error" not in run.data.tags
        assert len(deleted) == 1  # the dead attempt's run, replaced by the retry's
        assert "[1/1]" in output and " done " in output
    else:
        assert run.info.status == "FAILED", run.info.status
        error = run.data.tags["error"]
        assert "worker process died" in error and run.data.tags["failure"] == "worker", error
        assert "FAILED" in output and "0 of 1 trials finished" in output


# ------------------------------------------------------------------ the tracking server goes away


def start_server(folder: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder}/server.db",
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return server
        except OSError:
            time.sleep(0.5)
    kill_group(server)
    raise AssertionError("mlflow server did not start")


def start_cluster_server(shared: Path, port: int) -> dict[str, str]:
    """The head's tracking server as the cluster files start it (``cluster/tracking_server.sh start``: MLflow's
    authentication app on the head's own PostgreSQL, its data in ``shared``/mlflow) on 127.0.0.1:``port``;
    the environment the sweep needs (the credentials every node's ``ray start`` gets)."""
    env = {**ENV, "HOME": str(shared), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHON": sys.executable, "SNNCONV_MLFLOW_HOST": "127.0.0.1", "SNNCONV_MLFLOW_PORT": str(port),
           "SNNCONV_MLFLOW_HOME": str(shared / "mlflow"), "SNNCONV_POSTGRES_PORT": str(free_port()),
           "SNNCONV_RAY_PORT": str(free_port()), "SNNCONV_WATCH_GRACE_S": "900", "SNNCONV_MLFLOW_MAX_TRIALS": "8"}
    started = subprocess.run([str(ROOT / "cluster" / "tracking_server.sh"), "start", str(shared / "secrets")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    credentials = dict(line.split("=", 1) for line in (shared / "secrets" / "mlflow.env").read_text().split())
    return {"script": env, "sweep": {**ENV, **credentials}}


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_busy_then_killed_tracking_server_on_postgresql_loses_nothing(tmp_path, postgres, monkeypatch):
    """The cluster's tracking server (PostgreSQL store, authentication) first answers one write in three with
    the pool-timeout 400, a 503, or a 503 after doing the write; then it is killed (SIGKILL) mid-sweep and
    started again 5 s later (its authentication app then takes a while to answer). Every trial FINISHED, every
    value there once, one model each."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="snnconv-shared-"))  # PostgreSQL's user must pass through it (root)
    shared.chmod(0o711)
    port = free_port()
    env = start_cluster_server(shared, port)
    proxy = FlakyProxy(port)
    sweep_env = {**env["sweep"], "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    trial = {**TRIAL, "rnl": {**TRIAL["rnl"], "epochs": 2}}
    sweep_file(tmp_path, num_samples=4, max_concurrent=2, trial=trial)
    process, lines = subprocess.Popen(command(tmp_path, proxy.url), cwd=tmp_path, env=sweep_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True), []
    script = [str(ROOT / "cluster" / "tracking_server.sh")]
    try:
        read_until(process, "stage-1 cache of the trials", lines)
        proxy.fail(12, every=3)  # busy while the trials open their runs and log
        read_until(process, "[1/4]", lines)
        server = int((shared / "mlflow" / "server.pid").read_text().split()[0])
        os.killpg(server, signal.SIGKILL)  # the server dies mid-sweep...
        time.sleep(5)
        restarted = subprocess.run([*script, "start", str(shared / "secrets")], env=env["script"],
                                   capture_output=True, text=True, timeout=300)  # ...and the head starts it again
        assert restarted.returncode == 0, restarted.stderr
        code = finish(process, lines)
        output = "".join(lines)
        assert code == 0, output[-3000:]
        assert min(proxy.failed.values()) >= 1, proxy.failed
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.setenv(name, sweep_env[name])
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("snnconv").experiment_id
        (parent,) = client.search_runs([experiment], "tags.`snnconv.role` = 'sweep'")
        runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert parent.info.status == "FINISHED"
        trial_ids = [r.data.tags["trial_id"] for r in runs]
        assert len(runs) == 4 and len(set(trial_ids)) == 4 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:
            for name in ("val_ann_acc", "ann_acc", "snn_acc", "t_op", "val_acc_op", "acc_op", "energy_op_mj",
                         "converged", "omega", "tracking_seconds"):
                history = client.get_metric_history(run.info.run_id, name)
                assert len(history) == 1, (run.info.run_name, name, history)  # there, once
            for curve in ("snn_acc_t", "val_snn_acc_t"):
                steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, curve))
                assert steps == list(range(1, 9)), (run.info.run_name, curve, steps)
            assert {"layers.csv", "acc_curves.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
            models = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run.info.run_id}'")
            assert [str(m.status) for m in models] == ["READY"]
            assert [item.model_id for item in run.outputs.model_outputs] == [models[0].model_id]
            assert [item.dataset.name for item in run.inputs.dataset_inputs] == ["digits"]
            assert run.data.tags["pareto_latency"] in ("true", "false")
        # for the reliability table: the seconds the trials waited on MLflow (printed, not asserted)
        print("tracking_seconds per trial:", sorted(round(r.data.metrics["tracking_seconds"], 1) for r in runs),
              "failures given:", proxy.failed)
    finally:
        kill_group(process)
        proxy.close()
        subprocess.run([*script, "stop"], env=env["script"], capture_output=True, timeout=120)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_results_that_cannot_be_logged_wait_and_resume_logs_them_once(tmp_path):
    """The server goes away while two trials train and stays away past --tracking-retry-s: the trials still
    finish (their records go to the sweep's storage as Tune checkpoints), the sweep ends saying how many
    results wait (exit 1); with the server back, --resume logs them, runs nothing again, draws the fronts."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    trial = {**TRIAL, "rnl": {**TRIAL["rnl"], "epochs": 4}}
    sweep_file(tmp_path, num_samples=2, max_concurrent=2, trial=trial)
    env = {**ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # each call fails at once: ours are the retries
    server = start_server(tmp_path, port)
    argv = command(tmp_path, uri, "--tracking-retry-s", "5")
    process, lines = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True), []
    try:
        deadline = time.time() + 300
        while not _both_training(uri):  # both trials opened their runs and logged their params: they train
            assert time.time() < deadline and process.poll() is None, "the trials did not start"
            time.sleep(0.1)
        kill_group(server)  # away while both train, for good
        server.wait(30)
        code = finish(process, lines)
        output = "".join(lines)
        assert code == 1, output[-3000:]
        assert "2 trial result(s) wait to be logged" in output and "--resume" in output, output[-3000:]
        assert output.count("its result waits to be logged") == 2, output[-3000:]
        records = sorted((tmp_path / "ray").rglob("snnconv_record.json"))
        assert len(records) == 2 and all("checkpoint_" in str(path) for path in records)

        server = start_server(tmp_path, port)  # back, same port and store
        resumed = subprocess.run(argv + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "2 trial result(s) that waited were logged to MLflow" in resumed.stdout
        assert " done " not in resumed.stdout  # nothing ran again
        assert "2 of 2 trials finished" in resumed.stdout
        parent, runs = sweep_runs(uri)
        client, _ = store(uri)
        assert parent.info.status == "FINISHED"
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:
            assert {"val_acc_op", "acc_op", "t_op", "energy_op_mj", "omega"} <= set(run.data.metrics)
            for curve in ("snn_acc_t", "val_snn_acc_t"):  # each point once
                steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, curve))
                assert steps == list(range(1, 9)), (run.info.run_name, curve, steps)
            # the progress kept while the server was away (a point per report and the final value at step 0), once
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "stage2_val_acc"))
            assert len(steps) == len(set(steps)) >= 5 and steps[0] == 0, steps
            (output_model,) = run.outputs.model_outputs
            assert client.get_logged_model(output_model.model_id).status == "READY"
            assert run.data.tags["pareto_latency"] in ("true", "false")
        # logged once: a second --resume finds nothing waiting
        again = subprocess.run(argv + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0 and "waited" not in again.stdout, again.stdout[-2000:]
    finally:
        kill_group(process)
        kill_group(server)


def _both_training(uri: str) -> bool:
    """Both trials are past opening their runs: each run holds its params (the last call before training).
    A run seen before its params are logged may still be in ``start_trial``, which a dead server fails."""
    try:
        runs = sweep_runs(uri)[1]
    except Exception:  # noqa: BLE001 - no sweep yet
        return False
    return len(runs) == 2 and all("method" in run.data.params for run in runs)


# ------------------------------------------------------------------ refused before any work


@pytest.mark.ray
def test_a_gpu_trial_on_a_machine_without_gpus_is_refused_within_a_minute(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_file(tmp_path)
    clock = time.time()
    result = subprocess.run(command(tmp_path, uri, "--gpus-per-trial", "1"), cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and time.time() - clock < 60
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 GPU(s) per trial, and the Ray cluster has 0" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists() or not _sweep_parents(uri)  # no parent run left RUNNING


@pytest.mark.ray
def test_a_trial_given_a_gpu_that_torch_cannot_see_fails_with_one_clear_error(tmp_path):
    """A Ray node that declares a GPU whose torch has no CUDA (a CPU build, a driver too old for
    the CUDA build): the trial fails at once with an error that says so, recorded in MLflow, instead of
    running on the CPU without a word (``device: auto``); ``device: cpu`` stays allowed on such a node."""
    script = (
        "import sys, ray; sys.path[:0] = [sys.argv[1]]\n"
        "from snnconv.sweep import SweepOptions, load_spec, run_sweep\n"
        "ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)\n"
        "spec = load_spec(config_file='sweep.yaml')\n"
        "run_sweep(spec, SweepOptions(tracking_uri=sys.argv[2], storage_path='ray'))\n")
    # one sweep, one trial of each method on the node with a GPU: rnl with device auto, qcfs with device cpu
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep_file(tmp_path, methods=["rnl", "qcfs"], num_samples=1, max_concurrent=1, gpus_per_trial=1,
               trial={**json.loads(json.dumps(TRIAL)), "device": "auto"}, overrides={"qcfs": {"device": "cpu"}})
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "library"), uri], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, runs, deleted = sweep_runs(uri, deleted=True)
    by_method = {run.data.params["method"]: run for run in runs}
    assert sorted(by_method) == ["qcfs", "rnl"] and not deleted
    failed, finished = by_method["rnl"], by_method["qcfs"]
    assert failed.info.status == "FAILED" and finished.info.status == "FINISHED", finished.data.tags.get("error")
    first = failed.data.tags["error"].splitlines()[0]
    assert first.startswith("DeviceError: Ray gave this trial 1 GPU but torch sees no CUDA"), first
    assert failed.data.tags["failure"] == "exception"  # its own code raised: not retried
    assert finished.data.params["device"] == "cpu" and finished.data.params["gpu_name"] == "none"


def _sweep_parents(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("snnconv")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@pytest.mark.parametrize("uri, message", [
    ("bogus://x", "unknown scheme 'bogus'"),
    ("http://127.0.0.1:{port}", "is not reachable"),
    ("sqlite:////proc/no/mlflow.db", "cannot write the MLflow store"),
])
def test_a_bad_tracking_uri_is_one_line_and_exit_2_before_ray(tmp_path, uri, message):
    sweep_file(tmp_path)
    uri = uri.format(port=free_port())
    clock = time.time()
    result = subprocess.run(command(tmp_path, uri), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    assert message in lines[0] and "Traceback" not in result.stderr
    assert "Ray" not in result.stdout + result.stderr and time.time() - clock < 60


def test_a_space_that_can_draw_an_invalid_profile_is_refused_before_ray(tmp_path):
    space = {"qcfs": {"qcfs.levels": {"type": "choice", "values": ["uniform", "pascal"]}}}
    sweep_file(tmp_path, methods=["qcfs"], space=space)
    result = subprocess.run(command(tmp_path, f"sqlite:///{tmp_path}/mlflow.db"), cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "error: space.qcfs.qcfs.levels: the search can draw 'pascal', which cannot run: "
        "qcfs.levels: the 'pascal' profile has lists for vgg16, resnet18 only, not 'small'")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


# ------------------------------------------------------------------ failures inside a trial


@pytest.mark.ray
def test_a_trial_failing_before_its_first_metric_has_a_failed_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # stage 1 diverges at its first batch: no metric was ever logged
    space = {"rnl": {"stage1.lr": {"type": "choice", "values": [1.0e30]}}}
    sweep_file(tmp_path, num_samples=1, max_concurrent=1, search="grid", space=space)
    result = subprocess.run(command(tmp_path, uri), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _, runs, deleted = sweep_runs(uri, deleted=True)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "NonFiniteLossError" in runs[0].data.tags["error"] and runs[0].data.tags["failure"] == "exception"
    assert not deleted  # its own error is not retried: the same code would fail the same way
    assert "0 of 1 trials finished" in result.stdout and "[1/1]" in result.stdout


@pytest.mark.ray
def test_grid_progress_counts_the_grid(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    space = {"rnl": {"rnl.lam": {"type": "choice", "values": [0.0, 0.5, 2.0]}}}
    sweep_file(tmp_path, num_samples=1, search="grid", space=space)
    result = subprocess.run(command(tmp_path, uri), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    progress = sorted(line.split()[0] for line in result.stdout.splitlines()
                      if line.startswith("[") and " done " in line)
    assert progress == ["[1/3]", "[2/3]", "[3/3]"] and "3 trials (rnl)" in result.stdout


@pytest.mark.ray
def test_a_qcfs_trial_whose_if_comparison_cannot_be_built_finishes_with_pascal(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # a fine-tune lr of 1.0 drives some QCFS thresholds λ below zero on digits (seen: -3048 in features.9):
    # PASCAL handles any non-zero λ, the rate-coded IF comparison cannot
    trial = {**TRIAL, "qcfs": {**TRIAL["qcfs"], "threshold_init": 1.0, "finetune_lr": 1.0}}
    sweep_file(tmp_path, methods=["qcfs"], num_samples=1, max_concurrent=1, trial=trial, space={})
    result = subprocess.run(command(tmp_path, uri), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _, runs = sweep_runs(uri)
    client, _ = store(uri)
    run = runs[0]
    metrics, tags = run.data.metrics, run.data.tags
    assert len(runs) == 1 and run.info.status == "FINISHED" and "error" not in tags
    assert metrics["min_threshold"] <= 0 and metrics["nonpositive_thresholds"] >= 1
    assert "IF neuron needs a positive one" in tags["warning.skipped_if_comparison"]
    assert "drove λ to zero or below" in tags["warning.nonpositive_threshold"]
    assert metrics["acc_op"] == metrics["snn_acc"] and metrics["t_op"] == metrics["t_eff"]  # PASCAL's point
    assert metrics["equiv_max_abs_err"] <= 1e-6  # and PASCAL still equals its ANN
    assert "if_snn_acc" not in metrics and not client.get_metric_history(run.info.run_id, "if_snn_acc_t")
    assert "warnings: nonpositive_threshold, skipped_if_comparison" in result.stdout


def test_a_failure_recorded_by_the_driver_opens_a_failed_run_when_the_trial_had_none(tmp_path):
    from snnconv import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = tracking.start_sweep(uri, "snnconv", "sweep-x", {}, {})
    run_id = tracking.record_trial_failure(tracker, "t1", "rnl_t1", {"method": "rnl", "lam": 0.5},
                                           "the trial's worker process died: ActorDiedError", "worker")
    again = tracking.record_trial_failure(tracker, "t1", "rnl_t1", {"method": "rnl"}, "second report", "worker")
    _, runs = sweep_runs(uri)
    assert again == run_id and [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FAILED" and run.data.params == {"method": "rnl", "lam": "0.5"}
    assert run.data.tags["error"].startswith("the trial's worker process died") and run.data.tags["trial_id"] == "t1"
