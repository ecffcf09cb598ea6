"""The sweep on a real local Ray instance with a real MLflow SQLite store in tmp_path."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import binomtest

from snnconv.config import ConfigError
from snnconv.metrics import E_MAC_PJ, wilson_interval
from snnconv.sweep import SweepOptions, build_param_space, decode_params, load_spec, run_sweep
from snnconv.sweep_spec import OBJECTIVES, SCHEDULERS, SEARCHES

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "methods": ["rnl", "qcfs"],
    "num_samples": 2,
    "search": "random",
    "max_concurrent": 2,
    "cpus_per_trial": 1,
    "trial": {
        "model": "small", "device": "cpu",
        "data": {"name": "digits"},
        "stage1": {"epochs": 4, "lr": 0.05},
        "rnl": {"epochs": 1, "inspect_interval": 5, "t_max": 8},
        "qcfs": {"stage1_levels": 4, "finetune_epochs": 1, "t_max": 8},
    },
    "space": {
        "rnl": {"rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0, "zero_fraction": 0.2},
                "rnl.sharescale": {"type": "choice", "values": [True, False]}},
        "qcfs": {"qcfs.levels": {"type": "per_layer", "values": [1, 2, 4, 8]}},
    },
}


def write_spec(folder: Path, **changes) -> Path:
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        data[key] = value
    data["trial"]["cache_dir"] = str(folder / "cache")
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def children(uri: str, parent: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("snnconv")
    return client, client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")


# ------------------------------------------------------------------ spec handling (no Ray)

def test_presets_load_and_bad_specs_are_refused(tmp_path):
    spec = load_spec("demo", presets_dir=ROOT / "configs")
    assert spec.methods == ["rnl", "qcfs", "datanorm"] and spec.num_samples * 3 >= 8
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for preset in ("cifar10-vgg16", "cifar10-resnet18", "cifar100-vgg16"):
        raw = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text())
        raw["trial"]["data"]["data_dir"] = str(data_dir)
        path = tmp_path / f"{preset}.yaml"
        path.write_text(yaml.safe_dump(raw))
        assert load_spec(config_file=str(path)).name == preset
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec("cifar10-vgg16", presets_dir=ROOT / "configs")  # ./data/cifar10 is not here
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known presets: cifar10-resnet18"):
        load_spec("nope", presets_dir=ROOT / "configs")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {rnl: {rnl.lamda: {type: choice, values: [1]}}}\n")
    with pytest.raises(ConfigError, match="unknown config key 'rnl.lamda'"):
        load_spec(config_file=str(bad))
    bad.write_text("name: x\nspace: {rnl: {rnl.lr: {type: loguniform, low: 0, high: 1}}}\n")
    with pytest.raises(ConfigError, match="loguniform needs low > 0"):
        load_spec(config_file=str(bad))
    bad.write_text("name: x\nsearch: grid\nspace: {rnl: {rnl.lr: {type: loguniform, low: 0.1, high: 1}}}\n")
    with pytest.raises(ConfigError, match="--search grid needs a 'grid: \\[...\\]' list"):
        load_spec(config_file=str(bad))
    bad.write_text("name: [x\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_spec(config_file=str(bad))


def test_the_demo_runs_on_the_cpu():
    from snnconv.config import load_yaml

    preset = load_yaml(ROOT / "configs" / "demo.yaml")
    assert preset["trial"]["device"] == "cpu" and preset["gpus_per_trial"] == 0


def test_command_line_overrides_apply_before_validation(tmp_path, capsys):
    from snnconv.sweep_command import main

    missing = tmp_path / "no-cifar-here"
    assert main(["--preset", "cifar10-vgg16", "--data-dir", str(missing)], presets_dir=ROOT / "configs") == 2
    error = capsys.readouterr().err
    assert f"data.data_dir: '{missing}' does not exist" in error and "./data/cifar10" not in error
    assert main(["--num-samples", "0"], presets_dir=ROOT / "configs") == 2
    assert "num_samples: must be positive, got 0" in capsys.readouterr().err


def test_param_space_decodes_to_trial_overrides(tmp_path):
    spec = load_spec(config_file=str(write_spec(tmp_path)))
    space = build_param_space(spec, ["rnl", "qcfs"])
    assert "rnl.lam:log10" in space and "qcfs.levels[3]" in space and "qcfs.levels[4]" not in space
    rnl = decode_params({"method": "rnl", "rnl.lam:log10": -2.5, "rnl.sharescale": False, "qcfs.levels[0]": 1}, spec)
    assert rnl == {"method": "rnl", "rnl.lam": 0.0, "rnl.sharescale": False}
    rnl = decode_params({"method": "rnl", "rnl.lam:log10": -1.0, "rnl.sharescale": True}, spec)
    assert rnl["rnl.lam"] == pytest.approx(0.1)
    qcfs = decode_params({"method": "qcfs", "qcfs.levels[1]": 2, "qcfs.levels[0]": 8, "qcfs.levels[2]": 1,
                          "qcfs.levels[3]": 4, "rnl.lam:log10": 0.0}, spec)
    assert qcfs == {"method": "qcfs", "qcfs.levels": [8, 2, 1, 4]}


# ------------------------------------------------------------------ choosing on validation

# two trials at the same latency, energy and Ω: "a" is better on validation, "b" on test
DISAGREEING = {"a": {"val_acc_op": 95.0, "acc_op": 90.0}, "b": {"val_acc_op": 90.0, "acc_op": 95.0}}
SAME_COSTS = {"t_op": 8.0, "energy_op_mj": 0.01, "omega": 1.5, "converged": 1.0}


def test_fronts_follow_validation_unless_told_otherwise(tmp_path, mlflow_store):
    from snnconv import tracking
    from snnconv.sweep import finish_sweep

    uri = mlflow_store.uri
    tracker = tracking.start_sweep(uri, "snnconv", "sweep-choice", {}, {tracking.SELECT_ON_TAG: "val"})
    run_ids = {}
    for name, accuracies in DISAGREEING.items():
        run_ids[name] = tracking.start_trial(tracker, name, name, {"method": "rnl", "latency_tolerance": 1.0}).run_id
        tracking.log_progress(tracker, run_ids[name], {**accuracies, **SAME_COSTS}, 0)
        tracking.end_trial(tracker, run_ids[name])
    client, _ = children(uri, tracker.parent_run_id)
    fronts = ("pareto_latency", "pareto_energy", "pareto_omega")
    for select_on, chosen in (("val", "a"), ("test", "b")):
        outcome = finish_sweep(tracker, tmp_path / select_on, select_on)
        for name, run_id in run_ids.items():
            tags = client.get_run(run_id).data.tags
            assert [tags[front] for front in fronts] == [str(name == chosen).lower()] * 3, (select_on, name)
        assert outcome.select_on == select_on
        assert (tmp_path / select_on / "pareto" / "front_latency.png").is_file()


def test_optuna_is_told_the_validation_accuracy(tmp_path):
    import optuna

    from snnconv.sweep_search import search_and_scheduler

    for select_on, chosen in (("val", "a"), ("test", "b")):
        spec = load_spec(config_file=str(write_spec(tmp_path, search="optuna", select_on=select_on)))
        storage = optuna.storages.InMemoryStorage()
        search_alg, _ = search_and_scheduler(spec, 4, optuna_storage=storage)
        search_alg.set_search_properties(None, None, build_param_space(spec, spec.methods))
        for name, accuracies in DISAGREEING.items():
            assert search_alg.suggest(name) is not None
            search_alg.on_trial_complete(name, {**accuracies, **SAME_COSTS, "stage": "done"})
        # a trial ASHA stopped reports its last progress (NaN operating point): Optuna hears "pruned"
        assert search_alg.suggest("stopped") is not None
        search_alg.on_trial_complete("stopped", {"val_acc": 50.0, "val_acc_op": math.nan, "acc_op": math.nan,
                                                 "t_op": math.nan, "stage": "stage2"})
        study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
        assert [trial.values for trial in study.best_trials] == [
            [DISAGREEING[chosen]["val_acc_op" if select_on == "val" else "acc_op"], SAME_COSTS["t_op"]]]
        states = [trial.state.name for trial in study.trials]
        assert states == ["COMPLETE", "COMPLETE", "PRUNED"] and study.trials[-1].values is None


def _drive_search(search_alg, spec, trials: int, repickle_after: int | None = None) -> list[dict]:
    """The configs a search algorithm proposes for ``trials`` trials, each completed (one at a time, as
    Tune would) with values made from its config; ``repickle_after``: the algorithm goes through
    Ray's cloudpickle after that many trials, and a Searcher (Optuna) through Tune's save and restore
    into a new one (as ``--resume`` does)."""
    from ray import cloudpickle
    from ray.tune.experiment import Experiment
    from ray.tune.search import Searcher

    from snnconv.sweep_search import search_and_scheduler

    space = build_param_space(spec, spec.methods)
    if isinstance(search_alg, Searcher):  # Optuna: Tune asks suggest() and reports on_trial_complete()
        search_alg.set_search_properties(None, None, space)
    else:  # the basic generator (random, grid) makes Tune's trials from the experiment
        search_alg.add_configurations([Experiment("pickle", lambda config: None, config=space,
                                                  num_samples=trials, storage_path=str(Path.cwd()))])
    configs = []
    for number in range(trials):
        if number == repickle_after:
            search_alg = cloudpickle.loads(cloudpickle.dumps(search_alg))
            if isinstance(search_alg, Searcher):  # and Tune's own save and restore (stdlib pickle): --resume
                search_alg.save(str(Path.cwd() / "searcher.pkl"))
                search_alg = search_and_scheduler(spec, trials)[0]
                search_alg.restore(str(Path.cwd() / "searcher.pkl"))
        if isinstance(search_alg, Searcher):
            trial_id, config = f"t{number}", search_alg.suggest(f"t{number}")
        else:
            trial = search_alg.next_trial()
            if trial is None:  # a grid is exhausted
                break
            trial_id, config = trial.trial_id, trial.config
        assert config is not None, (spec.search, number)
        configs.append(config)
        # values that differ between configs, so that NSGA-II's selection has something to rank
        value = float(len(json.dumps(config, sort_keys=True, default=str)) % 17 + number)
        search_alg.on_trial_complete(trial_id, {"val_acc_op": value, "acc_op": value, "t_op": 32.0 - value,
                                                "energy_op_mj": 1.0 / (1.0 + value), "omega": value / 10.0,
                                                "stage": "done"})
    return configs


def _drive_scheduler(scheduler, methods: list[str]) -> list[str]:
    """ASHA's decisions, "<method> <number> <decision>", for eight trials (methods taken in turn) that each
    report val_acc at every eighth of their stage, the later trials worse (so that ASHA stops some), every
    rnl trial better than every qcfs trial; [] without a scheduler."""
    from ray.tune.experiment import Trial

    from snnconv.sweep_trial import PROGRESS

    if scheduler is None:
        return []
    decisions = []
    for number in range(8):
        method = methods[number % len(methods)]
        trial = Trial("pickle", config={"method": method, "number": number}, stub=True)
        scheduler.on_trial_add(None, trial)
        for step in range(1, 8):  # the stage's end comes only with the result
            accuracy = (90.0 if method == "rnl" else 40.0) - 2 * number + step
            decision = scheduler.on_trial_result(None, trial, {PROGRESS: step / 8, "val_acc": accuracy})
            decisions.append(f"{method} {number} {decision}")
            if decision == "STOP":
                break
        scheduler.on_trial_complete(None, trial, {})
    return decisions


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("search,objective", [("random", "latency"), ("grid", "latency")]
                         + [("optuna", objective) for objective in OBJECTIVES])
def test_every_search_algorithm_and_scheduler_pickles_into_a_working_state(tmp_path, monkeypatch, search,
                                                                            objective, scheduler):
    """Ray Tune pickles the search algorithm and the scheduler (to start the sweep and to save it
    for --resume). Every one the sweep builds (the demo preset with each search, objective and scheduler)
    goes through Ray's cloudpickle and, driven the same way, proposes the same trials and takes the same
    decisions as the original, also when pickled (or saved and restored) again mid-sweep. Optuna 5.1's
    NSGA-II holds a lock that cannot be pickled: this failed with "cannot pickle '_thread.lock' object"
    before the sweep's sampler left its locks out of the pickled state."""
    from ray import cloudpickle

    from snnconv.sweep_search import search_and_scheduler
    from snnconv.sweep_spec import validate_spec

    monkeypatch.chdir(tmp_path)
    spec = load_spec("demo", presets_dir=ROOT / "configs")
    spec.search, spec.objective, spec.scheduler = search, objective, scheduler
    spec.methods = ["rnl"] if objective == "omega" else spec.methods  # Ω ranks one method only
    validate_spec(spec)
    trials = 8  # two NSGA-II generations of 4

    original = search_and_scheduler(spec, trials)
    copy = cloudpickle.loads(cloudpickle.dumps(original))
    assert type(copy[0]) is type(original[0]) and type(copy[1]) is type(original[1])
    proposed = _drive_search(original[0], spec, trials)
    assert len(proposed) >= 2 and proposed == _drive_search(copy[0], spec, trials, repickle_after=trials // 2)
    decisions = _drive_scheduler(original[1], spec.methods)
    assert decisions == _drive_scheduler(copy[1], spec.methods)
    assert (scheduler == "none") == (decisions == [])
    if scheduler == "asha":  # ASHA stops some, but compares a trial only with its own method's: the first
        # trial of each method, though every qcfs trial is worse than every rnl trial, runs to its end
        assert any(decision.endswith("STOP") for decision in decisions)
        for method, first in (("rnl", 0), ("qcfs", 1))[:len(spec.methods)]:
            mine = [decision for decision in decisions if decision.startswith(f"{method} {first} ")]
            assert len(mine) == 7 and all(decision.endswith("CONTINUE") for decision in mine), decisions
    if search == "optuna":  # the copy's sampler has working locks of its own (Optuna 5.1 holds one)
        sampler = copy[0]._sampler
        locks = [value for value in vars(sampler).values() if hasattr(value, "acquire")]
        assert all(lock.acquire(blocking=False) and lock.release() is None for lock in locks)
        assert sampler.population_size == 4 and sampler is copy[0]._ot_study.sampler


def test_bad_selection_settings_are_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="select_on: unknown value 'train'"):
        load_spec(config_file=str(write_spec(tmp_path, select_on="train")))
    with pytest.raises(ConfigError, match="omega cannot rank the trials of several methods together"):
        load_spec(config_file=str(write_spec(tmp_path, search="optuna", objective="omega")))
    assert load_spec(config_file=str(write_spec(tmp_path, search="optuna", objective="omega",
                                                methods=["rnl"]))).objective == "omega"


