"""Benchmark: the MLflow tracking server under a sweep's load, SQLite store against PostgreSQL, and
the Pareto report's reads of a sweep of 5,000 trial runs.

    python -m bench.bench_tracking [--quick] [--report-runs N] [--out FILE]

1. **Load.** A real ``mlflow server`` on 127.0.0.1 (a free port; its store a SQLite file, or a
   database of a throw-away PostgreSQL cluster, ``tests/servers.py``'s ``PostgresCluster``) and N
   trial-like clients logging at once, as a sweep's trials do on a cluster: each opens a nested child
   run under the sweep's parent run, logs 20 params (one ``log_batch``), a 64-point curve (one
   ``log_batch``, step 1..64), 30 single metrics (one ``log_metric`` each), one small artifact, and
   ends its run FINISHED. The clients are threads of a few processes, each with MLflow's client over
   HTTP and its default retries; a client stops at its first error, as a trial would. They mostly
   wait on the server, so the server is what is measured (their CPU seconds are reported). Then
   everything is counted back through the server: runs FINISHED, params, metric values (every curve
   point through ``get_metric_history``), artifacts; lost = expected - found. The SQLite server runs
   with MLflow's defaults (that is the point: they lose runs); the PostgreSQL one sized as
   ``cluster/tracking_server.sh`` sizes the head's (``server_settings``). Default configurations:
   SQLite 64 and 128 clients, PostgreSQL 128 and 256 (``--quick``: 8 each).
2. **Report.** A sweep of 5,000 trial runs (``--quick``: 300) with what a real sweep's runs hold
   (the contract's params, tags and metrics, the acc(t) curves, a few FAILED runs) written straight
   into a PostgreSQL store (bulk inserts through MLflow's own table models: seconds instead of
   minutes of ``log_batch`` calls), then read through an ``mlflow server``: ``analysis/pareto.py``
   end to end, its reads alone (``load_sweep``, the acc(t) curves of the fronts' rnl runs), and
   what ``--resume`` reads (every child run, one trial's lookup).

Writes ``bench/results/bench_tracking.json`` (``--quick``: ``bench_tracking_quick.json``);
``python -m bench`` writes the load table (``load_markdown``) into ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "library"))
sys.path.insert(0, str(ROOT))

from bench.common import evidence, print_header, print_table, write_result  # noqa: E402
from tests.servers import PostgresCluster, free_port, http_status, wait_until  # noqa: E402

#: (store, clients) of a full run and of ``--quick``
CONFIGS = (("sqlite", 64), ("sqlite", 128), ("postgresql", 128), ("postgresql", 256))
QUICK_CONFIGS = (("sqlite", 8), ("postgresql", 8))
#: trial runs of the report's sweep (full run, ``--quick``)
REPORT_RUNS, QUICK_REPORT_RUNS = 5000, 300
#: processes the clients' threads are spread over (the threads of one share its interpreter)
CLIENT_PROCESSES = 4
#: the stepped metric of a client's curve, and its artifact's file name
CURVE, ARTIFACT = "acc_t", "notes.txt"
#: MLflow's tags of the tracking contract (``snnconv.tracking``), written here without importing MLflow
PARENT_TAG, ROLE_TAG = "mlflow.parentRunId", "snnconv.role"


@dataclass(frozen=True)
class Workload:
    """What one trial-like client logs: ``params`` params, a stepped metric of ``curve`` points,
    ``metrics`` single metrics (one call each) and ``artifacts`` small files (one at most)."""

    params: int = 20
    curve: int = 64
    metrics: int = 30
    artifacts: int = 1

    @property
    def values(self) -> int:
        """Values one client logs: params, metric values (curve points included) and artifacts."""
        return self.params + self.curve + self.metrics + self.artifacts


def param_value(index: int) -> str:
    return f"value-{index}"


def curve_value(step: int, workload: Workload) -> float:
    return step / workload.curve


# ---------------------------------------------------------------------------------------------
# counting back


@dataclass(frozen=True)
class RunCount:
    """What the server holds of one run: the client that logged it (-1: unknown), its status, and
    how many of the client's values it holds with the value logged."""

    client: int
    status: str
    params: int
    curve: int
    metrics: int
    artifacts: int

    def values(self, workload: Workload) -> int:
        """Values found, each kind capped at what one client logs."""
        return (min(self.params, workload.params) + min(self.curve, workload.curve)
                + min(self.metrics, workload.metrics) + min(self.artifacts, workload.artifacts))

    def complete(self, workload: Workload) -> bool:
        """FINISHED with every value."""
        return self.status == "FINISHED" and self.values(workload) == workload.values


