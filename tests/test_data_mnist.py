"""MNIST and Fashion-MNIST through torchvision (``data.name: mnist | fashion-mnist``), their ``prepare``
command, and the ``lenet5`` model.

No network and no real data: tiny IDX files (and their ``.gz`` archives) are written here in torchvision's
layout (``<data_dir>/MNIST/raw/train-images-idx3-ubyte`` ...). The md5s prepare checks are injected with a
:class:`~snnconv.prepare.MnistSpec` whose torchvision class (a subclass of torchvision's, with the same
name, so the same folder) lists the tiny archives' checksums, as ``test_prepare.py`` does for CIFAR.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import datasets

from snnconv.config import ConfigError, DataConfig, TrialConfig, activation_names, apply_overrides
from snnconv.convert import check_convertible, to_if, to_pascal
from snnconv.data import DEFAULT_VAL_SIZE, NORMALISATION, TensorLoader, data_shape, describe_data, load_data
from snnconv.layers import QCFS, RateNorm, activation_factory
from snnconv.metrics import ann_macs
from snnconv.models import activation_layers, build_model
from snnconv.neurons import IFNeuron
from snnconv.prepare import LOCK_NAME, MnistSpec, PrepareError, download_spec, main, prepare_download
from tests.servers import serving

ROOT = Path(__file__).resolve().parents[1]
#: data set name -> torchvision class (its name is the folder under data_dir)
CLASSES = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}
#: training and test images of the tiny sets
TRAIN, TEST = 300, 100
#: the four files torchvision reads, in the order of its ``resources``
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim> (0x00000803 images, 0x00000801 labels),
    each dimension as a big-endian 32-bit integer, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@functools.cache
def tiny_arrays(train: int = TRAIN, test: int = TEST) -> dict[str, np.ndarray]:
    """File name -> content array of a tiny MNIST-style set (random images, every class present)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, count in (("train", train), ("t10k", test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = rng.permutation(np.arange(count) % 10).astype(np.uint8)
    return arrays


@functools.cache
def tiny_files(train: int = TRAIN, test: int = TEST) -> dict[str, bytes]:
    """File name -> IDX bytes, for the unpacked files and their ``.gz`` archives (same bytes every call)."""
    files = {name: idx(array) for name, array in tiny_arrays(train, test).items()}
    return {**files, **{f"{name}.gz": gzip.compress(content, mtime=0) for name, content in files.items()}}


def write_tiny(root: Path, name: str = "mnist", unpacked: bool = True, archives: bool = False,
               train: int = TRAIN, test: int = TEST) -> Path:
    """Write the tiny set into ``root/<class name>/raw/``; returns that folder."""
    raw = root / CLASSES[name].__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for file, content in tiny_files(train, test).items():
        if (file.endswith(".gz") and archives) or (not file.endswith(".gz") and unpacked):
            (raw / file).write_bytes(content)
    return raw


def config(root: Path, name: str = "mnist", **fields) -> DataConfig:
    return DataConfig(name=name, data_dir=str(root), **{"val_size": 60, "batch_size": 32, **fields})


def pixels(images: torch.Tensor, name: str) -> np.ndarray:
    """Normalised ``[N, 1, 28, 28]`` images back to their uint8 pixels."""
    (mean,), (std,) = NORMALISATION[name]
    return ((images * std + mean) * 255).round().to(torch.uint8).squeeze(1).numpy()


def rows(array: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in array}


# ------------------------------------------------------------------ loading

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_loads_torchvision_layout_into_normalised_tensors(tmp_path, name):
    write_tiny(tmp_path, name)
    bundle = load_data(config(tmp_path, name))
    arrays = tiny_arrays()
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.image_size) == (name, 10, 1, 28)
    assert data_shape(config(tmp_path, name)) == (10, 1, 28)
    for split, size in (("train", TRAIN - 60), ("val", 60), ("test", TEST)):
        loader = getattr(bundle, split)
        assert isinstance(loader, TensorLoader)
        assert loader.images.shape == (size, 1, 28, 28) and loader.images.dtype == torch.float32
        assert loader.labels.shape == (size,) and loader.labels.dtype == torch.int64
    # the test split is the test file, in order, scaled to [0, 1] and normalised with the set's constants
    (mean,), (std,) = NORMALISATION[name]
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255 - mean) / std
    assert torch.allclose(bundle.test.images.squeeze(1), expected, atol=1e-6)
    assert bundle.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # train and val: disjoint, together exactly the training file, each image with its own label
    train, val = pixels(bundle.train.images, name), pixels(bundle.val.images, name)
    assert not rows(train) & rows(val)
    assert rows(train) | rows(val) == rows(arrays["train-images-idx3-ubyte"])
    label_of = {image.tobytes(): int(label) for image, label in
                zip(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"])}
    assert [label_of[image.tobytes()] for image in val] == bundle.val.labels.tolist()


def test_the_split_and_the_shuffling_are_fixed_by_the_split_seed(tmp_path):
    write_tiny(tmp_path)
    first, second = load_data(config(tmp_path)), load_data(config(tmp_path))
    other = load_data(config(tmp_path, split_seed=1))
    assert torch.equal(first.val.images, second.val.images) and torch.equal(first.train.labels, second.train.labels)
    assert not torch.equal(first.val.images, other.val.images)
    batch_a, batch_b = next(iter(first.train)), next(iter(second.train))
    assert torch.equal(batch_a[0], batch_b[0]) and torch.equal(batch_a[1], batch_b[1])
    assert len(batch_a[1]) == 32 and not torch.equal(batch_a[0], first.train.images[:32])  # shuffled
    facts = describe_data(first, config(tmp_path))
    assert facts.sizes == {"train": TRAIN - 60, "val": 60, "test": TEST}
    assert facts.digest == describe_data(second, config(tmp_path)).digest
    assert facts.digest != describe_data(other, config(tmp_path, split_seed=1)).digest


def test_the_default_validation_split_is_5000_training_images(tmp_path):
    assert DEFAULT_VAL_SIZE["mnist"] == DEFAULT_VAL_SIZE["fashion-mnist"] == 5000
    write_tiny(tmp_path, train=5100, test=20)
    bundle = load_data(config(tmp_path, val_size=None))
    assert (bundle.train.dataset_size, bundle.val.dataset_size, bundle.test.dataset_size) == (100, 5000, 20)


def test_a_validation_split_as_large_as_the_training_set_is_refused(tmp_path):
    write_tiny(tmp_path)
    with pytest.raises(ConfigError, match=rf"data.val_size: {TRAIN} leaves no training images"):
        load_data(config(tmp_path, val_size=TRAIN))


def test_the_normalisation_constants_are_the_published_ones():
    assert NORMALISATION["mnist"] == ((0.1307,), (0.3081,))
    assert NORMALISATION["fashion-mnist"] == ((0.2860,), (0.3530,))


# ------------------------------------------------------------------ trials never download

@pytest.mark.parametrize("damage", ["empty folder", "missing labels", "truncated images"])
def test_a_missing_or_broken_set_names_the_prepare_command(tmp_path, damage):
    if damage != "empty folder":
        raw = write_tiny(tmp_path)
        if damage == "missing labels":
            (raw / "t10k-labels-idx1-ubyte").unlink()
        else:
            image_file = raw / "train-images-idx3-ubyte"
            image_file.write_bytes(image_file.read_bytes()[:5000])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as error:
        load_data(config(tmp_path))
    message = str(error.value)
    assert message.startswith(f"data.data_dir: mnist is missing or unreadable in {str(tmp_path)!r}")
    assert message.endswith(f"run `python -m snnconv.data prepare mnist --data-dir {tmp_path}`")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing downloaded


def test_labels_outside_0_to_9_are_refused(tmp_path):
    raw = write_tiny(tmp_path, "fashion-mnist")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx(np.full(TEST, 10, dtype=np.uint8)))
    with pytest.raises(ConfigError, match="the test split of fashion-mnist .* labels in 0..9"):
        load_data(config(tmp_path, "fashion-mnist"))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_config_needs_a_prepared_folder_and_refuses_download(tmp_path, name):
    command = f"python -m snnconv.data prepare {name} --data-dir"
    with pytest.raises(ConfigError, match=f"data.data_dir: {name} needs a local data directory"):
        apply_overrides(TrialConfig(), {"data.name": name})
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=f"prepare it with `{command} {missing}`"):
        apply_overrides(TrialConfig(), {"data.name": name, "data.data_dir": str(missing)})
    with pytest.raises(ConfigError) as error:
        apply_overrides(TrialConfig(), {"data.name": name, "data.data_dir": str(tmp_path), "data.download": True})
    assert str(error.value).startswith("data.download: must be false") and f"{command} DIR" in str(error.value)
    accepted = apply_overrides(TrialConfig(), {"data.name": name, "data.data_dir": str(tmp_path), "model": "lenet5"})
    assert (accepted.data.name, accepted.model) == (name, "lenet5")