# ------------------------------------------------------------------ real sweeps

@pytest.mark.ray
@pytest.mark.searches  # the short random-search sweep of make test-latest
def test_tiny_sweep_logs_every_trial_and_trains_stage1_once_per_key(tmp_path, mlflow_store, ray_local):
    uri = mlflow_store.uri
    spec = load_spec(config_file=str(write_spec(tmp_path)))
    outcome = run_sweep(spec, SweepOptions(tracking_uri=uri, storage_path=str(tmp_path / "ray")))
    client, runs = children(uri, outcome.parent_run_id)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["snnconv.role"] == "sweep"
    assert client.get_experiment(outcome.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.tags["snnconv.select_on"] == "val"
    assert parent.data.params["sweep.num_samples"] == "2"
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["method"] for r in runs) == ["qcfs", "qcfs", "rnl", "rnl"]
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        for name in ("model", "dataset", "seed", "stage1_key", "lr", "latency_tolerance"):
            assert name in params, name
        for name in ("val_ann_acc", "ann_acc", "val_snn_acc", "snn_acc", "t_op", "val_acc_op", "acc_op",
                     "energy_op_mj", "converged", "omega", "t_eff", "synops", "energy_mj"):
            assert name in metrics, name
        assert {tags[f"pareto_{name}"] for name in ("latency", "energy", "omega")} <= {"true", "false"}
        assert "pareto_t_eff" not in tags
        assert 0 <= metrics["snn_acc"] <= 100 and metrics["converged"] in (0.0, 1.0)

        def curve(key, run_id=run.info.run_id):
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            return {m.step: m.value for m in history}

        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"layers.csv", "acc_curves.csv"} <= artifacts
        (output,) = run.outputs.model_outputs  # the final model, an MLflow model of the run: runs:/<id>/model
        logged = client.get_logged_model(output.model_id)
        assert logged.name == "model" and logged.status == "READY" and logged.source_run_id == run.info.run_id
        assert logged.experiment_id == run.info.experiment_id
        (dataset,) = [item.dataset for item in run.inputs.dataset_inputs]
        assert dataset.name == "digits" and json.loads(dataset.profile) == {"train": 1257, "val": 180, "test": 360}
        # each accuracy's 95 % Wilson interval, from the logged image count of its split
        assert (params["val_images"], params["test_images"]) == ("180", "360")
        for name, images in (("val_acc_op", 180), ("acc_op", 360), ("val_ann_acc", 180), ("ann_acc", 360)):
            low, high = wilson_interval(metrics[name], images)
            assert (metrics[f"{name}_low"], metrics[f"{name}_high"]) == pytest.approx((low, high), abs=1e-9), name
            assert metrics[f"{name}_low"] <= metrics[name] <= metrics[f"{name}_high"]
        # the ANN's own energy per image: its dense MACs at the per-MAC energy (the energy front's reference line)
        assert metrics["ann_energy_mj"] == pytest.approx(E_MAC_PJ * metrics["ann_macs"] * 1e-9)
        if params["method"] == "rnl":
            assert {"lam", "sharescale", "scale_init"} <= set(params)
            test_curve, val_curve = curve("snn_acc_t"), curve("val_snn_acc_t")
            assert list(test_curve) == list(val_curve) == list(range(1, 9))
            t_op = metrics["t_op"]
            assert t_op == int(t_op) and metrics["acc_op"] == test_curve[t_op]
            assert metrics["val_acc_op"] == val_curve[t_op] and metrics["val_snn_acc"] == val_curve[8]
        else:
            assert len(json.loads(params["levels"])) == 4
            assert metrics["equiv_max_abs_err"] <= 1e-6
            assert metrics["t_op"] == metrics["t_eff"] and metrics["acc_op"] == metrics["snn_acc"]
            assert curve("snn_acc_t") == {} and list(curve("val_if_snn_acc_t")) == list(range(1, 9))
    assert len({r.data.metrics["ann_macs"] for r in runs}) == 1  # one model: the same ANN for both methods
    # which validation / test images each trial gets right at its operating point: they give its accuracies,
    # and the tie tags agree with an exact McNemar test on them (scipy's binomial test, decoded here on its own)
    right = {}
    for run in runs:
        path = client.download_artifacts(run.info.run_id, "image_results.json", str(tmp_path / run.info.run_id))
        splits = json.loads(Path(path).read_text())["splits"]
        for split, images, metric in (("val", 180, "val_acc_op"), ("test", 360, "acc_op")):
            bits = np.frombuffer(base64.b64decode(splits[split]["correct"]), dtype=np.uint8)
            correct = np.unpackbits(bits, count=images).astype(bool)
            assert 100 * correct.mean() == pytest.approx(run.data.metrics[metric], abs=1e-9), (run.info.run_name, split)
            right[run.info.run_id, split] = correct

    def beaten_by(member, run):
        a, b = right[member.info.run_id, "val"], right[run.info.run_id, "val"]
        a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
        return a_only > b_only and binomtest(a_only, a_only + b_only, 0.5).pvalue < 0.05

    for front, cost in (("latency", "t_op"), ("energy", "energy_op_mj")):
        members = [r for r in runs if r.data.tags[f"pareto_{front}"] == "true"]
        for run in runs:
            tied = run in members or not any(m.data.metrics[cost] <= run.data.metrics[cost] and beaten_by(m, run)
                                             for m in members)
            assert run.data.tags[f"pareto_{front}_tied"] == str(tied).lower(), (front, run.info.run_name)
    assert [sentence.split(":")[0] for sentence in outcome.ties] == ["latency front", "energy front"]
    # one stage-1 training per key, one per method here, before the trials: every trial loads it
    assert sorted((fact["method"], fact["cache_hit"]) for fact in outcome.stage1) == [("qcfs", False),
                                                                                      ("rnl", False)]
    for method in ("rnl", "qcfs"):
        keys = {r.data.params["stage1_key"] for r in runs if r.data.params["method"] == method}
        hits = [r.data.metrics["stage1_cache_hit"] for r in runs if r.data.params["method"] == method]
        assert keys == {fact["key"] for fact in outcome.stage1 if fact["method"] == method} and hits == [1.0, 1.0]
        epochs = client.get_metric_history(outcome.parent_run_id, f"stage1_{method}_val_acc")
        assert sorted(m.step for m in epochs) == [1, 2, 3, 4]  # its progress, on the parent run
        assert max(m.timestamp for m in epochs) <= min(r.info.start_time for r in runs)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    for method in ("rnl", "qcfs"):  # the omega front is taken within each method: one of each is on it
        assert any(r.data.tags["pareto_omega"] == "true" for r in runs if r.data.params["method"] == method)
    parent_files = {a.path for a in client.list_artifacts(outcome.parent_run_id, "pareto")}
    assert {"pareto/pareto.csv", "pareto/front_latency.png", "pareto/front_energy.png",
            "pareto/front_omega.png"} <= parent_files


