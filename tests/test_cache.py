"""The stage-1 cache (``snnconv.cache``): a hit returns identical weights without training, a tampered
entry is refused and retrained, a world-writable folder is warned about, two processes asking for one
key train once."""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from pathlib import Path

import pytest
import torch

from snnconv.cache import CacheWarning, Stage1Cache
from snnconv.config import apply_overrides
from snnconv.pipeline import stage1, stage1_warnings


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