def trial_id(index: int) -> str:
    """The ``trial_id`` tag of client ``index``'s run."""
    return f"load_{index:05d}"


def run_count(run: Any, curve: Mapping[int, float], artifacts: Sequence[str], workload: Workload) -> RunCount:
    """Count one MLflow ``run``: its client (``trial_id`` tag), params ``p00``... and metrics
    ``m00``... with the values logged, the steps 1..``workload.curve`` of ``curve`` (step -> value,
    from ``get_metric_history``) with theirs, and whether ``artifacts`` (paths) holds the file."""
    tag = run.data.tags.get("trial_id", "")
    client = int(tag[len("load_"):]) if tag.startswith("load_") and tag[len("load_"):].isdigit() else -1
    params = sum(run.data.params.get(f"p{i:02d}") == param_value(i) for i in range(workload.params))
    metrics = sum(run.data.metrics.get(f"m{i:02d}") == float(i) for i in range(workload.metrics))
    points = sum(curve.get(step) == curve_value(step, workload) for step in range(1, workload.curve + 1))
    return RunCount(client, run.info.status, int(params), int(points), int(metrics),
                    int(ARTIFACT in artifacts))


def count_lost(workload: Workload, clients: int, found: Sequence[RunCount]) -> dict[str, int]:
    """Expected minus found, client by client (its best run when it has several, so that no other
    run can hide its loss): a client's run is lost unless it is FINISHED with every value; its values
    are those its run holds, FINISHED or not."""
    best: dict[int, RunCount] = {}
    for run in found:
        if 0 <= run.client < clients:
            kept = best.get(run.client)
            if kept is None or (run.complete(workload), run.values(workload)) > (kept.complete(workload),
                                                                                   kept.values(workload)):
                best[run.client] = run
    complete = sum(run.complete(workload) for run in best.values())
    values = sum(run.values(workload) for run in best.values())
    return {"runs_expected": clients, "runs_found": len(found), "runs_lost": clients - complete,
            "values_expected": clients * workload.values, "values_lost": clients * workload.values - values}


def read_back(uri: str, experiment_id: str, parent_id: str, workload: Workload, threads: int = 8) -> list[RunCount]:
    """Count every child run of ``parent_id`` through the server at ``uri``: the runs by pages
    (``snnconv.tracking.search_children``), then each run's curve history and artifact list,
    ``threads`` runs at a time."""
    from mlflow import MlflowClient

    from snnconv.tracking import search_children

    client = MlflowClient(tracking_uri=uri)

    def count(run: Any) -> RunCount:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, CURVE)}
        artifacts = [item.path for item in client.list_artifacts(run.info.run_id)]
        return run_count(run, history, artifacts, workload)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(count, search_children(client, experiment_id, parent_id)))


# ---------------------------------------------------------------------------------------------
# the server and the clients


def server_settings(store: str, clients: int, cpus: int | None = None) -> dict[str, Any]:
    """``workers``, ``env`` (of ``mlflow_server``) and the PostgreSQL ``max_connections`` they need,
    for ``clients`` trials logging at once on ``cpus`` cores (default: this machine's). "sqlite" gets
    MLflow's defaults (4 workers, SQLAlchemy's pool of 5 connections + 10 overflow per worker: that is
    the point, they lose runs); "postgresql" the sizing ``cluster/tracking_server.sh`` gives the head's
    server: W = min(ceil(clients / 16), cpus) workers, each with a pool of P = ceil(clients / W)
    connections and P more at a burst, and W (2P + 10) + 10 connections for PostgreSQL."""
    if store == "sqlite":
        return {"workers": None, "env": {}, "max_connections": 0}
    workers = max(1, min(math.ceil(clients / 16), cpus or os.cpu_count() or 1))
    pool = math.ceil(clients / workers)
    return {"workers": workers, "env": {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(pool),
                                        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(pool)},
            "max_connections": workers * (2 * pool + 10) + 10}


