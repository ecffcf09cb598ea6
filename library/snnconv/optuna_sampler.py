"""The sweep's Optuna sampler: NSGA-II that Ray Tune can pickle, whatever Optuna release holds it.

Ray Tune pickles its search algorithm (to send it to the Tune controller and to save it for
``--resume``), and with it the Optuna sampler. Optuna 5.1 gave its genetic samplers a
``threading.Lock`` (``_thread_lock``), which cannot be pickled, so a plain
:class:`optuna.samplers.NSGAIISampler` stops every Optuna sweep before its first trial
(``TypeError: cannot pickle '_thread.lock' object``). :class:`PicklableNSGAIISampler` leaves the
locks out of its pickled state and makes new, unlocked ones when it is unpickled; with a release
that holds no lock (Optuna 5.0 and earlier) it pickles as NSGA-II always did.

A glue module: it imports Optuna, and only the sweep imports it.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

__all__ = ["PicklableNSGAIISampler"]

#: the lock types a sampler may hold -> the factory that makes a new one after unpickling
_LOCK_FACTORIES: dict[type, Any] = {
    type(threading.Lock()): threading.Lock,
    type(threading.RLock()): threading.RLock,
}
#: the key under which the pickled state lists the attributes that held a lock, with their kind
_DROPPED_LOCKS = "_snnconv_dropped_locks"


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """:class:`optuna.samplers.NSGAIISampler` (same arguments, same draws) that pickles.

    Every attribute holding a lock is left out of the pickled state and gets a new lock when the
    sampler is unpickled; a lock guards one process's threads, so a held lock has no meaning in
    another process. Everything else (population, seed, random state, caches) pickles unchanged.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        dropped = {}
        for name, value in self.__dict__.items():
            for lock_type in _LOCK_FACTORIES:
                if isinstance(value, lock_type):
                    dropped[name] = lock_type.__name__
                    del state[name]
        state[_DROPPED_LOCKS] = dropped
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        dropped = state.pop(_DROPPED_LOCKS, {})
        self.__dict__.update(state)
        factories = {lock_type.__name__: factory for lock_type, factory in _LOCK_FACTORIES.items()}
        for name, kind in dropped.items():
            setattr(self, name, factories[kind]())
