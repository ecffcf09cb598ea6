"""The cluster YAML files validate against Ray's own schema, offline, as `ray up` does."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["ray_cluster.yaml", "ray_cluster.local.yaml"])
def test_cluster_yaml_passes_rays_schema(name):
    config = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    if config["provider"]["type"] == "local":
        assert config["provider"]["worker_ips"] and config["provider"]["head_ip"]
    else:
        worker = config["available_node_types"]["gpu_worker"]
        assert config["head_node_type"] == "head" and worker["max_workers"] >= worker["min_workers"]
    shared = "/mnt/nfs" if config["provider"]["type"] == "local" else "/mnt/efs"
    head_commands = " ".join(config["head_start_ray_commands"])
    assert f"cluster/tracking_server.sh start {shared}/.snnconv-secrets" in head_commands
    assert "--dashboard-host=127.0.0.1" in head_commands
    # the tracking store and artifacts on the shared mount, which `ray down` does not delete
    (server,) = [line for line in config["head_start_ray_commands"] if "tracking_server.sh start" in line]
    assert server.startswith(f"SNNCONV_MLFLOW_HOME={shared}/mlflow "), server
    # the store on the head's own PostgreSQL by default (Debian's package, on the head only, its default
    # cluster dropped: it would take port 5432); no other store chosen and no database URL on a command line
    (postgres,) = [line for line in config["head_setup_commands"] if "postgresql" in line]
    assert postgres.startswith("ls /usr/lib/postgresql/*/bin/pg_ctl > /dev/null 2>&1 || {"), postgres
    assert re.search(r"sudo DEBIAN_FRONTEND=noninteractive apt-get .*install -y -qq postgresql && ", postgres)
    assert 'sudo pg_dropcluster --stop "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main; }' in postgres
    assert not any("postgresql" in line for line in config["setup_commands"] + config["worker_setup_commands"])
    assert "SNNCONV_MLFLOW_STORE" not in server and "://" not in server
    text = (ROOT / name).read_text()  # the comments say where the data are and how to use a database of yours
    assert f"{shared}/mlflow/postgres" in text and f"{shared}/.snnconv-secrets/database.env" in text
    worker_commands = " ".join(config["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in worker_commands
    for line in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        # every node's Ray with its token, and the trials' environment: credentials and cache
        assert f"set -a && . {shared}/.snnconv-secrets/mlflow.env && set +a" in line
        assert f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={shared}/.snnconv-secrets/ray_auth_token" in line
        assert f"SNNCONV_CACHE={shared}/snnconv-cache" in line and "ray start" in line
    everything = yaml.safe_dump(config)
    assert "pkill" not in everything and "777" not in everything  # no name patterns, nothing world-writable
    # every node installs exactly the lock (which holds the cluster extra: ray[default], mlflow[auth])
    install = next(line for line in config["setup_commands"] if "pip install" in line)
    assert re.search(r"pip install --quiet --require-hashes -r \S*snnconv/requirements\.lock\"? && ", install)
    assert install.endswith("pip install --quiet --no-deps -e /home/ubuntu/snnconv" if shared == "/mnt/efs"
                            else 'pip install --quiet --no-deps -e "$HOME/snnconv"'), install
    locked = (ROOT / "requirements.lock").read_text()
    assert all(f"\n{name}==" in locked for name in ("ray", "mlflow", "aiohttp", "flask-wtf"))  # the cluster extra
    assert f"chmod 2770 {shared}/snnconv-cache" in " ".join(config["head_setup_commands"])


def test_aws_cluster_scales_gpu_workers_from_zero_and_keeps_ports_private():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["min_workers"] == 0 and worker["max_workers"] > 0
    assert worker["node_config"]["InstanceType"].startswith("g5")
    ports = {(p["FromPort"], p["ToPort"]) for p in config["provider"]["security_group"]["IpPermissions"]}
    assert ports == {(22, 22)}  # dashboard (8265), MLflow (5000) and GCS (6379) only through forwarding


def test_a_broken_cluster_yaml_is_refused():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


#: the claim each paper preset makes in a comment, e.g. "# packs 2 trials per gpu_worker of ray_cluster.yaml"
PACKING_CLAIM = re.compile(r"^# packs (\d+) trials? per (\w+) of ray_cluster\.yaml", re.MULTILINE)


@pytest.mark.parametrize("preset", ["cifar10-vgg16", "cifar10-resnet18", "cifar100-vgg16", "imagenet-resnet34"])
def test_each_paper_preset_packs_its_node_type_as_its_comment_claims(preset):
    """A trial runs on one node, so a preset's CPUs and GPU share decide how many trials a node
    takes. Each paper preset says in a comment how many per which node type of ray_cluster.yaml; that many
    fit, they use the node's whole GPU (no share idles), and every preset fits some node type."""
    text = (ROOT / "configs" / f"{preset}.yaml").read_text()
    spec = yaml.safe_load(text)
    (claim,) = PACKING_CLAIM.findall(text)
    count, node_type = int(claim[0]), claim[1]
    node_types = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())["available_node_types"]
    resources = node_types[node_type]["resources"]
    fits = min(resources["CPU"] // spec["cpus_per_trial"], resources["GPU"] // spec["gpus_per_trial"])
    assert fits == count, f"{preset}: {fits} trials fit a {node_type} {resources}, the comment says {count}"
    assert count * spec["gpus_per_trial"] == resources["GPU"], f"{preset} leaves part of each GPU idle"
    assert node_types[node_type]["min_workers"] == 0 and node_types[node_type]["max_workers"] >= 1
    assert spec["max_concurrent"] >= count  # the sweep runs enough trials at once to fill a node
