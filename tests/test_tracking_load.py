"""The MLflow tracking server under a sweep's load (``bench/bench_tracking.py``).

* a server with a PostgreSQL store, started as the benchmark starts it, takes 128 trial-like clients
  logging at once and loses nothing: every run FINISHED, every param, metric value (each curve point),
  artifact counted back through the server;
* the benchmark's counting reports what is missing (a missing value, a missing run, an unfinished
  run, a wrong value), so that "nothing lost" can fail;
* ``docs/reliability.md``'s load table is what the committed ``bench/results/bench_tracking.json`` gives.
"""

from __future__ import annotations

import json
import time

import pytest

from bench import __main__ as suite
from bench.bench_tracking import (
    CURVE,
    RunCount,
    Workload,
    count_lost,
    curve_value,
    load_markdown,
    load_row,
    param_value,
    run_count,
    trial_id,
)

WORKLOAD = Workload()


def full(client: int, status: str = "FINISHED") -> RunCount:
    return RunCount(client, status, WORKLOAD.params, WORKLOAD.curve, WORKLOAD.metrics, WORKLOAD.artifacts)


def mlflow_run(client: int, *, skip_step: int | None = None, wrong_param: int | None = None):
    """An MLflow ``Run`` entity holding what client ``client`` logs, and its curve (step -> value)."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    params = [Param(f"p{i:02d}", "other" if i == wrong_param else param_value(i)) for i in range(WORKLOAD.params)]
    metrics = [Metric(f"m{i:02d}", float(i), 0, 0) for i in range(WORKLOAD.metrics)]
    info = RunInfo("abc", "1", "user", "FINISHED", 0, 1, "active")
    run = Run(info, RunData(metrics=metrics, params=params, tags=[RunTag("trial_id", trial_id(client))]))
    curve = {step: curve_value(step, WORKLOAD) for step in range(1, WORKLOAD.curve + 1) if step != skip_step}
    return run, curve


def test_counting_reports_what_is_missing():
    nothing_lost = {"runs_expected": 3, "runs_found": 3, "runs_lost": 0, "values_expected": 3 * WORKLOAD.values,
                    "values_lost": 0}
    assert count_lost(WORKLOAD, 3, [full(0), full(1), full(2)]) == nothing_lost
    # one curve point missing: that client's run and one value are lost
    short = RunCount(1, "FINISHED", WORKLOAD.params, WORKLOAD.curve - 1, WORKLOAD.metrics, WORKLOAD.artifacts)
    lost = count_lost(WORKLOAD, 3, [full(0), short, full(2)])
    assert (lost["runs_lost"], lost["values_lost"]) == (1, 1)
    # a run that never came: all of its values
    lost = count_lost(WORKLOAD, 3, [full(0), full(2)])
    assert (lost["runs_lost"], lost["values_lost"]) == (1, WORKLOAD.values)
    # every value there but never ended FINISHED: the run is lost, its values are not
    lost = count_lost(WORKLOAD, 3, [full(0), full(1, "RUNNING"), full(2)])
    assert (lost["runs_lost"], lost["values_lost"]) == (1, 0)
    # another client's duplicate or a stranger's run cannot hide a loss
    lost = count_lost(WORKLOAD, 3, [full(0), full(0), short, full(2), full(-1), full(7)])
    assert (lost["runs_lost"], lost["values_lost"]) == (1, 1)


def test_a_run_is_counted_from_what_mlflow_returns():
    run, curve = mlflow_run(4)
    assert run_count(run, curve, ["notes.txt"], WORKLOAD) == full(4)
    run, curve = mlflow_run(4, skip_step=17, wrong_param=3)
    counted = run_count(run, curve, [], WORKLOAD)  # a point, a param's value and the artifact missing
    assert (counted.client, counted.params, counted.curve, counted.artifacts) == (4, WORKLOAD.params - 1,
                                                                                   WORKLOAD.curve - 1, 0)
    assert count_lost(WORKLOAD, 5, [full(0), full(1), full(2), full(3), counted])["values_lost"] == 3
    assert CURVE == "acc_t"


def test_the_load_table_in_the_docs_is_the_committed_result():
    path = suite.result_path("bench_tracking", quick=False)
    data = json.loads(path.read_text())
    assert {row["store"] for row in data["load"]} == {"sqlite", "postgresql"}
    assert suite.read_block(suite.RELIABILITY) == load_markdown(data), \
        "docs/reliability.md's load table differs from bench/results/bench_tracking.json; run python -m bench " \
        "--summary-only"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_postgres_server_loses_nothing_under_128_clients(postgres, tmp_path):
    start = time.perf_counter()
    row = load_row("postgresql", 128, tmp_path, postgres)
    seconds = time.perf_counter() - start
    assert row["errors"] == 0, row["first_error"]
    assert row["runs_found"] == 128 and row["runs_lost"] == 0 and row["values_lost"] == 0, row
    assert row["values_expected"] == 128 * WORKLOAD.values
    print(f"128 clients: {row['wall_s']:.1f} s of load, {seconds:.1f} s with the server's start and the count")
