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


# Mistakes found at load time (issue 25): each once gave a traceback at start, or silence.
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    """A CA, a node certificate it signed with its key, and another key (openssl)."""
    folder = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=glioma-node test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "node.crt",
        "-days", "2")
    run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "other.key")
    return {name: str(folder / name) for name in ("ca.key", "ca.crt", "node.key", "node.crt", "other.key")}


def _tls(tls_files, certificate="node.crt", private_key="node.key", ca_certificates="ca.crt") -> dict:
    return {"certificate": tls_files[certificate], "private_key": tls_files[private_key],
            "ca_certificates": tls_files[ca_certificates]}


def _mistakes(tls_files, tmp_path) -> dict[str, tuple[object, str, str]]:
    """name → (how it changes the raw configuration, the dotted key named, words of the fix)."""
    def tls(**files):
        return lambda raw: raw["node"].update(tls=_tls(tls_files, **files))

    def data_file(raw):
        (tmp_path / "data").write_text("a file where the data folder should be")
        raw["data_dir"] = str(tmp_path / "data")

    def any_peer(raw):
        raw["node"]["allowed_peers"][1]["host"] = "0.0.0.0"

    def itself(raw):
        raw["destinations"] = [{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.1", "port": 104},
                               {"name": "loop", "ae_title": raw["node"]["ae_title"], "host": "127.0.0.1",
                                "port": raw["node"]["port"]}]

    return {
        "TLS CA file holding a key": (tls(ca_certificates="ca.key"), "node.tls.ca_certificates",
                                      "holds no PEM certificate"),
        "TLS key of another certificate": (tls(private_key="other.key"), "node.tls.private_key",
                                           "is not the private key of node.tls.certificate"),
        "metrics port on the DICOM port": (lambda raw: raw["node"].update(metrics_port=raw["node"]["port"]),
                                           "node.metrics_port", "cannot share a port"),
        "data_dir that is a file": (data_file, "data_dir", "is a file, not a folder"),
        "peer allowed from 0.0.0.0": (any_peer, "node.allowed_peers[1].host", "no peer connects from it"),
        "destination that is the node": (itself, "destinations[1]", "is this node itself"),
    }


MISTAKES = ["TLS CA file holding a key", "TLS key of another certificate", "metrics port on the DICOM port",
            "data_dir that is a file", "peer allowed from 0.0.0.0", "destination that is the node"]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_that_used_to_surface_at_start_is_named_at_load(tls_files, tmp_path, mistake):
    change, key, fix = _mistakes(tls_files, tmp_path)[mistake]
    raw = _raw()
    change(raw)
    message = _error(raw)
    assert f"{key}: " in message and fix in message, message


def test_matching_tls_files_are_accepted(tls_files):
    raw = _raw()
    raw["node"]["tls"] = _tls(tls_files)
    assert parse_config(raw, DEFAULT_CONFIG.parent).node.tls.enabled


def test_the_node_itself_on_another_port_or_title_is_a_fine_destination():
    raw = _raw()
    raw["destinations"] = [{"name": "other-node", "ae_title": raw["node"]["ae_title"], "host": "127.0.0.1",
                            "port": raw["node"]["port"] + 1},
                           {"name": "pacs-here", "ae_title": "PACS", "host": "localhost", "port": raw["node"]["port"]}]
    assert len(parse_config(raw, DEFAULT_CONFIG.parent).destinations) == 2


@pytest.mark.parametrize("mistake", MISTAKES)
def test_serve_stops_on_the_mistake_with_invalid_configuration_and_exit_2(tls_files, tmp_path, mistake):
    from tests.helpers import REPO
    from tests.node_harness import node_config

    path = node_config(tmp_path / "node")  # free ports, a data folder of its own: a node that starts harms nobody
    raw = yaml.safe_load(path.read_text())
    change, key, _ = _mistakes(tls_files, tmp_path)[mistake]
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    try:
        result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(path), "serve"],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{mistake}: serve started instead of refusing the configuration")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "invalid configuration" in result.stderr and key in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_the_metrics_port_may_equal_the_dicom_port_on_another_address():
    raw = _raw()
    raw["node"].update(bind_address="127.0.0.2", metrics_bind_address="127.0.0.1", metrics_port=raw["node"]["port"])
    assert parse_config(raw, DEFAULT_CONFIG.parent).node.metrics_port == raw["node"]["port"]
    raw["node"]["bind_address"] = "0.0.0.0"  # the wildcard covers the metrics address too
    assert "cannot share a port" in _error(raw)
