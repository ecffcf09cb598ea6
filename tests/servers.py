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


#: where Debian's ``postgresql`` package puts initdb and pg_ctl (PATH is tried first)
POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def postgres_binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl) of a local PostgreSQL installation, None when there is none."""
    import shutil

    for folder in (None, *POSTGRES_BIN_DIRS):
        initdb, pg_ctl = (shutil.which(name, path=folder) for name in ("initdb", "pg_ctl"))
        if initdb and pg_ctl:
            return initdb, pg_ctl
    return None


class PostgresCluster:
    """A throw-away PostgreSQL cluster: its data in ``folder``, listening on 127.0.0.1:``port`` only,
    trust authentication for the user ``mlflow`` on loopback. Run as a non-root user (PostgreSQL refuses
    root): when this process is root, the server runs as the ``postgres`` account (``runuser``).

    ``url(database)`` is an SQLAlchemy URL for MLflow (``postgresql+psycopg://``, psycopg 3);
    ``create_database(name)`` makes a database; ``stop()`` stops the server (fast mode). Use as a
    context manager, or call ``start()`` / ``stop()``."""

    def __init__(self, folder=None, port: int | None = None, max_connections: int = 300) -> None:
        import tempfile
        from pathlib import Path

        # None: a new folder under the system's temporary folder, removed by stop() (pytest's tmp_path is
        # no place for it when root: its parents are private to root, and the server runs as postgres)
        self._own_folder = folder is None
        folder = tempfile.mkdtemp(prefix="snnconv-pg-") if folder is None else folder
        found = postgres_binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL here (initdb, pg_ctl): apt-get install postgresql")
        self.initdb, self.pg_ctl = found
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = port or free_port()
        self.max_connections = max_connections

    def _as_owner(self, *command: str) -> list[str]:
        import os

        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def start(self) -> PostgresCluster:
        import os
        import shutil
        import subprocess

        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            subprocess.run(self._as_owner(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "mlflow",
                                          "--no-sync", "-E", "UTF8"),
                           check=True, capture_output=True, text=True)
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c max_connections={self.max_connections} "
                   f"-c fsync=off -c full_page_writes=off -c synchronous_commit=off")
        subprocess.run(self._as_owner(self.pg_ctl, "-D", str(self.data), "-o", options, "-l",
                                      str(self.folder / "server.log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True, text=True)
        return self

    def stop(self, mode: str = "fast") -> None:
        import shutil
        import subprocess

        subprocess.run(self._as_owner(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"),
                       capture_output=True, text=True)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by ``mlflow``); its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=mlflow dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
