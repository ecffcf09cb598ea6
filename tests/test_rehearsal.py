"""The real job, rehearsed. Each paper preset runs through ``python sweeps/lambda_sweep.py`` on a
Ray cluster that scales from zero: Ray's fake multi-node provider (``RAY_FAKE_CLUSTER=1``), a CPU-only head
and the GPU worker types of ``ray_cluster.yaml`` (their resources read from the file, ``min_workers: 0``).
The worker nodes are local processes that declare GPUs; the trials run on their CPUs (``device: cpu``).

Only the data and the sizes are cut: synthetic data in the preset's image shape and class count, a few
images, one or two epochs, short simulations, two trials per method. Everything else is the preset's own:
methods, search, scheduler and its grace fraction, CPUs and GPU share per trial, concurrency, objective.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: the GCS port the fake provider's workers connect to (they know no other)
GCS_PORT = 6379
#: per preset: (image side, classes) of its data set, and the cut sizes (train, val, test images; batch)
SHAPES = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet": (224, 1000)}
SIZES = {"cifar10": (32, 16, 16, 16), "cifar100": (32, 16, 16, 16), "imagenet": (8, 4, 4, 4)}


def cut_preset(name: str, cache_dir: Path) -> dict:
    """The preset with only its data and sizes cut (see the module docstring), ``device: cpu`` and the
    test's stage-1 cache folder."""
    spec = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    cut = copy.deepcopy(spec)
    data = cut["trial"]["data"]
    image_size, classes = SHAPES[data["name"]]
    train, val, test, batch = SIZES[data["name"]]
    cut["trial"]["data"] = {"name": "synthetic", "image_size": image_size, "num_classes": classes, "channels": 3,
                            "num_train": train, "num_val": val, "num_test": test, "batch_size": batch,
                            "data_dir": data["data_dir"]}  # kept, relative, as the preset says
    cut["trial"]["stage1"]["epochs"] = 1
    cut["trial"]["device"] = "cpu"
    cut["trial"]["cache_dir"] = str(cache_dir)
    for method, section in (("rnl", {"epochs": 1, "inspect_interval": 1, "t_max": 8}),
                            ("qcfs", {"finetune_epochs": 2, "t_max": 8, "calibration_batches": 1}),
                            ("datanorm", {"t_max": 8, "calibration_batches": 1})):
        cut["trial"].setdefault(method, {}).update(section)
    for overrides in (cut.get("overrides") or {}).values():
        overrides.get("stage1", {}).update(epochs=1)
    cut["num_samples"] = 2
    return cut


def autoscaler_config(path: Path) -> None:
    """The fake provider's cluster: a head with one CPU and no GPU (the driver and MLflow), and the worker
    types of ray_cluster.yaml with their resources, from zero, at most two each."""
    real = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())["available_node_types"]
    workers = {name: {"resources": node["resources"], "min_workers": 0, "max_workers": 2, "node_config": {}}
               for name, node in real.items() if node["resources"].get("GPU")}
    config = {
        "cluster_name": "rehearsal", "max_workers": 4, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {"head": {"resources": {"CPU": 1}, "max_workers": 0, "node_config": {}}, **workers},
        "head_node_type": "head",
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }
    path.write_text(yaml.safe_dump(config))


def ray_nodes(env: dict) -> list[dict]:
    """The cluster's nodes (id, alive, resources), asked by a driver of its own."""
    code = ("import json, ray; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
            "print('NODES', json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'resources': n['Resources']} "
            "for n in ray.nodes()]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("NODES ")]
    return json.loads(line.removeprefix("NODES "))


@pytest.fixture
def scaling_cluster(tmp_path):
    """A Ray head on this machine whose autoscaler launches fake GPU workers on demand; stopped after."""
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SNNCONV_CACHE", None)
    config = tmp_path / "autoscaler.yaml"
    autoscaler_config(config)
    ray_cli = str(BIN / "ray")
    subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={GCS_PORT}", "--num-cpus=1", "--num-gpus=0",
                        f"--autoscaling-config={config}", "--include-dashboard=false"],
                       env=env, check=True, capture_output=True, timeout=180)
        yield env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=180)


#: the presets rehearsed on the cluster. cifar100-vgg16 and cifar10-resnet18 are left out: on the cluster they are
#: cifar10-vgg16 (the same methods, search, scheduler, objective and resources:
#: test_a_left_out_preset_runs_on_the_cluster_as_cifar10_vgg16), cifar100-vgg16 with the same model and
#: cifar10-resnet18 with its own, whose trials run end to end below. That saves the suite 5 minutes.
REHEARSED = ["cifar10-vgg16", "imagenet-resnet34"]
#: the sweep-file keys that decide how a preset runs on the cluster (the rest is the trials' recipe)
CLUSTER_KEYS = ("methods", "search", "scheduler", "grace_fraction", "objective", "max_concurrent", "cpus_per_trial",
                "gpus_per_trial", "select_on", "max_failures", "share_stage1")