# ------------------------------------------------------------------ prepare

def fake_spec(name: str = "mnist", mirrors: tuple[str, ...] = (), **sizes: int) -> MnistSpec:
    """A MnistSpec whose torchvision class (same name, so the same folder) lists the tiny archives' md5s."""
    base = CLASSES[name]
    files = tiny_files()
    dataset = type(base.__name__, (base,), {
        "resources": [(f"{file}.gz", hashlib.md5(files[f"{file}.gz"]).hexdigest()) for file in FILES],
        "mirrors": list(mirrors),
    })
    return MnistSpec(name, dataset, **{"train_size": TRAIN, "test_size": TEST, **sizes})


def no_download(spec: MnistSpec, root: Path) -> None:
    pytest.fail(f"prepare tried to download {spec.name} into {root}")


def test_prepare_verifies_the_archives_and_unpacks_the_files_torchvision_reads(tmp_path, capsys):
    raw = write_tiny(tmp_path, unpacked=False, archives=True)  # what a download leaves
    done = prepare_download(fake_spec(), tmp_path, download=no_download)
    root = tmp_path.resolve()
    assert done.sizes == {"train": TRAIN, "test": TEST, "classes": 10} and done.files_verified == 8
    assert not done.downloaded and not done.already_prepared
    for file in FILES:
        assert (raw / file).read_bytes() == tiny_files()[file]
    assert capsys.readouterr().out.splitlines() == [
        f"mnist: verified 8 files (md5) in {root / 'MNIST/raw'}: 4 archives and the 4 files unpacked from them",
        f"mnist: split sizes train {TRAIN}, test {TEST} images, 10 classes",
        f"mnist: prepared; use data.data_dir: {root}",
    ]
    assert (root / ".snnconv-prepared-mnist.json").is_file() and (root / LOCK_NAME).exists()
    again = prepare_download(fake_spec(), tmp_path, download=no_download)
    assert again.already_prepared and again.sizes == done.sizes
    assert capsys.readouterr().out.splitlines()[-1] == f"mnist: already prepared in {root}; nothing downloaded"
    assert load_data(config(tmp_path)).test.dataset_size == TEST  # what prepare leaves, a trial reads


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Iterator[str]:
    """``http://127.0.0.1:PORT/``: a local web server of ``tmp_path / "mirror"`` (a stand-in for a mirror)."""
    monkeypatch.setenv("no_proxy", "*")
    (tmp_path / "mirror").mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "mirror"), **kwargs)

        def log_message(self, *args) -> None:
            pass

    with serving(Quiet) as url:
        yield url + "/"


