"""``cluster/tracking_server.sh``, which the cluster files run on the head: the tracking
server starts with MLflow's authentication app and credentials made once (private files, never
printed), stops by its pid file only (another process named "mlflow server" survives), and its
watchdog stops it once the head's Ray is gone. Its home (store, artifacts, users) is on the
shared mount, as the cluster files set it, and a later cluster's start reuses it: the runs, the
artifacts and the admin password are still there, a pid file another machine left is ignored, and a
secrets folder whose password the kept users' database does not know is refused with a message.
The store is PostgreSQL by default (the head's own, its data in the home; or a database of the
user's, named in the secrets folder), kept across a stop and a later start; SQLite when asked for; a bad
database URL or setting is refused in one line before the server starts, and a home's kept store is never
hidden behind an empty one. Real processes on 127.0.0.1, a temporary HOME and shared folder."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from mlflow import MlflowClient

from tests.servers import free_port, http_status, listening, wait_until

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "tracking_server.sh"
#: how long one `start` may take: the script waits up to 180 s for the server (a busy machine: about a minute)
START_S = 240

pytestmark = pytest.mark.slow  # MLflow's authentication app takes 15-30 s to start


def status(url: str, user: str | None = None, password: str | None = None) -> int:
    """:func:`http_status`, with basic-auth credentials when ``user`` is given."""
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return http_status(url, {"Authorization": f"Basic {basic}"} if user is not None else None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def pid_in(file: Path) -> int:
    """The pid a pid file holds (``PID BOOT_ID``)."""
    return int(file.read_text().split()[0])


def test_server_starts_with_authentication_and_stops_by_its_pid_file(tmp_path, monkeypatch):
    port, secrets = free_port(), tmp_path / "shared" / ".snnconv-secrets"
    home = tmp_path / "shared" / "mlflow"  # SNNCONV_MLFLOW_HOME=<mount>/mlflow, as in the cluster files
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SNNCONV_MLFLOW_HOST": "127.0.0.1", "SNNCONV_MLFLOW_PORT": str(port), "PYTHON": sys.executable,
           "SNNCONV_RAY_PORT": str(free_port()), "SNNCONV_WATCH_GRACE_S": "600", "SNNCONV_MLFLOW_HOME": str(home),
           "SNNCONV_MLFLOW_STORE": "sqlite"}  # SQLite when asked for (the default is PostgreSQL)
    other = subprocess.Popen(["bash", "-c", 'exec -a "mlflow server --port 1" sleep 300'], start_new_session=True)
    try:
        started = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                                 timeout=START_S)
        assert started.returncode == 0, started.stderr
        credentials = dict(line.split("=", 1) for line in (secrets / "mlflow.env").read_text().split())
        password = credentials["MLFLOW_TRACKING_PASSWORD"]
        assert credentials["MLFLOW_TRACKING_USERNAME"] == "admin" and len(password) >= 24
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
        for name in ("mlflow.env", "mlflow_server.env", "ray_auth_token"):
            assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600, name
        url = f"http://127.0.0.1:{port}"
        log_file = home / "server.log"
        assert wait_until(lambda: status(url + "/health") == 200, 120), log_file.read_text()
        search = url + "/api/2.0/mlflow/experiments/search?max_results=1"
        assert status(search) == 401 and status(search, "admin", "wrong") == 401
        assert status(search, "admin", password) == 200
        log = (home / "server.log").read_text()
        assert password not in started.stdout + started.stderr + log  # never printed
        server = pid_in(home / "server.pid")
        # a run with an artifact, through the server: the store and the artifacts are in its home, HOME has none
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("kept")).info.run_id
        (tmp_path / "note.txt").write_text("kept")
        client.log_artifact(run, str(tmp_path / "note.txt"))
        client.set_terminated(run)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert (home / "mlflow.db").is_file() and (home / "auth.db").is_file()
        assert [p.name for p in (home / "artifacts").rglob("*") if p.is_file()] == ["note.txt"]
        assert not (tmp_path / "mlflow").exists()

        again = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                               timeout=START_S)  # a second `ray up`: the same credentials, one server
        assert again.returncode == 0 and not alive(server)
        assert (secrets / "mlflow.env").read_text().split()[1] == f"MLFLOW_TRACKING_PASSWORD={password}"
        server = pid_in(home / "server.pid")
        assert wait_until(lambda: status(search, "admin", password) == 200, 120)

        stopped = subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0 and not alive(server)
        assert not (home / "server.pid").exists()
        assert not (home / "watchdog.pid").exists()
        assert other.poll() is None  # another process named "mlflow server" is not touched

        # a later cluster (`ray down`, `ray up`): the home is kept on the shared mount, with pid files an earlier
        # head may have left (its disk is gone); a pid from another machine is never signalled
        for name in ("server.pid", "watchdog.pid"):
            (home / name).write_text(f"{other.pid} the-boot-of-another-machine\n")
        later = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                               timeout=START_S)
        assert later.returncode == 0, later.stderr
        assert other.poll() is None
        assert pid_in(home / "server.pid") != other.pid
        assert (secrets / "mlflow.env").read_text().split()[1] == f"MLFLOW_TRACKING_PASSWORD={password}"
        assert status(search, "admin", password) == 200  # the kept users' database, the same password
        kept = MlflowClient(url)
        assert kept.get_run(run).info.status == "FINISHED"
        assert kept.get_run(run).info.experiment_id == kept.get_experiment_by_name("kept").experiment_id
        assert [a.path for a in kept.list_artifacts(run)] == ["note.txt"]
        assert subprocess.run([str(SCRIPT), "stop"], env=env, timeout=60).returncode == 0

        # a port someone else listens on is refused, not shared
        with socket.socket() as taken:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's port may linger
            taken.bind(("127.0.0.1", port))
            taken.listen()
            refused = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                                     timeout=60)
        assert refused.returncode == 1 and f"port {port} is taken by a process this script did not start" in (
            refused.stderr)
        assert not (home / "server.pid").exists()

        # the watchdog: nothing listens on the Ray port, so after its grace period it stops the server
        env["SNNCONV_WATCH_GRACE_S"] = "2"
        assert subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, timeout=START_S).returncode == 0
        pid_file = home / "server.pid"
        server = pid_in(pid_file)
        assert wait_until(lambda: not alive(server) and not pid_file.exists(), 90), "the watchdog left it running"

        # the kept home with another cluster's secrets: its users' database does not know that password
        lost = subprocess.run([str(SCRIPT), "start", str(tmp_path / "shared" / "other-secrets")], env=env,
                              capture_output=True, text=True, timeout=START_S)
        assert lost.returncode == 1 and "refused the admin password" in lost.stderr, lost.stderr
        assert f"delete {home / 'auth.db'}" in lost.stderr
        assert not (home / "server.pid").exists() and not listening(port)

        # the default store is PostgreSQL; this home's runs are in SQLite: refused, never hidden
        del env["SNNCONV_MLFLOW_STORE"]
        hidden = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert hidden.returncode == 2 and hidden.stderr.count("\n") == 1, hidden.stderr
        assert f"{home} holds the runs of an earlier cluster in {home / 'mlflow.db'} (SNNCONV_MLFLOW_STORE=sqlite)" \
            in hidden.stderr
        assert not (home / "postgres").exists() and not listening(port)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        other.kill()
        other.wait()


# ---------------------------------------------------------------------------------------------
# the store on PostgreSQL

#: a password no output may show
SECRET = "pw-secret-9"


def script_env(home: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of the script as the cluster files run it, on 127.0.0.1 and free ports; the server
    sized for 8 trials (one worker)."""
    return {**os.environ, "HOME": str(home.parent), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "SNNCONV_MLFLOW_HOST": "127.0.0.1", "SNNCONV_MLFLOW_PORT": str(port), "PYTHON": sys.executable,
            "SNNCONV_RAY_PORT": str(free_port()), "SNNCONV_WATCH_GRACE_S": "600", "SNNCONV_MLFLOW_HOME": str(home),
            "SNNCONV_MLFLOW_MAX_TRIALS": "8", **settings}


