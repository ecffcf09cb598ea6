"""The Pareto command line and the tracking reader on hand-built MLflow run sets with known fronts.

One real SQLite store per module (creating one costs seconds of migrations), written with the real
MLflow client in the shape of the tracking contract: a parent run per sweep, nested trial runs with
the contract's params, metrics (a stepped ``snn_acc_t``), a FAILED run with an ``error`` tag, and
the ``pareto_*`` tags the sweep sets.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from snnconv import pareto, pareto_report, tracking

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = math.nan, math.inf
ANN_ACC = 92.0
T_MAX = 8


@dataclass
class Trial:
    """One hand-built trial run; ``on_omega`` / ``on_t_eff`` are the expected front memberships."""

    name: str
    method: str
    snn_acc: float | None
    omega: float | None
    t_eff: float | None
    on_omega: bool = False
    on_t_eff: bool = False
    lam: float | None = None
    levels: list[int] | None = None
    profile: str | None = None
    status: str = "FINISHED"


# snn_acc, omega, t_eff; None = never logged. Same fronts as test_pareto.trial_table.
SWEEP_A = [
    Trial("r1", "rnl", 90.0, 2.0, 10.0, on_omega=True, on_t_eff=True, lam=0.1),
    Trial("r2", "rnl", 85.0, 1.5, 12.0, on_omega=True, lam=0.01),
    Trial("r3", "rnl", 85.0, 1.5, 12.0, on_omega=True, lam=0.01),             # duplicate point of r2
    Trial("r4", "rnl", 80.0, 1.5, 8.0, on_t_eff=True, lam=0.3),                # dominated on omega only
    Trial("r5", "rnl", 90.0, 2.0, 11.0, on_omega=True, lam=0.2),               # tie with r1 on omega
    Trial("r6", "qcfs", 88.0, 3.0, 9.0, on_t_eff=True, levels=[8, 4, 4, 1], profile="vgg-paper"),
    Trial("r7", "qcfs", 70.0, 1.2, 2.0, on_omega=True, on_t_eff=True, levels=[2, 2, 1, 4], profile="custom"),
    Trial("r8", "rnl", 60.0, 2.5, 30.0, lam=1.0),
    Trial("r9", "rnl", 75.0, NAN, 3.0, on_t_eff=True, lam=0.5),                 # NaN omega
    Trial("r10", "rnl", None, 1.0, 1.0, lam=0.7),                               # snn_acc never logged
    Trial("r11", "rnl", None, None, None, lam=2.0, status="FAILED"),
    Trial("r12", "qcfs", 50.0, INF, 40.0, levels=[4, 4, 4, 4], profile="uniform"),  # inf omega
    Trial("r13", "rnl", None, None, None, lam=3.0, status="KILLED"),
]
SWEEP_B = [  # an older sweep, for --compare and "latest sweep"
    Trial("b1", "rnl", 80.0, 2.0, 20.0, on_omega=True, on_t_eff=True, lam=0.05),
    Trial("b2", "rnl", 70.0, 1.4, 15.0, on_omega=True, on_t_eff=True, lam=0.5),
    Trial("b3", "rnl", 65.0, 1.8, 25.0, lam=0.8),
]
SINGLE = [Trial("s1", "qcfs", 77.0, 1.1, 4.0, on_omega=True, on_t_eff=True, levels=[4, 2], profile="custom")]


def log_sweep(client, experiment_id: str, preset: str, start_ms: int, trials: list[Trial]) -> tuple[str, dict[str, str]]:
    """A parent run and one child per trial, as the sweep writes them; returns (parent id, {name: run id})."""
    from mlflow.entities import Metric, Param, RunTag

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(start_ms / 1000))
    parent = client.create_run(experiment_id, run_name=f"sweep-{preset}-{stamp}", start_time=start_ms,
                               tags={"snnconv.role": "sweep", "snnconv.preset": preset})
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param("preset", preset), Param("search", "random"),
                                        Param("num_samples", str(len(trials))), Param("data.name", "digits")])
    ids = {}
    for index, trial in enumerate(trials):
        run = client.create_run(experiment_id, run_name=trial.name, start_time=start_ms + 10 * (index + 1), tags={
            "mlflow.parentRunId": parent_id, "snnconv.role": "trial", "trial_id": f"{preset}_{index:05d}"})
        ids[trial.name] = run_id = run.info.run_id
        params = {"method": trial.method, "model": "small", "dataset": "digits", "lr": "0.001", "seed": "0",
                  "stage1_key": f"key-{trial.method}"}
        if trial.method == "rnl":
            params.update(lam=str(trial.lam), sharescale="True", scale_init="1.0")
        else:
            params.update(levels=json.dumps(trial.levels), levels_profile=trial.profile)
        metrics = [Metric("ann_acc", ANN_ACC, 0, 0)]
        named = {"snn_acc": trial.snn_acc, "omega": trial.omega, "t_eff": trial.t_eff}
        metrics += [Metric(key, value, 0, 0) for key, value in named.items() if value is not None]
        if trial.status == "FINISHED":
            metrics += [Metric("synops", 1e5, 0, 0), Metric("energy_mj", 0.01, 0, 0)]
            if trial.method == "qcfs":
                metrics.append(Metric("equiv_max_abs_err", 0.0, 0, 0))
            if trial.snn_acc is not None:
                metrics += [Metric("snn_acc_t", acc_at(trial, t), 0, t) for t in range(1, T_MAX + 1)]
        tags = [RunTag("pareto_omega", str(trial.on_omega).lower()), RunTag("pareto_t_eff", str(trial.on_t_eff).lower())]
        if trial.status == "FAILED":
            tags.append(RunTag("error", "NonFiniteLossError: loss became nan at epoch 1, batch 3"))
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=tags)
        client.set_terminated(run_id, trial.status, end_time=start_ms + 10 * (index + 1) + 5)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id, ids


def acc_at(trial: Trial, t: int) -> float:
    """The hand-built acc(t) curve: rises to snn_acc at T_MAX."""
    return float(trial.snn_acc * (1 - 0.5 ** t) / (1 - 0.5 ** T_MAX))


@dataclass
class Store:
    uri: str
    client: object
    sweep_a: str
    sweep_b: str
    single: str
    ids_a: dict[str, str]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    main_id = client.create_experiment("snnconv", artifact_location=(folder / "artifacts").as_uri())
    sweep_b, _ = log_sweep(client, main_id, "demo", 1_700_000_000_000, SWEEP_B)
    sweep_a, ids_a = log_sweep(client, main_id, "demo", 1_700_000_600_000, SWEEP_A)
    client.create_experiment("empty", artifact_location=(folder / "empty").as_uri())
    single_id = client.create_experiment("single", artifact_location=(folder / "single").as_uri())
    single, _ = log_sweep(client, single_id, "tiny", 1_700_000_000_000, SINGLE)
    hollow_id = client.create_experiment("hollow", artifact_location=(folder / "hollow").as_uri())
    log_sweep(client, hollow_id, "demo", 1_700_000_000_000, [])  # a sweep that started no trial
    return Store(uri, client, sweep_a, sweep_b, single, ids_a)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = pareto_report.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected(trials: list[Trial], attribute: str) -> set[str]:
    return {t.name for t in trials if getattr(t, attribute)}


def assert_png(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


# ---------------------------------------------------------------------------------------------
# the reader


def test_load_sweep_reads_the_contract(store):
    sweep = tracking.load_sweep(store.uri, "snnconv")  # latest sweep: A
    assert sweep.sweep_id == store.sweep_a and sweep.preset == "demo"
    assert sweep.sweep_name.startswith("sweep-demo-")
    trials = sweep.trials.set_index("run_name")
    assert list(trials.index) == [t.name for t in SWEEP_A]  # oldest first
    assert trials.loc["r1", "lam"] == 0.1 and trials.loc["r1", "sharescale"] == "True"
    assert trials.loc["r6", "levels"] == "[8, 4, 4, 1]" and trials.loc["r6", "levels_profile"] == "vgg-paper"
    assert math.isnan(trials.loc["r9", "omega"]) and math.isnan(trials.loc["r10", "snn_acc"])
    assert trials.loc["r12", "omega"] == INF  # SQLite stores inf as float max; the reader gives inf back
    assert trials.loc["r11", "status"] == "FAILED" and "NonFiniteLossError" in trials.loc["r11", "error"]
    assert trials.loc["r13", "status"] == "KILLED"
    assert trials.loc["r2", "trial_id"] == "demo_00001"


def test_front_tags_on_the_stored_sweep_match_the_stored_tags(store):
    """What the sweep runs at its end (sweep_runs_frame + front_tags) reproduces the contract's tags."""

    @dataclass
    class Location:
        tracking_uri: str
        experiment_id: str
        parent_run_id: str

    experiment = store.client.get_experiment_by_name("snnconv").experiment_id
    table = tracking.sweep_runs_frame(Location(store.uri, experiment, store.sweep_a))
    tags = pareto.front_tags(table)
    for _, row in table.iterrows():
        assert tags[row["run_id"]] == {"pareto_omega": row["tag_pareto_omega"], "pareto_t_eff": row["tag_pareto_t_eff"]}


