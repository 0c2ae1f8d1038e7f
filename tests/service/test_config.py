"""The configuration: the default validates; mistakes name the key and what is expected."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from glioma_node.service.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config


def _raw():
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def _error(raw) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, DEFAULT_CONFIG.parent)
    return str(caught.value)


def test_default_config_is_valid_and_resolves_paths():
    config = load_config()
    assert config.node.ae_title == "GLIOMA_NODE"
    assert config.data_dir.is_absolute()
    assert config.assembly.required_roles == ["FLAIR", "T1", "T1c", "T2"]
    assert config.sequences.roles.FLAIR.matches("sag 3d flair cube")


def test_unknown_key_is_named():
    raw = _raw()
    raw["node"]["ae_titel"] = "X"
    message = _error(raw)
    assert "node.ae_titel" in message and "unknown key" in message


def test_bad_ae_title_names_the_peer_and_the_rule():
    raw = _raw()
    raw["node"]["allowed_peers"][0]["ae_title"] = "A_TITLE_FAR_TOO_LONG"
    message = _error(raw)
    assert "node.allowed_peers[0].ae_title" in message and "16 characters" in message


def test_several_problems_reported_together():
    raw = _raw()
    raw["node"]["port"] = 70000
    raw["thresholds"]["min_role_confidence"] = 2
    del raw["data_dir"]
    message = _error(raw)
    assert "node.port" in message and "thresholds.min_role_confidence" in message and "data_dir: required" in message


def test_bad_regex_and_bad_role_are_named():
    raw = _raw()
    raw["sequences"]["roles"]["T2"]["any"].append("t2[")
    raw["assembly"]["required_roles"] = ["T1", "DWI"]
    message = _error(raw)
    assert "sequences.roles.T2.any" in message and "invalid regular expression" in message
    assert "assembly.required_roles" in message and "DWI" in message


def test_partial_tls_is_refused():
    raw = copy.deepcopy(_raw())
    raw["node"]["tls"]["certificate"] = "cert.pem"
    assert "node.tls" in _error(raw)


def test_cli_stops_on_bad_config_with_the_key(tmp_path):
    raw = _raw()
    raw["destinations"] = [{"name": "pacs", "ae_title": "PACS", "host": "bad host!", "port": 104}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(path), "inspect", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "destinations[0].host" in result.stderr and "IP address or host name" in result.stderr


def test_segmentation_choices_are_checked_where_they_are_written():
    raw = _raw()
    raw["models"]["segmentation"] = {"kind": "ensemble", "members": [{"kind": "glioma-node", "path": "x"}]}
    assert "models.segmentation" in _error(raw) and "at least two members" in _error(raw)
    raw["models"]["segmentation"] = {"kind": "captk-deepmedic"}
    assert "needs a path" in _error(raw)
    raw["models"]["segmentation"] = {"kind": "ensemble", "members": [
        {"kind": "glioma-node", "path": "../models/segmentation"}, {"kind": "captk-deepmedic", "path": "/opt/dm"}]}
    config = parse_config(raw, DEFAULT_CONFIG.parent)
    assert [m.kind for m in config.models.segmentation.members] == ["glioma-node", "captk-deepmedic"]
    assert config.models.segmentation.members[0].path.is_absolute()
    raw["models"]["brain_extraction"] = {"kind": "bet2"}
    assert "models.brain_extraction.kind" in _error(raw)


def test_required_roles_may_be_relaxed_down_to_flair_only():
    raw = _raw()
    raw["assembly"]["required_roles"] = ["FLAIR"]
    assert parse_config(raw, DEFAULT_CONFIG.parent).assembly.required_roles == ["FLAIR"]
    raw["assembly"]["required_roles"] = ["T1c", "T1"]
    message = _error(raw)
    assert "assembly.required_roles" in message and "FLAIR or T2" in message