def test_prepare_downloads_missing_archives_from_the_next_mirror(tmp_path, mirror, capsys):
    write_tiny(tmp_path / "mirror", "fashion-mnist", unpacked=False, archives=True)
    spec = fake_spec("fashion-mnist", mirrors=(f"{mirror}no-such-mirror/", f"{mirror}FashionMNIST/raw/"))
    data = tmp_path / "data"
    write_tiny(data, "fashion-mnist", unpacked=True, archives=False)  # unpacked files, no archives
    done = prepare_download(spec, data)  # spec.download: torchvision's download_url, md5 checked
    assert done.downloaded and done.sizes["train"] == TRAIN
    assert f"fashion-mnist: downloaded 4 missing files into {data.resolve()}" in capsys.readouterr().out
    assert all((data / "FashionMNIST/raw" / f"{file}.gz").is_file() for file in FILES)


def test_a_failed_download_is_one_error(tmp_path, mirror):
    spec = fake_spec(mirrors=(f"{mirror}nowhere/",))
    with pytest.raises(PrepareError) as error:
        prepare_download(spec, tmp_path / "data")
    message = str(error.value)
    assert message.startswith("mnist: download into") and "train-images-idx3-ubyte.gz from no mirror" in message
    assert "404" in message and "\n" not in message


def test_an_unpacked_file_that_differs_from_its_archive_is_refused_not_overwritten(tmp_path):
    raw = write_tiny(tmp_path, unpacked=True, archives=True)
    changed = bytearray(tiny_files()["t10k-images-idx3-ubyte"])
    changed[500] ^= 0xFF
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes(changed))
    with pytest.raises(PrepareError, match=r"t10k-images-idx3-ubyte is corrupt \(it differs from its verified "
                                           r"archive t10k-images-idx3-ubyte.gz\); delete it and rerun"):
        prepare_download(fake_spec(), tmp_path, download=no_download)
    assert (raw / "t10k-images-idx3-ubyte").read_bytes() == bytes(changed)


def test_wrong_split_sizes_are_refused(tmp_path):
    write_tiny(tmp_path, archives=True)
    with pytest.raises(PrepareError, match=r"expected \{'train': 60000, 'test': 10000, 'classes': 10\}; delete "
                                           r".*MNIST and rerun"):
        prepare_download(fake_spec(train_size=60000, test_size=10000), tmp_path, download=no_download)
    assert not (tmp_path / ".snnconv-prepared-mnist.json").exists()


