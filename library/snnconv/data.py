"""Data sets: digits (bundled, the default), synthetic, MNIST, Fashion-MNIST, CIFAR-10/100 and ImageNet folders.

:func:`load_data` returns a :class:`DataBundle` with train / val / test loaders that yield
``(images [B, C, H, W] float32, labels [B] int64)`` already normalised. Small sets (digits,
synthetic, and MNIST / Fashion-MNIST: 70000 28x28 images, read once from their IDX files) are held
as tensors on the compute device and batched without copies (:class:`TensorLoader`); CIFAR and
ImageNet use torchvision data sets and a DataLoader.

Trials never download: MNIST, Fashion-MNIST, CIFAR and ImageNet folders are prepared beforehand with
``python -m snnconv.data prepare NAME --data-dir DIR`` (:mod:`snnconv.prepare`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Subset

from .config import FOLDER_SETS, ConfigError, DataConfig

#: (mean, std) per channel used to normalise each data set
NORMALISATION = {
    "digits": ((0.3053,), (0.3760,)),  # sklearn digits scaled to [0, 1]
    "mnist": ((0.1307,), (0.3081,)),  # the 60000 training images scaled to [0, 1]
    "fashion-mnist": ((0.2860,), (0.3530,)),  # the 60000 training images scaled to [0, 1]
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: validation images carved from the training set when DataConfig.val_size is None
DEFAULT_VAL_SIZE = {"mnist": 5000, "fashion-mnist": 5000, "cifar10": 10000, "cifar100": 10000, "imagenet": 10000}

#: the MNIST-style sets: name -> torchvision data set class name (28x28 grey images, 10 classes)
MNIST_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class Loader(Protocol):
    """What a data bundle's split is: batches ``(images, labels)`` when iterated, ``len()`` the number of
    batches (a torch ``DataLoader`` or a :class:`TensorLoader`)."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


@dataclass
class DataBundle:
    """Loaders and the shape facts a model needs."""

    name: str
    train: Loader
    val: Loader
    test: Loader
    num_classes: int
    in_channels: int
    image_size: int


class TensorLoader:
    """Batches of in-memory tensors that stay on their device (no per-batch host copies).

    ``images [N, C, H, W]``, ``labels [N]``. With ``shuffle`` a new permutation is drawn each
    epoch from a generator seeded with ``seed``. ``len()`` is the number of batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator).to(self.labels.device)
            images, labels = self.images[order], self.labels[order]
        else:
            images, labels = self.images, self.labels
        for start in range(0, count, self.batch_size):
            yield images[start:start + self.batch_size], labels[start:start + self.batch_size]

    @property
    def dataset_size(self) -> int:
        return len(self.labels)


def _split(count: int, sizes: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start:start + size])
        start += size
    return parts


def _tensor_bundle(name: str, images: torch.Tensor, labels: torch.Tensor, splits: list[torch.Tensor],
                   config: DataConfig, device: torch.device, num_classes: int) -> DataBundle:
    images, labels = images.to(device), labels.to(device)
    train, val, test = (
        TensorLoader(images[idx.to(device)], labels[idx.to(device)],
                     config.batch_size if i == 0 else config.eval_batch_size,
                     shuffle=(i == 0), seed=config.split_seed)
        for i, idx in enumerate(splits)
    )
    return DataBundle(name, train, val, test, num_classes, images.shape[1], images.shape[-1])


def load_digits_data(config: DataConfig, device: torch.device) -> DataBundle:
    """scikit-learn's 1797 8x8 handwritten digits: fixed 1257 / 180 / 360 train / val / test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    (mean,), (std,) = NORMALISATION["digits"]
    images = (images - mean) / std
    labels = torch.tensor(digits.target, dtype=torch.int64)
    val_size = config.val_size or 180
    test_size = 360
    splits = _split(len(labels), (len(labels) - val_size - test_size, val_size, test_size), config.split_seed)
    return _tensor_bundle("digits", images, labels, splits, config, device, 10)


