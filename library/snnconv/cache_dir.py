"""Where the stage-1 cache lives by default. No torch here: the sweep's driver and a Ray worker that
is only asked for this folder import this module, not :mod:`snnconv.cache`."""

from __future__ import annotations

import os
from pathlib import Path

#: the environment variable naming the cache folder (set on every node of a cluster)
ENV_VAR = "SNNCONV_CACHE"


def default_cache_dir() -> Path:
    """``$SNNCONV_CACHE`` if set, else ``~/.cache/snnconv/stage1``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "snnconv" / "stage1")


def node_cache_dir() -> tuple[str, str]:
    """This process's default cache folder (absolute) and its machine's name: what a Ray task run on
    a node reports about that node."""
    return str(default_cache_dir().resolve()), os.uname().nodename
