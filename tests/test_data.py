"""Data loading (``snnconv.data``): the fixed digits split, synthetic data of any shape, the tensor
loader, an ImageNet-style folder."""

from __future__ import annotations

import torch

from snnconv.config import TrialConfig, apply_overrides
from snnconv.data import TensorLoader, load_data
from snnconv.layers import activation_factory
from snnconv.models import build_model
from snnconv.train import evaluate, train_model


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
