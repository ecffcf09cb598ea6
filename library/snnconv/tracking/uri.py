"""Checking a tracking URI before any work starts (:func:`check_tracking_uri`: one line saying what is
wrong, before a sweep or a report begins), and resolving it (:func:`resolve_tracking_uri`)."""

from __future__ import annotations

import math
import os
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .contract import DEFAULT_TRACKING_URI, TrackingError


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``; relative SQLite paths and
    plain folders are made absolute (Ray Tune workers run in other directories)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


URI_HINT = "use a folder, sqlite:///FILE, http(s)://HOST:PORT or another scheme MLflow supports"
#: what an unreachable server's error suggests
SERVER_HINT = "start it (mlflow server ...) or pass another --tracking-uri"
#: what a missing store's error suggests (the wording of :func:`client_for`)
MISSING_HINT = "run a sweep first, or pass --tracking-uri / set MLFLOW_TRACKING_URI"
#: the page ``mlflow server`` answers with the body "OK"
HEALTH_PATH = "/health"


def check_tracking_uri(uri: str | None, *, create: bool, timeout_s: float = 10.0) -> str:
    """The resolved ``uri`` (see :func:`resolve_tracking_uri`; None = $MLFLOW_TRACKING_URI or the
    default) once it is known to be usable, else a one-line :class:`TrackingError`.

    ``create`` says whether the caller will write (a sweep: the store may be created) or only read
    (a report: the store must exist). Local stores (``sqlite:///FILE``, a folder, ``file://``) are
    checked on the file system: with ``create`` their folder must exist or be creatable and be
    writable, without it the store must exist. An ``http(s)`` server must answer ``GET /health``
    with "OK" within ``timeout_s`` seconds, and a one-row experiment search with the credentials
    MLflow would send (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, or
    ``MLFLOW_TRACKING_TOKEN``): a server with authentication that refuses them is an error. Any
    other scheme must be one MLflow knows, and its store
    must answer a one-row query within ``timeout_s`` seconds (MLflow's own retries are not waited for);
    a database (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE``, mysql, mssql) must first
    accept a connection within ``timeout_s`` seconds, else its driver's reason is the error (a refused
    port, a wrong password, a missing database; the password is shown as ``***``).
    Nothing is created but the folder of a local store when ``create`` is true.
    """
    resolved = resolve_tracking_uri(uri)
    scheme = urllib.parse.urlparse(resolved).scheme.lower()
    if scheme.split("+", 1)[0] == "sqlite":
        _check_sqlite_store(resolved, create)
    elif scheme in ("", "file"):
        _check_folder_store(resolved, create)
    elif scheme in ("http", "https"):
        _check_server(resolved, timeout_s)
        _check_credentials(resolved, timeout_s)
    else:
        if scheme.split("+", 1)[0] in DATABASE_SCHEMES:
            _check_database(resolved, scheme, timeout_s)
        _check_other_store(resolved, scheme, timeout_s)
    return resolved


def _check_sqlite_store(uri: str, create: bool) -> None:
    """A ``sqlite:///FILE`` store: writable (``create``) or existing (not ``create``)."""
    path = _sqlite_file(uri)
    if path is None:  # in memory: nothing on disk to check
        return
    if not create:
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {path} (tracking URI {uri}); {MISSING_HINT}")
        return
    problem = _unwritable_folder(path.parent) or _unwritable_file(path)
    if problem:
        raise TrackingError(f"cannot write the MLflow store at {path}: {problem}")