@pytest.mark.ray
def test_repeats_run_each_configuration_with_k_seeds_and_the_front_takes_their_mean(tmp_path, mlflow_store, ray_local):
    import statistics

    uri = mlflow_store.uri
    spec = load_spec(config_file=str(write_spec(tmp_path, search="optuna", repeats=3, seed=5)))
    outcome = run_sweep(spec, SweepOptions(tracking_uri=uri, storage_path=str(tmp_path / "ray")))
    client, configurations = children(uri, outcome.parent_run_id)
    assert len(configurations) == 4 and {r.info.status for r in configurations} == {"FINISHED"}
    # each seed's stage-1 network trained once, before the trials
    assert sorted(fact["method"] for fact in outcome.stage1) == sorted(
        [f"{m}{s}" for m in ("rnl", "qcfs") for s in ("", "-seed6", "-seed7")])
    assert len({fact["key"] for fact in outcome.stage1}) == 6
    results = {}
    for path in (tmp_path / "ray").rglob("result.json"):  # what Tune (and so Optuna) was told at the end
        last = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][-1]
        results[last["mlflow_run_id"]] = last
    for configuration in configurations:
        params, metrics = configuration.data.params, configuration.data.metrics
        assert params["repeats"] == "3" and params["seed"] == "5"
        seeds = client.search_runs([configuration.info.experiment_id],
                                   f"tags.`mlflow.parentRunId` = '{configuration.info.run_id}'")
        assert sorted(int(run.data.params["seed"]) for run in seeds) == [5, 6, 7]  # three runs per configuration
        assert {r.info.status for r in seeds} == {"FINISHED"}
        drawn = [k for k in ("method", "lam", "sharescale", "levels", "levels_profile") if k in params]
        for run in seeds:  # the same drawn settings, a complete trial each, on no front of its own
            assert {k: run.data.params[k] for k in drawn} == {k: params[k] for k in drawn}
            assert "image_results.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
            assert not any(tag.startswith("pareto_") for tag in run.data.tags)
        for name in ("val_acc_op", "acc_op", "t_op", "energy_op_mj", "val_ann_acc"):
            values = [run.data.metrics[name] for run in seeds]
            assert metrics[name] == pytest.approx(statistics.fmean(values), abs=1e-9), name
            if name in ("val_acc_op", "acc_op", "t_op"):
                assert metrics[f"{name}_std"] == pytest.approx(statistics.stdev(values), abs=1e-9), name
                assert (metrics[f"{name}_min"], metrics[f"{name}_max"]) == (min(values), max(values))
        curve = "val_snn_acc_t" if params["method"] == "rnl" else "val_if_snn_acc_t"
        mean = {m.step: m.value for m in client.get_metric_history(configuration.info.run_id, curve)}
        seeds_curves = [{m.step: m.value for m in client.get_metric_history(r.info.run_id, curve)} for r in seeds]
        assert mean == pytest.approx({t: statistics.fmean(c[t] for c in seeds_curves) for t in range(1, 9)})
        # Optuna was told the mean; the front is on the configurations' means
        told = results[configuration.info.run_id]
        assert told["val_acc_op"] == pytest.approx(metrics["val_acc_op"]) and told["t_op"] == pytest.approx(
            metrics["t_op"])
        assert configuration.data.tags["pareto_latency"] in ("true", "false")
    means = {r.info.run_id: (r.data.metrics["val_acc_op"], r.data.metrics["t_op"]) for r in configurations}
    front = {run_id for run_id, (acc, cost) in means.items()
             if not any(a >= acc and c <= cost and (a, c) != (acc, cost) for a, c in means.values())}
    assert {r.info.run_id for r in configurations if r.data.tags["pareto_latency"] == "true"} == front


