"""Tracking calls retried with backoff while the tracking server's failure is transient.

MLflow's client retries some failures itself (HTTP 408, 429 and 5xx, and refused connections: up to
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` times, 7 by default, about 4 minutes). It does not retry what a
busy server answers when its database pool is exhausted (``400 BAD_REQUEST: QueuePool limit of size 5
overflow 10 reached, connection timed out``), and once its own retries are spent it raises. Here each
MLflow call (:class:`RetryingClient`) is repeated, with exponential backoff (1 s, 2 s, 4 s, ... at most
60 s, with jitter), until it succeeds, fails for a reason that is not transient (a missing run, a refused
password, a bad value: raised at once), or the bound ``retry_s`` passes: then :class:`TrackingUnavailable`
is raised, and the caller keeps what it could not write.

The writes retried are safe to repeat (see ``trial_record.py`` and ``tracking.start_trial``): repeating
one after a failure whose request the server did carry out writes nothing twice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: how long a tracking operation may keep failing before its caller keeps the data for later (s)
DEFAULT_RETRY_S = 600.0
#: the longest pause between two attempts (s)
MAX_DELAY_S = 60.0
#: what the server's answer says when it failed for a passing reason: its database pool was exhausted or
#: its database went away for a moment (SQLAlchemy and driver wording), or SQLite was locked
TRANSIENT_WORDS = ("QueuePool limit", "connection timed out", "database is locked", "server closed the connection",
                   "could not connect to server", "connection refused", "Connection refused", "OperationalError",
                   "terminating connection", "the database system is starting up", "Max retries exceeded",
                   "timed out", "RemoteDisconnected", "Connection aborted", "Connection reset")
#: HTTP statuses that mean "try again later"
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: MLflow error codes of the same meaning
TRANSIENT_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})

LOG = logging.getLogger("snnconv.tracking")


class TrackingUnavailable(RuntimeError):
    """The tracking server kept failing transiently for longer than the bound: what was to be written
    is kept by the caller (a trial's result: in its record, logged later)."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (raised by an MLflow client call) may pass if the call is repeated: the server or
    its database unreachable, overloaded or restarting; not a refused password, a missing run or a bad value."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                          TimeoutError)):
        return True
    if isinstance(error, requests.exceptions.HTTPError):  # an artifact upload's answer
        status = error.response.status_code if error.response is not None else 0
        if status in (401, 403, 404):
            return False
        return status in TRANSIENT_STATUSES or any(word in str(error) for word in TRANSIENT_WORDS)
    if not isinstance(error, MlflowException):
        return False
    text = str(error)
    if isinstance(error, RestException):
        status = error.get_http_status_code()
        code = getattr(error, "error_code", "")
        if status in (401, 403) or code in ("PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_DOES_NOT_EXIST"):
            return False
        return code in TRANSIENT_CODES or status in TRANSIENT_STATUSES or any(w in text for w in TRANSIENT_WORDS)
    # no JSON answer: a request that failed underway, or a status MLflow's own retries gave up on
    return ("API request to" in text and ("failed with exception" in text or "failed with timeout" in text)) or \
        any(f"error code {status}" in text for status in TRANSIENT_STATUSES) or \
        any(word in text for word in TRANSIENT_WORDS)


def with_retries(operation: Callable[[], T], *, retry_s: float, what: str,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``operation()``, repeated with backoff while it fails transiently (:func:`is_transient`), for at most
    ``retry_s`` seconds from the first attempt (an attempt under way when the bound passes is finished,
    with MLflow's own retries); then :class:`TrackingUnavailable`. ``what`` names the operation in the
    warning each retry logs and in the error. A failure that is not transient is raised at once."""
    deadline = time.monotonic() + retry_s
    delay, attempt = 1.0, 1
    while True:
        try:
            return operation()
        except Exception as error:
            if not is_transient(error):
                raise
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            pause = min(delay, MAX_DELAY_S) * random.uniform(0.5, 1.0)
            if time.monotonic() + pause > deadline:
                raise TrackingUnavailable(f"{what}: the tracking server kept failing for {retry_s:.0f} s "
                                          f"({attempt} attempts); last: {first}") from error
            LOG.warning("tracking: %s failed (%s); attempt %d again in %.1f s", what, first, attempt + 1, pause)
            sleep(pause)
            delay, attempt = delay * 2, attempt + 1


class RetryingClient:
    """An ``MlflowClient`` whose every method call is retried by :func:`with_retries` (bound ``retry_s``, s):
    ``RetryingClient(MlflowClient(uri), 600).log_batch(...)``. Each call is retried on its own, so a long
    upload that meets a few failures along the way waits a few seconds for each, not ever longer pauses.

    Calls that create something (a run, a logged model) may create it twice when the server carried out a
    request whose answer was lost and MLflow's client sent it again; their callers look for such doubles
    after creating and delete them (``tracking.start_trial``, ``trial_record``)."""

    def __init__(self, client: Any, retry_s: float) -> None:
        self._client, self.retry_s = client, retry_s

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return with_retries(lambda: attribute(*args, **kwargs), retry_s=self.retry_s, what=f"MLflow {name}")

        return call