def _sqlite_file(uri: str) -> Path | None:
    """The absolute file of a SQLite URI (``sqlite:///relative`` or ``sqlite:////absolute``, any
    ``sqlite+driver`` and query string); None for an in-memory database."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    name = rest.split("?", 1)[0]
    if not name.startswith("/"):
        if name:
            raise TrackingError(f"tracking URI {uri}: a SQLite store is written sqlite:///FILE")
        return None
    name = name[1:]
    if name in ("", ":memory:"):
        return None
    return Path(name).resolve()


def _check_folder_store(uri: str, create: bool) -> None:
    """A folder store (a plain path or ``file://``): writable (``create``) or existing (not ``create``)."""
    parsed = urllib.parse.urlparse(uri)
    path = Path(urllib.request.url2pathname(parsed.path)).resolve()
    if not create:
        if not path.is_dir():
            raise TrackingError(f"no MLflow store at {path} (tracking URI {uri}); {MISSING_HINT}")
        return
    problem = _unwritable_folder(path)
    if problem:
        raise TrackingError(f"cannot write the MLflow store at {path}: {problem}")


def _unwritable_folder(folder: Path) -> str:
    """Why files cannot be created in ``folder`` ("" when they can): the folder is created if
    missing, then a probe file is written in it and removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder {folder} ({_reason(error)})"
    try:
        handle, probe = tempfile.mkstemp(prefix=".snnconv-probe-", dir=folder)
    except OSError as error:
        return f"cannot create files in {folder} ({_reason(error)})"
    os.close(handle)
    os.unlink(probe)
    return ""


def _unwritable_file(path: Path) -> str:
    """Why an existing ``path`` cannot be written ("" when it can, or does not exist yet)."""
    if not path.exists():
        return ""
    if not path.is_file():
        return "it is not a file"
    try:
        with open(path, "ab"):  # opened for appending, nothing written
            pass
    except OSError as error:
        return _reason(error)
    return ""


def _reason(error: OSError) -> str:
    """An ``OSError`` in a few words ("permission denied"), without its file name."""
    return (error.strerror or str(error)).lower()


def _check_server(uri: str, timeout_s: float) -> None:
    """An MLflow tracking server: ``GET <uri>/health`` must answer "OK" within ``timeout_s`` seconds."""
    shown = _hide_password(uri)
    url = uri.rstrip("/") + HEALTH_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read(64).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as error:
        raise TrackingError(f"tracking server {shown} is not an MLflow server ({HEALTH_PATH} answered HTTP "
                            f"{error.code}); {SERVER_HINT}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _unreachable(shown, error, timeout_s) from None
    if body != "OK":
        raise TrackingError(f"tracking server {shown} is not an MLflow server ({HEALTH_PATH} answered "
                            f"{body[:40]!r}, not 'OK'); {SERVER_HINT}")


#: an authenticated read that any user of an MLflow server may make
PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREDENTIALS_HINT = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the cluster's head holds them)"


def _check_credentials(uri: str, timeout_s: float) -> None:
    """A server with authentication (``mlflow server --app-name basic-auth``) must accept the
    credentials MLflow's client would send: ``MLFLOW_TRACKING_TOKEN`` (bearer) or
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic). A server without
    authentication accepts anything."""
    import base64

    shown = _hide_password(uri)
    request = urllib.request.Request(uri.rstrip("/") + PROBE_PATH)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
        who, check = "the token", "check MLFLOW_TRACKING_TOKEN"
    elif user:
        secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(secret).decode()}")
        who, check = f"the password of user {user!r}", "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    else:
        who, check = None, ""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as error:
        if error.code == 401 and who is None:
            raise TrackingError(f"tracking server {shown} asks for credentials (HTTP 401); "
                                f"{CREDENTIALS_HINT}") from None
        if error.code in (401, 403):
            raise TrackingError(f"tracking server {shown} refused {who} (HTTP {error.code}); {check}") from None
        raise TrackingError(f"tracking server {shown} answered HTTP {error.code} to an experiment search; "
                            f"{SERVER_HINT}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _unreachable(shown, error, timeout_s) from None


def _unreachable(shown: str, error: Exception, timeout_s: float) -> TrackingError:
    return TrackingError(f"tracking server {shown} is not reachable ({_network_reason(error, timeout_s)}); "
                         f"{SERVER_HINT}")


def _network_reason(error: Exception, timeout_s: float) -> str:
    """Why a request failed, in a few words ("connection refused", "no answer within 10 s")."""
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout_s:g} s"
    if isinstance(cause, socket.gaierror):
        return "unknown host"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def _hide_password(uri: str) -> str:
    """``uri`` with the password of ``user:password@host`` replaced by ``***``."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.password is None:
        return uri
    host = parsed.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{parsed.username}:***@{host}"))


