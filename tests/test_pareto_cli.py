"""The Pareto command line and the tracking reader on hand-built MLflow run sets with known fronts.

One real SQLite store per module (creating one costs seconds of migrations), written with the real
MLflow client in the shape of the tracking contract: a parent run per sweep with its
``snnconv.select_on`` tag, nested trial runs with the contract's params, operating-point metrics
(``t_op``, ``val_acc_op``, ``acc_op``, ``energy_op_mj``, ``converged``), stepped curves
(``val_snn_acc_t`` / ``snn_acc_t`` for rnl, ``val_if_snn_acc_t`` / ``if_snn_acc_t`` for qcfs), a
FAILED run with an ``error`` tag, and the ``pareto_*`` tags the sweep sets. A second experiment holds a
legacy sweep, logged before operating points (``snn_acc``, ``omega``, ``t_eff`` and the
``pareto_omega`` / ``pareto_t_eff`` tags only).
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

from snnconv import pareto, pareto_command, tracking
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = math.nan, math.inf
ANN_ACC = 92.0
T_MAX = 16


@dataclass
class Trial:
    """One hand-built trial run of the operating-point contract; ``on`` = the fronts it is on (val split).

    None = the metric was never logged.
    """

    name: str
    method: str
    val_acc: float | None
    test_acc: float | None
    t_op: float | None
    energy: float | None
    omega: float | None
    converged: float = 1.0
    on: frozenset = frozenset()
    lam: float | None = None
    levels: list[int] | None = None
    profile: str | None = None
    status: str = "FINISHED"


def on(*fronts: str) -> frozenset:
    return frozenset(fronts)


# the same fronts as test_pareto.trial_table
SWEEP_A = [
    Trial("a1", "rnl", 90.0, 89.0, 12, 0.50, 2.0, on=on("energy", "omega"), lam=0.1),
    Trial("a2", "rnl", 85.0, 86.0, 6, 0.30, 1.5, on=on("energy", "omega"), lam=0.3),
    Trial("a3", "rnl", 70.0, 72.0, 2, 0.20, 1.2, on=on("latency", "energy", "omega"), lam=1.0),
    Trial("a4", "rnl", 88.0, 91.0, 16, 0.55, 2.5, converged=0.0, lam=0.05),
    Trial("a5", "rnl", 80.0, 79.0, 8, 0.35, 1.9, lam=0.5),
    Trial("q1", "qcfs", 91.0, 88.0, 3.2, 0.60, 3.0, on=on("latency", "energy", "omega"), levels=[8, 4, 4, 1],
          profile="al"),
    Trial("q2", "qcfs", 84.0, 85.0, 2.5, 0.32, 2.8, on=on("latency", "omega"), levels=[4, 4, 4, 4], profile="uniform"),
    Trial("q3", "qcfs", 60.0, 62.0, 1.5, 0.10, 2.6, on=on("latency", "energy", "omega"), levels=[2, 2, 1, 4],
          profile="custom"),
    Trial("f1", "rnl", None, None, None, None, None, lam=2.0, status="FAILED"),
    Trial("n1", "rnl", None, 75.0, 4, 0.30, 1.0, lam=0.7),                       # no validation accuracy
    Trial("i1", "qcfs", 50.0, 50.0, INF, 0.50, 3.5, levels=[2, 2, 2, 2], profile="uniform"),  # inf t_op
    Trial("k1", "rnl", None, None, None, None, None, lam=3.0, status="KILLED"),
]
LATENCY_TEST = {"a4", "a1", "q1", "q2", "a3", "q3"}  # on the test split
SWEEP_B = [  # an older sweep, for --compare and "latest sweep"
    Trial("b1", "rnl", 80.0, 79.0, 10, 0.40, 2.0, on=on("latency", "energy", "omega"), lam=0.05),
    Trial("b2", "rnl", 70.0, 71.0, 5, 0.20, 1.4, on=on("latency", "energy", "omega"), lam=0.5),
    Trial("b3", "rnl", 65.0, 66.0, 12, 0.50, 1.8, lam=0.8),
]
SINGLE = [Trial("s1", "qcfs", 77.0, 76.0, 4.0, 0.2, 1.1, on=on("latency", "energy", "omega"), levels=[4, 2],
                profile="custom")]


@dataclass
class OldTrial:
    """A trial of a sweep logged before operating points; ``on_omega`` / ``on_t_eff`` as tagged then."""

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


LEGACY = [  # the same fronts as test_pareto.legacy_table
    OldTrial("r1", "rnl", 90.0, 2.0, 10.0, on_omega=True, on_t_eff=True, lam=0.1),
    OldTrial("r2", "rnl", 85.0, 1.5, 12.0, on_omega=True, lam=0.01),
    OldTrial("r4", "rnl", 80.0, 1.5, 8.0, on_t_eff=True, lam=0.3),
    OldTrial("r6", "qcfs", 88.0, 3.0, 9.0, on_t_eff=True, levels=[8, 4, 4, 1], profile="vgg-paper"),
    OldTrial("r7", "qcfs", 70.0, 1.2, 2.0, on_omega=True, on_t_eff=True, levels=[2, 2, 1, 4], profile="custom"),
    OldTrial("r8", "rnl", 60.0, 2.5, 30.0, lam=1.0),
    OldTrial("r11", "rnl", None, None, None, lam=2.0, status="FAILED"),
]


def curve(final: float, t: int) -> float:
    """A hand-built acc(t) curve: rises to ``final`` at T_MAX."""
    return float(final * (1 - 0.5 ** t) / (1 - 0.5 ** T_MAX))


def trial_params(trial: Trial | OldTrial) -> dict[str, str]:
    params = {"method": trial.method, "model": "small", "dataset": "digits", "lr": "0.001", "seed": "0",
              "stage1_key": f"key-{trial.method}"}
    if trial.method == "rnl":
        params.update(lam=str(trial.lam), sharescale="True", scale_init="1.0")
    else:
        params.update(levels=json.dumps(trial.levels), levels_profile=trial.profile)
    return params


def trial_metrics(trial: Trial) -> list:
    """The operating point and stepped curves of a finished trial (only what it has for the others)."""
    from mlflow.entities import Metric

    named = {"val_acc_op": trial.val_acc, "acc_op": trial.test_acc, "t_op": trial.t_op,
             "energy_op_mj": trial.energy, "omega": trial.omega}
    metrics = [Metric(key, value, 0, 0) for key, value in named.items() if value is not None]
    if trial.status != "FINISHED":
        return metrics
    metrics += [Metric("val_ann_acc", ANN_ACC + 1, 0, 0), Metric("ann_acc", ANN_ACC, 0, 0),
                Metric("converged", trial.converged, 0, 0), Metric("t_eff", 5.0, 0, 0),
                Metric("synops", 1e5, 0, 0), Metric("energy_mj", 0.01, 0, 0)]
    prefix = "" if trial.method == "rnl" else "if_"  # qcfs: the IF comparison curve
    for key, final in ((f"val_{prefix}snn_acc_t", trial.val_acc), (f"{prefix}snn_acc_t", trial.test_acc)):
        if final is not None:
            metrics += [Metric(key, curve(final, t), 0, t) for t in range(1, T_MAX + 1)]
    return metrics


def log_sweep(client, experiment_id: str, preset: str, start_ms: int, trials: list, select_on: str | None = "val"
              ) -> tuple[str, dict[str, str]]:
    """A parent run and one child per trial, as the sweep writes them; ``select_on`` None = a legacy
    sweep (no tag, old metrics and tags). Returns (parent id, {trial name: run id})."""
    from mlflow.entities import Metric, Param, RunTag

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(start_ms / 1000))
    tags = {"snnconv.role": "sweep", "snnconv.preset": preset}
    if select_on is not None:
        tags["snnconv.select_on"] = select_on
    parent = client.create_run(experiment_id, run_name=f"sweep-{preset}-{stamp}", start_time=start_ms, tags=tags)
    parent_id = parent.info.run_id
    client.log_batch(parent_id, params=[Param("preset", preset), Param("num_samples", str(len(trials)))])
    ids = {}
    for index, trial in enumerate(trials):
        run = client.create_run(experiment_id, run_name=trial.name, start_time=start_ms + 10 * (index + 1), tags={
            "mlflow.parentRunId": parent_id, "snnconv.role": "trial", "trial_id": f"{preset}_{index:05d}"})
        ids[trial.name] = run_id = run.info.run_id
        if isinstance(trial, OldTrial):
            named = {"snn_acc": trial.snn_acc, "omega": trial.omega, "t_eff": trial.t_eff}
            metrics = [Metric(key, value, 0, 0) for key, value in named.items() if value is not None]
            if trial.snn_acc is not None:
                metrics += [Metric("snn_acc_t", curve(trial.snn_acc, t), 0, t) for t in range(1, T_MAX + 1)]
            tags = [RunTag("pareto_omega", str(trial.on_omega).lower()),
                    RunTag("pareto_t_eff", str(trial.on_t_eff).lower())]
        else:
            metrics = trial_metrics(trial)
            tags = [RunTag(f"pareto_{front}", str(front in trial.on).lower()) for front in pareto.FRONT_NAMES]
        if trial.status == "FAILED":
            tags.append(RunTag("error", "NonFiniteLossError: loss became nan at epoch 1, batch 3"))
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in trial_params(trial).items()],
                         tags=tags)
        client.set_terminated(run_id, trial.status, end_time=start_ms + 10 * (index + 1) + 5)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id, ids


@dataclass
class Store:
    uri: str
    client: object
    sweep_a: str
    sweep_b: str
    single: str
    legacy: str
    newer_contract_in_legacy: str
    ids_a: dict[str, str]


@pytest.fixture(scope="module")
def store(new_mlflow_store) -> Store:
    mlflow = new_mlflow_store("mlflow")
    folder, uri, client = mlflow.folder, mlflow.uri, mlflow.client()
    main_id = client.create_experiment("snnconv", artifact_location=mlflow.artifacts)
    sweep_b, _ = log_sweep(client, main_id, "demo", 1_700_000_000_000, SWEEP_B)
    sweep_a, ids_a = log_sweep(client, main_id, "demo", 1_700_000_600_000, SWEEP_A)
    client.create_experiment("empty", artifact_location=(folder / "empty").as_uri())
    single_id = client.create_experiment("single", artifact_location=(folder / "single").as_uri())
    single, _ = log_sweep(client, single_id, "tiny", 1_700_000_000_000, SINGLE)
    hollow_id = client.create_experiment("hollow", artifact_location=(folder / "hollow").as_uri())
    log_sweep(client, hollow_id, "demo", 1_700_000_000_000, [])  # a sweep that started no trial
    legacy_id = client.create_experiment("legacy", artifact_location=(folder / "legacy").as_uri())
    legacy, _ = log_sweep(client, legacy_id, "old", 1_600_000_000_000, LEGACY, select_on=None)
    other, _ = log_sweep(client, legacy_id, "tiny", 1_500_000_000_000, SINGLE)  # earlier, so not the latest
    return Store(uri, client, sweep_a, sweep_b, single, legacy, other, ids_a)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = pareto_command.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected(trials: list[Trial], front: str) -> set[str]:
    return {t.name for t in trials if front in t.on}


def flagged(table: pd.DataFrame, column: str) -> set[str]:
    return set(table.loc[table[column].astype(str).str.lower() == "true", "run_name"])


def assert_png(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def warning_lines(stderr: str, start: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"warning: {start}")]


# ---------------------------------------------------------------------------------------------
# the reader


def test_load_sweep_reads_the_contract(store):
    sweep = tracking.load_sweep(store.uri, "snnconv")  # latest sweep: A
    assert sweep.sweep_id == store.sweep_a and sweep.preset == "demo" and sweep.select_on == "val"
    trials = sweep.trials.set_index("run_name")
    assert list(trials.index) == [t.name for t in SWEEP_A]  # oldest first
    assert trials.loc["a1", "t_op"] == 12 and trials.loc["q1", "t_op"] == pytest.approx(3.2)
    assert trials.loc["a4", "converged"] == 0.0 and trials.loc["a4", "acc_op"] == 91.0
    assert math.isnan(trials.loc["n1", "val_acc_op"]) and trials.loc["i1", "t_op"] == INF
    assert trials.loc["f1", "status"] == "FAILED" and "NonFiniteLossError" in trials.loc["f1", "error"]
    assert trials.loc["k1", "status"] == "KILLED"
    old = tracking.load_sweep(store.uri, "legacy")
    assert old.select_on == "" and pareto_command.sweep_is_legacy(old) and not pareto_command.sweep_is_legacy(sweep)


def test_front_tags_on_the_stored_sweep_match_the_expected_tags(store):
    """What the sweep runs at its end (sweep_runs_frame + front_tags) reproduces the hand-set tags."""

    @dataclass
    class Location:
        tracking_uri: str
        experiment_id: str
        parent_run_id: str

    experiment = store.client.get_experiment_by_name("snnconv").experiment_id
    table = tracking.sweep_runs_frame(Location(store.uri, experiment, store.sweep_a))
    tags = pareto.front_tags(table)
    assert len(tags) == len(SWEEP_A)
    for _, row in table.iterrows():
        stored = {f"pareto_{front}": row[f"tag_pareto_{front}"] for front in pareto.FRONT_NAMES}
        assert tags[row["run_id"]] == stored, row["run_name"]


def test_metric_histories_are_stepped(store):
    ids = [store.ids_a["a1"], store.ids_a["q1"], store.ids_a["f1"]]
    curves = tracking.metric_histories(store.uri, ids, "val_snn_acc_t")
    assert set(curves) == {store.ids_a["a1"]}  # qcfs logs the IF comparison curve under another name
    assert curves[store.ids_a["a1"]].index.tolist() == list(range(1, T_MAX + 1))
    assert curves[store.ids_a["a1"]].iloc[-1] == pytest.approx(90.0)
    assert set(tracking.metric_histories(store.uri, ids, "if_snn_acc_t")) == {store.ids_a["q1"]}


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_report_on_the_latest_sweep(store, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--out", str(out))
    assert code == 0, stderr
    for name in ("report.html", "report.md", "pareto.csv", "summary.json"):
        assert (out / name).stat().st_size > 0
    pngs = ["front_latency", "front_energy", "front_omega", "front_joint", "acc_curves", "levels"]
    for name in pngs:
        assert_png(out / f"{name}.png")
    assert not list(out.glob("compare_*.png"))

    table = pd.read_csv(out / "pareto.csv")
    assert len(table) == len(SWEEP_A)  # every run, failed ones included
    for front in pareto.FRONT_NAMES:
        assert set(table.loc[table[f"front_{front}"], "run_name"]) == expected(SWEEP_A, front) == \
            flagged(table, f"tag_pareto_{front}")
    assert set(table.loc[table["knee_latency"], "run_name"]) == {"q2"}
    assert set(table.loc[table["knee_omega"], "run_name"]) == {"a2", "q2"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"runs": 12, "finished": 10, "failed": 1, "unfinished": 1}
    assert summary["select_on"] == "val" and summary["accuracy"] == "val_acc_op" and not summary["legacy"]
    assert set(summary["fronts"]) == {"latency", "energy", "omega:rnl", "omega:qcfs", "joint"}
    assert summary["fronts"]["latency"]["hypervolume"] == pytest.approx(60 * 0.5 + 70 * 0.5 + 84 * 0.7 + 91 * 14.4)
    assert summary["reference"] == pytest.approx({"t_op": 17.6, "energy_op_mj": 0.66, "omega:rnl": 2.75,
                                                  "omega:qcfs": 3.85})
    assert summary["unconverged_run_ids"] == [store.ids_a["a4"]]

    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(pngs) and ".png'" not in page  # self-contained
    markdown = (out / "report.md").read_text()
    assert "front_omega.png" in markdown
    assert ("| run | method | setting | lr | levels | val_acc_op | val 95% CI | acc_op | test 95% CI | latency |"
            in markdown)
    assert "| 12 IF steps |" in markdown and "| T_eff 3.2 |" in markdown
    assert "a4 (" in markdown and "raise T_max" in markdown and "validation split" in markdown
    assert "biases the fronts" not in markdown and "logged before operating points" not in markdown

    assert "front latency (val_acc_op vs t_op): 4 run(s) on the front, knee q2" in stdout
    header = next(line for line in stdout.splitlines() if line.split()[:2] == ["run", "method"])
    assert header.split() == ["run", "method", "setting", "lr", "levels", "val_acc_op", "val", "95%", "CI", "acc_op",
                              "test", "95%", "CI", "latency", "energy_op_mj", "omega", "converged"]
    assert "rnl: Ω on Rate-Norm activations: 3 run(s) on the front, knee a2" in stdout
    assert "qcfs: Ω on a/λ: 3 run(s) on the front, knee q2" in stdout
    assert "did not converge within T_max" in stdout and "a4 (" in stdout
    assert "Unconverged on this front" not in stdout  # a4 is on no front chosen on the validation split
    assert f"report: {(out / 'report.html').resolve()}" in stdout
    assert "warning: left out of the fronts using val_acc_op: 1 finished run(s)" in stderr and "n1 (" in stderr
    assert "i1 (" in stderr and "Traceback" not in stderr
    assert not warning_lines(stderr, "the fronts are chosen on the test split")


def test_cli_select_on_test_warns_and_changes_the_fronts(store, tmp_path, capsys):
    out = tmp_path / "test-split"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--out", str(out), "--select-on", "test")
    assert code == 0, stderr
    lines = warning_lines(stderr, "the fronts are chosen on the test split")
    assert len(lines) == 1 and "no longer gives an unbiased estimate" in lines[0]
    table = pd.read_csv(out / "pareto.csv")
    assert set(table.loc[table["front_latency"], "run_name"]) == LATENCY_TEST != expected(SWEEP_A, "latency")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["select_on"] == "test" and summary["accuracy"] == "acc_op"
    markdown = (out / "report.md").read_text()
    overview = markdown.split("## Overview", 1)[1].split("##", 1)[0]
    assert "test split" in overview and "biases the fronts" in overview
    assert "the sweep itself chose on val" in markdown
    assert "front latency (acc_op vs t_op): 6 run(s)" in stdout
    assert f"Unconverged on this front (raise T_max): a4 ({store.ids_a['a4'][:8]})" in stdout


def test_cli_legacy_sweep_opens_with_a_warning(store, tmp_path, capsys):
    out = tmp_path / "legacy"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "legacy", "--out", str(out))
    assert code == 0, stderr
    lines = warning_lines(stderr, "this sweep was logged before operating points existed")
    assert len(lines) == 1 and "test split" in lines[0] and "rerun the sweep" in lines[0]
    table = pd.read_csv(out / "pareto.csv")
    for cost, attribute in (("omega", "on_omega"), ("t_eff", "on_t_eff")):
        front = {t.name for t in LEGACY if getattr(t, attribute)}
        assert set(table.loc[table[f"front_{cost}"], "run_name"]) == front == flagged(table, f"tag_pareto_{cost}")
    for name in ("front_t_eff", "front_omega", "front_joint", "acc_curves", "levels"):
        assert_png(out / f"{name}.png")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["legacy"] and summary["accuracy"] == "snn_acc" and set(summary["fronts"]) == {
        "t_eff", "omega", "joint"}
    overview = (out / "report.md").read_text().split("## Overview", 1)[1].split("##", 1)[0]
    assert "logged before operating points existed" in overview and "rerun the sweep" in overview
    header = next(line for line in stdout.splitlines() if line.split()[:2] == ["run", "method"])
    assert header.split() == ["run", "method", "λ", "lr", "sharescale", "levels", "snn_acc", "omega", "t_eff"]

    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "legacy", "--out",
                               str(tmp_path / "x"), "--select-on", "val")
    assert code == 2 and stderr.startswith("error: ") and "--select-on val is not possible" in stderr
    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "legacy", "--out",
                               str(tmp_path / "x"), "--fronts", "energy")
    assert code == 2 and "before operating points has the fronts ['latency', 'omega']" in stderr
    assert not (tmp_path / "x").exists()


def test_cli_compare_two_sweeps(store, tmp_path, capsys):
    out = tmp_path / "compare"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--sweep", store.sweep_b,
                                    "--compare", store.sweep_a, "--out", str(out))
    assert code == 0, stderr
    for front in pareto.FRONT_NAMES:
        assert_png(out / f"compare_{front}.png")
    summary = json.loads((out / "summary.json").read_text())
    # one reference point for both sweeps (sweep A's larger costs set it), so hypervolumes compare
    assert summary["reference"] == pytest.approx({"t_op": 17.6, "energy_op_mj": 0.66, "omega:rnl": 2.75,
                                                  "omega:qcfs": 3.85})
    assert summary["comparison"]["reference"] == summary["reference"]
    latency = summary["fronts"]["latency"]
    assert latency["size"] == 2 and latency["hypervolume"] == pytest.approx(70 * (10 - 5) + 80 * (17.6 - 10))
    assert summary["fronts"]["omega:rnl"]["hypervolume"] == pytest.approx(70 * (2.0 - 1.4) + 80 * (2.75 - 2.0))
    assert "omega:qcfs" not in summary["fronts"] and "omega:qcfs" in summary["comparison"]["fronts"]
    assert summary["comparison"]["fronts"]["latency"]["hypervolume"] > latency["hypervolume"]
    table = pd.read_csv(out / "pareto.csv")
    assert set(table.loc[table["front_latency"], "run_name"]) == expected(SWEEP_B, "latency")
    names = [store.client.get_run(run_id).info.run_name for run_id in (store.sweep_b, store.sweep_a)]
    rows = [line.split() for line in stdout.splitlines()]
    rows = [words for words in rows if len(words) > 2 and words[1] == "latency" and words[2] == "val_acc_op"]
    assert [words[0] for words in rows] == names  # the hypervolume table names both sweeps

    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "legacy", "--compare",
                               store.newer_contract_in_legacy, "--out", str(tmp_path / "x"))
    assert code == 2 and stderr.startswith("error: cannot compare") and "logged before operating points" in stderr
    assert not (tmp_path / "x").exists()


def test_cli_single_run_sweep_and_the_fronts_option(store, tmp_path, capsys):
    out = tmp_path / "single"
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "single",
                                    "--fronts", "omega", "latency", "--out", str(out))
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fronts_analysed"] == ["omega", "latency"]
    assert {key: front["size"] for key, front in summary["fronts"].items()} == {"omega:qcfs": 1, "latency": 1}
    assert summary["fronts"]["latency"]["knee_run_id"] == summary["fronts"]["latency"]["run_ids"][0]
    assert_png(out / "front_latency.png")
    assert_png(out / "levels.png")  # the single run is qcfs
    assert not (out / "front_energy.png").exists() and not (out / "front_joint.png").exists()
    assert not (out / "acc_curves.png").exists()  # qcfs has no operating point on an IF curve
    assert "qcfs runs are not drawn" in (out / "report.md").read_text()
    table = pd.read_csv(out / "pareto.csv")
    assert "front_energy" not in table and table["front_omega"].all()


def test_cli_log_to_mlflow_attaches_the_report(store, tmp_path, capsys):
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--experiment", "single",
                                    "--out", str(tmp_path / "r"), "--log-to-mlflow")
    assert code == 0, stderr
    names = {Path(item.path).name for item in store.client.list_artifacts(store.single, "report")}
    assert {"report.html", "report.md", "pareto.csv", "front_omega.png", "front_latency.png"} <= names
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
    assert code == 2 and "no MLflow store at" in stderr and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args, message", [
    (["--experiment", "empty"], "experiment 'empty' has no sweep runs"),
    (["--experiment", "nope"], "no experiment named 'nope' in the store; experiments: ['Default', 'empty', 'hollow', "
                               "'legacy', 'single', 'snnconv']"),
    (["--experiment", "hollow"], "nothing to analyse: 0 trial runs"),
    (["--sweep", "0123456789abcdef"], "no run with id '0123456789abcdef'"),
    (["--compare", "0123456789abcdef"], "no run with id '0123456789abcdef'"),
    (["--fronts", "latency", "speed"], "fronts must be one or more of ['latency', 'energy', 'omega'], got "
                                       "['latency', 'speed']"),
    (["--fronts", "omega", "omega"], "fronts repeat"),
    (["--select-on", "train"], "select_on must be one of ['val', 'test'], got 'train'"),
])
def test_cli_user_errors_are_one_clear_line(store, tmp_path, capsys, args, message):
    code, stdout, stderr = run_main(capsys, "--tracking-uri", store.uri, "--out", str(tmp_path / "x"), *args)
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_checks_the_store_and_the_folder_before_reading(store, tmp_path, capsys):
    """A bad tracking URI or report folder is one ``error:`` line, found before MLflow is read."""
    (tmp_path / "plain").write_text("not a folder")
    refused = f"http://127.0.0.1:{free_port()}"
    cases = [
        (["--tracking-uri", "bogus://x"], "error: tracking URI bogus://x: unknown scheme 'bogus'"),
        (["--tracking-uri", f"sqlite:///{tmp_path}/none.db"], f"error: no MLflow store at {tmp_path}/none.db"),
        (["--tracking-uri", refused], f"error: tracking server {refused} is not reachable (connection refused)"),
        # the folder is checked before the experiment (which does not exist) is looked up
        (["--tracking-uri", store.uri, "--out", "/proc/x", "--experiment", "nope"],
         "error: cannot write the report folder /proc/x ("),
        (["--tracking-uri", store.uri, "--out", str(tmp_path / "plain" / "r")],
         f"error: cannot write the report folder {tmp_path / 'plain' / 'r'} ("),
    ]
    for args, start in cases:
        code, stdout, stderr = run_main(capsys, *args)
        assert code == 2 and stderr.startswith(start), (args, stderr)
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr and not stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"] and not Path("/proc/x").exists()


def test_cli_rejects_trial_runs_and_other_experiments(store, tmp_path, capsys):
    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--sweep", store.ids_a["a1"])
    assert code == 2 and f"is not a sweep run (tag snnconv.role = 'trial'); its sweep is {store.sweep_a}" in stderr
    code, _, stderr = run_main(capsys, "--tracking-uri", store.uri, "--sweep", store.single)
    assert code == 2 and "not to 'snnconv'" in stderr


@pytest.mark.slow
def test_script_runs_as_a_command(store, tmp_path):
    """``analysis/pareto.py`` itself: --help, a report, and a user error with no traceback."""
    script = [sys.executable, str(ROOT / "analysis" / "pareto.py")]
    shown = subprocess.run([*script, "--help"], capture_output=True, text=True, check=True)
    for option in ("--tracking-uri", "--experiment", "--sweep", "--out", "--fronts", "--select-on", "--compare",
                   "--log-to-mlflow"):
        assert option in shown.stdout
    assert "--objectives" not in shown.stdout
    done = subprocess.run([*script, "--tracking-uri", store.uri, "--experiment", "single", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert np.all([(tmp_path / name).exists() for name in ("report.html", "pareto.csv", "front_latency.png")])
    failed = subprocess.run([*script, "--tracking-uri", store.uri, "--experiment", "empty"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert failed.returncode == 2 and "error: experiment 'empty' has no sweep runs" in failed.stderr
    assert "Traceback" not in failed.stderr


@pytest.mark.parametrize("args, start", [
    (["--out", "/proc/x"], "error: cannot write the report folder /proc/x ("),
    (["--tracking-uri", "bogus://x"], "error: tracking URI bogus://x: unknown scheme 'bogus'; use a folder, "
                                      "sqlite:///FILE, http(s)://HOST:PORT or another scheme MLflow supports ("),
])
def test_script_bad_folder_or_uri_is_status_2_and_one_line(store, tmp_path, args, start):
    """``analysis/pareto.py`` as a real process: status 2, one ``error:`` line, no traceback, nothing written."""
    uri = [] if "--tracking-uri" in args else ["--tracking-uri", store.uri]
    failed = subprocess.run([sys.executable, str(ROOT / "analysis" / "pareto.py"), *uri, *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 2, failed.stderr
    assert len(lines) == 1 and lines[0].startswith(start), failed.stderr
    assert "Traceback" not in failed.stderr and not list(tmp_path.iterdir())