def test_metric_histories_are_stepped(store):
    curves = tracking.metric_histories(store.uri, [store.ids_a["r1"], store.ids_a["r11"]])
    assert set(curves) == {store.ids_a["r1"]}  # the failed run logged no curve
    curve = curves[store.ids_a["r1"]]
    assert curve.index.tolist() == list(range(1, T_MAX + 1))
    assert curve.iloc[-1] == pytest.approx(90.0) and curve.is_monotonic_increasing


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_report_on_the_latest_sweep(store, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--out", str(out))
    assert code == 0, stderr
    for name in ("report.html", "report.md", "pareto.csv", "summary.json"):
        assert (out / name).stat().st_size > 0
    pngs = ["front_omega", "front_t_eff", "front_joint", "acc_curves", "levels"]
    for name in pngs:
        assert_png(out / f"{name}.png")
    assert not list(out.glob("compare_*.png"))

    table = pd.read_csv(out / "pareto.csv")
    assert len(table) == len(SWEEP_A)  # every run, failed ones included
    for cost, attribute in (("omega", "on_omega"), ("t_eff", "on_t_eff")):
        on_front = set(table.loc[table[f"front_{cost}"], "run_name"])
        assert on_front == expected(SWEEP_A, attribute)
        tagged = set(table.loc[table[f"tag_pareto_{cost}"].astype(str).str.lower() == "true", "run_name"])
        assert on_front == tagged
    assert set(table.loc[table["knee_omega"], "run_name"]) == {"r2"}
    assert set(table.loc[table["knee_t_eff"], "run_name"]) == {"r9"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"runs": 13, "finished": 11, "failed": 1, "unfinished": 1}
    assert summary["fronts"]["omega"]["hypervolume"] == pytest.approx(70 * 0.3 + 85 * 0.5 + 90 * 1.3)
    assert summary["reference"] == pytest.approx({"snn_acc": 0.0, "omega": 3.3, "t_eff": 44.0})

    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(pngs) and ".png'" not in page  # self-contained
    markdown = (out / "report.md").read_text()
    assert "![" in markdown and "front_omega.png" in markdown and "| run | method | λ |" in markdown

    assert "front snn_acc vs omega: 5 run(s), knee r2" in stdout
    header = next(line for line in stdout.splitlines() if line.split()[:2] == ["run", "method"])
    assert header.split() == ["run", "method", "λ", "lr", "sharescale", "levels", "snn_acc", "omega", "t_eff"]
    assert f"report: {(out / 'report.html').resolve()}" in stdout
    assert "warning: left out of the fronts using snn_acc: 1 finished run(s)" in stderr and "r10 (" in stderr
    assert "r9 (" in stderr and "r12 (" in stderr and "Traceback" not in stderr


def test_cli_compare_two_sweeps(store, tmp_path, capsys):
    out = tmp_path / "compare"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--sweep", store.sweep_b,
                                    "--compare", store.sweep_a, "--out", str(out))
    assert code == 0, stderr
    for cost in ("omega", "t_eff"):
        assert_png(out / f"compare_{cost}.png")
    summary = json.loads((out / "summary.json").read_text())
    # one reference point for both sweeps (the larger costs of sweep A set it), so hypervolumes compare
    assert summary["reference"] == summary["comparison"]["reference"] == pytest.approx(
        {"snn_acc": 0.0, "omega": 3.3, "t_eff": 44.0})
    b_front = summary["fronts"]["omega"]
    assert b_front["size"] == 2
    assert b_front["hypervolume"] == pytest.approx(70 * (2.0 - 1.4) + 80 * (3.3 - 2.0))
    assert summary["comparison"]["fronts"]["omega"]["hypervolume"] > b_front["hypervolume"]
    table = pd.read_csv(out / "pareto.csv")
    assert set(table.loc[table["front_t_eff"], "run_name"]) == expected(SWEEP_B, "on_t_eff")
    names = [store.client.get_run(run_id).info.run_name for run_id in (store.sweep_b, store.sweep_a)]
    rows = [line.split() for line in stdout.splitlines()]
    rows = [words for words in rows if words[1:4] == ["snn_acc", "vs", "omega"] and words[4].isdigit()]
    assert [words[0] for words in rows] == names  # the hypervolume table names both sweeps