def settings_text(settings: Mapping[str, Any]) -> str:
    """The server's settings in a few words (what the results' evidence names)."""
    if settings["workers"] is None:
        return "MLflow's defaults (4 workers, pool 5 + 10 overflow)"
    env = settings["env"]
    return (f"{settings['workers']} workers, pool {env['MLFLOW_SQLALCHEMYSTORE_POOL_SIZE']} + "
            f"{env['MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW']} overflow per worker")


@contextlib.contextmanager
def mlflow_server(backend_uri: str, folder: Path, workers: int | None = None, env: Mapping[str, str] | None = None,
                  start_s: float = 180.0) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (a free port) on the store ``backend_uri``, artifacts
    and log in ``folder``; yields its URI once ``/health`` answers (within ``start_s`` seconds), stops
    its process group after."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", backend_uri, "--artifacts-destination", str(folder / "artifacts")]
    if workers is not None:
        command += ["--workers", str(workers)]
    uri = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen(command, cwd=folder, env={**os.environ, **(env or {})}, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_until(lambda: server.poll() is not None or http_status(f"{uri}/health", timeout_s=5) == 200,
                          start_s) or server.poll() is not None:
            tail = (folder / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mlflow server did not start on {backend_uri}:\n{tail}")
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def error_text(error: BaseException) -> str:
    """An error in one line of at most 300 characters (an MLflow error: its message)."""
    message = str(getattr(error, "message", "") or error)
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}"[:300]


def trial_client(client: Any, experiment_id: str, parent_id: str, index: int, workload: Workload,
                 artifact: Path) -> str:
    """One trial's logging (the module docstring says what); "" when every call went through, else
    the first error (``error_text``): the client stops there, as a trial would."""
    from mlflow.entities import Metric, Param

    try:
        run_id = client.create_run(experiment_id, run_name=f"trial-{index:04d}", tags={
            PARENT_TAG: parent_id, ROLE_TAG: "trial", "trial_id": trial_id(index)}).info.run_id
        client.log_batch(run_id, params=[Param(f"p{i:02d}", param_value(i)) for i in range(workload.params)])
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(CURVE, curve_value(step, workload), now, step)
                                          for step in range(1, workload.curve + 1)])
        for i in range(workload.metrics):
            client.log_metric(run_id, f"m{i:02d}", float(i))
        if workload.artifacts:
            client.log_artifact(run_id, str(artifact))
        client.set_terminated(run_id, "FINISHED")
    except Exception as error:  # what the server or the network refused: counted, the others go on
        return error_text(error)
    return ""


def client_process(uri: str, experiment_id: str, parent_id: str, indices: Sequence[int], workload: Workload,
                   barrier: Any, results: Any) -> None:
    """One process of clients: a thread per index of ``indices``, all started once every process is
    ready (``barrier``); puts (errors, this process's CPU seconds meanwhile) on ``results``. MLflow's
    "View run" lines (``set_terminated`` prints them after one more ``get_run``, as in a trial) are
    swallowed."""
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", str(len(indices)))  # one connection per thread
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        artifact = Path(folder) / ARTIFACT
        artifact.write_text("a trial's small artifact\n" * 8)
        barrier.wait()
        start = cpu_seconds()
        with ThreadPoolExecutor(len(indices)) as pool:
            errors = list(pool.map(lambda i: trial_client(client, experiment_id, parent_id, i, workload, artifact),
                                   indices))
    results.put((errors, cpu_seconds() - start))


def cpu_seconds() -> float:
    """CPU seconds this process has used so far (all its threads, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_context() -> Any:
    """The multiprocessing context of the client processes: each is forked from one fork-server
    process that imported MLflow once (started here, so that it imports while a tracking server
    starts): they start in a second, not in the seconds of several processes importing MLflow at once."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mlflow.tracking", "mlflow.entities"])
    forkserver.ensure_running()
    return context


