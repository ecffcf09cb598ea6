"""The stage-1 cache key: a stable hash of everything that determines a stage-1 network's weights.

The sweep's driver computes the keys of the networks it trains before the trials
(``snnconv.sweep_stage1.stage1_plan``); the activation part of a key comes from the trial's method
(its registry entry's ``stage1_activation``). :mod:`snnconv.cache` stores entries under these keys and
:mod:`snnconv.trial` trains them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .config import TrialConfig
from .method_registry import get_method

__all__ = ["CACHE_FORMAT", "stable_hash", "stage1_key"]

#: the cache's entry format, part of every key (a new format never reads an old entry)
CACHE_FORMAT = 1


def stable_hash(payload: Mapping[str, Any], length: int = 16) -> str:
    """A hex digest of the canonical JSON of ``payload`` (key order does not matter)."""
    text = json.dumps({"format": CACHE_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stage1_key(config: TrialConfig) -> str:
    """Hash of everything that determines the stage-1 weights (not the stage-2 knobs): the data, the model, the
    stage-1 recipe, the seed, and the activation the trial's method trains with (its ``stage1_activation``,
    so methods that train the same network share it)."""
    data = config.data
    data_fields = {"name": data.name, "batch_size": data.batch_size, "val_size": data.val_size,
                   "augment": data.augment, "cutout": data.cutout, "split_seed": data.split_seed}
    if data.name == "synthetic":
        data_fields.update(num_classes=data.num_classes, channels=data.channels, image_size=data.image_size,
                           num_train=data.num_train, num_val=data.num_val, num_test=data.num_test)
    activation = get_method(config.method).stage1_activation(config)
    stage1_fields = dataclasses.asdict(config.stage1)
    if not stage1_fields["amp_on_cpu"]:  # added later: off, it leaves the keys of existing entries as they were
        del stage1_fields["amp_on_cpu"]
    return stable_hash({
        "model": config.model, "dropout": config.dropout, "data": data_fields, "activation": activation,
        "stage1": stage1_fields, "seed": config.seed,
    })
