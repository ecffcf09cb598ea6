"""Issue 2: models, data, stage-1 training, cache, config errors, CLI."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from snnconv.cache import CacheWarning, Stage1Cache
from snnconv.config import ConfigError, TrialConfig, apply_overrides, from_dict, trial_config_from_yaml
from snnconv.data import TensorLoader, load_data
from snnconv.layers import QCFS, RateNorm, activation_factory
from snnconv.models import MODELS, activation_layers, build_model, get_levels, set_levels, weight_layers
from snnconv.pipeline import stage1, stage1_warnings
from snnconv.train import NonFiniteLossError, evaluate, train_model

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ models

@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["relu", "rnl", "qcfs"])
def test_every_model_runs_on_its_cifar_or_digits_shape(name, kind):
    shape = (1, 8, 8) if name == "small" else (3, 32, 32)
    model = build_model(name, activation_factory(kind), num_classes=10, in_channels=shape[0], image_size=shape[1])
    model.eval()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    kinds = {"relu": nn.ReLU, "rnl": RateNorm, "qcfs": QCFS}
    assert all(isinstance(layer.module, kinds[kind]) for layer in activation_layers(model))


@pytest.mark.parametrize("name", ["vgg16", "resnet34"])
def test_imagenet_variants_run_on_224(name):
    model = build_model(name, activation_factory("relu"), num_classes=1000, in_channels=3, image_size=224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    if name == "vgg16":
        assert model.classifier[1].in_features == 512 * 7 * 7
    else:
        assert model.stem[0].kernel_size == (7, 7)


def test_activation_layers_are_in_forward_order_with_fan_in():
    vgg = build_model("vgg16", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    layers = activation_layers(vgg)
    assert len(layers) == 15  # 13 conv + 2 hidden FC, as PASCAL's VGG16 list
    assert [layer.fan_in for layer in layers[:4]] == [27, 576, 576, 1152]
    assert layers[-1].fan_in == 4096 and layers[-3].fan_in == 4608
    assert len(weight_layers(vgg)) == 16

    order: list[str] = []
    hooks = [layer.module.register_forward_hook(lambda m, i, o, n=layer.name: order.append(n)) for layer in layers]
    vgg.eval()(torch.randn(1, 3, 32, 32))
    assert order == [layer.name for layer in layers]
    for hook in hooks:
        hook.remove()

    resnet18 = build_model("resnet18", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    names = [layer.name for layer in activation_layers(resnet18)]
    assert len(names) == 17 and names[0] == "stem.2"
    # the activation after a residual add is fed by conv2 (fan-in 9*C), not by the 1x1 shortcut
    block = {layer.name: layer for layer in activation_layers(resnet18)}["layers.2.act_out"]
    assert block.weight_name == "layers.2.conv2" and block.fan_in == 9 * 128
    resnet34 = build_model("resnet34", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32)
    assert len(activation_layers(resnet34)) == 33


def test_levels_list_sets_each_layer_and_wrong_length_is_refused():
    model = build_model("small", activation_factory("qcfs", levels=8), num_classes=10, in_channels=1,
                        image_size=8, levels=[1, 16, 2, 4])
    assert get_levels(model) == [1, 16, 2, 4]
    with pytest.raises(ValueError) as error:
        set_levels(model, [4, 4])
    message = str(error.value)
    assert "4 QCFS layers" in message and "features.2, features.5, features.9, classifier.2" in message


def test_dropout_is_configurable():
    model = build_model("vgg11", activation_factory("relu"), num_classes=10, in_channels=3, image_size=32, dropout=0.2)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.2}


# ------------------------------------------------------------------ data

def test_digits_split_is_fixed_and_disjoint():
    config = TrialConfig().data
    first, second = load_data(config), load_data(config)
    assert (first.train.dataset_size, first.val.dataset_size, first.test.dataset_size) == (1257, 180, 360)
    assert torch.equal(first.test.images, second.test.images)
    assert (first.num_classes, first.in_channels, first.image_size) == (10, 1, 8)
    train_rows = {tuple(x.flatten().tolist()) for x in first.train.images}
    assert sum(tuple(x.flatten().tolist()) in train_rows for x in first.test.images) < 10  # digits has a few duplicates
    assert abs(first.train.images.mean().item()) < 0.1  # normalised


def test_synthetic_data_has_any_shape_and_is_learnable():
    config = apply_overrides(TrialConfig(), {"data.name": "synthetic", "data.channels": 3, "data.image_size": 16,
                                             "data.num_classes": 4, "data.num_train": 256})
    data = load_data(config.data)
    images, labels = next(iter(data.train))
    assert images.shape[1:] == (3, 16, 16) and labels.max() < 4
    model = build_model("small", activation_factory("relu"), num_classes=4, in_channels=3, image_size=16)
    train_model(model, data.train, apply_overrides(config, {"stage1.epochs": 3}).stage1, torch.device("cpu"))
    assert evaluate(model, data.test) > 60.0


def test_tensor_loader_keeps_tensors_on_their_device_and_reshuffles():
    images, labels = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    loader = TensorLoader(images, labels, batch_size=4, shuffle=True, seed=1)
    epoch1 = torch.cat([y for _, y in loader])
    epoch2 = torch.cat([y for _, y in loader])
    assert len(loader) == 3 and sorted(epoch1.tolist()) == list(range(10))
    assert not torch.equal(epoch1, epoch2)


def test_imagenet_folder_loader(tmp_path):
    from PIL import Image

    for part in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / part / cls
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (40, 30), (i * 40, 10, 200)).save(folder / f"{i}.png")
    config = apply_overrides(TrialConfig(), {"data.name": "imagenet", "data.data_dir": str(tmp_path),
                                             "data.num_workers": 0, "data.batch_size": 4})
    data = load_data(config.data)
    images, labels = next(iter(data.train))
    assert images.shape == (4, 3, 224, 224) and data.num_classes == 2
    assert len(data.val.dataset) == 1 and len(data.test.dataset) == 12


# ------------------------------------------------------------------ training

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


# ------------------------------------------------------------------ cache

def test_cache_hit_returns_identical_weights_without_training(digits_config):
    first = stage1(apply_overrides(digits_config, {"stage1.epochs": 2}))
    second = stage1(apply_overrides(digits_config, {"stage1.epochs": 2}))
    assert not first.cache_hit and second.cache_hit
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    assert second.test_acc == first.test_acc
    # a stage-2 knob does not change the key; a stage-1 knob does
    third = stage1(apply_overrides(digits_config, {"stage1.epochs": 2, "rnl.lam": 5.0}))
    assert third.cache_hit and third.key == first.key
    assert stage1(apply_overrides(digits_config, {"stage1.epochs": 1})).key != first.key


def test_a_tampered_cache_entry_is_refused_and_retrained(digits_config):
    """Another key's network under this key's name, or tensors that do not fit the model, are never
    loaded: the trial warns, sets the file aside and trains stage 1 again, to the same weights."""
    config = apply_overrides(digits_config, {"stage1.epochs": 1})
    other = apply_overrides(digits_config, {"stage1.epochs": 2})
    clean = stage1(config)
    root = Path(config.cache_dir)
    reference = {name: tensor.clone() for name, tensor in clean.model.state_dict().items()}
    wrong = stage1(other)
    assert not clean.cache_hit and wrong.key != clean.key
    tampered = {
        "another key's entry": lambda: root.joinpath(f"{clean.key}.pt").write_bytes(
            root.joinpath(f"{wrong.key}.pt").read_bytes()),
        "tensors of another model": lambda: torch.save(
            {"state_dict": {"w": torch.ones(3)}, "meta": {"key": clean.key}}, root / f"{clean.key}.pt"),
        "a reshaped tensor": lambda: torch.save(
            {"state_dict": {**reference, "classifier.4.weight": torch.zeros(5, 128)}, "meta": {"key": clean.key}},
            root / f"{clean.key}.pt"),
    }
    reasons = {"another key's entry": f"records the key '{wrong.key}', not its file name's '{clean.key}'",
               "tensors of another model": "its tensors are not the model's",
               "a reshaped tensor": "its tensor 'classifier.4.weight' is ((5, 128), torch.float32)"}
    for case, tamper in tampered.items():
        tamper()
        with pytest.warns(CacheWarning, match="refused, set aside as") as caught:
            again = stage1(config)
        assert reasons[case] in str(caught[0].message), case
        assert not again.cache_hit and reasons[case] in again.cache_refused, case
        assert (root / f"{clean.key}.pt.refused").is_file()
        assert all(torch.equal(again.model.state_dict()[name], tensor) for name, tensor in reference.items()), case
        assert stage1(config).cache_hit  # the retrained entry is trusted again
    assert stage1_warnings(again) == {"stage1_cache_refused": again.cache_refused}


def test_a_world_writable_cache_folder_is_warned_about(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    with pytest.warns(CacheWarning, match="is writable by every user: anyone could replace a cached network"):
        Stage1Cache(root).store("k", {"w": torch.ones(1)}, {})
    private = tmp_path / "private" / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Stage1Cache(private).store("k", {"w": torch.ones(1)}, {})
    assert not private.stat().st_mode & 0o007  # created for its owner and group only


def _train_slowly(root: str, log: str) -> None:
    def train():
        with open(log, "a") as handle:
            handle.write("trained\n")
        time.sleep(1.0)
        return {"w": torch.ones(3)}, {"note": "slow"}

    Stage1Cache(root).get_or_train("same-key", train)


@pytest.mark.slow
def test_two_processes_asking_for_one_key_train_once(tmp_path):
    context = mp.get_context("spawn")
    log = tmp_path / "log.txt"
    workers = [context.Process(target=_train_slowly, args=(str(tmp_path / "c"), str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert log.read_text().count("trained") == 1
    entry = Stage1Cache(tmp_path / "c").load("same-key")
    assert torch.equal(entry.state_dict["w"], torch.ones(3)) and entry.meta == {"note": "slow", "key": "same-key"}
    assert not list((tmp_path / "c").glob("*.tmp"))


# ------------------------------------------------------------------ config errors

@pytest.mark.parametrize("overrides, message", [
    ({"model": "alexnet"}, "model: unknown value 'alexnet'; allowed: small, vgg11"),
    ({"data.name": "svhn"}, "data.name: unknown value 'svhn'; allowed: digits"),
    ({"data.name": "cifar10"}, "data.data_dir: cifar10 needs a local data directory"),
    ({"data.name": "cifar10", "data.data_dir": "/nonexistent/cifar"}, "'/nonexistent/cifar' does not exist"),
    ({"stage1.lr": -0.1}, "stage1.lr: must be positive, got -0.1"),
    ({"rnl.lr": 0.0}, "rnl.lr: must be positive, got 0.0"),
    ({"stage1.epochs": "ten"}, "stage1.epochs: expected an integer, got 'ten'"),
    ({"qcfs.levels": [4, 4]}, "qcfs.levels: small has 4 activation layers but the list has 2 entries"),
    ({"qcfs.levels": [4, 4, 3, 4]}, "qcfs.levels[2] (features.9): L = 3 is not allowed"),
])
def test_bad_values_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError) as error:
        apply_overrides(TrialConfig(), overrides)
    assert message in str(error.value)


def test_yaml_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("model: small\nstage1:\n  epochs: 3\nqcfs:\n  levels: [8, 4, 2, 1]\n")
    config = trial_config_from_yaml(good)
    assert config.stage1.epochs == 3 and config.qcfs.levels == [8, 4, 2, 1]

    malformed = tmp_path / "bad.yaml"
    malformed.write_text("model: small\nstage1: [epochs: 3\n")
    with pytest.raises(ConfigError, match="malformed YAML in .*bad.yaml"):
        trial_config_from_yaml(malformed)

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("stage1:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key stage1.'epoch'; allowed keys in stage1: epochs, optimizer"):
        trial_config_from_yaml(unknown)

    with pytest.raises(ConfigError, match="does not exist"):
        trial_config_from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict({"stage1": 3})


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