def test_cli_single_run_sweep_and_energy_objective(store, tmp_path, capsys):
    out = tmp_path / "single"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "single",
                                    "--objectives", "omega", "t_eff", "energy_mj", "--out", str(out))
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {name: front["size"] for name, front in summary["fronts"].items()} == {
        "omega": 1, "t_eff": 1, "energy_mj": 1, "joint": 1}
    assert summary["fronts"]["omega"]["knee_run_id"] == summary["fronts"]["omega"]["run_ids"][0]
    assert_png(out / "front_energy_mj.png")
    assert_png(out / "levels.png")  # the single run is qcfs


def test_cli_log_to_mlflow_attaches_the_report(store, tmp_path, capsys):
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "single",
                                    "--out", str(tmp_path / "r"), "--log-to-mlflow")
    assert code == 0, stderr
    names = {Path(item.path).name for item in store.client.list_artifacts(store.single, "report")}
    assert {"report.html", "report.md", "pareto.csv", "front_omega.png"} <= names
    assert f"report attached to run {store.single}" in stdout


def test_cli_default_folder_and_default_store(store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    code, stdout, stderr = run_main(capsys, "--experiment", "single")
    assert code == 0, stderr
    sweep_name = store.client.get_run(store.single).info.run_name
    assert (tmp_path / "reports" / sweep_name / "report.html").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    code, _, stderr = run_main(capsys)  # default store: ./mlflow.db, which does not exist here
    assert code == 1 and "no MLflow store at" in stderr and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args, message", [
    (["--experiment", "empty"], "experiment 'empty' has no sweep runs"),
    (["--experiment", "nope"], "no experiment named 'nope' in the store; experiments: ['Default', 'empty', 'hollow', "
                               "'single', 'snnconv']"),
    (["--experiment", "hollow"], "nothing to analyse: 0 trial runs"),
    (["--sweep", "0123456789abcdef"], "no run with id '0123456789abcdef'"),
    (["--compare", "0123456789abcdef"], "no run with id '0123456789abcdef'"),
    (["--objectives", "omega", "latency"], "objectives must be one or more of"),
])
def test_cli_user_errors_are_one_clear_line(store, tmp_path, capsys, args, message):
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--out", str(tmp_path / "x"), *args)
    assert code == 1
    assert stderr.startswith("error: ") and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "x").exists()