def run_load(uri: str, clients: int, workload: Workload = Workload(), processes: int = CLIENT_PROCESSES) -> dict:
    """``clients`` trial-like clients at once against the server at ``uri`` (a new experiment and
    parent run), then counted back (``read_back``, ``count_lost``). Returns the counts, ``wall_s``
    (first call to last answer), ``ms_per_value`` (wall over the values logged), ``client_cpu_s``,
    ``errors`` (clients that failed), ``first_error`` and ``read_back_s``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(f"load-{uuid.uuid4().hex[:8]}")
    parent_id = client.create_run(experiment_id, run_name="sweep-load", tags={ROLE_TAG: "sweep"}).info.run_id
    context = client_context()
    groups = [list(range(clients))[first::processes] for first in range(min(processes, clients))]
    barrier, results = context.Barrier(len(groups) + 1), context.Queue()
    workers = [context.Process(target=client_process, args=(uri, experiment_id, parent_id, group, workload, barrier,
                                                              results)) for group in groups]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=300)
    start = time.perf_counter()
    outcomes: list[tuple[list[str], float]] = []
    while len(outcomes) < len(workers):
        try:
            outcomes.append(results.get(timeout=5))
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers) and results.empty():
                raise RuntimeError("a client process died before it reported") from None
    wall = time.perf_counter() - start
    for worker in workers:
        worker.join()
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow's "View run" lines
        client.set_terminated(parent_id, "FINISHED")
    start = time.perf_counter()
    found = read_back(uri, experiment_id, parent_id, workload)
    errors = [error for errs, _ in outcomes for error in errs if error]
    return {"clients": clients, **count_lost(workload, clients, found), "wall_s": wall,
            "ms_per_value": 1000 * wall / (clients * workload.values),
            "client_cpu_s": sum(cpu for _, cpu in outcomes), "errors": len(errors),
            "first_error": errors[0] if errors else "", "read_back_s": time.perf_counter() - start}


def load_row(store: str, clients: int, folder: Path, cluster: PostgresCluster | None,
             workload: Workload = Workload()) -> dict:
    """One configuration: a fresh store (a SQLite file in ``folder``, or a new database of
    ``cluster``) behind a fresh server with ``server_settings``, and ``run_load`` against it."""
    if store == "sqlite":
        backend = f"sqlite:///{folder}/mlflow.db"
    else:
        assert cluster is not None
        backend = cluster.create_database(f"load_{clients}_{uuid.uuid4().hex[:6]}")
    client_context()  # the clients' fork server imports MLflow meanwhile
    settings = server_settings(store, clients)
    if cluster is not None and cluster.max_connections < settings["max_connections"]:
        raise ValueError(f"{clients} clients need a PostgreSQL cluster of {settings['max_connections']} connections")
    with mlflow_server(backend, folder, settings["workers"], settings["env"]) as uri:
        row = run_load(uri, clients, workload)
    return {"store": store, "server": settings_text(settings), **row}


# ---------------------------------------------------------------------------------------------
# the report on a large sweep


def build_sweep(store_uri: str, experiment_id: str, parent_id: str, runs: int, seed: int = 0) -> None:
    """Write ``runs`` trial runs of the sweep ``parent_id`` straight into the SQL store at
    ``store_uri`` (MLflow's own tables, bulk inserts), shaped like a real sweep's: rnl and qcfs by
    turns, the contract's params, tags and metrics, stage-2 progress (12 epochs), the acc(t) curves
    (rnl ``val_snn_acc_t`` / ``snn_acc_t``, 64 steps; qcfs ``val_if_snn_acc_t`` / ``if_snn_acc_t``,
    32 steps) and ``pareto_*`` tags; every 100th run FAILED with an ``error`` tag and no metrics."""
    import numpy as np
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    rng = np.random.default_rng(seed)
    start_ms = int(time.time() * 1000) - 1000 * runs
    rows: dict[Any, list[dict]] = {SqlRun: [], SqlTag: [], SqlParam: [], SqlMetric: [], SqlLatestMetric: []}
    engine = sqlalchemy.create_engine(store_uri)
    with engine.connect() as connection:
        artifact_root = connection.execute(sqlalchemy.text(
            "SELECT artifact_location FROM experiments WHERE experiment_id = :id"), {"id": int(experiment_id)}).scalar()
    for index in range(runs):
        run_id, method = uuid.uuid4().hex, ("rnl", "qcfs")[index % 2]
        failed = index % 100 == 99
        start = start_ms + 1000 * index
        name = f"trial_{index:05d}"
        rows[SqlRun].append({"run_uuid": run_id, "name": name, "source_type": "LOCAL", "source_name": "",
                             "entry_point_name": "", "user_id": "bench", "status": "FAILED" if failed else "FINISHED",
                             "start_time": start, "end_time": start + 900, "source_version": "",
                             "lifecycle_stage": "active", "artifact_uri": f"{artifact_root}/{run_id}/artifacts",
                             "experiment_id": int(experiment_id)})
        tags = {PARENT_TAG: parent_id, ROLE_TAG: "trial", "trial_id": f"bench_{index:05d}", "mlflow.runName": name,
                "mlflow.user": "bench", **{f"pareto_{front}": "false" for front in ("latency", "energy", "omega")}}
        if failed:
            tags.update(error="NonFiniteLossError: loss became nan at epoch 1, batch 3", failure="exception")
        params = {"method": method, "model": "vgg16", "dataset": "cifar10", "seed": str(index), "stage1_epochs": "20",
                  "stage1_lr": "0.05", "stage1_key": f"key-{method}", "device": "cuda", "gpu_name": "NVIDIA L4"}
        if method == "rnl":
            params.update(lam=f"{rng.uniform(0.01, 1):.4f}", lr="0.001", sharescale="True", scale_init="2.5",
                          scale_mode="exp", teacher="frozen", v_init="0.5", t_max="64", acc_tolerance="3.0",
                          stage2_epochs="12", latency_tolerance="2.0", latency_unit="IF time steps")
        else:
            levels = json.dumps([int(v) for v in rng.choice([2, 4, 8, 16], 13)])
            params.update(lr="0.01", levels=levels, levels_profile="custom", stage1_levels="8", threshold_init="8.0",
                          finetune_epochs="12", al_thresholds="[20.0, 30.0, 40.0]", t_max="32",
                          latency_tolerance="2.0", latency_unit="PASCAL T_eff")
        rows[SqlTag] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
        rows[SqlParam] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in params.items()]
        if failed:
            continue
        val_acc = float(rng.uniform(60, 95))
        t_max = 64 if method == "rnl" else 32
        t_op = float(rng.uniform(1, t_max))
        final = {"val_ann_acc": val_acc + 2, "ann_acc": val_acc + 1.5, "val_snn_acc": val_acc + 0.5,
                 "snn_acc": val_acc, "t_op": t_op, "val_acc_op": val_acc, "acc_op": val_acc - 0.7,
                 "energy_op_mj": float(rng.uniform(0.05, 1.0)), "converged": float(rng.random() > 0.05),
                 "omega": float(rng.uniform(1, 4)), "t_eff": t_op, "synops": float(rng.uniform(1e8, 1e9)),
                 "energy_mj": float(rng.uniform(0.05, 1.0)), "equiv_max_abs_err": 0.0, "stage1_seconds": 0.0,
                 "trial_seconds": float(rng.uniform(300, 900)), "stage1_cache_hit": 1.0, "tracking_seconds": 1.2}
        points = [(key, value, 0) for key, value in final.items()]
        for epoch in range(1, 13):
            points += [("epoch", epoch, epoch), ("val_acc", val_acc * epoch / 12, epoch),
                       ("train_loss", 2.0 / epoch, epoch), ("train_acc", val_acc * epoch / 12, epoch),
                       ("lr", 0.001, epoch)]
        prefix = "" if method == "rnl" else "if_"
        for key, top in ((f"val_{prefix}snn_acc_t", val_acc), (f"{prefix}snn_acc_t", val_acc - 0.7)):
            points += [(key, top * (1 - 0.5 ** (t / 4)), t) for t in range(1, t_max + 1)]
        latest: dict[str, dict] = {}
        for key, value, step in points:
            row = {"key": key, "value": float(value), "timestamp": start + 800, "step": step, "is_nan": False,
                   "run_uuid": run_id}
            rows[SqlMetric].append(row)
            if key not in latest or step >= latest[key]["step"]:
                latest[key] = row
        rows[SqlLatestMetric] += latest.values()
    with engine.begin() as connection:
        for model, items in rows.items():
            for first in range(0, len(items), 50_000):
                connection.execute(sqlalchemy.insert(model.__table__), items[first:first + 50_000])
    engine.dispose()


def warm_up(client: Any, experiment_id: str, calls: int = 16) -> None:
    """Send ``calls`` small searches at once, so that every server worker has opened its store (its
    first request takes seconds): a sweep's server has long been running when its report is made."""
    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(lambda _: client.search_runs([experiment_id], max_results=1), range(calls)))