@pytest.mark.ray
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, mlflow_store, ray_local):
    uri = mlflow_store.uri
    path = write_spec(tmp_path, methods=["rnl"], search="grid", num_samples=1,
                      space={"rnl": {"stage1.lr": {"type": "choice", "values": [0.05, 1.0e12]}}})
    options = SweepOptions(tracking_uri=uri, storage_path=str(tmp_path / "r"))
    outcome = run_sweep(load_spec(config_file=str(path)), options)
    _, runs = children(uri, outcome.parent_run_id)
    status = {r.data.params["stage1_lr"]: r for r in runs}
    assert status["0.05"].info.status == "FINISHED"
    failed = status["1000000000000.0"]
    assert failed.info.status == "FAILED" and "NonFiniteLossError" in failed.data.tags["error"]
    assert {failed.data.tags[f"pareto_{name}"] for name in ("latency", "energy", "omega")} == {"false"}


def tune_results(storage: Path) -> dict[str, list[dict]]:
    """Every result Tune recorded, per trial id (its result.json files under ``storage``)."""
    rows: dict[str, list[dict]] = {}
    for path in storage.rglob("result.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(row["trial_id"], []).append(row)
    return rows


@pytest.mark.ray
@pytest.mark.searches  # the short Optuna sweep of make test-latest
def test_optuna_search_with_asha_finishes_trials_and_records_the_pruned(tmp_path, mlflow_store, ray_local, capsys):
    """A reproduction: ASHA with a first rung early in the stage and 5 stage-2 / fine-tune epochs per
    method (trials report more often than any rung count). Before, ASHA counted reports against max_t and
    stopped all four trials before their results ("0 of 4 trials finished"). Now its time is the fraction of
    the trial's stage done, the same unit for rnl and qcfs, and the stage's end is reported only with the
    result: every trial is FINISHED with its full result or KILLED as pruned with its last validation accuracy."""
    uri = mlflow_store.uri
    trial = json.loads(json.dumps(TINY["trial"]))
    trial["rnl"].update(epochs=5, inspect_interval=10)
    trial["qcfs"].update(finetune_epochs=5)
    path = write_spec(tmp_path, search="optuna", scheduler="asha", grace_fraction=0.2, objective="energy",
                      trial=trial)
    options = SweepOptions(tracking_uri=uri, storage_path=str(tmp_path / "r"))
    outcome = run_sweep(load_spec(config_file=str(path)), options)
    client, runs = children(uri, outcome.parent_run_id)
    assert len(runs) == 4 and outcome.status == "FINISHED"
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished, "ASHA stopped every trial before its result"
    for run in finished:  # the full result: simulation or PASCAL, operating point, front tags
        assert {"val_acc_op", "acc_op", "t_op", "snn_acc", "energy_op_mj"} <= set(run.data.metrics)
        assert run.data.tags["pareto_latency"] in ("true", "false") and "pruned" not in run.data.tags
    for run in runs:
        # what every trial ran is in MLflow (the scheduled stages' progress is written at every report)
        stage = {"rnl": "stage2", "qcfs": "finetune"}[run.data.params["method"]]
        assert client.get_metric_history(run.info.run_id, f"{stage}_val_acc"), (run.info.status, stage)
        if run.info.status == "KILLED":
            assert run.data.tags["pruned"] == "true" and run.data.tags["stopped"].startswith("pruned by asha at")
            assert 0 < run.data.metrics["pruned_progress"] < 1 and 0 <= run.data.metrics["pruned_val_acc"] <= 100
    # ASHA's time is the fraction of the trial's stage done, for both methods; 1 only with the result
    results = tune_results(tmp_path / "r")
    assert len(results) == 4
    for rows in results.values():
        progress = [row["stage_progress"] for row in rows]
        assert progress == sorted(progress) and all(0 <= value <= 1 for value in progress), progress
        assert [row["stage"] for row in rows if row["stage_progress"] == 1] in ([], ["done"]), rows
        assert all(row["stage"] in ("stage2", "finetune") for row in rows if row["stage_progress"] < 1)
    # a trial ASHA stopped prints as stopped, never as "done" with NaN values
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and not [line for line in lines if " done " in line and "nan" in line], lines
    stopped = [line.split()[1] for line in lines if "stopped by asha" in line]
    killed = [r.data.tags["trial_id"] for r in runs if r.info.status == "KILLED"]
    assert sorted(stopped) == sorted(killed)


def test_asha_settings_of_the_former_unit_are_refused_with_one_line(tmp_path):
    for changes in ({"grace_period": 1, "max_t": 3}, {"max_t": 100}):
        path = write_spec(tmp_path, scheduler="asha", **changes)
        done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", str(path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": f"{ROOT / 'library'}{os.pathsep}{ROOT}"})
        assert done.returncode == 2 and done.stdout == "", done.stdout
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and "grace_fraction" in line, line
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="grace_fraction: must be between 0 and 1"):
            load_spec(config_file=str(write_spec(tmp_path, scheduler="asha", grace_fraction=bad)))


