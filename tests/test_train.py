"""Stage-1 training (``snnconv.train``): the small CNN reaches 95 % on digits, a NaN loss names its epoch
and batch, the epoch callback and the step schedule; the training command line
(``python -m snnconv.train``); mixed precision on the CPU is an explicit choice (``stage1.amp_on_cpu``);
a GPU that Ray assigned but torch cannot see is an error, a visible one is used."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snnconv.cache_key import stage1_key
from snnconv.config import ConfigError, TrialConfig, apply_overrides
from snnconv.data import TensorLoader, load_data
from snnconv.layers import activation_factory
from snnconv.models import build_model
from snnconv.pipeline import stage1
from snnconv.train import DeviceError, NonFiniteLossError, amp_enabled, check_device, train_model

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.timeout(60)
def test_small_cnn_reaches_95_percent_on_digits(digits_config):
    start = time.perf_counter()
    result = stage1(digits_config)
    print(f"digits stage 1: {result.test_acc:.2f}% in {time.perf_counter() - start:.1f}s")
    assert result.test_acc >= 95.0
    assert not result.cache_hit


def test_nan_loss_names_epoch_and_batch():
    images = torch.randn(12, 1, 8, 8)
    images[9] = float("nan")  # third batch of four
    loader = TensorLoader(images, torch.zeros(12, dtype=torch.int64), batch_size=4)
    model = build_model("small", activation_factory("relu"), num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 3"):
        train_model(model, loader, TrialConfig().stage1, torch.device("cpu"))


def test_epoch_callback_and_step_schedule():
    data = load_data(TrialConfig().data)
    model = build_model("small", activation_factory("relu"), num_classes=10, in_channels=1, image_size=8)
    config = apply_overrides(TrialConfig(), {"stage1.epochs": 3, "stage1.schedule": "step", "stage1.milestones": [2],
                                             "stage1.optimizer": "adam", "stage1.lr": 0.01,
                                             "stage1.label_smoothing": 0.1}).stage1
    seen = []
    history = train_model(model, data.train, config, torch.device("cpu"), val_loader=data.val, on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3]
    assert [s.lr for s in history] == pytest.approx([0.01, 0.01, 0.001])  # milestones count finished epochs
    assert all(0 <= s.val_acc <= 100 for s in history)


# ------------------------------------------------------------------ CLI

@pytest.mark.slow
def test_train_cli_trains_then_hits_the_cache(tmp_path):
    command = [sys.executable, "-m", "snnconv.train", "--model", "small", "--dataset", "digits", "--epochs", "2",
               "--cache-dir", str(tmp_path), "--device", "cpu"]
    env = {"PYTHONPATH": str(ROOT / "library"), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "epoch   2" in first.stdout and "stage 1 trained" in first.stdout and "test accuracy" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert "stage 1 loaded from cache" in second.stdout

    bad = subprocess.run([sys.executable, "-m", "snnconv.train", "--model", "nope"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "error: model: unknown value 'nope'" in bad.stderr


# ------------------------------------------------------------------ mixed precision

def test_amp_on_the_cpu_is_an_explicit_choice():
    base = TrialConfig().stage1
    assert base.amp and not base.amp_on_cpu
    assert amp_enabled(base, torch.device("cuda")) and not amp_enabled(base, CPU)  # the default: CUDA only
    on_cpu = apply_overrides(TrialConfig(), {"stage1.amp_on_cpu": True}).stage1
    assert amp_enabled(on_cpu, CPU) and amp_enabled(on_cpu, torch.device("cuda"))
    off = apply_overrides(TrialConfig(), {"stage1.amp": False}).stage1
    assert not amp_enabled(off, CPU) and not amp_enabled(off, torch.device("cuda"))
    with pytest.raises(ConfigError, match="stage1.amp_on_cpu: true needs stage1.amp: true"):
        apply_overrides(TrialConfig(), {"stage1.amp": False, "stage1.amp_on_cpu": True})
    # trained differently, cached apart; off, the new field leaves every existing key as it was
    assert stage1_key(apply_overrides(TrialConfig(), {"stage1.amp_on_cpu": True})) != stage1_key(TrialConfig())


# ------------------------------------------------------------------ device

def test_a_gpu_that_torch_cannot_see_is_an_error(no_cuda):
    for name in ("auto", "cuda", "cuda:0"):
        with pytest.raises(DeviceError) as error:
            check_device(name, 1)
        message = str(error.value)
        assert message.startswith("Ray gave this trial 1 GPU but torch sees no CUDA (torch ") and "\n" not in message
        assert torch.__version__ in message and message.endswith("or set device: cpu")
    with pytest.raises(DeviceError, match="Ray gave this trial 2 GPUs"):
        check_device("auto", 2)
    with pytest.raises(DeviceError, match="device: cuda but torch sees no CUDA"):
        check_device("cuda", 0)
    assert check_device("cpu", 1) == CPU  # an explicit cpu stays allowed
    assert check_device("auto", 0) == CPU
    with pytest.raises(ValueError, match="gpus_assigned"):
        check_device("auto", -1)


def test_a_visible_gpu_is_used(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto", 1) == torch.device("cuda") and check_device("cuda:1", 1) == torch.device("cuda:1")
    assert check_device("cpu", 1) == CPU
