"""Issue 16: ``cluster/tracking_server.sh``, which the cluster files run on the head: the tracking
server starts with MLflow's authentication app and credentials made once (private files, never
printed), stops by its pid file only (another process named "mlflow server" survives), and its
watchdog stops it once the head's Ray is gone. Real processes on 127.0.0.1, a temporary HOME."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port, http_status, wait_until

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "tracking_server.sh"

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


def test_server_starts_with_authentication_and_stops_by_its_pid_file(tmp_path):
    port, secrets = free_port(), tmp_path / "shared" / ".snnconv-secrets"
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SNNCONV_MLFLOW_HOST": "127.0.0.1", "SNNCONV_MLFLOW_PORT": str(port), "PYTHON": sys.executable,
           "SNNCONV_RAY_PORT": str(free_port()), "SNNCONV_WATCH_GRACE_S": "600"}
    other = subprocess.Popen(["bash", "-c", 'exec -a "mlflow server --port 1" sleep 300'], start_new_session=True)
    try:
        started = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert started.returncode == 0, started.stderr
        credentials = dict(line.split("=", 1) for line in (secrets / "mlflow.env").read_text().split())
        password = credentials["MLFLOW_TRACKING_PASSWORD"]
        assert credentials["MLFLOW_TRACKING_USERNAME"] == "admin" and len(password) >= 24
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
        for name in ("mlflow.env", "mlflow_server.env", "ray_auth_token"):
            assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600, name
        url = f"http://127.0.0.1:{port}"
        log_file = tmp_path / "mlflow" / "server.log"
        assert wait_until(lambda: status(url + "/health") == 200, 120), log_file.read_text()
        search = url + "/api/2.0/mlflow/experiments/search?max_results=1"
        assert status(search) == 401 and status(search, "admin", "wrong") == 401
        assert status(search, "admin", password) == 200
        log = (tmp_path / "mlflow" / "server.log").read_text()
        assert password not in started.stdout + started.stderr + log  # never printed
        server = int((tmp_path / "mlflow" / "server.pid").read_text())

        again = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                               timeout=90)  # a second `ray up`: the same credentials, one server
        assert again.returncode == 0 and not alive(server)
        assert (secrets / "mlflow.env").read_text().split()[1] == f"MLFLOW_TRACKING_PASSWORD={password}"
        server = int((tmp_path / "mlflow" / "server.pid").read_text())
        assert wait_until(lambda: status(search, "admin", password) == 200, 120)

        stopped = subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0 and not alive(server)
        assert not (tmp_path / "mlflow" / "server.pid").exists()
        assert not (tmp_path / "mlflow" / "watchdog.pid").exists()
        assert other.poll() is None  # another process named "mlflow server" is not touched

        # a port someone else listens on is refused, not shared
        with socket.socket() as taken:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's port may linger
            taken.bind(("127.0.0.1", port))
            taken.listen()
            refused = subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, capture_output=True, text=True,
                                     timeout=60)
        assert refused.returncode == 1 and f"port {port} is taken by a process this script did not start" in (
            refused.stderr)
        assert not (tmp_path / "mlflow" / "server.pid").exists()

        # the watchdog: nothing listens on the Ray port, so after its grace period it stops the server
        env["SNNCONV_WATCH_GRACE_S"] = "2"
        assert subprocess.run([str(SCRIPT), "start", str(secrets)], env=env, timeout=60).returncode == 0
        server = int((tmp_path / "mlflow" / "server.pid").read_text())
        pid_file = tmp_path / "mlflow" / "server.pid"
        assert wait_until(lambda: not alive(server) and not pid_file.exists(), 90), "the watchdog left it running"
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        other.kill()
        other.wait()