def load_synthetic_data(config: DataConfig, device: torch.device) -> DataBundle:
    """Random images with learnable class structure: a fixed random prototype per class plus noise.

    Shape ``[num_*, channels, image_size, image_size]``; the prototypes and noise come from
    ``split_seed``, so the same config always gives the same data.
    """
    generator = torch.Generator().manual_seed(config.split_seed)
    shape = (config.channels, config.image_size, config.image_size)
    prototypes = torch.randn((config.num_classes, *shape), generator=generator)
    total = config.num_train + config.num_val + config.num_test
    labels = torch.randint(0, config.num_classes, (total,), generator=generator)
    images = prototypes[labels] + 1.5 * torch.randn((total, *shape), generator=generator)
    sizes = (config.num_train, config.num_val, config.num_test)
    splits = [torch.arange(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(3)]
    return _tensor_bundle("synthetic", images, labels, splits, config, device, config.num_classes)


def _loader(dataset, config: DataConfig, train: bool, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.batch_size if train else config.eval_batch_size,
        shuffle=train,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        generator=torch.Generator().manual_seed(config.split_seed) if train else None,
        persistent_workers=config.num_workers > 0,
    )


def _transforms(name: str, config: DataConfig, train: bool):
    from torchvision import transforms as T

    mean, std = NORMALISATION[name]
    if name == "imagenet":
        steps = ([T.RandomResizedCrop(224), T.RandomHorizontalFlip()] if train and config.augment
                 else [T.Resize(256), T.CenterCrop(224)])
    else:
        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train and config.augment else []
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and config.augment and config.cutout > 0:
        side = 224 if name == "imagenet" else 32
        area = (config.cutout / side) ** 2
        # cutout: one square hole of `cutout` pixels, filled with 0 (the normalised mean)
        steps.append(T.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    return T.Compose(steps)


def load_cifar_data(config: DataConfig, device: torch.device) -> DataBundle:
    """CIFAR-10/100 from ``data_dir`` (torchvision layout); validation carved from train.

    Never downloads: a missing or corrupt data set raises ConfigError naming the prepare command.
    """
    from torchvision import datasets

    cls = datasets.CIFAR10 if config.name == "cifar10" else datasets.CIFAR100
    root = str(config.data_dir)
    try:
        train_aug = cls(root, train=True, transform=_transforms(config.name, config, True), download=False)
        train_plain = cls(root, train=True, transform=_transforms(config.name, config, False), download=False)
        test = cls(root, train=False, transform=_transforms(config.name, config, False), download=False)
    except RuntimeError as error:
        raise ConfigError(f"data.data_dir: {config.name} is missing or fails its checksum check in {root!r}; "
                          f"run `python -m snnconv.data prepare {config.name} --data-dir {root}`") from error
    val_size = config.val_size or DEFAULT_VAL_SIZE[config.name]
    train_idx, val_idx = _split(len(train_aug), (len(train_aug) - val_size, val_size), config.split_seed)
    return DataBundle(
        config.name,
        _loader(Subset(train_aug, train_idx.tolist()), config, True, device),
        _loader(Subset(train_plain, val_idx.tolist()), config, False, device),
        _loader(test, config, False, device),
        10 if config.name == "cifar10" else 100, 3, 32,
    )


def load_mnist_data(config: DataConfig, device: torch.device) -> DataBundle:
    """MNIST or Fashion-MNIST from ``data_dir`` (torchvision layout: ``MNIST/raw/*-idx?-ubyte``,
    ``FashionMNIST/raw/...``), read once into tensors on ``device``; validation carved from train.

    60000 train / 10000 test images of 28x28 grey pixels in 10 classes; ``val_size`` (default 5000) of
    the training images, drawn with ``split_seed``, are the validation split. No augmentation (flips
    would change digits). Never downloads: a missing or unreadable data set raises ConfigError naming
    the prepare command.
    """
    from torchvision import datasets

    cls = getattr(datasets, MNIST_SETS[config.name])
    root = str(config.data_dir)
    prepare = f"run `python -m snnconv.data prepare {config.name} --data-dir {root}`"
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except (OSError, RuntimeError, AssertionError, TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"data.data_dir: {config.name} is missing or unreadable in {root!r} (torchvision reads "
                          f"{cls.__name__}/raw/*-idx?-ubyte there); {prepare}") from error
    for part, found in (("train", train), ("test", test)):
        if (found.data.dim() != 3 or tuple(found.data.shape[1:]) != (28, 28) or len(found.targets) != len(found.data)
                or found.targets.numel() == 0 or not 0 <= int(found.targets.min()) <= int(found.targets.max()) < 10):
            raise ConfigError(f"data.data_dir: the {part} split of {config.name} in {root!r} is not 28x28 images with "
                              f"as many labels in 0..9 (images {tuple(found.data.shape)}, labels "
                              f"{tuple(found.targets.shape)}); {prepare}")
    val_size = config.val_size or DEFAULT_VAL_SIZE[config.name]
    if val_size >= len(train.targets):
        raise ConfigError(f"data.val_size: {val_size} leaves no training images of {config.name}'s "
                          f"{len(train.targets)}; use fewer")
    images = torch.cat([train.data, test.data]).unsqueeze(1).to(torch.float32).div_(255.0)
    (mean,), (std,) = NORMALISATION[config.name]
    images.sub_(mean).div_(std)
    labels = torch.cat([train.targets, test.targets]).to(torch.int64)
    count = len(train.targets)
    train_idx, val_idx = _split(count, (count - val_size, val_size), config.split_seed)
    splits = [train_idx, val_idx, torch.arange(count, count + len(test.targets))]
    return _tensor_bundle(config.name, images, labels, splits, config, device, 10)


def load_imagenet_data(config: DataConfig, device: torch.device) -> DataBundle:
    """ImageNet as an ImageFolder with ``train/`` and ``val/``; validation carved from train/."""
    from torchvision import datasets

    root = Path(str(config.data_dir))
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise ConfigError(f"data.data_dir: {root} has no {part}/ folder (ImageNet needs train/ and val/)")
    train_aug = datasets.ImageFolder(root / "train", _transforms("imagenet", config, True))
    train_plain = datasets.ImageFolder(root / "train", _transforms("imagenet", config, False))
    test = datasets.ImageFolder(root / "val", _transforms("imagenet", config, False))
    val_size = min(config.val_size or DEFAULT_VAL_SIZE["imagenet"], len(train_aug) // 10 or 1)
    train_idx, val_idx = _split(len(train_aug), (len(train_aug) - val_size, val_size), config.split_seed)
    return DataBundle(
        "imagenet",
        _loader(Subset(train_aug, train_idx.tolist()), config, True, device),
        _loader(Subset(train_plain, val_idx.tolist()), config, False, device),
        _loader(test, config, False, device),
        len(train_aug.classes), 3, 224,
    )


def load_data(config: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load the data set named by ``config.name`` for computing on ``device``."""
    device = torch.device(device)
    loaders = {
        "digits": load_digits_data,
        "synthetic": load_synthetic_data,
        "mnist": load_mnist_data,
        "fashion-mnist": load_mnist_data,
        "cifar10": load_cifar_data,
        "cifar100": load_cifar_data,
        "imagenet": load_imagenet_data,
    }
    if config.name not in loaders:
        raise ConfigError(f"data.name: unknown data set {config.name!r}; allowed: {', '.join(loaders)}")
    if config.name in FOLDER_SETS and config.data_dir is None:
        raise ConfigError(f"data.data_dir: {config.name} needs a local data directory")
    return loaders[config.name](config, device)


def data_shape(config: DataConfig) -> tuple[int, int, int]:
    """(num_classes, in_channels, image_size) of a data set, without loading it."""
    if config.name == "digits":
        return 10, 1, 8
    if config.name == "synthetic":
        return config.num_classes, config.channels, config.image_size
    if config.name in MNIST_SETS:
        return 10, 1, 28
    if config.name == "cifar10":
        return 10, 3, 32
    if config.name == "cifar100":
        return 100, 3, 32
    if config.name == "imagenet":
        root = Path(str(config.data_dir)) / "train"
        classes = sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 1000
        return classes, 3, 224
    raise ConfigError(f"data.name: unknown data set {config.name!r}")


# ---------------------------------------------------------------------------------------------
# what a trial saw: name, split sizes, digest (logged as the trial run's MLflow dataset input)

#: the splits of every ``DataBundle``, in order
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataFacts:
    """A data set as a trial saw it: ``name``, the number of images of each split (``sizes``, keyed
    ``train`` / ``val`` / ``test``), a ``digest`` (10 hex characters, as MLflow advises) that changes
    when any image, label or split assignment changes, and ``source`` (how to get it again: loader,
    split seed, folder)."""

    name: str
    sizes: dict[str, int]
    digest: str
    source: dict[str, Any] = field(default_factory=dict)


def describe_data(bundle: DataBundle, config: DataConfig) -> DataFacts:
    """The :class:`DataFacts` of ``bundle`` (loaded from ``config``).

    The digest hashes, per split, its size and content: the image and label tensors of an
    in-memory set (digits, synthetic: well under a megabyte; MNIST / Fashion-MNIST: 220 MB of normalised
    float32, about a second); for a folder set the split's indices
    into the underlying data set and that set's own arrays (CIFAR: its uint8 images and labels) or
    file list (ImageNet: relative paths and labels), never the decoded images.
    """
    digest = hashlib.sha256(bundle.name.encode())
    sizes = {}
    for split in SPLITS:
        loader = getattr(bundle, split)
        sizes[split] = _split_size(loader)
        digest.update(f"|{split}:{sizes[split]}|".encode())
        _hash_loader(digest, loader)
    source: dict[str, Any] = {"loader": f"snnconv.data.load_data({config.name!r})", "split_seed": config.split_seed}
    if config.data_dir is not None:
        source["data_dir"] = str(config.data_dir)
    return DataFacts(name=bundle.name, sizes=sizes, digest=digest.hexdigest()[:10], source=source)


def _split_size(loader: Any) -> int:
    if isinstance(loader, TensorLoader):
        return loader.dataset_size
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if dataset is not None else sum(len(labels) for _, labels in loader)


def _hash_loader(digest: Any, loader: Any) -> None:
    if isinstance(loader, TensorLoader):
        digest.update(loader.images.detach().cpu().contiguous().numpy().tobytes())
        digest.update(loader.labels.detach().cpu().contiguous().numpy().tobytes())
        return
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, Subset):
        digest.update(torch.as_tensor(list(dataset.indices), dtype=torch.int64).numpy().tobytes())
        dataset = dataset.dataset
    _hash_dataset(digest, dataset)


def _hash_dataset(digest: Any, dataset: Any) -> None:
    """A torchvision data set's own arrays (``data``, ``targets``) or file list (``samples``)."""
    import numpy as np

    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray):
        digest.update(np.ascontiguousarray(data).tobytes())
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        root = str(getattr(dataset, "root", ""))
        for path, label in samples:
            digest.update(f"{Path(path).relative_to(root) if root else path}:{label}\n".encode())
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        digest.update(np.asarray(targets, dtype=np.int64).tobytes())
    if data is None and samples is None and targets is None:
        digest.update(str(len(dataset)).encode())


if __name__ == "__main__":  # python -m snnconv.data prepare NAME --data-dir DIR
    from .prepare import main

    raise SystemExit(main())