def script(env: dict[str, str], *arguments: str, timeout: float = START_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *arguments], env=env, capture_output=True, text=True, timeout=timeout)


def secret_of(file: Path, name: str) -> str:
    """The value of ``name`` in a secrets folder's ``NAME=value`` file."""
    return dict(line.split("=", 1) for line in file.read_text().split())[name]


def test_the_heads_postgresql_is_the_default_store_and_kept_by_stop_and_start(monkeypatch):
    # the shared mount: a folder PostgreSQL's user (postgres, as this test is root) may pass through, which
    # pytest's tmp_path is not (its parents are private to root)
    shared = Path(tempfile.mkdtemp(prefix="snnconv-shared-"))
    shared.chmod(0o711)
    home, secrets, port, pg_port = shared / "mlflow", shared / ".snnconv-secrets", free_port(), free_port()
    env = script_env(home, port, SNNCONV_POSTGRES_PORT=str(pg_port))
    owner = subprocess.Popen(["sleep", "300"], user="postgres")  # a live process that is no PostgreSQL of ours
    try:
        started = script(env, "start", str(secrets))
        assert started.returncode == 0, started.stderr
        assert stat.S_IMODE((secrets / "postgres.env").stat().st_mode) == 0o600
        pg_password = secret_of(secrets / "postgres.env", "SNNCONV_POSTGRES_PASSWORD")
        password = secret_of(secrets / "mlflow.env", "MLFLOW_TRACKING_PASSWORD")
        assert (f"store postgresql+psycopg://mlflow:***@127.0.0.1:{pg_port}/mlflow (workers 1, connections 8 + 8 "
                "each, 36 in all)") in started.stdout
        # its data on the shared mount, PostgreSQL's own folder; no SQLite store
        assert (home / "postgres" / "data" / "PG_VERSION").is_file() and not (home / "mlflow.db").exists()
        assert (home / "postgres").owner() == "postgres" and stat.S_IMODE(home.stat().st_mode) == 0o710
        # loopback only, a password (scram-sha-256, never trust), max_connections for 1 worker of 8 + 8
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"host=127.0.0.1 port={pg_port} user=mlflow password=wrong dbname=mlflow").close()
        with psycopg.connect(f"host=127.0.0.1 port={pg_port} user=mlflow password={pg_password} "
                             "dbname=mlflow") as connection:
            settings = dict(connection.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                               "('max_connections', 'listen_addresses')").fetchall())
            methods = {row[0] for row in connection.execute("SELECT auth_method FROM pg_hba_file_rules")}
        assert settings == {"max_connections": "36", "listen_addresses": "127.0.0.1"} and methods == {"scram-sha-256"}
        server = pid_in(home / "server.pid")
        command = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
        assert command[command.index(b"--workers") + 1] == b"1"
        environment = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        assert b"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=8" in environment and b"MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=8" in (
            environment)
        # no password on any command line, in the output or in a log
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes()
            except OSError:
                continue
            assert pg_password.encode() not in text and password.encode() not in text, cmdline
        logs = [home / "server.log", home / "postgres" / "server.log", home / "postgres" / "initdb.log"]
        assert not any(pg_password in text for text in [started.stdout, started.stderr, *map(Path.read_text, logs)])

        # a run through the server, with the cluster's credentials
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        url = f"http://127.0.0.1:{port}"
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("kept")).info.run_id
        client.log_metric(run, "accuracy", 0.75)
        client.set_terminated(run)

        stopped = script(env, "stop", timeout=120)  # `ray down`: the server and PostgreSQL stop
        assert stopped.returncode == 0 and not alive(server) and not listening(pg_port) and not listening(port)
        assert not any((home / name).exists() for name in ("server.pid", "watchdog.pid", "postgres.pid"))

        # a later cluster: the data are kept, with a lock file and a pid file the earlier head left (another
        # machine; the pid is alive here, but no PostgreSQL of ours): ignored, and the runs are there
        (home / "postgres.pid").write_text(f"{owner.pid} the-boot-of-another-machine\n")
        (home / "postgres" / "data" / "postmaster.pid").write_text(f"{owner.pid}\n{home / 'postgres' / 'data'}\n")
        later = script(env, "start", str(secrets))
        assert later.returncode == 0, later.stderr
        assert owner.poll() is None and secret_of(secrets / "postgres.env", "SNNCONV_POSTGRES_PASSWORD") == pg_password
        kept = MlflowClient(url)
        assert kept.get_run(run).info.status == "FINISHED" and kept.get_run(run).data.metrics == {"accuracy": 0.75}
        assert kept.get_experiment_by_name("kept").experiment_id == kept.get_run(run).info.experiment_id

        # SQLite asked for on this home: refused (its runs are in PostgreSQL), nothing stopped or started
        server = pid_in(home / "server.pid")
        sqlite = script({**env, "SNNCONV_MLFLOW_STORE": "sqlite"}, "start", str(secrets), timeout=60)
        assert sqlite.returncode == 2 and sqlite.stderr.count("\n") == 1, sqlite.stderr
        assert f"holds the runs of an earlier cluster in {home / 'postgres'}" in sqlite.stderr
        assert not (home / "mlflow.db").exists() and alive(server) and listening(pg_port)
    finally:
        script(env, "stop", timeout=120)
        owner.kill()
        owner.wait()
        shutil.rmtree(shared, ignore_errors=True)