def report_row(cluster: PostgresCluster, folder: Path, runs: int) -> dict:
    """The report on a sweep of ``runs`` trial runs (``build_sweep``) in a new database of
    ``cluster``, read through an ``mlflow server``: ``analysis/pareto.py`` end to end, then its reads
    alone and what ``--resume`` reads, in seconds (``_ms``: milliseconds). The server's workers are
    warmed up first (``warm_up``)."""
    import numpy as np
    from mlflow import MlflowClient

    from snnconv import pareto, tracking
    from snnconv.pareto_report import TEST_CURVE, VAL_CURVE

    store = cluster.create_database(f"report_{runs}")
    settings = server_settings("postgresql", 64)
    with mlflow_server(store, folder, settings["workers"], settings["env"]) as uri:
        client = MlflowClient(tracking_uri=uri)
        experiment = "bench-report"
        experiment_id = client.create_experiment(experiment)
        parent = client.create_run(experiment_id, run_name=f"sweep-bench-{runs}", tags={
            ROLE_TAG: "sweep", "snnconv.preset": "bench", tracking.SELECT_ON_TAG: "val"}).info.run_id
        with contextlib.redirect_stdout(io.StringIO()):  # MLflow's "View run" lines
            client.set_terminated(parent, "FINISHED")
        start = time.perf_counter()
        build_sweep(store, experiment_id, parent, runs)
        row: dict[str, Any] = {"runs": runs, "server": settings_text(settings), "build_s": time.perf_counter() - start}
        warm_up(client, experiment_id)

        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "analysis" / "pareto.py"), "--tracking-uri", uri,
                               "--experiment", experiment, "--sweep", parent, "--out", str(folder / "report")],
                              capture_output=True, text=True, cwd=folder, timeout=3600)
        row["report_s"] = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"analysis/pareto.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        row["report_says"] = next((line for line in done.stdout.splitlines() if "trial runs" in line), "")

        start = time.perf_counter()
        sweep = tracking.load_sweep(uri, experiment, parent)
        row["load_sweep_s"] = time.perf_counter() - start
        row["runs_read"] = len(sweep.trials)
        row["distinct_runs_read"] = int(sweep.trials["run_id"].nunique())
        row["pages"] = math.ceil(runs / 1000)
        analysis = pareto.analyse(sweep.trials, pareto.FRONT_NAMES, "val",
                                  pareto.reference_point([sweep.trials], pareto.FRONT_NAMES))
        on_fronts = analysis.members_of_any_2d_front()
        rnl = on_fronts.loc[pareto.method_names(on_fronts) == "rnl", "run_id"].tolist()
        start = time.perf_counter()
        for key in (VAL_CURVE, TEST_CURVE):
            tracking.metric_histories(uri, rnl, key)
        row["curves_s"] = time.perf_counter() - start
        row["curve_runs"] = len(rnl)
        row["history_call_ms"] = 1000 * row["curves_s"] / max(1, 2 * len(rnl))
        row["all_histories_s"] = row["history_call_ms"] * runs / 1000  # one call per run of the sweep

        start = time.perf_counter()
        children = tracking.search_children(client, experiment_id, parent)
        row["resume_children_s"] = time.perf_counter() - start
        assert len(children) == runs
        start = time.perf_counter()
        running = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent}' and attributes.status = "
                                                       f"'RUNNING'", max_results=1000)
        row["running_children_s"] = time.perf_counter() - start
        assert not running
        tracker = tracking.SweepTracker(uri, experiment_id, parent)
        picks = np.random.default_rng(1).choice(runs, 20, replace=False)
        start = time.perf_counter()
        for index in picks:
            assert len(tracking.trial_runs(tracker, f"bench_{index:05d}")) == 1
        row["trial_lookup_ms"] = 1000 * (time.perf_counter() - start) / len(picks)
        row["all_lookups_s"] = row["trial_lookup_ms"] * runs / 1000
    return row


