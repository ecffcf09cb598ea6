"""Preparing data sets on disk, once, before any trial: ``python -m snnconv.data prepare NAME --data-dir DIR``.

Trials never download (``data.download: true`` is refused); this command fetches and checks a data set:

* ``cifar10`` / ``cifar100``: downloads torchvision's archive into ``DIR`` when files are missing, then
  verifies every file torchvision reads against the md5 checksum its data set class lists, and the split
  sizes (50000 train / 10000 test images, 10 or 100 classes) by loading the data set objects. A marker
  file records what was verified, so a second run loads nothing and says the folder is already prepared;
  the checksums are verified on every run. A file present with a wrong checksum is refused (delete it and
  rerun), never downloaded over. A lock file in ``DIR`` makes concurrent calls do the work once.
* ``imagenet``: checks only (it cannot be downloaded): ``train/`` and ``val/`` with one subfolder per class,
  at least 2 classes, the same classes in both, and counts the images of each split.

Every step prints one line; bad input is one ``error:`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from filelock import FileLock

from .config import FOLDER_SETS

#: lock file inside the data folder, held while a CIFAR set is downloaded and verified
LOCK_NAME = ".snnconv-prepare.lock"


class PrepareError(Exception):
    """Bad input or a data folder that cannot be prepared (printed as one ``error:`` line, exit status 2)."""


@dataclass(frozen=True)
class CifarSpec:
    """What a prepared CIFAR folder holds: the torchvision data set class (its ``base_folder``,
    ``train_list``, ``test_list`` and ``meta`` name each file and its md5; ``url``, ``filename`` and
    ``tgz_md5`` the archive), the number of classes and the split sizes in images."""

    name: str
    dataset: type
    classes: int
    train_size: int = 50000
    test_size: int = 10000


@dataclass(frozen=True)
class Prepared:
    """What a prepare call found: the data set, its absolute folder, ``sizes`` (images per split and
    ``classes``), the number of files verified by md5 (0 for ImageNet), whether it downloaded, and whether
    the folder was already prepared by an earlier call."""

    name: str
    root: Path
    sizes: dict[str, int] = field(default_factory=dict)
    files_verified: int = 0
    downloaded: bool = False
    already_prepared: bool = False


def cifar_spec(name: str) -> CifarSpec:
    """The real :class:`CifarSpec` of ``cifar10`` or ``cifar100`` (torchvision's classes and checksums)."""
    from torchvision import datasets

    if name == "cifar10":
        return CifarSpec("cifar10", datasets.CIFAR10, 10)
    if name == "cifar100":
        return CifarSpec("cifar100", datasets.CIFAR100, 100)
    raise PrepareError(f"{name!r} is not a CIFAR data set; allowed: cifar10, cifar100")


def data_root(data_dir: str | Path) -> Path:
    """``data_dir`` with ``~`` expanded, as an absolute path."""
    return Path(data_dir).expanduser().resolve()


def writable_folder(root: Path) -> Path:
    """``root``, created if missing; raises :class:`PrepareError` when it is a file or cannot be written."""
    if root.exists() and not root.is_dir():
        raise PrepareError(f"--data-dir {root} is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        raise PrepareError(f"--data-dir {root} cannot be written ({error.strerror or error})") from error
    return root


def expected_files(spec: CifarSpec) -> dict[str, str]:
    """Path relative to the data folder -> md5 (32 hex digits) of every file torchvision reads for ``spec``."""
    cls = spec.dataset
    listed = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
    return {f"{cls.base_folder}/{name}": md5 for name, md5 in listed}


def missing_files(root: Path, expected: dict[str, str]) -> list[str]:
    """The relative paths in ``expected`` that are not files under ``root``; raises :class:`PrepareError`
    naming the first present file whose md5 differs (it is refused, not downloaded over)."""
    from torchvision.datasets.utils import calculate_md5

    missing = []
    for relative, md5 in expected.items():
        path = root / relative
        if not path.is_file():
            missing.append(relative)
        elif (actual := calculate_md5(path)) != md5:
            raise PrepareError(f"{path} is corrupt (md5 {actual}, expected {md5}); delete it and rerun "
                               "the prepare command")
    return missing


def download_cifar(spec: CifarSpec, root: Path) -> None:
    """Download the archive of ``spec`` from torchvision's URL into ``root`` (its md5 checked) and extract it."""
    from torchvision.datasets.utils import download_and_extract_archive

    cls = spec.dataset
    download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)


def split_sizes(spec: CifarSpec, root: Path) -> dict[str, int]:
    """``{"train", "test": images, "classes": distinct training labels}``, by loading the data set objects;
    raises :class:`PrepareError` when they are not the sizes ``spec`` expects."""
    train = spec.dataset(str(root), train=True)
    test = spec.dataset(str(root), train=False)
    sizes = {"train": len(train), "test": len(test), "classes": len(set(train.targets))}
    wanted = {"train": spec.train_size, "test": spec.test_size, "classes": spec.classes}
    if sizes != wanted:
        raise PrepareError(f"{spec.name} in {root} has {sizes}, expected {wanted}; delete "
                           f"{root / spec.dataset.base_folder} and rerun the prepare command")
    return sizes


def prepare_cifar(spec: CifarSpec, data_dir: str | Path,
                  download: Callable[[CifarSpec, Path], None] = download_cifar,
                  say: Callable[[str], None] = print) -> Prepared:
    """Download (when files are missing) and verify ``spec``'s data set in ``data_dir``; returns what it did.

    Holds a lock file in the folder, so concurrent calls download once. ``download(spec, root)`` fetches
    the files; ``say`` prints one line per step. Raises :class:`PrepareError` on a bad folder, a corrupt
    file, a failed download or wrong split sizes.
    """
    root = writable_folder(data_root(data_dir))
    expected = expected_files(spec)
    record = {"name": spec.name, "files": expected,
              "sizes": {"train": spec.train_size, "test": spec.test_size, "classes": spec.classes}}
    marker = root / f".snnconv-prepared-{spec.name}.json"
    with FileLock(str(root / LOCK_NAME)):
        missing = missing_files(root, expected)
        if missing:
            try:
                download(spec, root)
            except (OSError, RuntimeError) as error:
                raise PrepareError(f"{spec.name}: download into {root} failed ({error})") from error
            say(f"{spec.name}: downloaded {len(missing)} missing files into {root}")
            if still := missing_files(root, expected):
                raise PrepareError(f"{spec.name}: the download did not give {root / still[0]}")
        say(f"{spec.name}: verified {len(expected)} files (md5) in {root / spec.dataset.base_folder}")
        if not missing and marker.is_file() and json.loads(marker.read_text()) == record:
            say(f"{spec.name}: already prepared in {root}; nothing downloaded")
            return Prepared(spec.name, root, record["sizes"], len(expected), already_prepared=True)
        sizes = split_sizes(spec, root)
        say(f"{spec.name}: split sizes train {sizes['train']}, test {sizes['test']} images, "
            f"{sizes['classes']} classes")
        marker.write_text(json.dumps(record, indent=2) + "\n")
        say(f"{spec.name}: prepared; use data.data_dir: {root}")
        return Prepared(spec.name, root, sizes, len(expected), downloaded=bool(missing))


def check_imagenet(data_dir: str | Path, say: Callable[[str], None] = print) -> Prepared:
    """Check an ImageNet folder (``train/`` and ``val/``, one subfolder of images per class, at least 2
    classes, the same in both); returns its image counts per split and number of classes. Raises
    :class:`PrepareError` when it is not such a folder."""
    from torchvision import datasets

    root = data_root(data_dir)
    if not root.is_dir():
        raise PrepareError(f"--data-dir {root} is not a folder (ImageNet needs train/ and val/ in it)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise PrepareError(f"{root} has no {split}/ folder (ImageNet needs train/ and val/, one subfolder "
                               "per class)")
    classes, sizes = {}, {}
    for split in ("train", "val"):
        try:
            found = datasets.ImageFolder(str(root / split))
        except FileNotFoundError as error:
            raise PrepareError(f"{root / split}: {error}") from error
        classes[split], sizes[split] = found.classes, len(found.samples)
        say(f"imagenet: {split}/ holds {sizes[split]} images in {len(found.classes)} classes")
    if len(classes["train"]) < 2:
        raise PrepareError(f"{root / 'train'} has {len(classes['train'])} class folder; at least 2 are needed")
    if classes["train"] != classes["val"]:
        differ = sorted(set(classes["train"]) ^ set(classes["val"]))
        raise PrepareError(f"train/ and val/ in {root} have different classes (e.g. {', '.join(differ[:3])})")
    say(f"imagenet: train/ and val/ have the same {len(classes['train'])} classes; use data.data_dir: {root}")
    return Prepared("imagenet", root, {**sizes, "classes": len(classes["train"])})


def prepare(name: str, data_dir: str | Path, say: Callable[[str], None] = print) -> Prepared:
    """Prepare (cifar10, cifar100) or check (imagenet) data set ``name`` in ``data_dir``; returns what it did."""
    if name not in FOLDER_SETS:
        raise PrepareError(f"unknown data set {name!r}; allowed: {', '.join(FOLDER_SETS)}")
    if name == "imagenet":
        return check_imagenet(data_dir, say=say)
    return prepare_cifar(cifar_spec(name), data_dir, say=say)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error:`` line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snnconv.data prepare NAME --data-dir DIR``; returns the exit status (0, or 2 on bad input)."""
    parser = _Parser(prog="python -m snnconv.data", description="Prepare data sets before any trial.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("prepare", help="download and verify CIFAR, or check an ImageNet folder")
    command.add_argument("name", help=", ".join(FOLDER_SETS))
    command.add_argument("--data-dir", required=True, help="the data folder (data.data_dir of the trials)")
    args = parser.parse_args(argv)
    try:
        prepare(args.name, args.data_dir)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