#: a grid of 4 rnl trials (2 lambda x 2 scale sharings), as many as the random and Optuna sweeps above
GRID = {"methods": ["rnl"], "space": {"rnl": {
    "rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0, "grid": [0.0, 1.0]},
    "rnl.sharescale": {"type": "choice", "values": [True, False]}}}}


#: the short sweep of each search algorithm (marked ``searches``: ``make test-latest`` runs them beside the fast
#: tier with the newest releases the ranges allow; Optuna 5.1 broke every Optuna sweep while the fast tier passed)
SHORT_SWEEPS = {"random": "test_tiny_sweep_logs_every_trial_and_trains_stage1_once_per_key",
                "optuna": "test_optuna_search_with_asha_finishes_trials_and_records_the_pruned",
                "grid": "test_a_short_grid_sweep_runs_every_point_once"}


def test_every_search_algorithm_has_a_short_sweep_that_make_test_latest_runs():
    assert set(SHORT_SWEEPS) == set(SEARCHES)
    for name in SHORT_SWEEPS.values():
        assert globals()[name].pytestmark and "searches" in {mark.name for mark in globals()[name].pytestmark}


@pytest.mark.ray
@pytest.mark.searches
def test_a_short_grid_sweep_runs_every_point_once(tmp_path, mlflow_store, ray_local):
    """The short grid sweep (see :data:`SHORT_SWEEPS`): every point of the grid once, each trial
    FINISHED in MLflow with its operating point."""
    uri = mlflow_store.uri
    spec = load_spec(config_file=str(write_spec(tmp_path, search="grid", **GRID)))
    outcome = run_sweep(spec, SweepOptions(tracking_uri=uri, storage_path=str(tmp_path / "ray")))
    client, runs = children(uri, outcome.parent_run_id)
    assert outcome.status == "FINISHED" and client.get_run(outcome.parent_run_id).info.status == "FINISHED"
    assert outcome.total == 4 and len(runs) == 4 and {run.info.status for run in runs} == {"FINISHED"}
    assert all(math.isfinite(run.data.metrics["val_acc_op"]) and run.data.metrics["t_op"] > 0 for run in runs)
    assert sorted((float(run.data.params["lam"]), run.data.params["sharescale"]) for run in runs) == [
        (0.0, "False"), (0.0, "True"), (1.0, "False"), (1.0, "True")]


