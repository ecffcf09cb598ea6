"""``tracking.check_tracking_uri`` on real stores: files and folders on disk, a refused port, a web
server that is not MLflow, and a real ``mlflow server`` (all servers on 127.0.0.1 only).

Every failure must be one short line naming the problem; nothing is mocked.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from snnconv import tracking
from tests.servers import free_port, serving

HOST = "127.0.0.1"


def check_fails(uri: str, create: bool, start: str, **kwargs: float) -> str:
    """The one-line TrackingError of ``check_tracking_uri``; it must start with ``start``."""
    with pytest.raises(tracking.TrackingError) as caught:
        tracking.check_tracking_uri(uri, create=create, **kwargs)
    message = str(caught.value)
    assert message.startswith(start), message
    assert "\n" not in message and len(message) < 400, message
    return message


def wait_for_health(url: str, process: subprocess.Popen, deadline_s: float) -> None:
    """Poll ``url`` until it answers "OK"; fails if ``process`` exits or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert process.poll() is None, f"mlflow server exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.read().decode().strip() == "OK":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url} within {deadline_s} s")


def stop_group(process: subprocess.Popen) -> None:
    """End ``process`` and its children (its own process group): SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture
def not_mlflow() -> Iterator[str]:
    """A plain web server on 127.0.0.1 that answers every path with 404."""
    with serving(QuietHandler) as url:
        yield url


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """404 for everything, no request log on stderr."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# schemes


def test_unknown_scheme_is_one_line_naming_the_known_ones():
    message = check_fails("bogus://x", False, "tracking URI bogus://x: unknown scheme 'bogus'; use a folder, "
                                              "sqlite:///FILE, http(s)://HOST:PORT or another scheme MLflow supports (")
    assert "sqlite" in message and "http" in message and "Traceback" not in message
    check_fails("bogus://x", True, "tracking URI bogus://x: unknown scheme 'bogus'")


# ---------------------------------------------------------------------------------------------
# SQLite


def test_sqlite_in_an_impossible_folder_cannot_be_written():
    message = check_fails("sqlite:////proc/x/mlflow.db", True, "cannot write the MLflow store at /proc/x/mlflow.db: ")
    assert "/proc/x" in message and not Path("/proc/x").exists()


