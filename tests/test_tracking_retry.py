"""No result lost to a tracking error: which failures are retried, the bound, and a trial's result written
through a tracking server (on PostgreSQL) that fails on purpose, counted back: everything once.

The server is a real ``mlflow server`` on a throw-away PostgreSQL database; between it and the client a
proxy (``tests/servers.py``: ``FlakyProxy``) answers writes with the pool-timeout 400, with 503, or carries
them out and then answers 503 (the client never learns they worked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException, RestException

from snnconv import tracking, trial_record
from snnconv.config import TrialConfig, apply_overrides
from snnconv.pipeline import run_trial
from snnconv.tracking_retry import TrackingUnavailable, is_transient, with_retries
from tests.servers import POOL_TIMEOUT, FlakyProxy, free_port, http_status, wait_until

TINY = {"model": "small", "device": "cpu", "data.name": "digits", "stage1.epochs": 2, "stage1.lr": 0.05,
        "rnl.epochs": 1, "rnl.inspect_interval": 5, "rnl.t_max": 8}


# ------------------------------------------------------------------ which failures pass


@pytest.mark.parametrize("error, transient", [
    (RestException(POOL_TIMEOUT), True),  # the 400 MLflow's client does not retry
    (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}), True),
    (RestException({"error_code": "INTERNAL_ERROR", "message": "(psycopg.OperationalError) server closed the "
                                                               "connection unexpectedly"}), True),
    (MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                     "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded"), True),
    (MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error code 503 != 200. "
                     "Response body: 'Service Unavailable'"), True),
    (requests.exceptions.ConnectionError("refused"), True),
    (requests.exceptions.HTTPError(  # an artifact upload the busy server refused
        "400 Client Error: Bad Request for url: http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/x. "
        f"Response text: {POOL_TIMEOUT}"), True),
    (requests.exceptions.HTTPError("403 Client Error: Forbidden for url: http://127.0.0.1:5000/x"), False),
    (RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'abc' not found"}), False),
    (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values is not allowed"}),
     False),
    (RestException({"error_code": "PERMISSION_DENIED", "message": "Permission denied"}), False),
    (MlflowException("API request to endpoint /api/2.0/mlflow/runs/get failed with error code 401 != 200"), False),
    (ValueError("a bug"), False),
])
def test_what_is_transient(error, transient):
    assert is_transient(error) is transient


def test_retries_back_off_until_the_bound_then_give_up():
    pauses, calls = [], []

    def busy():
        calls.append(time.monotonic())
        raise RestException(POOL_TIMEOUT)

    with pytest.raises(TrackingUnavailable, match="log the result: the tracking server kept failing for 20 s"):
        with_retries(busy, retry_s=20, what="log the result", sleep=lambda s: (pauses.append(s), time.sleep(0)))
    # pauses of 1, 2, 4, 8, ... s (times a 0.5-1 jitter); this sleep lets no time pass, so the retries end at the
    # first pause that would end past the 20 s bound: after the 16 s one or the 32 s one
    assert 4 <= len(pauses) <= 6 and len(calls) == len(pauses) + 1
    assert all(pauses[i + 1] > pauses[i] * 0.9 for i in range(len(pauses) - 1)) or len(pauses) < 3
    assert all(0.5 * 2 ** i <= pause <= 2 ** i for i, pause in enumerate(pauses))


def test_a_failure_that_is_not_transient_is_raised_at_once():
    calls = []

    def missing():
        calls.append(1)
        raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'abc' not found"})

    with pytest.raises(RestException):
        with_retries(missing, retry_s=60, what="x", sleep=lambda s: pytest.fail("slept"))
    assert calls == [1]


def test_a_passing_failure_is_retried_until_it_works():
    answers = iter([RestException(POOL_TIMEOUT), requests.exceptions.ConnectionError("refused"), "done"])

    def flaky():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(flaky, retry_s=60, what="x", sleep=lambda s: None) == "done"


# ------------------------------------------------------------------ a real server that fails on purpose


@pytest.fixture(scope="module")
def flaky_server(postgres, tmp_path_factory):
    """(proxy, server URL): ``mlflow server`` on a fresh PostgreSQL database, behind a FlakyProxy."""
    folder = tmp_path_factory.mktemp("flaky")
    database = postgres.create_database("flaky_record")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2", "--backend-store-uri", database, "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until(lambda: http_status(f"http://127.0.0.1:{port}/health", timeout_s=2) == 200, 120)
        proxy = FlakyProxy(port)
        yield proxy, f"http://127.0.0.1:{port}"
        proxy.close()
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def quick_client_retries(monkeypatch):
    """MLflow's own retries short (1 retry, no backoff), so that ours do the work and the test is quick."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")


