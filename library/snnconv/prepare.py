"""Preparing data sets on disk, once, before any trial: ``python -m snnconv.data prepare NAME --data-dir DIR``.

Trials never download (``data.download: true`` is refused); this command fetches and checks a data set:

* ``cifar10`` / ``cifar100``: downloads torchvision's archive into ``DIR`` when files are missing, then
  verifies every file torchvision reads against the md5 checksum its data set class lists, and the split
  sizes (50000 train / 10000 test images, 10 or 100 classes) by loading the data set objects. A marker
  file records what was verified, so a second run loads nothing and says the folder is already prepared;
  the checksums are verified on every run. A file present with a wrong checksum is refused (delete it and
  rerun), never downloaded over. A lock file in ``DIR`` makes concurrent calls do the work once.
* ``mnist`` / ``fashion-mnist``: the same steps for torchvision's ``MNIST/raw/`` and ``FashionMNIST/raw/``.
  torchvision lists md5 checksums for the four ``.gz`` archives (its ``resources``), not for the files it
  reads, so the archives are downloaded from its mirrors when missing and verified against those, and
  each file torchvision reads (``*-idx?-ubyte``) must be its verified archive unpacked: it is unpacked
  when missing and refused when it differs. Split sizes: 60000 train / 10000 test images, 10 classes.
* ``imagenet``: checks only (it cannot be downloaded): ``train/`` and ``val/`` with one subfolder per class,
  at least 2 classes, the same classes in both, and counts the images of each split.

Every step prints one line; bad input is one ``error:`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from filelock import FileLock

from .config import FOLDER_SETS

#: lock file inside the data folder, held while a data set is downloaded and verified
LOCK_NAME = ".snnconv-prepare.lock"


class PrepareError(Exception):
    """Bad input or a data folder that cannot be prepared (printed as one ``error:`` line, exit status 2)."""


@dataclass(frozen=True)
class CifarSpec:
    """What a prepared CIFAR folder holds: the torchvision data set class (its ``base_folder``,
    ``train_list``, ``test_list`` and ``meta`` name each file and its md5; ``url``, ``filename`` and
    ``tgz_md5`` the archive), the number of classes and the split sizes in images."""

    name: str
    dataset: type[Any]  # a torchvision data set class (torchvision has no type information)
    classes: int
    train_size: int = 50000
    test_size: int = 10000

    @property
    def folder(self) -> str:
        """The folder, relative to the data folder, of the files torchvision reads."""
        return self.dataset.base_folder

    def files(self) -> dict[str, str]:
        """Path relative to the data folder -> md5 (32 hex digits) of every file torchvision reads."""
        cls = self.dataset
        listed = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        return {f"{cls.base_folder}/{name}": md5 for name, md5 in listed}

    def download(self, root: Path) -> None:
        """Download the archive from torchvision's URL into ``root`` (its md5 checked) and extract it."""
        from torchvision.datasets.utils import download_and_extract_archive

        cls = self.dataset
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)

    def unpack(self, root: Path) -> int:
        """Nothing to do: the files of :meth:`files` are the ones torchvision reads."""
        return 0