def test_sqlite_under_a_file_cannot_be_written(tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    check_fails(f"sqlite:///{tmp_path}/plain/mlflow.db", True,
                f"cannot write the MLflow store at {tmp_path}/plain/mlflow.db: cannot create the folder")


def test_missing_sqlite_file_is_refused_when_reading(tmp_path):
    path = tmp_path / "none" / "mlflow.db"
    check_fails(f"sqlite:///{path}", False, f"no MLflow store at {path} (tracking URI sqlite:///{path}); run a "
                                            f"sweep first")
    assert not path.parent.exists()


def test_sqlite_passes_when_writable_or_present(tmp_path, monkeypatch):
    path = tmp_path / "new" / "deeper" / "mlflow.db"
    assert tracking.check_tracking_uri(f"sqlite:///{path}", create=True) == f"sqlite:///{path}"
    assert path.parent.is_dir() and not list(path.parent.iterdir())  # the folder, no store, no probe left
    path.write_bytes(b"")
    assert tracking.check_tracking_uri(f"sqlite:///{path}", create=False) == f"sqlite:///{path}"
    monkeypatch.chdir(tmp_path)
    assert tracking.check_tracking_uri("sqlite:///new/deeper/mlflow.db", create=False) == f"sqlite:///{path}"


# ---------------------------------------------------------------------------------------------
# folders


def test_folder_store_checks_writability_or_existence(tmp_path, monkeypatch):
    check_fails("/proc/x/store", True, "cannot write the MLflow store at /proc/x/store: ")
    check_fails("file:///proc/x/store", True, "cannot write the MLflow store at /proc/x/store: ")
    missing = tmp_path / "mlruns"
    check_fails(str(missing), False, f"no MLflow store at {missing} (tracking URI {missing.as_uri()})")
    assert not missing.exists()
    monkeypatch.chdir(tmp_path)
    assert tracking.check_tracking_uri("mlruns", create=True) == missing.as_uri()
    assert missing.is_dir() and not list(missing.iterdir())
    assert tracking.check_tracking_uri(missing.as_uri(), create=False) == missing.as_uri()


# ---------------------------------------------------------------------------------------------
# servers


def test_nothing_listening_fails_fast():
    uri = f"http://{HOST}:{free_port()}"
    start = time.monotonic()
    check_fails(uri, False, f"tracking server {uri} is not reachable (connection refused); start it "
                            f"(mlflow server ...) or pass another --tracking-uri")
    assert time.monotonic() - start < 5


def test_a_web_server_that_is_not_mlflow(not_mlflow):
    check_fails(not_mlflow, True, f"tracking server {not_mlflow} is not an MLflow server (/health answered HTTP 404)",
                timeout_s=5.0)


@pytest.mark.slow
def test_a_real_mlflow_server_passes(tmp_path):
    port = free_port()
    uri = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{tmp_path / 'db'}"]
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_health(uri + "/health", process, deadline_s=120)
        assert tracking.check_tracking_uri(uri, create=False, timeout_s=5.0) == uri
        assert tracking.check_tracking_uri(uri + "/", create=True, timeout_s=5.0) == uri + "/"
    finally:
        stop_group(process)


@pytest.mark.slow  # an MLflow server with its authentication app: 15-30 s to start
def test_a_server_with_authentication_refuses_missing_or_wrong_credentials(tmp_path, monkeypatch):
    """``mlflow server --app-name basic-auth`` (MLflow's authentication app): a sweep or a report
    without credentials, or with a wrong password, is one line and exit status 2 before any work;
    with the right ones the check passes."""
    port, password = free_port(), "a-long-test-password-7"
    uri = f"http://{HOST}:{port}"
    (tmp_path / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-secret-key"}
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", HOST,
               "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'db'}"]
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_health(uri + "/health", process, deadline_s=120)
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        check_fails(uri, True, f"tracking server {uri} asks for credentials (HTTP 401); set "
                               "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        check_fails(uri, False, f"tracking server {uri} refused the password of user 'admin' (HTTP 401); check "
                                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        root = Path(__file__).resolve().parents[1]
        bad = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
        for script in (["sweeps/lambda_sweep.py"], ["analysis/pareto.py"]):
            run = subprocess.run([sys.executable, str(root / script[0]), "--tracking-uri", uri], cwd=tmp_path,
                                 env=bad, capture_output=True, text=True, timeout=120)
            assert run.returncode == 2 and run.stderr.count("\n") == 1, (script, run.stderr[-2000:])
            assert run.stderr.startswith(f"error: tracking server {uri} asks for credentials (HTTP 401)")
        assert not (tmp_path / "ray_results").exists()
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        assert tracking.check_tracking_uri(uri, create=True, timeout_s=5.0) == uri
    finally:
        stop_group(process)


# ---------------------------------------------------------------------------------------------
# databases: PostgreSQL (the session's `postgres` fixture, tests/servers.py)

#: a password no message may show
SECRET = "pw-secret-9"


def test_a_database_nothing_listens_on_is_one_line_at_once():
    port = free_port()
    start = time.monotonic()
    message = check_fails(f"postgresql+psycopg://alice:{SECRET}@{HOST}:{port}/sweeps", True,
                          f"cannot connect to the database postgresql+psycopg://alice:***@{HOST}:{port}/sweeps: "
                          "connection refused; check its host, port, user, password and database name")
    assert SECRET not in message and time.monotonic() - start < 5


def test_a_mistyped_database_scheme_or_driver_is_one_line():
    message = check_fails(f"postgress://alice:{SECRET}@{HOST}:5432/sweeps", True,
                          f"tracking URI postgress://alice:***@{HOST}:5432/sweeps: unknown scheme 'postgress'")
    assert "postgresql" in message and SECRET not in message
    message = check_fails(f"postgresql+psycopgg://alice:{SECRET}@{HOST}:5432/sweeps", True,
                          f"tracking URI postgresql+psycopgg://alice:***@{HOST}:5432/sweeps: SQLAlchemy has no "
                          "database driver 'postgresql+psycopgg'; for PostgreSQL write "
                          "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE")
    assert SECRET not in message


@pytest.mark.slow  # the session's PostgreSQL: a few seconds to start, once
def test_a_database_refuses_a_wrong_password_or_database_name(postgres):
    url = postgres.create_login("alice", SECRET, "sweeps")
    shown = url.replace(SECRET, "***")
    check_fails(url.replace(SECRET, "wrong"), True,
                f'cannot connect to the database {shown}: password authentication failed for user "alice"; ')
    check_fails(url.replace("/sweeps", "/nope"), False,
                f'cannot connect to the database {shown[:-len("sweeps")]}nope: database "nope" does not exist; ')
    assert tracking.check_tracking_uri(url, create=True) == url  # MLflow's tables are made in the new database
    assert tracking.check_tracking_uri(url, create=False) == url


@pytest.mark.slow  # three sweep processes (imports: a few seconds each)
def test_the_sweep_refuses_a_bad_database_in_one_line_before_ray_starts(postgres, tmp_path):
    url = postgres.create_login("bob", SECRET, "bobs")
    root = Path(__file__).resolve().parents[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "RAY_"))}
    bad = {url.replace(SECRET, "wrong"): 'password authentication failed for user "bob"',
           f"postgresql+psycopg://bob:{SECRET}@{HOST}:{free_port()}/bobs": "connection refused",
           url.replace("postgresql+psycopg", "postgress"): "unknown scheme 'postgress'"}
    for uri, reason in bad.items():
        run = subprocess.run([sys.executable, str(root / "sweeps" / "lambda_sweep.py"), "--tracking-uri", uri],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, (uri, run.stderr[-2000:])
        assert run.stderr.startswith("error: ") and reason in run.stderr, run.stderr
        assert SECRET not in run.stdout + run.stderr and "***" in run.stderr
    assert not (tmp_path / "ray_results").exists()
