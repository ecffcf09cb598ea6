"""The user's cluster commands, for real. ``ray up`` of ``ray_cluster.local.yaml`` against this
machine over SSH (Debian's openssh-server on 127.0.0.1, a throw-away key, the project's own setup and
start commands), ``ray job submit`` of a small sweep through the dashboard forwarded by ``ray dashboard``,
then ``ray down``. Nothing is lost on ``ray down``: the tracking store and artifacts are on the shared
mount, not in the head's HOME, so after ``ray down`` and a second ``ray up`` the first sweep's runs are still
in the tracking server (the same password) and ``analysis/pareto.py`` reports them; then ``ray down`` again.
The store is the head's PostgreSQL (its data on the shared mount), stopped by ``ray down`` too.

What the copy of the cluster file changes, and nothing else: the head is a loopback address with no workers,
the SSH user is this one (root) with the throw-away key, SSH reaches the test's sshd through a
``ssh_proxy_command`` (Ray's cluster file has no SSH port; the head's name is a random 127.0.0.x so
that no SSH connection Ray keeps open from an earlier cluster is reused), and the shared mount ``/mnt/nfs`` is a
temporary folder (one that PostgreSQL's user may pass through). The SSH sessions get a temporary HOME whose
shell puts this test's Python first, so the setup commands install into it (the project is reinstalled from
this checkout afterwards).

Needs root, sshd and rsync (``.ci/run`` installs openssh-server and rsync; skipped without them) and PostgreSQL
(``.ci/run`` installs it; else the head's setup command would, with sudo). Ray's ports 6379 and 8265, MLflow's
5000 and PostgreSQL's 5432 must be free: ``ray down`` runs ``ray stop``, which stops every Ray process on this
machine.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.servers import free_port, http_status, listening, wait_until

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(os.geteuid() != 0 or SSHD is None or not shutil.which("rsync") or not shutil.which("ssh"),
                       reason="needs root, sshd, ssh and rsync (.ci/run installs openssh-server and rsync)"),
]

RELAY = '''import socket, sys, threading
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def upstream():
    while True:
        data = sys.stdin.buffer.read1(65536)
        if not data:
            break
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while True:
    data = conn.recv(65536)
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
'''

TINY_SWEEP = {
    "name": "e2e", "methods": ["rnl"], "num_samples": 2, "search": "random", "max_concurrent": 2, "cpus_per_trial": 1,
    "trial": {"model": "small", "device": "cpu", "data": {"name": "digits"}, "stage1": {"epochs": 2, "lr": 0.05},
              "rnl": {"epochs": 1, "inspect_interval": 5, "t_max": 8}},
    "space": {"rnl": {"rnl.lam": {"type": "loguniform", "low": 0.01, "high": 10.0}}},
}


def ray_processes() -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "gcs_server" in text or "/raylet" in text or "mlflow server" in text and "basic-auth" in text:
            found.append(text[:120])
    return found


def tracked_runs(env: dict[str, str], password: str) -> list[tuple[str, str, str]]:
    """(role, status, run id) of every run of experiment ``snnconv``, sorted, through the head's authenticated
    tracking server (MLflow's client, the admin's credentials in its environment)."""
    runs = subprocess.run(
        [sys.executable, "-c", "import json; from mlflow import MlflowClient; "
         "c = MlflowClient('http://127.0.0.1:5000'); e = c.get_experiment_by_name('snnconv'); "
         "r = c.search_runs([e.experiment_id]); "
         "print(json.dumps(sorted((x.data.tags.get('snnconv.role'), x.info.status, x.info.run_id) for x in r)))"],
        env={**env, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password},
        capture_output=True, text=True, timeout=120)
    assert runs.returncode == 0, runs.stderr[-3000:]
    return [tuple(run) for run in json.loads(runs.stdout.strip().splitlines()[-1])]


@pytest.mark.timeout(1500)
def test_ray_up_job_submit_and_ray_down_of_the_on_premise_file(tmp_path):
    busy = [port for port in (5000, 6379, 8265, 5432) if listening(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use on this machine; this test brings up a cluster on them")
    ssh, home = tmp_path / "ssh", tmp_path / "home"
    # the shared mount: PostgreSQL runs as postgres (the head's user is root here), which must pass through to its
    # folder there; pytest's tmp_path is private to root
    shared = Path(tempfile.mkdtemp(prefix="snnconv-nfs-"))
    shared.chmod(0o711)
    for folder in (ssh, home):
        folder.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)], check=True)
    (ssh / "authorized_keys").write_text((ssh / "client_key.pub").read_text())
    (ssh / "authorized_keys").chmod(0o600)
    path = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for profile in (".bashrc", ".profile"):
        (home / profile).write_text(f"export PATH={path}\n")
    port = free_port()
    (ssh / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {ssh / 'host_key'}\n"
        f"AuthorizedKeysFile {ssh / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"UsePAM no\nStrictModes no\nPidFile {ssh / 'sshd.pid'}\nSetEnv HOME={home} PATH={path}\n")
    (ssh / "relay.py").write_text(RELAY)
    config = yaml.safe_load((ROOT / "ray_cluster.local.yaml").read_text())
    # a loopback address of its own: Ray keys its reused SSH connections (ControlPath) by host, and one
    # left from an earlier cluster would run this cluster's commands in that cluster's session
    config["provider"]["head_ip"], config["provider"]["worker_ips"] = f"127.0.0.{random.randint(2, 254)}", []
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(ssh / "client_key"),
                      "ssh_proxy_command": f"{sys.executable} {ssh / 'relay.py'} {port}"}
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(config, sort_keys=False).replace("/mnt/nfs", str(shared)))
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump(TINY_SWEEP))
    secrets, store = shared / ".snnconv-secrets", shared / "mlflow"  # store: SNNCONV_MLFLOW_HOME of the head
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RAY_", "MLFLOW_", "SNNCONV_"))}
    ray = str(BIN / "ray")

    Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen([SSHD, "-D", "-f", str(ssh / "sshd_config"), "-E", str(ssh / "sshd.log")],
                            start_new_session=True)
    forward, up = None, False

    def ray_down() -> None:
        """``ray down``, then nothing of the cluster is left running: Ray, the tracking server (its watchdog
        stops it) and its pid files; the store and the artifacts stay on the shared mount."""
        nonlocal up
        down = subprocess.run([ray, "down", "-y", str(cluster)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        up = False
        assert down.returncode == 0, (down.stdout + down.stderr)[-4000:]
        assert wait_until(lambda: not ray_processes() and not any(map(listening, (5000, 6379, 5432))), 120), \
            ray_processes()
        assert wait_until(lambda: not any((store / name).exists() for name in ("server.pid", "watchdog.pid",
                                                                               "postgres.pid")), 30)
        assert (store / "postgres" / "data" / "PG_VERSION").is_file() and (store / "auth.db").is_file()

    try:
        assert wait_until(lambda: listening(port), 30), (ssh / "sshd.log").read_text()
        started = subprocess.run([ray, "up", "-y", "--no-config-cache", str(cluster)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=900)
        up = True
        output = started.stdout + started.stderr
        assert started.returncode == 0, output[-6000:]
        password = dict(line.split("=", 1) for line in (secrets / "mlflow.env").read_text().split())[
            "MLFLOW_TRACKING_PASSWORD"]
        token = (secrets / "ray_auth_token").read_text().strip()
        assert password not in output and token not in output  # created on the head, never printed
        # what the docs tell a user to run for their own shell: the token and the credentials, from the head
        exported = subprocess.run(["bash", "-c", f'eval "$(cluster/credentials.sh {cluster})" && env'], cwd=ROOT,
                                  env={**env, "PATH": f"{BIN}:{env['PATH']}"}, capture_output=True, text=True,
                                  timeout=300)
        values = dict(line.split("=", 1) for line in exported.stdout.splitlines() if "=" in line)
        assert (values.get("RAY_AUTH_MODE"), values.get("RAY_AUTH_TOKEN")) == ("token", token), exported.stderr
        assert (values["MLFLOW_TRACKING_USERNAME"], values["MLFLOW_TRACKING_PASSWORD"]) == ("admin", password)

        # the dashboard, forwarded by the user's command, answers only with Ray's token
        dashboard = free_port()
        forward = subprocess.Popen([ray, "dashboard", "--port", str(dashboard), str(cluster)], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{dashboard}"
        assert wait_until(lambda: http_status(url + "/api/version", {"Authorization": f"Bearer {token}"}) == 200, 120)
        assert http_status(url + "/api/version") == 401

        # the job's driver on the head: no tracking URI, credentials or cache folder on its command line
        entrypoint = (f"cd ~/snnconv && python sweeps/lambda_sweep.py --config {sweep_file} --address auto "
                      f"--storage-path {shared / 'ray_results'}")
        job = subprocess.run([ray, "job", "submit", "--address", url, "--", "bash", "-c", entrypoint], cwd=ROOT,
                             env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                             capture_output=True, text=True, timeout=900)
        assert job.returncode == 0, (job.stdout + job.stderr)[-6000:]
        assert f"stage-1 cache of the trials: {shared / 'snnconv-cache'} (the default on node" in job.stdout
        assert password not in job.stdout + job.stderr

        # the runs are in the authenticated tracking server; a request without credentials is refused
        search = "http://127.0.0.1:5000/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(search) == 401
        basic = base64.b64encode(f"admin:{password}".encode()).decode()
        assert http_status(search, {"Authorization": f"Basic {basic}"}) == 200
        first = tracked_runs(env, password)
        assert [run[:2] for run in first] == [("sweep", "FINISHED"), ("trial", "FINISHED"), ("trial", "FINISHED")]
        # the store, the users and the artifacts (the sweep's Pareto files) are on the shared mount, private;
        # nothing in the head's HOME, which `ray down` deletes on a cloud
        assert (store / "postgres" / "data" / "PG_VERSION").is_file() and (store / "auth.db").is_file()
        assert not (store / "mlflow.db").exists()
        assert any(path.is_file() for path in (store / "artifacts").rglob("*"))
        assert stat.S_IMODE(store.stat().st_mode) == 0o710  # root's: group postgres may pass to its own folder
        assert not (home / "mlflow").exists() and not list(home.rglob("mlflow.db"))
        # stage 1 went to the cluster's shared folder, not to the head user's default
        assert len(list((shared / "snnconv-cache").glob("*.pt"))) == 1
        assert not (home / ".cache" / "snnconv").exists()
        assert oct((shared / "snnconv-cache").stat().st_mode & 0o7777) == oct(0o2770)

        ray_down()

        # a second cluster on the same shared mount finds every result of the first
        credentials = (secrets / "mlflow.env").read_text()
        again = subprocess.run([ray, "up", "-y", "--no-config-cache", str(cluster)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=900)
        up = True
        assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
        assert (secrets / "mlflow.env").read_text() == credentials  # the same admin password
        assert tracked_runs(env, password) == first
        report = subprocess.run(
            [sys.executable, str(ROOT / "analysis" / "pareto.py"), "--tracking-uri", "http://127.0.0.1:5000",
             "--out", str(tmp_path / "report")], cwd=ROOT,
            env={**env, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password},
            capture_output=True, text=True, timeout=300)
        assert report.returncode == 0, (report.stdout + report.stderr)[-4000:]
        assert ": 2 trial runs, 2 finished, 0 failed" in report.stdout, report.stdout[-3000:]
        table = pd.read_csv(tmp_path / "report" / "pareto.csv")
        assert sorted(table["run_id"]) == [run_id for role, _, run_id in first if role == "trial"]
        ray_down()
    finally:
        if forward is not None:
            os.killpg(forward.pid, 9)
        if up:
            subprocess.run([ray, "down", "-y", str(cluster)], cwd=ROOT, env=env, capture_output=True, timeout=300)
        script = home / "snnconv" / "cluster" / "tracking_server.sh"
        if script.exists():
            subprocess.run([str(script), "stop"], env={**env, "HOME": str(home), "SNNCONV_MLFLOW_HOME": str(store)},
                           capture_output=True, timeout=120)
        os.killpg(sshd.pid, 15)  # the listener and the sessions it forked
        sshd.wait(30)
        shutil.rmtree(shared, ignore_errors=True)
        # the setup commands installed the head's copy of the project into this Python: point it back here
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)],
                       capture_output=True, timeout=600)