@dataclass(frozen=True)
class MnistSpec:
    """What a prepared MNIST or Fashion-MNIST folder holds: the torchvision data set class (its
    ``resources`` name each ``.gz`` archive and its md5, ``mirrors`` where to fetch them; it reads the
    unpacked files from ``<class name>/raw/``), the number of classes and the split sizes in images."""

    name: str
    dataset: type[Any]  # a torchvision data set class (torchvision has no type information)
    classes: int = 10
    train_size: int = 60000
    test_size: int = 10000

    @property
    def folder(self) -> str:
        """The folder, relative to the data folder, of the archives and the files torchvision reads."""
        return f"{self.dataset.__name__}/raw"  # torchvision's raw_folder: <root>/<class name>/raw

    def files(self) -> dict[str, str]:
        """Path relative to the data folder -> md5 of each ``.gz`` archive torchvision lists."""
        return {f"{self.folder}/{archive}": md5 for archive, md5 in self.dataset.resources}

    def download(self, root: Path) -> None:
        """Download each missing archive from torchvision's mirrors into ``root`` (md5 checked); the
        unpacked files are left to :meth:`unpack`, so a present one is never written over."""
        from torchvision.datasets.utils import download_url

        raw = root / self.folder
        for archive, md5 in self.dataset.resources:
            if (raw / archive).is_file():
                continue
            errors = []
            for mirror in self.dataset.mirrors:
                try:
                    download_url(f"{mirror}{archive}", str(raw), filename=archive, md5=md5)
                    break
                except (OSError, RuntimeError) as error:
                    errors.append(f"{mirror}: {' '.join(str(error).split())}")
            else:
                raise RuntimeError(f"{archive} from no mirror ({'; '.join(errors)})")

    def unpack(self, root: Path) -> int:
        """Check that each file torchvision reads is its (verified) archive unpacked; unpack the missing
        ones. Returns the number of files checked; raises :class:`PrepareError` naming one that differs."""
        raw = root / self.folder
        for archive, _ in self.dataset.resources:
            path = raw / Path(archive).stem
            if path.is_file():
                if _md5(path) != _gunzipped_md5(raw / archive):
                    raise PrepareError(f"{path} is corrupt (it differs from its verified archive {archive}); "
                                       "delete it and rerun the prepare command")
            else:
                _gunzip(raw / archive, path)
        return len(self.dataset.resources)


#: a data set prepare downloads and verifies
DownloadSpec = CifarSpec | MnistSpec


