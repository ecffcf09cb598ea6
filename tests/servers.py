"""Helpers for the tests that start servers on 127.0.0.1 (MLflow, Ray, sshd): a free port, an HTTP
status without raising, whether a port listens, and polling until something is true."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping


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


@contextlib.contextmanager
def serving(handler: type) -> Iterator[str]:
    """``http://127.0.0.1:PORT``: a threaded web server with request ``handler`` on a free loopback port, for the
    body of the ``with``; shut down after it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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

    def create_login(self, user: str, password: str, database: str) -> str:
        """A role ``user`` that logs in with ``password`` (scram-sha-256: this role alone; ``mlflow`` keeps
        trust) and owns a new database ``database``; its URL, password included."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=mlflow dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(user)))
            connection.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                              sql.Identifier(user)))
            hba = self.data / "pg_hba.conf"  # the first matching line counts: this role's goes first
            hba.write_text(f'host all "{user}" 127.0.0.1/32 scram-sha-256\n' + hba.read_text())
            connection.execute("SELECT pg_reload_conf()")

        def checked() -> bool:  # the reload is asynchronous: until it is done, a wrong password gets in
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user={user} password=wrong dbname={database}",
                                connect_timeout=5).close()
                return False
            except psycopg.OperationalError:
                return True

        if not wait_until(checked, 30, poll_s=0.1):
            raise RuntimeError(f"PostgreSQL on port {self.port} did not start checking {user}'s password")
        return f"postgresql+psycopg://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


#: what a tracking server answers when its database pool is exhausted (MLflow wraps SQLAlchemy's error in a 400)
POOL_TIMEOUT = {"error_code": "BAD_REQUEST",
                "message": "(sqlalchemy.exc.TimeoutError) QueuePool limit of size 5 overflow 10 reached, connection "
                           "timed out, timeout 30.00"}


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 (a thread of this process) in front of a tracking server on ``upstream_port``,
    which fails write requests (POST, PUT, PATCH, DELETE) on purpose: after :meth:`fail` ``(count, kinds, every)``
    every ``every``-th write fails until ``count`` have failed, taking the kinds in turn:

    - ``"pool"``: answered 400 with the pool-timeout error (:data:`POOL_TIMEOUT`), not forwarded;
    - ``"503"``: answered 503, not forwarded;
    - ``"lost"``: forwarded (the server carries it out), then answered 503: the client never learns it worked.

    Reads pass. ``failed`` counts the failures given by kind; ``url`` is the proxy's address."""

    def __init__(self, upstream_port: int) -> None:
        import http.server
        import threading

        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self.failed: dict[str, int] = {"pool": 0, "503": 0, "lost": 0}
        self._plan: list[str] = []
        self._every, self._writes = 1, 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                kind = proxy._next_failure() if self.command in ("POST", "PUT", "PATCH", "DELETE") else None
                if kind == "pool":
                    return self._answer(400, json.dumps(POOL_TIMEOUT).encode(), "application/json")
                if kind == "503":
                    return self._answer(503, b"Service Unavailable", "text/plain")
                status, payload, content_type = proxy._forward(self.command, self.path, self.headers, body)
                if kind == "lost":
                    return self._answer(503, b"Service Unavailable", "text/plain")
                self._answer(status, payload, content_type)

            def _answer(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        import json

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail(self, count: int, kinds: tuple[str, ...] = ("pool", "lost", "503"), every: int = 1) -> None:
        """Fail every ``every``-th write request from now on (the first one among them), ``count`` in all,
        the ``kinds`` in turn."""
        with self._lock:
            self._plan = [kinds[i % len(kinds)] for i in range(count)]
            self._every, self._writes = every, 0

    def pending(self) -> int:
        """How many planned failures have not happened yet."""
        with self._lock:
            return len(self._plan)

    def _next_failure(self) -> str | None:
        with self._lock:
            self._writes += 1
            if not self._plan or (self._writes - 1) % self._every:
                return None
            kind = self._plan.pop(0)
            self.failed[kind] += 1
            return kind

    def _forward(self, method: str, path: str, headers, body: bytes | None) -> tuple[int, bytes, str]:
        request = urllib.request.Request(self.upstream + path, data=body, method=method)
        for name in ("Content-Type", "Authorization"):
            if headers.get(name):
                request.add_header(name, headers[name])
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers.get("Content-Type", "")
        except OSError:  # the server is away: as a gateway answers
            return 502, b"Bad Gateway", "text/plain"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