def test_a_database_of_yours_is_the_store_and_a_bad_one_is_refused_in_one_line(postgres, tmp_path, monkeypatch):
    url = postgres.create_login("carol", SECRET, "tracking")
    home, secrets, port = tmp_path / "shared" / "mlflow", tmp_path / "shared" / ".snnconv-secrets", free_port()
    env = script_env(home, port, SNNCONV_POSTGRES_PORT=str(free_port()))
    assert script(env, "secrets", str(secrets), timeout=60).returncode == 0
    database = secrets / "database.env"

    # bad settings
    for settings, message in (({"SNNCONV_MLFLOW_STORE": "mysql"}, "SNNCONV_MLFLOW_STORE must be postgres"),
                              ({"SNNCONV_MLFLOW_MAX_TRIALS": "many"}, "SNNCONV_MLFLOW_MAX_TRIALS must be a number")):
        refused = script({**env, **settings}, "start", str(secrets), timeout=60)
        assert refused.returncode == 2 and refused.stderr.startswith(message), refused.stderr
        assert refused.stderr.count("\n") == 1

    # bad database URLs: one line naming what is wrong, the password hidden, nothing started
    bad = {url.replace(SECRET, "wrong"): 'password authentication failed for user "carol"',
           url.replace(str(postgres.port), str(free_port())): "Connection refused",
           url.replace("/tracking", "/nope"): 'database "nope" does not exist',
           url.replace("postgresql+psycopg", "postgress"): "unknown scheme 'postgress'",
           url.replace("+psycopg", "+psycopgg"): "SQLAlchemy has no driver 'postgresql+psycopgg'"}
    for wrong, reason in bad.items():
        database.write_text(f"SNNCONV_MLFLOW_DATABASE_URL={wrong}\n")
        refused = script(env, "start", str(secrets), timeout=60)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert reason in refused.stderr and f"({database})" in refused.stderr, refused.stderr
        assert SECRET not in refused.stdout + refused.stderr and ":***@" in refused.stderr
        assert not (home / "server.pid").exists() and not listening(port) and not (home / "postgres").exists()
    sqlite = script({**env, "SNNCONV_MLFLOW_STORE": "sqlite"}, "start", str(secrets), timeout=60)
    assert sqlite.returncode == 2 and "database.env names a database: remove one of them" in sqlite.stderr

    # the right one: the server's store, nothing local started
    database.write_text(f"SNNCONV_MLFLOW_DATABASE_URL={url}\n")
    try:
        started = script(env, "start", str(secrets))
        assert started.returncode == 0, started.stderr
        assert f"store {url.replace(SECRET, '***')} (workers 1, connections 8 + 8 each" in started.stdout
        assert SECRET not in started.stdout + started.stderr + (home / "server.log").read_text()
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
        assert not (home / "postgres").exists() and not (home / "mlflow.db").exists()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret_of(secrets / "mlflow.env", "MLFLOW_TRACKING_PASSWORD"))
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("yours")).info.run_id
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
            assert connection.execute("SELECT run_uuid FROM runs").fetchall() == [(run,)]
    finally:
        script(env, "stop", timeout=120)
