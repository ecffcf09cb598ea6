"""A trial (``snnconv.trial``, ``snnconv.trial_record``): ``run_trial`` refuses a GPU torch cannot see
before any work, records its device, logs it as params through the trial record, and its result
carries the Wilson interval of each accuracy."""

from __future__ import annotations

import pytest

from snnconv import tracking, trial, trial_record
from snnconv.config import TrialConfig, apply_overrides
from snnconv.metrics import wilson_interval
from snnconv.operating_point import PASCAL_T_EFF, OperatingPoint
from snnconv.pipeline import TrialResult, run_trial
from snnconv.train import DeviceError


def test_run_trial_refuses_before_any_work(no_cuda, monkeypatch, tmp_path):
    def no_work(*args, **kwargs):
        raise AssertionError("the trial started working")

    monkeypatch.setattr(trial, "load_data", no_work)
    monkeypatch.setattr(trial, "Stage1Cache", no_work)
    config = apply_overrides(TrialConfig(), {"device": "auto", "cache_dir": str(tmp_path)})
    with pytest.raises(DeviceError, match="Ray gave this trial 1 GPU"):
        run_trial(config, gpus_assigned=1)
    assert not any(tmp_path.iterdir())


def test_a_trial_records_its_device(one_thread, tmp_path):
    config = apply_overrides(TrialConfig(), {
        "method": "qcfs", "model": "small", "device": "cpu", "data.name": "synthetic", "data.num_train": 64,
        "data.num_val": 32, "data.num_test": 32, "data.image_size": 8, "data.channels": 1, "data.batch_size": 32,
        "stage1.epochs": 1, "qcfs.stage1_levels": 4, "qcfs.finetune_epochs": 0, "qcfs.t_max": 2,
        "cache_dir": str(tmp_path / "cache")})
    result = run_trial(config, gpus_assigned=1)  # device: cpu, even with a GPU assigned
    assert (result.device, result.gpu_name) == ("cpu", "none")
    assert result.params() == {"device": "cpu", "gpu_name": "none", "val_images": "32", "test_images": "32"}


def test_the_device_is_logged_as_params(tmp_path):
    assert {"device", "gpu_name"} <= set(tracking.trial_param_names())
    assert {"lam", "levels_profile", "percentile"} <= set(tracking.trial_param_names())  # each method's own
    result = TrialResult(method="qcfs", ann_acc=90.0, val_ann_acc=90.0, snn_acc=90.0, val_snn_acc=90.0,
                         operating_point=OperatingPoint(3.0, 90.0, 90.0, 0.1, True, PASCAL_T_EFF),
                         latency_tolerance=1.0, omega=1.0, t_eff=3.0, synops=1.0, energy_mj=0.1,
                         device="cuda", gpu_name="NVIDIA H100 80GB HBM3")
    tracker = tracking.SweepTracker("sqlite:///unused.db", "0", "parent")
    record = trial_record.save_trial_record(result, {"stage1_key": "abc", "levels": ""}, tmp_path, tracker, "run")
    assert trial_record.read_record(record)["params"] == {
        "device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "stage1_key": "abc", "levels": ""}


def test_a_result_carries_the_interval_of_each_accuracy():
    from snnconv.data import DataFacts

    result = TrialResult(method="rnl", ann_acc=97.5, val_ann_acc=95.0, snn_acc=96.0, val_snn_acc=94.0,
                         operating_point=OperatingPoint(12.0, 93.0, 95.5, 0.1, True, "IF time steps"),
                         latency_tolerance=1.0, omega=1.0, t_eff=12.0, synops=1.0, energy_mj=0.1,
                         data=DataFacts("digits", {"train": 1257, "val": 180, "test": 360}, "abc"))
    metrics = result.metrics()
    for name, accuracy, images in (("val_acc_op", 93.0, 180), ("acc_op", 95.5, 360), ("val_ann_acc", 95.0, 180),
                                   ("ann_acc", 97.5, 360)):
        assert (metrics[f"{name}_low"], metrics[f"{name}_high"]) == wilson_interval(accuracy, images)
    assert set(tracking.INTERVAL_METRICS) <= set(metrics)
    assert result.params()["val_images"] == "180" and result.params()["test_images"] == "360"