# ---------------------------------------------------------------------------------------------
# tables


def short_error(text: str) -> str:
    """An error message without SQLAlchemy's "(Background on this error at: URL)" tail."""
    return re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)


def load_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the load table: one row per (store, clients)."""
    columns = ["store", "clients", "server", "runs lost", "values lost", "wall s", "ms per value", "errors (first)"]
    body = [[{"sqlite": "SQLite", "postgresql": "PostgreSQL"}[row["store"]], str(row["clients"]), row["server"],
             f"{row['runs_lost']} of {row['runs_expected']}", f"{row['values_lost']} of {row['values_expected']}",
             f"{row['wall_s']:.1f}", f"{row['ms_per_value']:.2f}",
             f"{row['errors']}: {short_error(row['first_error'])}" if row["errors"] else "0"] for row in rows]
    return columns, body


def ratio_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): for each client count measured on both stores, the two side by side."""
    by = {(row["store"], row["clients"]): row for row in rows}
    counts = sorted({c for s, c in by if s == "sqlite"} & {c for s, c in by if s == "postgresql"})
    columns = ["clients", "runs lost SQLite / PostgreSQL", "wall s SQLite / PostgreSQL", "PostgreSQL wall / SQLite"]
    body = [[str(n), f"{by['sqlite', n]['runs_lost']} / {by['postgresql', n]['runs_lost']}",
             f"{by['sqlite', n]['wall_s']:.1f} / {by['postgresql', n]['wall_s']:.1f}",
             f"{by['postgresql', n]['wall_s'] / by['sqlite', n]['wall_s']:.2f}"] for n in counts]
    return columns, body


