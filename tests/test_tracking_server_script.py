"""Issue 16: ``cluster/tracking_server.sh``, which the cluster files run on the head: the tracking
server starts with MLflow's authentication app and credentials made once (private files, never
printed), stops by its pid file only (another process named "mlflow server" survives), and its
watchdog stops it once the head's Ray is gone. Issue 23: its home (store, artifacts, users) is on the
shared mount, as the cluster files set it, and a later cluster's start reuses it: the runs, the
artifacts and the admin password are still there, a pid file another machine left is ignored, and a
secrets folder whose password the kept users' database does not know is refused with a message.
Real processes on 127.0.0.1, a temporary HOME and shared folder."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

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
           "SNNCONV_RAY_PORT": str(free_port()), "SNNCONV_WATCH_GRACE_S": "600", "SNNCONV_MLFLOW_HOME": str(home)}
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
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        other.kill()
        other.wait()