@pytest.mark.slow  # a tiny trial and a server: about 30 s
def test_a_result_written_through_a_failing_server_is_in_mlflow_once(flaky_server, quick_client_retries, tmp_path,
                                                                      one_thread):
    proxy, direct = flaky_server
    config = apply_overrides(TrialConfig(), {**TINY, "method": "rnl", "cache_dir": str(tmp_path / "cache")})
    result = run_trial(config)
    proxy.fail(6)
    tracker = tracking.start_sweep(proxy.url, "retries", "sweep-flaky", {"a": 1}, {}, retry_s=120)
    start = tracking.start_trial(tracker, "t0", "rnl_t0", {"method": "rnl"})
    progress = tracking.ProgressLog(tracker, start.run_id)
    progress.add("stage2", {"probe_progress_acc": 50.0}, 1)
    proxy.fail(1, ("pool",))
    assert progress.flush() is False and len(progress.unwritten()) == 1  # kept, training goes on
    record = trial_record.save_trial_record(result, {"levels": ""}, tmp_path / "record", tracker, start.run_id,
                                            "t0", progress.unwritten())
    proxy.fail(12, every=3)  # one write in three fails, each kind in turn, until 12 have
    trial_record.log_trial_record(record, tracker.retry_s)
    tracking.end_trial(tracker, start.run_id, "FINISHED", metrics=[tracking.metric("tracking_seconds", 1.5)])
    assert proxy.pending() == 0 and min(proxy.failed.values()) >= 4, proxy.failed

    def counts():
        """Everything the run holds, counted through the server directly."""
        client = MlflowClient(direct)
        experiment = client.get_experiment_by_name("retries").experiment_id
        parents = client.search_runs([experiment], "tags.`snnconv.role` = 'sweep'", ViewType.ALL)
        runs = client.search_runs([experiment], "tags.trial_id = 't0'", ViewType.ALL)
        assert len(parents) == 1 and len(runs) == 1, ([r.info.run_id for r in parents], len(runs))
        run = runs[0]
        histories = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                     for key in run.data.metrics}
        models = client.search_logged_models([experiment])
        return run, histories, models, client

    for attempt in range(2):  # the same record logged again (as --resume would after a crash): nothing doubles
        run, histories, models, client = counts()
        assert run.info.status == "FINISHED"
        expected = {key: [(0, value)] for key, value in result.metrics().items() if not math.isnan(value)}
        for name, values in result.curves.items():
            expected[name] = list(enumerate(values, start=1))
        expected["probe_progress_acc"] = [(1, 50.0)]
        expected["tracking_seconds"] = [(0, 1.5)]
        assert set(histories) == set(expected)
        for key, points in expected.items():
            got = sorted(histories[key])
            assert len(got) == len(points), (key, got)  # each value once
            assert [step for step, _ in got] == [step for step, _ in sorted(points)], key
            values = [math.copysign(math.inf, v) if abs(v) >= sys.float_info.max else v for _, v in got]
            assert values == pytest.approx([value for _, value in sorted(points)]), key
        assert [(m.name, str(m.status)) for m in models] == [("model", "READY")]
        assert [item.model_id for item in run.outputs.model_outputs] == [models[0].model_id]
        assert [item.dataset.name for item in run.inputs.dataset_inputs] == ["digits"]
        assert {item.path for item in client.list_artifacts(run.info.run_id)} >= {"layers.csv", "acc_curves.csv"}
        assert run.data.params["levels"] == "" and run.data.params["method"] == "rnl"
        if attempt == 0:
            proxy.fail(6, every=2)
            trial_record.log_trial_record(record, tracker.retry_s)


@pytest.mark.slow
def test_a_server_failing_past_the_bound_leaves_the_record_waiting(flaky_server, quick_client_retries, tmp_path):
    proxy, direct = flaky_server
    tracker = tracking.start_sweep(proxy.url, "retries", "sweep-down", {}, {}, retry_s=3)
    start = tracking.start_trial(tracker, "t1", "rnl_t1", {"method": "rnl"})
    record = tmp_path / "storage" / "trial" / "checkpoint_000000"
    record.mkdir(parents=True)
    (record / "artifacts").mkdir()
    (record / "artifacts" / "note.txt").write_text("kept")
    (record / trial_record.RECORD_FILE).write_text(json.dumps({
        "format": 1, "tracking_uri": proxy.url, "experiment_id": tracker.experiment_id,
        "parent_run_id": tracker.parent_run_id, "run_id": start.run_id, "trial_id": "t1",
        "metrics": [["acc_op", 91.0, 1_700_000_000_000, 0, False]], "params": {"levels": ""}, "tags": {},
        "dataset": None, "model_type": None}))
    proxy.fail(10_000, ("503",))
    clock = time.monotonic()
    with pytest.raises(TrackingUnavailable):
        trial_record.log_trial_record(record, 3)
    assert time.monotonic() - clock < 30  # the bound (3 s) and one attempt with MLflow's own (short) retries
    # the driver at the end of the sweep: the server still fails, so the record waits, reported
    logged, waiting = trial_record.log_waiting_records(tmp_path / "storage", retry_s=3)
    assert (logged, waiting) == (0, [start.run_id])
    assert trial_record.waiting_records(tmp_path / "storage") == [record]
    # the server answers again: --resume logs it, once, and marks the record logged
    proxy.fail(0)
    assert trial_record.log_waiting_records(tmp_path / "storage", retry_s=3) == (1, [])
    assert trial_record.waiting_records(tmp_path / "storage") == []
    assert trial_record.log_waiting_records(tmp_path / "storage", retry_s=3) == (0, [])
    client = MlflowClient(direct)
    run = client.get_run(start.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["acc_op"] == 91.0
    assert len(client.get_metric_history(start.run_id, "acc_op")) == 1
    assert [a.path for a in client.list_artifacts(start.run_id)] == ["note.txt"]