def _check_other_store(uri: str, scheme: str, timeout_s: float) -> None:
    """Any other scheme: MLflow must know it, and its store must answer a one-row query in time."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    shown = _hide_password(uri)

    def query() -> None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)

    try:
        finished = _call_with_timeout(query, timeout_s)
    except UnsupportedModelRegistryStoreURIException as error:
        known = ", ".join(s for s in error.supported_uri_schemes if s)
        raise TrackingError(f"tracking URI {shown}: unknown scheme {scheme!r}; {URI_HINT} ({known})") from None
    except MlflowException as error:
        raise TrackingError(f"cannot open the MLflow store at {shown}: {_first_line(error.message)}") from None
    except Exception as error:  # a missing database driver, a refused connection, ...
        raise TrackingError(f"cannot open the MLflow store at {shown}: {type(error).__name__}: "
                            f"{_first_line(str(error))}") from None
    if not finished:
        raise TrackingError(f"the MLflow store at {shown} did not answer within {timeout_s:g} s; check it is "
                            f"running, or pass another --tracking-uri")


#: MLflow's database stores but SQLite (``mlflow.store.db.db_types``), reached through SQLAlchemy
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
DATABASE_HINT = "check its host, port, user, password and database name, or pass another --tracking-uri"
DRIVER_HINT = "for PostgreSQL write postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE (psycopg 3)"


def _check_database(uri: str, scheme: str, timeout_s: float) -> None:
    """A database store: SQLAlchemy loads its driver and opens one connection within ``timeout_s``
    seconds (the driver's connect timeout where it has one: PostgreSQL, MySQL). Unlike MLflow's
    client, which retries a refused connection for minutes, the first failure is the error."""
    import re

    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = _hide_password(uri)
    password = urllib.parse.urlsplit(uri).password

    def connect() -> None:
        # the drivers with a connect timeout (whole seconds, at least 2)
        timed = scheme.startswith(("postgresql", "mysql"))
        arguments = {"connect_timeout": max(2, math.ceil(timeout_s))} if timed else {}
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, connect_args=arguments)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    try:
        finished = _call_with_timeout(connect, timeout_s + 1)  # a second more: the driver's timeout says more
    except NoSuchModuleError:
        raise TrackingError(f"tracking URI {shown}: SQLAlchemy has no database driver {scheme!r}; "
                            f"{DRIVER_HINT}") from None
    except ImportError as error:  # the dialect is known, its driver is not installed
        raise TrackingError(f"tracking URI {shown}: its database driver is not installed ({error}); "
                            f"{DRIVER_HINT}") from None
    except ArgumentError as error:
        raise TrackingError(f"tracking URI {shown}: not a database URL ({_first_line(str(error))}); "
                            f"{DRIVER_HINT}") from None
    except Exception as error:  # the driver's own error: refused, unknown host, wrong password, no database
        # psycopg: 'connection failed: connection to server at "H", port P failed: FATAL:  <reason>'
        reason = re.sub(r"^.* failed: (?:FATAL: +)?", "", _first_line(str(getattr(error, "orig", None) or error)))
        for secret in {password or "", urllib.parse.unquote(password or "")} - {""}:
            reason = reason.replace(secret, "***")
        reason = reason[:1].lower() + reason[1:] if reason[1:2].islower() else reason
        raise TrackingError(f"cannot connect to the database {shown}: {reason}; {DATABASE_HINT}") from None
    if not finished:
        raise TrackingError(f"the database {shown} did not answer within {timeout_s:g} s; {DATABASE_HINT}")


def _call_with_timeout(function: Callable[[], None], timeout_s: float) -> bool:
    """Run ``function`` in a daemon thread; True once it returned (its exception is re-raised here),
    False if it is still running after ``timeout_s`` seconds (it is left to finish on its own)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as error:  # handed to the caller's thread
            errors.append(error)

    worker = threading.Thread(target=target, name="snnconv-check-tracking-uri", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return False
    if errors:
        raise errors[0]
    return True


def _first_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
