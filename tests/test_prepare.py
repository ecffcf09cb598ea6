"""``python -m snnconv.data prepare`` downloads and verifies data sets once; trials never download.

No network: a tiny CIFAR-10 folder in torchvision's layout is fabricated, and the expected md5s and split
sizes are injected through a :class:`~snnconv.prepare.CifarSpec` (a subclass of torchvision's CIFAR10 that
lists the fabricated files' checksums), so torchvision's own integrity check and loader run on it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from torchvision import datasets

from snnconv.config import ConfigError, DataConfig, TrialConfig, apply_overrides
from snnconv.data import load_data
from snnconv.prepare import LOCK_NAME, CifarSpec, PrepareError, check_imagenet, data_root, main, prepare_cifar

ROOT = Path(__file__).resolve().parents[1]
FOLDER = datasets.CIFAR10.base_folder
#: images per fabricated training batch (5 batches) and in the test batch
PER_BATCH, TEST_SIZE = 20, 30


def fake_cifar10_files() -> dict[str, bytes]:
    """File name -> content of a tiny CIFAR-10 in torchvision's layout (same bytes on every call)."""
    rng = np.random.default_rng(0)

    def batch(count: int) -> bytes:
        labels = [i % 10 for i in range(count)]
        return pickle.dumps({"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "labels": labels})

    files = {f"data_batch_{i}": batch(PER_BATCH) for i in range(1, 6)}
    files["test_batch"] = batch(TEST_SIZE)
    files["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    return files


def fake_spec(**sizes: int) -> CifarSpec:
    """A CifarSpec whose torchvision class lists the md5s of :func:`fake_cifar10_files`."""
    md5 = {name: hashlib.md5(content).hexdigest() for name, content in fake_cifar10_files().items()}
    dataset = type("TinyCIFAR10", (datasets.CIFAR10,), {
        "train_list": [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)],
        "test_list": [["test_batch", md5["test_batch"]]],
        "meta": {**datasets.CIFAR10.meta, "md5": md5["batches.meta"]},
    })
    return CifarSpec("cifar10", dataset, 10, **{"train_size": 5 * PER_BATCH, "test_size": TEST_SIZE, **sizes})


def write_fake(root: Path) -> None:
    """Fabricate the tiny CIFAR-10 under ``root`` (what a download and extraction would leave)."""
    (root / FOLDER).mkdir(parents=True, exist_ok=True)
    for name, content in fake_cifar10_files().items():
        (root / FOLDER / name).write_bytes(content)


class CountingDownload:
    """A download function that fabricates the files (after ``delay`` seconds) and counts its calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls, self.delay = 0, delay

    def __call__(self, spec: CifarSpec, root: Path) -> None:
        self.calls += 1
        time.sleep(self.delay)
        write_fake(root)


def no_download(spec: CifarSpec, root: Path) -> None:
    pytest.fail(f"prepare tried to download {spec.name} into {root}")


def run_command(*args: str) -> subprocess.CompletedProcess:
    """``python -m snnconv.data`` in a fresh interpreter, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'library'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snnconv.data", *args], capture_output=True, text=True,
                          env=env, timeout=120)


# ------------------------------------------------------------------ CIFAR: download, verify, idempotent

def test_prepare_downloads_verifies_and_says_what_it_did(tmp_path, capsys):
    download = CountingDownload()
    done = prepare_cifar(fake_spec(), tmp_path / "data", download=download)
    lines = capsys.readouterr().out.splitlines()
    root = (tmp_path / "data").resolve()
    assert download.calls == 1 and done.downloaded and not done.already_prepared
    assert done.root == root and done.files_verified == 7
    assert done.sizes == {"train": 100, "test": 30, "classes": 10}
    assert lines[0] == f"cifar10: downloaded 7 missing files into {root}"
    assert lines[1] == f"cifar10: verified 7 files (md5) in {root / FOLDER}"
    assert lines[2] == "cifar10: split sizes train 100, test 30 images, 10 classes"
    assert (root / LOCK_NAME).exists() and (root / ".snnconv-prepared-cifar10.json").is_file()


def test_a_second_run_downloads_nothing_and_says_already_prepared(tmp_path, capsys):
    write_fake(tmp_path)  # put there by hand: verified without a download
    first = prepare_cifar(fake_spec(), tmp_path, download=no_download)
    assert not first.downloaded and not first.already_prepared
    assert "split sizes train 100, test 30 images, 10 classes" in capsys.readouterr().out
    second = prepare_cifar(fake_spec(), tmp_path, download=no_download)
    lines = capsys.readouterr().out.splitlines()
    assert second.already_prepared and not second.downloaded and second.sizes == first.sizes
    assert lines == [f"cifar10: verified 7 files (md5) in {tmp_path.resolve() / FOLDER}",
                     f"cifar10: already prepared in {tmp_path.resolve()}; nothing downloaded"]


def test_a_missing_file_is_downloaded_again(tmp_path, capsys):
    write_fake(tmp_path)
    prepare_cifar(fake_spec(), tmp_path, download=no_download)
    (tmp_path / FOLDER / "test_batch").unlink()
    download = CountingDownload()
    done = prepare_cifar(fake_spec(), tmp_path, download=download)
    assert download.calls == 1 and done.downloaded and not done.already_prepared
    assert "cifar10: downloaded 1 missing files" in capsys.readouterr().out


def test_a_file_corrupted_after_preparing_is_refused_not_downloaded_over(tmp_path):
    write_fake(tmp_path)
    prepare_cifar(fake_spec(), tmp_path, download=no_download)
    batch = tmp_path / FOLDER / "data_batch_1"
    content = bytearray(batch.read_bytes())
    content[100:104] = bytes(255 - b for b in content[100:104])
    batch.write_bytes(bytes(content))
    with pytest.raises(PrepareError, match=r"data_batch_1 is corrupt .*; delete it and rerun"):
        prepare_cifar(fake_spec(), tmp_path, download=no_download)
    assert batch.read_bytes() == bytes(content)


def test_wrong_split_sizes_are_refused(tmp_path):
    write_fake(tmp_path)
    with pytest.raises(PrepareError, match=r"expected \{'train': 50000, 'test': 10000, 'classes': 10\}"):
        prepare_cifar(fake_spec(train_size=50000, test_size=10000), tmp_path, download=no_download)
    assert not (tmp_path / ".snnconv-prepared-cifar10.json").exists()


def test_two_concurrent_calls_download_once(tmp_path, capsys):
    download = CountingDownload(delay=0.5)
    results, errors = [], []
    start = threading.Barrier(2)

    def call() -> None:
        start.wait()
        try:
            results.append(prepare_cifar(fake_spec(), tmp_path / "shared", download=download))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 2
    assert download.calls == 1
    assert sorted((r.downloaded, r.already_prepared) for r in results) == [(False, True), (True, False)]


def test_the_data_dir_is_made_absolute_with_home_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root("~/cifar") == tmp_path.resolve() / "cifar"
    monkeypatch.chdir(tmp_path)
    assert data_root("relative") == tmp_path.resolve() / "relative"


# ------------------------------------------------------------------ the command line

def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_command_refuses_a_corrupt_cifar_file_before_downloading(tmp_path):
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / "data_batch_1").write_bytes(b"not a CIFAR batch")
    done = run_command("prepare", "cifar10", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert str(tmp_path / FOLDER / "data_batch_1") in line and "delete it and rerun" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([FOLDER, LOCK_NAME])  # no archive fetched


def test_command_refuses_an_unknown_name_with_one_error_line(tmp_path):
    done = run_command("prepare", "svhn", "--data-dir", str(tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert one_error_line(done.stderr) == ("error: unknown data set 'svhn'; allowed: mnist, fashion-mnist, cifar10, "
                                           "cifar100, imagenet")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case, message", [
    ("file as dir", "is a file, not a folder"),
    ("imagenet without val", "has no val/ folder"),
    ("missing --data-dir", "the following arguments are required: --data-dir"),
    ("no command", "the following arguments are required: command"),
])
def test_bad_input_is_one_error_line_and_status_2(tmp_path, capsys, case, message):
    data_dir = tmp_path / "data"
    argv = ["prepare", "cifar10", "--data-dir", str(data_dir)]
    if case == "file as dir":
        data_dir.write_text("a file")
    elif case == "imagenet without val":
        argv[1] = "imagenet"
        (data_dir / "train" / "cat").mkdir(parents=True)
    else:
        argv = argv[:2] if case == "missing --data-dir" else []
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    output = capsys.readouterr()
    assert status == 2 and output.out == ""
    assert message in one_error_line(output.err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_data_dir_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["prepare", "cifar10", "--data-dir", str(locked)]) == 2
    finally:
        locked.chmod(0o700)
    assert "cannot be written" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ ImageNet: checked, never downloaded

def image_folder(root: Path, classes: dict[str, tuple[str, ...]], images: int = 2) -> Path:
    """``root/<split>/<class>/<i>.png``: tiny PNGs for each split and its classes."""
    from PIL import Image

    for split, names in classes.items():
        for name in names:
            (root / split / name).mkdir(parents=True)
            for i in range(images):
                Image.new("RGB", (8, 6), (i * 60, 20, 200)).save(root / split / name / f"{i}.png")
    return root


def test_a_good_imagenet_folder_is_counted(tmp_path, capsys):
    root = image_folder(tmp_path, {"train": ("cat", "dog", "fox"), "val": ("cat", "dog", "fox")}, images=3)
    done = check_imagenet(root)
    assert done.sizes == {"train": 9, "val": 9, "classes": 3} and not done.downloaded
    assert capsys.readouterr().out.splitlines() == [
        "imagenet: train/ holds 9 images in 3 classes",
        "imagenet: val/ holds 9 images in 3 classes",
        f"imagenet: train/ and val/ have the same 3 classes; use data.data_dir: {root.resolve()}",
    ]
    assert main(["prepare", "imagenet", "--data-dir", str(root)]) == 0


@pytest.mark.parametrize("classes, message", [
    ({"train": ("cat", "dog")}, "has no val/ folder"),
    ({"train": ("cat",), "val": ("cat",)}, "at least 2 are needed"),
    ({"train": ("cat", "dog"), "val": ("cat", "emu")}, "different classes (e.g. dog, emu)"),
])
def test_a_bad_imagenet_folder_is_refused(tmp_path, classes, message):
    with pytest.raises(PrepareError) as error:
        check_imagenet(image_folder(tmp_path, classes))
    assert message in str(error.value)


def test_an_empty_imagenet_class_folder_is_refused(tmp_path):
    root = image_folder(tmp_path, {"train": ("cat", "dog"), "val": ("cat", "dog")})
    for image in (root / "val" / "dog").iterdir():
        image.unlink()
    with pytest.raises(PrepareError, match="val"):
        check_imagenet(root)


# ------------------------------------------------------------------ trials never download

@pytest.mark.parametrize("corrupt", [False, True])
def test_load_data_names_the_prepare_command_when_cifar_is_missing_or_corrupt(tmp_path, corrupt):
    if corrupt:
        write_fake(tmp_path)  # checksums differ from the real CIFAR-10's
    config = DataConfig(name="cifar10", data_dir=str(tmp_path), num_workers=0)
    with pytest.raises(ConfigError) as error:
        load_data(config)
    assert f"run `python -m snnconv.data prepare cifar10 --data-dir {tmp_path}`" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([FOLDER] if corrupt else [])  # nothing downloaded


def test_data_download_true_is_refused_by_validation(tmp_path):
    with pytest.raises(ConfigError) as error:
        apply_overrides(TrialConfig(), {"data.name": "cifar10", "data.data_dir": str(tmp_path),
                                        "data.download": True})
    assert str(error.value).startswith("data.download: must be false")
    assert "python -m snnconv.data prepare cifar10 --data-dir DIR" in str(error.value)
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=f"prepare it with `python -m snnconv.data prepare cifar10 --data-dir "
                                          f"{missing}`"):
        apply_overrides(TrialConfig(), {"data.name": "cifar10", "data.data_dir": str(missing)})