def test_cli_rejects_trial_runs_and_other_experiments(store, tmp_path, capsys):
    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--sweep", store.ids_a["r1"])
    assert code == 1 and f"is not a sweep run (tag snnconv.role = 'trial'); its sweep is {store.sweep_a}" in stderr
    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--sweep", store.single)
    assert code == 1 and "not to 'snnconv'" in stderr


def test_script_runs_as_a_command(store, tmp_path):
    """``analysis/pareto.py`` itself: --help, a report, and a user error with no traceback."""
    script = [sys.executable, str(ROOT / "analysis" / "pareto.py")]
    shown = subprocess.run([*script, "--help"], capture_output=True, text=True, check=True)
    for option in ("--tracking-uri", "--experiment", "--sweep", "--out", "--objectives", "--compare",
                   "--log-to-mlflow"):
        assert option in shown.stdout
    done = subprocess.run([*script, "--tracking-uri", store.uri, "--experiment", "single", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert np.all([(tmp_path / name).exists() for name in ("report.html", "pareto.csv", "front_t_eff.png")])
    failed = subprocess.run([*script, "--tracking-uri", store.uri, "--experiment", "empty"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert failed.returncode == 1 and "error: experiment 'empty' has no sweep runs" in failed.stderr
    assert "Traceback" not in failed.stderr
