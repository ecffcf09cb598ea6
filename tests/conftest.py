"""Shared fixtures: a fast digits config whose stage-1 cache lives in a temporary folder."""

from __future__ import annotations

import pytest
import torch

from snnconv.config import TrialConfig, apply_overrides


@pytest.fixture(autouse=True)
def _two_threads():
    """Tests run on a 2-core machine: keep torch from oversubscribing it."""
    torch.set_num_threads(2)


@pytest.fixture
def digits_config(tmp_path) -> TrialConfig:
    """Small CNN on digits, 12 quick epochs, cache in tmp_path."""
    return apply_overrides(TrialConfig(), {
        "model": "small", "data.name": "digits", "stage1.epochs": 12, "stage1.lr": 0.05,
        "cache_dir": str(tmp_path / "cache"), "device": "cpu",
    })
