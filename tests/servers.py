"""Helpers for the tests that start servers on 127.0.0.1 (MLflow, Ray, sshd): a free port, an HTTP
status without raising, whether a port listens, and polling until something is true."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
        return True
    except OSError:
        return False


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> int:
    """The HTTP status of ``GET url``; 0 when nothing answers (yet). The timeout is long because MLflow's
    authentication app hashes the password on every request."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def wait_until(predicate: Callable[[], bool], seconds: float, poll_s: float = 0.5) -> bool:
    """Call ``predicate`` every ``poll_s`` seconds until it is true (True) or ``seconds`` pass (False)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll_s)
    return False