def test_the_real_specs_are_torchvisions():
    mnist, fashion = download_spec("mnist"), download_spec("fashion-mnist")
    assert (mnist.dataset, fashion.dataset) == (datasets.MNIST, datasets.FashionMNIST)
    assert (mnist.train_size, mnist.test_size, mnist.classes) == (60000, 10000, 10)
    assert mnist.folder == "MNIST/raw" and fashion.folder == "FashionMNIST/raw"
    assert mnist.files()["MNIST/raw/train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert len(fashion.files()) == 4


def test_the_command_refuses_tiny_archives_against_torchvisions_md5s(tmp_path):
    """The real command and spec: the tiny archives are not MNIST's, so the first is refused before any download."""
    raw = write_tiny(tmp_path, unpacked=False, archives=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'library'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "snnconv.data", "prepare", "mnist", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {raw / 'train-images-idx3-ubyte.gz'} is corrupt (md5 ")
    assert "expected f68b3c2dcbeaaa9fbdd348bbdeb94873); delete it and rerun" in lines[0]
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{file}.gz" for file in FILES)  # nothing unpacked


def test_unknown_names_list_the_new_sets(tmp_path, capsys):
    assert main(["prepare", "svhn", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown data set 'svhn'; allowed: mnist, fashion-mnist, cifar10, cifar100, imagenet")


# ------------------------------------------------------------------ the lenet5 model

@pytest.mark.parametrize("kind", ["relu", "rnl", "qcfs"])
def test_lenet5_maps_28x28_grey_images_to_logits(kind):
    model = build_model("lenet5", activation_factory(kind), num_classes=10, in_channels=1, image_size=28).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2
    layers = activation_layers(model)
    assert [layer.name for layer in layers] == activation_names("lenet5")
    assert [layer.fan_in for layer in layers] == [25, 16 * 25, 32 * 5 * 5, 256]
    assert model.classifier[1].in_features == 800
    macs = sum(ann_macs(model, torch.zeros(1, 1, 28, 28)).values())  # small enough to simulate on a CPU
    assert macs == 28 * 28 * 16 * 25 + 10 * 10 * 32 * 16 * 25 + 800 * 256 + 256 * 84 + 84 * 10


def test_lenet5_refuses_images_too_small():
    with pytest.raises(ValueError, match="at least 12x12"):
        build_model("lenet5", activation_factory("relu"), num_classes=10, in_channels=1, image_size=8)


def test_lenet5_converts_to_if_neurons_and_to_pascal():
    torch.manual_seed(0)
    rnl = build_model("lenet5", activation_factory("rnl"), num_classes=10, in_channels=1, image_size=28).eval()
    check_convertible(rnl)
    snn = to_if(rnl)
    assert sum(isinstance(m, IFNeuron) for m in snn.modules()) == 4
    assert not any(isinstance(m, RateNorm) for m in snn.modules())
    qcfs = build_model("lenet5", lambda: QCFS(4, 1.0), num_classes=10, in_channels=1, image_size=28,
                       levels=[8, 4, 2, 16]).eval()
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(to_pascal(qcfs)(images), qcfs(images))  # exact inference: the ANN's logits


# ------------------------------------------------------------------ the mnist preset, data and size cut


@pytest.mark.parametrize("method", ["rnl", "qcfs"])
def test_the_mnist_presets_trials_run_end_to_end_on_a_tiny_set(tmp_path, method):
    """The preset's own trial settings (model, recipe, method settings), with the data cut to a tiny
    IDX set and each stage to one short epoch: a trial finishes with its operating point, per-image results
    and the ANN's energy."""
    from snnconv.config import apply_overrides
    from snnconv.pipeline import run_trial
    from snnconv.sweep_spec import load_spec, method_base

    write_tiny(tmp_path, train=300, test=60)
    spec = load_spec("mnist", presets_dir=ROOT / "configs", validate=False)
    assert (spec.trial["model"], spec.trial["data"]["name"], spec.num_samples, spec.methods) == (
        "lenet5", "mnist", 8, ["rnl", "qcfs"])
    spec.trial["data"]["data_dir"] = str(tmp_path)
    base = method_base(spec, method)
    cut = apply_overrides(base, {"data.val_size": 60, "data.batch_size": 32, "stage1.epochs": 1,
                                 "cache_dir": str(tmp_path / "cache"), "rnl.t_max": 8, "qcfs.finetune_epochs": 1,
                                 "qcfs.t_max": 4})
    result = run_trial(cut)
    assert result.method == method and result.data.sizes == {"train": 240, "val": 60, "test": 60}
    assert 0 <= result.operating_point.acc_op <= 100 and result.metrics()["ann_energy_mj"] > 0
    assert len(result.image_correct["val"]) == 60 and len(result.image_correct["test"]) == 60
    assert result.operating_point.val_acc_op == pytest.approx(100 * result.image_correct["val"].mean())