@pytest.mark.parametrize("preset", ["cifar100-vgg16", "cifar10-resnet18"])
def test_a_left_out_preset_runs_on_the_cluster_as_cifar10_vgg16(tmp_path, preset):
    from snnconv.pipeline import run_trial
    from snnconv.sweep_spec import SweepSpec, load_spec, method_base

    defaults = SweepSpec()
    specs = {name: yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
             for name in ("cifar10-vgg16", preset)}
    settings = {name: {key: spec.get(key, getattr(defaults, key)) for key in CLUSTER_KEYS}
                for name, spec in specs.items()}
    assert settings[preset] == settings["cifar10-vgg16"]
    assert set(specs[preset]["space"]) == set(specs["cifar10-vgg16"]["space"])
    if specs[preset]["trial"]["model"] == specs["cifar10-vgg16"]["trial"]["model"]:
        return  # the rehearsal ran this model's trials
    # another model: its trials, cut as the rehearsal cuts them, run end to end (here, without the cluster)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cut_preset(preset, tmp_path / "cache")))
    spec = load_spec(config_file=str(tmp_path / "sweep.yaml"))
    for method in spec.methods:
        result = run_trial(method_base(spec, method))
        assert result.method == method and 0 <= result.operating_point.acc_op <= 100


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("preset", REHEARSED)
def test_paper_preset_finishes_on_a_cluster_that_scales_from_zero(tmp_path, scaling_cluster, preset):
    from mlflow import MlflowClient

    env = scaling_cluster
    nodes = [node for node in ray_nodes(env) if node["alive"]]
    assert len(nodes) == 1 and not nodes[0]["resources"].get("GPU"), nodes  # the head alone, no GPU
    head = nodes[0]["id"]

    spec = cut_preset(preset, tmp_path / "cache")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "lambda_sweep.py"), "--config", "sweep.yaml", "--address", "auto",
         "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), "--pending-timeout", "300"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1400)
    output = sweep.stdout + sweep.stderr
    (tmp_path / "sweep.log").write_text(output)
    assert sweep.returncode == 0, output[-6000:]
    # the workers were launched from zero: the sweep asked the autoscaler and waited, trials ran on them
    assert "asked the autoscaler" in sweep.stderr, output[-3000:]
    gpu_workers = {node["id"] for node in ray_nodes(env) if node["alive"] and node["resources"].get("GPU", 0) >= 1}
    assert gpu_workers and head not in gpu_workers

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("snnconv")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`snnconv.role` = 'sweep'")
    runs = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    methods = spec["methods"]
    assert len(runs) == 2 * len(methods), output[-3000:]
    for run in runs:
        assert run.data.tags["ray_node_id"] in gpu_workers, "a trial ran elsewhere than on a GPU worker"
        if run.info.status == "FINISHED":  # its full result
            assert {"val_acc_op", "acc_op", "t_op", "energy_op_mj", "snn_acc"} <= set(run.data.metrics)
        else:  # pruned by ASHA, with its last validation accuracy
            assert run.info.status == "KILLED" and run.data.tags.get("pruned") == "true", run.data.tags
            assert "pruned_val_acc" in run.data.metrics
    for method in methods:
        assert [r for r in runs if r.data.params["method"] == method and r.info.status == "FINISHED"], method
    assert any(run.data.tags.get("pareto_latency") == "true" for run in runs), "empty latency front"

    # each stage-1 key trained exactly once, before any trial started: no trial trained one, the cache holds
    # one entry per method, and the last stage-1 epoch was logged before the first trial's run began
    finished = [run for run in runs if run.info.status == "FINISHED"]
    assert all(run.data.metrics["stage1_cache_hit"] == 1 for run in finished)
    entries = {path.name.removesuffix(".pt") for path in (tmp_path / "cache").glob("*.pt")}
    assert len(entries) == len(methods) and {run.data.params["stage1_key"] for run in finished} <= entries
    first_trial = min(run.info.start_time for run in runs)
    for method in methods:
        history = client.get_metric_history(parent.info.run_id, f"stage1_{method}_val_acc")
        assert [m.step for m in history] == [1], (method, history)
        assert max(m.timestamp for m in history) <= first_trial
        assert f"stage 1 {method}: trained in" in sweep.stdout

    if spec.get("published"):  # the papers' figures travel with the sweep; the report prints them beside ours
        report = subprocess.run([sys.executable, str(ROOT / "analysis" / "pareto.py"), "--tracking-uri", uri,
                                 "--out", str(tmp_path / "report")], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
        fixed = json.loads((tmp_path / "report" / "summary.json").read_text())["fixed_latency"]
        for item in spec["published"]:
            assert f"[{item['label']}] " in report.stdout  # its source, under the table
            for step, value in item.get("accuracy", {}).items():
                (row,) = [r for r in fixed if r["method"] == item["method"] and r["latency"] == f"T = {step} IF steps"]
                assert f"{value:.2f} [{item['label']}]" in row["published"], (step, row)
