"""Pretrained (stage-1) ANN cache, keyed by a stable hash of everything that determines the weights.

Stage 1 dominates a trial's cost and does not depend on the stage-2 knobs a sweep varies, so a
sweep trains it once per key and every other trial loads it. The cache is a folder (local, or a
shared file system that every Ray node mounts):

    <root>/<key>.pt     {"state_dict": ..., "meta": {...}}   (torch.save; loaded weights_only)
    <root>/<key>.json   the same metadata, readable by people
    <root>/<key>.lock   a file lock: two processes asking for one key train it once

Writes go to a temporary file in the same folder and are renamed into place, so a reader never
sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

#: bump when a change to the code would change the weights stage 1 produces for one key
CACHE_FORMAT = 1

ENV_VAR = "SNNCONV_CACHE"


def default_cache_dir() -> Path:
    """``$SNNCONV_CACHE`` if set, else ``~/.cache/snnconv/stage1``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "snnconv" / "stage1")


def stable_hash(payload: Mapping[str, Any], length: int = 16) -> str:
    """A hex digest of the canonical JSON of ``payload`` (key order does not matter)."""
    text = json.dumps({"format": CACHE_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass
class CacheEntry:
    """A state dict from the cache, its metadata, and whether it was a hit."""

    key: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    hit: bool


class Stage1Cache:
    """Get-or-train stage-1 weights under a key, safely across processes and nodes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def contains(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> CacheEntry:
        """Load an existing entry (raises FileNotFoundError if absent)."""
        payload = torch.load(self.path(key), map_location="cpu", weights_only=True)
        return CacheEntry(key, self.path(key), payload["state_dict"], payload["meta"], hit=True)

    def store(self, key: str, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        """Write an entry atomically (temporary file + rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
        target = self.path(key)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=f".{key}.", suffix=".tmp", delete=False) as tmp:
            torch.save({"state_dict": state, "meta": dict(meta)}, tmp)
            tmp_name = tmp.name
        os.replace(tmp_name, target)
        meta_text = json.dumps(dict(meta), indent=2, sort_keys=True, default=str)
        with tempfile.NamedTemporaryFile("w", dir=self.root, suffix=".tmp", delete=False) as tmp:
            tmp.write(meta_text)
            tmp_name = tmp.name
        os.replace(tmp_name, self.root / f"{key}.json")
        return target

    def get_or_train(
        self, key: str, train: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]]
    ) -> CacheEntry:
        """Load ``key``, or call ``train() -> (state_dict, meta)`` once and store its result.

        Concurrent callers with the same key wait on a file lock; only the first trains.
        """
        if self.contains(key):
            return self.load(key)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{key}.lock")):
            if self.contains(key):
                return self.load(key)
            state_dict, meta = train()
            path = self.store(key, state_dict, meta)
        return CacheEntry(key, path, dict(state_dict), dict(meta), hit=False)