def test_folders_are_made_absolute_at_the_driver(tmp_path, monkeypatch):
    """Every folder of a sweep file is absolute, ``~`` expanded, before any trial starts (a trial
    runs in a working directory of its own, where a relative folder would not be found)."""
    from snnconv.sweep_spec import resolve_paths

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home" / "cifar").mkdir(parents=True)
    (tmp_path / "data" / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "data" / "imagenet" / "val").mkdir()
    path = write_spec(tmp_path, trial={**TINY["trial"], "data": {"name": "digits", "data_dir": "~/cifar"}},
                      overrides={"qcfs": {"data": {"data_dir": "data/imagenet"}, "cache_dir": "./qcfs-cache"}})
    spec = load_spec(config_file=str(path))
    assert spec.trial["data"]["data_dir"] == str(tmp_path / "home" / "cifar")
    assert spec.overrides["qcfs"]["data"]["data_dir"] == str(tmp_path / "data" / "imagenet")
    assert spec.overrides["qcfs"]["cache_dir"] == str(tmp_path / "qcfs-cache")
    assert spec.trial["cache_dir"] == str(tmp_path / "cache")  # already absolute: kept
    monkeypatch.chdir(tmp_path / "home")  # resolving again changes nothing
    resolve_paths(spec)
    assert spec.trial["data"]["data_dir"] == str(tmp_path / "home" / "cifar")