def report_table(row: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the report on the large sweep: what it took, part by part."""
    runs = row["runs"]
    pages = f"{row['pages']} page(s) of 1000"
    body = [["analysis/pareto.py end to end", f"{row['report_s']:.1f} s"],
            [f"load_sweep: every trial run, {pages}", f"{row['load_sweep_s']:.1f} s"],
            [f"acc(t) curves of the fronts' rnl runs ({row['curve_runs']} runs x 2)", f"{row['curves_s']:.1f} s"],
            ["one get_metric_history call", f"{row['history_call_ms']:.0f} ms"],
            [f"--resume: every child run (search_children, {pages})", f"{row['resume_children_s']:.1f} s"],
            ["the RUNNING child runs only (close_unfinished: a status filter, the server selects)",
             f"{row['running_children_s']:.2f} s"],
            ["--resume: one trial's lookup (trial_runs)", f"{row['trial_lookup_ms']:.0f} ms"],
            [f"--resume: {runs} lookups, one per trial as it starts (summed)", f"{row['all_lookups_s']:.0f} s"]]
    return [f"report on {runs} trial runs (PostgreSQL store, through the server)", "time"], body


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def load_markdown(data: Mapping[str, Any]) -> str:
    """The results block of ``docs/reliability.md``: the load table, the stores side by side, the
    report on the large sweep and the run's evidence, from the benchmark's JSON."""
    facts = data["evidence"]
    parts = [markdown_table(*load_table(data["load"])), markdown_table(*ratio_table(data["load"]))]
    if data.get("report"):
        parts.append(markdown_table(*report_table(data["report"])))
    parts.append(f"Measured {facts['date'][:10]} on {facts['machine']} ({facts['versions']}); each client: "
                 f"{data['workload']['values']} values ({data['workload']['params']} params, a "
                 f"{data['workload']['curve']}-point curve, {data['workload']['metrics']} single metrics, "
                 f"{data['workload']['artifacts']} artifact), threads of {data['client_processes']} processes.")
    return "\n\n".join(parts)


def summary_rows(load: Sequence[Mapping[str, Any]], report: Mapping[str, Any] | None
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the suite's target rows, its figures) of a run: runs lost by the largest PostgreSQL and SQLite
    configurations, the report's wall time; each configuration's wall, ms per value, values lost."""
    summary = []
    for store in ("postgresql", "sqlite"):
        row = max((row for row in load if row["store"] == store), key=lambda row: row["clients"])
        label = "PostgreSQL store" if store == "postgresql" else "SQLite store (MLflow's defaults)"
        target, met = ("0", row["runs_lost"] == 0 and row["values_lost"] == 0) if store == "postgresql" else \
            ("(none: why PostgreSQL)", None)
        summary.append({"benchmark": f"MLflow server, {label}, {row['clients']} clients", "measure": "runs lost",
                        "value": row["runs_lost"], "target": target, "met": met})
    details: dict[str, Any] = {}
    for row in load:
        label = f"{row['store']}, {row['clients']} clients"
        details.update({f"{label}: wall (s)": row["wall_s"], f"{label}: ms per value": row["ms_per_value"],
                        f"{label}: values lost": row["values_lost"], f"{label}: client CPU (s)": row["client_cpu_s"]})
    if report:
        runs = report["runs"]
        summary.append({"benchmark": f"Pareto report, {runs} trial runs through the server",
                        "measure": "analysis/pareto.py end to end (s)", "value": report["report_s"],
                        "target": "(none)", "met": None})
        details.update({f"report, {runs} runs: load_sweep (s)": report["load_sweep_s"],
                        f"report, {runs} runs: one trial's lookup on --resume (ms)": report["trial_lookup_ms"]})
    return summary, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke run)")
    parser.add_argument("--report-runs", type=int, help=f"trial runs of the report's sweep (default {REPORT_RUNS}, "
                                                        f"quick {QUICK_REPORT_RUNS}; 0: no report)")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args(argv)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    runs = args.report_runs if args.report_runs is not None else (QUICK_REPORT_RUNS if args.quick else REPORT_RUNS)

    header = evidence()
    print_header("MLflow tracking server: SQLite against PostgreSQL under load; the report on a large sweep", header)
    load, report = [], None
    connections = max(300, *(server_settings(store, clients)["max_connections"] for store, clients in configs))
    with tempfile.TemporaryDirectory() as folder, PostgresCluster(max_connections=connections) as cluster:
        for index, (store, clients) in enumerate(configs):
            row = load_row(store, clients, Path(folder) / f"load{index}", cluster)
            print(f"{store} {clients} clients: {row['runs_lost']} runs lost, {row['wall_s']:.1f} s", flush=True)
            load.append(row)
        if runs:
            report = report_row(cluster, Path(folder) / "report", runs)
    print()
    print_table(*load_table(load))
    print()
    print_table(*ratio_table(load))
    if report:
        print()
        print_table(*report_table(report))
        print(f"(building the sweep straight in the store: {report['build_s']:.1f} s; the report said: "
              f"{report['report_says']})")

    summary, details = summary_rows(load, report)
    servers = "; ".join(f"{row['store']} {row['clients']}: {row['server']}" for row in load)
    result = {"benchmark": "bench_tracking", "quick": args.quick,
              "evidence": {**header, "clients": f"threads of {CLIENT_PROCESSES} processes, MLflow's client with its "
                                                f"default retries", "servers": servers},
              "workload": {**asdict(Workload()), "values": Workload().values}, "client_processes": CLIENT_PROCESSES,
              "load": load, "report": report, "summary": summary, "details": details}
    write_result(result, "bench_tracking", args.quick, args.out)
    return 0


if __name__ == "__main__":
    # run as bench.bench_tracking, not as __main__: the client processes find their function there
    from bench.bench_tracking import main as run

    raise SystemExit(run())
