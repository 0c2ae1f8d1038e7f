"""glioma-node installed as a wheel (not editable, not from the checkout) into a fresh
environment: it finds its configuration defaults and default models as package data,
processes a study and serves DICOM, run from a folder that is not the checkout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.node_harness import echo
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("synth")]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the glioma-node wheel; its third-party dependencies are borrowed
    from the test environment by a path entry (they are not what this test is about)."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "wheel"), str(REPO)], check=True, capture_output=True, timeout=600)
    (wheel,) = (root / "wheel").glob("glioma_node-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # away from the checkout (its egg-info would read as "already installed") and its PYTHONPATH
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=600, cwd=root, env=_clean_env())
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())
    # a plain path line: the test environment's .pth files (its editable glioma-node) are not read
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "glioma-node"), *args], capture_output=True, text=True, cwd=cwd,
                          env=_clean_env(), timeout=timeout)


def test_the_wheel_carries_its_package_data(installed: Path, tmp_path: Path):
    code = ("import glioma_node, json; from glioma_node.core.resources import DEFAULT_CONFIG, DEFAULT_MODELS; "
            "print(json.dumps([glioma_node.__file__, str(DEFAULT_CONFIG), DEFAULT_CONFIG.is_file(), "
            "sorted(p.name for p in DEFAULT_MODELS.iterdir())]))")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=_clean_env(), check=True)
    module, config, config_found, models = json.loads(out.stdout)
    assert Path(module).is_relative_to(installed) and not Path(module).is_relative_to(REPO)
    assert config_found and Path(config).is_relative_to(installed)
    assert models == ["radiogenomics", "segmentation"]


def test_installed_node_processes_a_study_with_its_embedded_defaults(installed: Path, synth_cohort: Path,
                                                                     tmp_path: Path):
    case = next(p for p in sorted((synth_cohort / "dicom").iterdir()) if p.is_dir())
    result = _run(installed, tmp_path, "process", str(case), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    (findings_path,) = (tmp_path / "out").glob("*/findings.json")
    findings = json.loads(findings_path.read_text())
    assert findings["status"] == "done" and findings["segmentation"]["volumes_ml"]["whole_tumour"] > 0
    assert {m["task"] for m in findings["models"]} >= {"segmentation", "radiogenomics"}
    assert len(list(findings_path.parent.glob("dicom/*.dcm"))) >= 4


def test_installed_node_serves_dicom_and_keeps_its_data_in_the_working_directory(installed: Path, tmp_path: Path):
    port = free_port()
    process = subprocess.Popen([str(installed / "bin" / "glioma-node"), "serve", "--port", str(port), "--allow",
                                "STORESCU@127.0.0.1"], cwd=tmp_path, env=_clean_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not echo(port, "STORESCU"):
            assert process.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not answer C-ECHO"
            time.sleep(0.5)
        assert (tmp_path / "var" / "state.db").is_file()  # the embedded default's data_dir, under the working directory
        assert not list(installed.rglob("state.db"))  # nothing written into the installed package
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