@pytest.mark.ray
def test_a_trial_finds_a_relative_data_dir(tmp_path, ray_local, monkeypatch):
    """A sweep file's relative data_dir (as the presets have, ./data/...) reaches the trials, which
    Ray Tune runs in working directories of their own: before, every such trial failed with "not found"."""
    from mlflow import MlflowClient
    from PIL import Image

    for part in ("train", "val"):
        for label, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            folder = tmp_path / "data" / "pets" / part / label
            folder.mkdir(parents=True)
            for index in range(6):
                Image.new("RGB", (40, 30), tuple(min(255, c + 7 * index) for c in colour)).save(folder / f"{index}.png")
    monkeypatch.chdir(tmp_path)
    trial = {"model": "small", "device": "cpu", "stage1": {"epochs": 1, "lr": 0.05},
             "data": {"name": "imagenet", "data_dir": "./data/pets", "num_workers": 0, "batch_size": 4},
             "qcfs": {"stage1_levels": 4, "finetune_epochs": 1, "t_max": 4}}
    path = write_spec(tmp_path, methods=["qcfs"], num_samples=1, trial=trial,
                      space={"qcfs": {"qcfs.levels": {"type": "choice", "values": ["uniform"]}}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_sweep(load_spec(config_file=path.name), SweepOptions(tracking_uri=uri, storage_path="ray"))
    client, runs = children(uri, outcome.parent_run_id)
    assert [run.info.status for run in runs] == ["FINISHED"], [run.data.tags.get("error") for run in runs]
    (dataset,) = [item.dataset for item in runs[0].inputs.dataset_inputs]
    assert dataset.name == "imagenet" and json.loads(dataset.profile)["test"] == 12
    assert isinstance(client, MlflowClient) and (tmp_path / "ray").is_dir()  # the relative storage path too


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_an_interrupted_sweep_resumes_without_running_a_trial_or_a_seed_twice(tmp_path):
    """Ctrl-C in the middle of a configuration (with --repeats 2: after its first seed finished), then --resume:
    no run is left RUNNING by the interrupt; every configuration and every seed ends FINISHED once, and the
    seed runs that had finished are kept (the plain, single-seed path of the same is in test_faults.py)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = write_spec(tmp_path, methods=["rnl"], num_samples=2, max_concurrent=1, repeats=2,
                      trial={**TINY["trial"], "rnl": {"epochs": 3, "inspect_interval": 2, "t_max": 32}})
    command = [sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", str(path), "--tracking-uri", uri,
               "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def seed_runs(status: str | None = None):
        query = "tags.`snnconv.seed_of` != ''" + (f" and attributes.status = '{status}'" if status else "")
        return MlflowClient(uri).search_runs(["1"], query)

    try:
        deadline = time.time() + 300
        while True:  # interrupt once the first seed of the first configuration has finished
            assert process.poll() is None and time.time() < deadline, "no seed finished"
            try:
                if seed_runs("FINISHED"):
                    break
            except Exception:  # noqa: BLE001 - the store is not there yet
                pass
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
    done_before = {run.info.run_id for run in seed_runs("FINISHED")}
    assert not seed_runs("RUNNING"), "an interrupt left a seed run RUNNING"
    assert 1 <= len(done_before) < 4, "the sweep finished before the interrupt"
    state = json.loads(next((tmp_path / "ray").glob("*/snnconv_sweep.json")).read_text())
    _, before = children(uri, state["parent_run_id"])
    assert not [r for r in before if r.info.status == "RUNNING"], "an interrupt left a configuration RUNNING"

    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, configurations = children(uri, state["parent_run_id"])
    assert len(configurations) == 2 and {r.info.status for r in configurations} == {"FINISHED"}
    assert len({r.data.tags["trial_id"] for r in configurations}) == 2  # no configuration twice
    for configuration in configurations:
        _, seeds = children(uri, configuration.info.run_id)
        assert sorted(r.data.params["seed"] for r in seeds) == ["0", "1"] and {r.info.status for r in seeds} == {
            "FINISHED"}
    # the seeds that had finished were kept, not run again
    assert done_before <= {run.info.run_id for run in seed_runs("FINISHED")} and len(seed_runs()) == 4


def test_a_sweep_file_without_space_searches_each_methods_standard_space(tmp_path):
    from snnconv.method_registry import get_method
    from snnconv.sweep_command import build_parser, spec_from_arguments

    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\nmethods: [datanorm]\n")
    spec = load_spec(config_file=str(bare))
    assert spec.space == {name: dict(get_method(name).search_space) for name in ("rnl", "qcfs", "datanorm")}
    assert spec.space["datanorm"] == {"datanorm.percentile": {"type": "choice", "values": [99.9, 99.99, 100.0]}}
    # a space section, even an empty one, is taken as written ...
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: empty\nmethods: [qcfs]\nspace: {}\n")
    assert load_spec(config_file=str(empty)).space == {}
    # ... and --method NAME gives a method the file has no space for its standard one
    args = build_parser().parse_args(["--config", str(empty), "--method", "qcfs,datanorm"])
    spec = spec_from_arguments(args, None)
    assert spec.methods == ["qcfs", "datanorm"] and set(spec.space) == {"qcfs", "datanorm"}
    args = build_parser().parse_args(["--config", str(empty), "--method", "all"])
    assert spec_from_arguments(args, None).methods == ["rnl", "qcfs", "datanorm"]
    args = build_parser().parse_args(["--config", str(empty), "--method", "nope"])
    with pytest.raises(ConfigError, match="methods: \\['nope'\\] is not allowed; choose from rnl, qcfs, datanorm"):
        spec_from_arguments(args, None)