def _md5(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(str(path))


def _gunzipped_md5(archive: Path) -> str:
    digest = hashlib.md5()
    with gzip.open(archive, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _gunzip(archive: Path, path: Path) -> None:
    """Unpack ``archive`` to ``path`` through a temporary file (no half-written file on an interruption)."""
    with gzip.open(archive, "rb") as stream, tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    os.replace(out.name, path)


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


def download_spec(name: str) -> DownloadSpec:
    """The real spec of ``mnist``, ``fashion-mnist``, ``cifar10`` or ``cifar100`` (torchvision's classes
    and checksums)."""
    from torchvision import datasets

    specs: dict[str, Callable[[], DownloadSpec]] = {
        "mnist": lambda: MnistSpec("mnist", datasets.MNIST),
        "fashion-mnist": lambda: MnistSpec("fashion-mnist", datasets.FashionMNIST),
        "cifar10": lambda: CifarSpec("cifar10", datasets.CIFAR10, 10),
        "cifar100": lambda: CifarSpec("cifar100", datasets.CIFAR100, 100)}
    if name not in specs:
        raise PrepareError(f"{name!r} cannot be downloaded; allowed: {', '.join(specs)}")
    return specs[name]()


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


def missing_files(root: Path, expected: dict[str, str]) -> list[str]:
    """The relative paths in ``expected`` that are not files under ``root``; raises :class:`PrepareError`
    naming the first present file whose md5 differs (it is refused, not downloaded over)."""
    missing = []
    for relative, md5 in expected.items():
        path = root / relative
        if not path.is_file():
            missing.append(relative)
        elif (actual := _md5(path)) != md5:
            raise PrepareError(f"{path} is corrupt (md5 {actual}, expected {md5}); delete it and rerun "
                               "the prepare command")
    return missing


def split_sizes(spec: DownloadSpec, root: Path) -> dict[str, int]:
    """``{"train", "test": images, "classes": distinct training labels}``, by loading the data set objects;
    raises :class:`PrepareError` when they are not the sizes ``spec`` expects."""
    train = spec.dataset(str(root), train=True)
    test = spec.dataset(str(root), train=False)
    sizes = {"train": len(train), "test": len(test), "classes": len({int(label) for label in train.targets})}
    wanted = {"train": spec.train_size, "test": spec.test_size, "classes": spec.classes}
    if sizes != wanted:
        raise PrepareError(f"{spec.name} in {root} has {sizes}, expected {wanted}; delete "
                           f"{root / spec.folder.split('/')[0]} and rerun the prepare command")
    return sizes


def prepare_download(spec: DownloadSpec, data_dir: str | Path,
                     download: Callable[[DownloadSpec, Path], None] | None = None,
                     say: Callable[[str], None] = print) -> Prepared:
    """Download (when files are missing) and verify ``spec``'s data set in ``data_dir``; returns what it did.

    Holds a lock file in the folder, so concurrent calls download once. ``download(spec, root)`` fetches
    the files (default: ``spec.download(root)``, from torchvision's URLs); ``say`` prints one line per
    step. Raises :class:`PrepareError` on a bad folder, a corrupt file, a failed download or wrong split
    sizes.
    """
    root = writable_folder(data_root(data_dir))
    expected = spec.files()
    expected_sizes = {"train": spec.train_size, "test": spec.test_size, "classes": spec.classes}
    record = {"name": spec.name, "files": expected, "sizes": expected_sizes}
    marker = root / f".snnconv-prepared-{spec.name}.json"
    with FileLock(str(root / LOCK_NAME)):
        missing = missing_files(root, expected)
        if missing:
            try:
                if download is not None:
                    download(spec, root)
                else:
                    spec.download(root)
            except (OSError, RuntimeError) as error:
                raise PrepareError(f"{spec.name}: download into {root} failed ({' '.join(str(error).split())})"
                                   ) from error
            say(f"{spec.name}: downloaded {len(missing)} missing files into {root}")
            if still := missing_files(root, expected):
                raise PrepareError(f"{spec.name}: the download did not give {root / still[0]}")
        unpacked = spec.unpack(root)
        verified = len(expected) + unpacked
        say(f"{spec.name}: verified {verified} files (md5) in {root / spec.folder}"
            + (f": {len(expected)} archives and the {unpacked} files unpacked from them" if unpacked else ""))
        if not missing and marker.is_file() and json.loads(marker.read_text()) == record:
            say(f"{spec.name}: already prepared in {root}; nothing downloaded")
            return Prepared(spec.name, root, expected_sizes, verified, already_prepared=True)
        sizes = split_sizes(spec, root)
        say(f"{spec.name}: split sizes train {sizes['train']}, test {sizes['test']} images, "
            f"{sizes['classes']} classes")
        marker.write_text(json.dumps(record, indent=2) + "\n")
        say(f"{spec.name}: prepared; use data.data_dir: {root}")
        return Prepared(spec.name, root, sizes, verified, downloaded=bool(missing))


#: the name of :func:`prepare_download` when it prepared CIFAR only
prepare_cifar = prepare_download


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
    """Prepare (mnist, fashion-mnist, cifar10, cifar100) or check (imagenet) data set ``name`` in ``data_dir``;
    returns what it did."""
    if name not in FOLDER_SETS:
        raise PrepareError(f"unknown data set {name!r}; allowed: {', '.join(FOLDER_SETS)}")
    if name == "imagenet":
        return check_imagenet(data_dir, say=say)
    return prepare_download(download_spec(name), data_dir, say=say)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error:`` line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m snnconv.data prepare NAME --data-dir DIR``; returns the exit status (0, or 2 on bad input)."""
    parser = _Parser(prog="python -m snnconv.data", description="Prepare data sets before any trial.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("prepare", help="download and verify MNIST, Fashion-MNIST or CIFAR, "
                                                  "or check an ImageNet folder")
    command.add_argument("name", help=", ".join(FOLDER_SETS))
    command.add_argument("--data-dir", required=True, help="the data folder (data.data_dir of the trials)")
    args = parser.parse_args(argv)
    try:
        prepare(args.name, args.data_dir)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
