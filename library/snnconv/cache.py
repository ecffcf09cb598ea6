"""Pretrained (stage-1) ANN cache, keyed by a stable hash of everything that determines the weights.

Stage 1 dominates a trial's cost and does not depend on the stage-2 knobs a sweep varies, so a
sweep trains it once per key and every other trial loads it. The cache is a folder (local, or a
shared file system that every Ray node mounts):

    <root>/<key>.pt     {"state_dict": ..., "meta": {...}}   (torch.save; loaded weights_only)
    <root>/<key>.json   the same metadata, readable by people
    <root>/<key>.lock   a file lock: two processes asking for one key train it once

Writes go to a temporary file in the same folder and are renamed into place, so a reader never
sees a partial file.

An entry is trusted only if it records its own key (the one in its file name) and, when the caller
gives a check, its tensors fit the model (same names, shapes and dtypes). Anything else is refused:
a warning names it, the file is set aside as ``<key>.pt.refused`` and stage 1 is trained again.
The folder is created writable by its owner and group only; a world-writable folder gets a warning,
since anyone could then replace a network that later trials load.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from filelock import FileLock

from .cache_dir import ENV_VAR, default_cache_dir
from .cache_key import stable_hash

#: bump when a change to the code would change the weights stage 1 produces for one key

__all__ = ["ENV_VAR", "CacheEntry", "CacheEntryRefused", "CacheWarning", "Stage1Cache", "check_fits",
           "default_cache_dir", "stable_hash"]


@dataclass
class CacheEntry:
    """A state dict from the cache, its metadata, whether it was a hit, and why an entry found
    under the key was refused (None when none was)."""

    key: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    hit: bool
    refused: str | None = None


class CacheEntryRefused(ValueError):
    """A cache entry that must not be used (the message says which file and why)."""


class CacheWarning(UserWarning):
    """A refused entry (retrained) or a cache folder anyone may write."""


#: ``check(state_dict)`` raises :class:`CacheEntryRefused` when the tensors do not fit the model
EntryCheck = Callable[[Mapping[str, torch.Tensor]], None]


def check_fits(reference: Mapping[str, torch.Tensor]) -> EntryCheck:
    """A check that a cached state dict has exactly ``reference``'s names, shapes and dtypes."""

    def check(state_dict: Mapping[str, torch.Tensor]) -> None:
        missing, extra = sorted(set(reference) - set(state_dict)), sorted(set(state_dict) - set(reference))
        if missing or extra:
            raise CacheEntryRefused(f"its tensors are not the model's (missing {missing[:3]}, unexpected {extra[:3]})")
        for name, tensor in reference.items():
            cached = state_dict[name]
            if not isinstance(cached, torch.Tensor) or cached.shape != tensor.shape or cached.dtype != tensor.dtype:
                got = (tuple(cached.shape), cached.dtype) if isinstance(cached, torch.Tensor) else type(cached).__name__
                raise CacheEntryRefused(f"its tensor {name!r} is {got}, the model's is "
                                        f"{(tuple(tensor.shape), tensor.dtype)}")

    return check


class Stage1Cache:
    """Get-or-train stage-1 weights under a key, safely across processes and nodes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def contains(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str, check: EntryCheck | None = None) -> CacheEntry:
        """Load an existing entry (FileNotFoundError if absent); :class:`CacheEntryRefused` when it
        does not record ``key`` as its key or ``check`` refuses its tensors. Loading unpickles
        tensors only (``weights_only``), so a refused file runs no code."""
        path = self.path(key)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 - any unreadable file is refused the same way
            raise CacheEntryRefused(f"stage-1 cache entry {path} cannot be read ({type(error).__name__})") from None
        meta = payload.get("meta") if isinstance(payload, dict) else None
        recorded = meta.get("key") if isinstance(meta, dict) else None
        if recorded != key:
            raise CacheEntryRefused(f"stage-1 cache entry {path} records the key {recorded!r}, not its file "
                                    f"name's {key!r}")
        state_dict = payload.get("state_dict")
        if not isinstance(state_dict, dict):
            raise CacheEntryRefused(f"stage-1 cache entry {path} holds no state dict")
        if check is not None:
            try:
                check(state_dict)
            except CacheEntryRefused as error:
                raise CacheEntryRefused(f"stage-1 cache entry {path}: {error}") from None
        # meta is a dict: it recorded this key
        return CacheEntry(key, path, state_dict, cast(dict[str, Any], meta), hit=True)

    def _make_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o770)
        if self.root.stat().st_mode & stat.S_IWOTH:
            warnings.warn(f"the stage-1 cache folder {self.root} is writable by every user: anyone could replace "
                          f"a cached network that later trials load; make it writable by your user or group only "
                          f"(chmod o-w {self.root})", CacheWarning, stacklevel=3)

    def store(self, key: str, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        """Write an entry atomically (temporary file + rename); its metadata records ``key``."""
        self._make_root()
        state = {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
        meta = {**meta, "key": key}
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
        self, key: str, train: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]],
        check: EntryCheck | None = None,
    ) -> CacheEntry:
        """Load ``key``, or call ``train() -> (state_dict, meta)`` once and store its result.

        Concurrent callers with the same key wait on a file lock; only the first trains. An entry
        that :meth:`load` refuses is set aside (``<key>.pt.refused``) with a :class:`CacheWarning`
        and trained again; the returned entry says why in ``refused``.
        """
        if self.contains(key):
            try:
                return self.load(key, check)
            except CacheEntryRefused:
                pass  # decided again under the lock
        self._make_root()
        refused = None
        with FileLock(str(self.root / f"{key}.lock")):
            if self.contains(key):
                try:
                    return self.load(key, check)
                except CacheEntryRefused as error:
                    refused = str(error)
                    warnings.warn(f"{refused}: refused, set aside as {key}.pt.refused, training stage 1 again",
                                  CacheWarning, stacklevel=2)
                    os.replace(self.path(key), self.root / f"{key}.pt.refused")
            state_dict, meta = train()
            path = self.store(key, state_dict, meta)
        return CacheEntry(key, path, dict(state_dict), {**meta, "key": key}, hit=False, refused=refused)
