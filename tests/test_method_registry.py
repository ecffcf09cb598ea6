"""snnconv.method_registry: a conversion method is one registration. A toy method defined in this file,
and in no module of the package, runs through ``run_trial`` and through a real 2-trial sweep (Ray Tune
and MLflow), is validated from its settings' declared rules, and shows up in the sweep's params."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from snnconv.config import ConfigError, TrialConfig, apply_overrides, positive
from snnconv.convert import to_if
from snnconv.method_registry import ConversionMethod, MethodError, get_method, method_names, register, unregister
from snnconv.methods.datanorm import clip_at, layer_thresholds
from snnconv.metrics import energy_mj
from snnconv.operating_point import if_operating_point
from snnconv.pipeline import run_trial
from snnconv.simulate import simulate
from snnconv.train import evaluate
from snnconv.trial import TrialResult, calibration_images, device_record, model_record, stage1

# ---------------------------------------------------------------------------------------------
# the toy: a ReLU network clipped at `gain` times each layer's largest activation, simulated as IF neurons


@dataclass
class ToySettings:
    gain: float = positive(1.0, doc="threshold = gain x the layer's largest calibration activation")
    t_max: int = positive(8, doc="simulation length")


def run_toy(config: TrialConfig, on_progress: Any, device: torch.device) -> TrialResult:
    start = time.perf_counter()
    first = stage1(config, device=device)
    data = first.data
    maxima = layer_thresholds(first.model, calibration_images(data.train, 1, first.device), 100.0)
    model = clip_at(first.model, {name: value * config.toy.gain for name, value in maxima.items()}).eval()
    snn = to_if(model)
    val, test = (simulate(snn, split, config.toy.t_max, first.device) for split in (data.val, data.test))
    point = if_operating_point(val.acc_curve, test.acc_curve, 2.0, val.energy_at)
    layers = [{"name": name, "threshold": value * config.toy.gain} for name, value in maxima.items()]
    on_progress("simulate", {"t_op": point.t_op})
    return TrialResult(
        method="toy", ann_acc=evaluate(model, data.test, first.device),
        val_ann_acc=evaluate(model, data.val, first.device),
        snn_acc=test.snn_acc, val_snn_acc=val.snn_acc, operating_point=point, latency_tolerance=2.0, omega=1.0,
        t_eff=point.t_op, synops=test.synops, energy_mj=energy_mj(test.synops, test.input_macs),
        curves={"snn_acc_t": test.acc_curve, "val_snn_acc_t": val.acc_curve}, layers=layers,
        stage1_key=first.key, stage1_cache_hit=first.cache_hit, seconds=time.perf_counter() - start, model=model,
        **model_record(config, data, point, layers), **device_record(first.device),
        image_correct={"val": val.image_correct[int(point.t_op) - 1].numpy(),
                       "test": test.image_correct[int(point.t_op) - 1].numpy()})


TOY = ConversionMethod(
    name="toy", title="toy max norm", settings=ToySettings, run=run_toy,
    stage1_activation=lambda config: {"kind": "relu"},
    params=lambda config: {"gain": config.toy.gain, "t_max": config.toy.t_max},
    param_names=("gain", "t_max"),
    search_space={"toy.gain": {"type": "choice", "values": [0.5, 1.0]}},
)


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister("toy")


def tiny_toy_config(folder) -> TrialConfig:
    return apply_overrides(TrialConfig(), {
        "method": "toy", "model": "small", "device": "cpu", "data.name": "digits", "stage1.epochs": 2,
        "stage1.lr": 0.05, "cache_dir": str(folder / "cache")})


# ---------------------------------------------------------------------------------------------


def test_the_built_in_methods_are_registered_in_order():
    assert method_names()[:3] == ("rnl", "qcfs", "datanorm")
    assert {get_method(name).snn for name in ("rnl", "datanorm")} == {"if"} and get_method("qcfs").snn == "pascal"
    with pytest.raises(MethodError, match="unknown method 'nope'; known: rnl, qcfs, datanorm"):
        get_method("nope")
    with pytest.raises(MethodError, match="already registered"):
        register(ConversionMethod(name="rnl", title="another", settings=ToySettings, run=run_toy,
                                  stage1_activation=TOY.stage1_activation, params=TOY.params, param_names=()))
    with pytest.raises(MethodError, match="lower-case identifier"):
        ConversionMethod(name="Bad-Name", title="x", settings=ToySettings, run=run_toy,
                         stage1_activation=TOY.stage1_activation, params=TOY.params, param_names=())


def test_a_registered_method_gets_a_config_section_checked_by_its_declared_rules(toy):
    config = apply_overrides(TrialConfig(), {"method": "toy", "toy.gain": 0.5})
    assert config.toy.gain == 0.5 and config.settings() is config.toy and config.to_dict()["toy"]["gain"] == 0.5
    from snnconv.config_reference import config_fields

    rows = {row.key: row for row in config_fields()}  # the docs' table lists its section too
    assert rows["toy.gain"].allowed == "> 0" and rows["toy.gain"].meaning.startswith("threshold = gain")
    with pytest.raises(ConfigError, match="toy.gain: must be positive, got -1.0"):
        apply_overrides(TrialConfig(), {"toy.gain": -1.0})
    unregister("toy")
    with pytest.raises(ConfigError, match="unknown config section 'toy'"):
        apply_overrides(TrialConfig(), {"toy.gain": 0.5})
    with pytest.raises(ConfigError, match="unknown key 'toy'"):
        from snnconv.config import from_dict

        from_dict({"toy": {"gain": 0.5}})


def test_the_toy_method_runs_through_run_trial(toy, tmp_path, one_thread):
    result = run_trial(tiny_toy_config(tmp_path))
    assert result.method == "toy" and len(result.curves["snn_acc_t"]) == 8
    assert result.operating_point.acc_op == result.curves["snn_acc_t"][int(result.operating_point.t_op) - 1]
    assert result.model_metadata["method"] == "toy" and result.model_metadata["snn"] == "if"
    # its stage-1 network is the ReLU network datanorm trains: the same cache key
    datanorm = apply_overrides(tiny_toy_config(tmp_path), {"method": "datanorm"})
    from snnconv.cache_key import stage1_key

    assert stage1_key(datanorm) == result.stage1_key


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_the_toy_method_runs_in_a_two_trial_sweep(toy, tmp_path):
    import ray
    import ray.cloudpickle

    from snnconv import tracking
    from snnconv.sweep import SweepOptions, run_sweep
    from snnconv.sweep_spec import SweepSpec, validate_spec

    # Ray's workers cannot import this test file: its functions travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = SweepSpec(name="toy", methods=["toy"], search="grid", num_samples=1, max_concurrent=2,
                     trial={"model": "small", "device": "cpu", "data": {"name": "digits"},
                            "stage1": {"epochs": 2, "lr": 0.05}, "cache_dir": str(tmp_path / "cache")},
                     space={"toy": {"toy.gain": {"type": "choice", "values": [0.5, 1.0]}}})
    validate_spec(spec)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:  # a Ray of this test's own, stopped after it (run_sweep leaves a running Ray to its caller)
        outcome = run_sweep(spec, SweepOptions(tracking_uri=uri, storage_path=str(tmp_path / "ray")))
    finally:
        ray.shutdown()
    assert outcome.status == "FINISHED" and outcome.total == 2 and len(outcome.table) == 2
    assert [fact["method"] for fact in outcome.stage1] == ["toy"]  # its stage-1 network trained first, in a worker
    sweep = tracking.load_sweep(uri)
    client = tracking.client_for(uri)
    runs = tracking.search_children(client, sweep.experiment_id, sweep.sweep_id)
    assert sorted(run.data.params["gain"] for run in runs) == ["0.5", "1.0"]
    assert all(run.info.status == "FINISHED" and run.data.params["method"] == "toy" for run in runs)
    assert all("acc_op" in run.data.metrics and "t_op" in run.data.metrics for run in runs)
