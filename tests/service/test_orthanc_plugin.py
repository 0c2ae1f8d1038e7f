"""The node as an Orthanc plugin: `glioma-node orthanc-config` → `Orthanc orthanc.json`
(Debian's Orthanc with orthanc-python embedding the system Python 3.11), a study sent by
dcmtk storescu, the results found in the same study through Orthanc's REST API; a
failing study leaves Orthanc serving and says why."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from glioma_node.dicom_io.scan import scan
from tests.helpers import MODALITY, REPO, require_tool, result_kinds
from tests.node_harness import node_config
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("node")]


class PluginOrthanc:
    """Orthanc started from the configuration `glioma-node orthanc-config` wrote."""

    def __init__(self, folder: Path, **node_changes):
        require_tool("Orthanc")
        if not Path("/usr/share/orthanc/plugins/libOrthancPython.so").exists():
            pytest.fail("orthanc-python is not installed; run `make system-deps`")
        self.http_port, self.dicom_port = free_port(), free_port()
        config = node_config(folder / "base", **node_changes)
        written = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(config), "orthanc-config",
                                  "--out",
                                  str(folder / "orthanc"), "--http-port", str(self.http_port), "--dicom-port",
                                  str(self.dicom_port), "--allow", "STORESCU@127.0.0.1"], cwd=REPO, capture_output=True,
                                 text=True, timeout=120)
        assert written.returncode == 0, written.stderr
        self.log = open(folder / "orthanc.log", "w")
        self.process = subprocess.Popen(["Orthanc", str(folder / "orthanc" / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http_port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                self.get("/glioma-node/status")
                break
            except OSError:
                assert self.process.poll() is None, f"Orthanc exited; see {self.log.name}"
                assert time.monotonic() < deadline, f"the plugin did not start; see {self.log.name}"
                time.sleep(0.5)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def study_state(self, study_uid: str) -> dict | None:
        return next((s for s in self.get("/glioma-node/status")["studies"] if s["study_instance_uid"] == study_uid),
                    None)

    def wait(self, study_uid: str, states: tuple[str, ...], timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.study_state(study_uid)
            if state and state["state"] in states:
                return state
            time.sleep(1)
        raise AssertionError(f"{study_uid} not in {states}; see {self.log.name}")

    def series(self, study_uid: str) -> tuple[list[dict], str]:
        request = urllib.request.Request(self.url + "/tools/lookup", data=study_uid.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            study_id = next(i["ID"] for i in json.loads(response.read()) if i["Type"] == "Study")
        return self.get(f"/studies/{study_id}/series?expand"), study_id

    def metadata(self, study_id: str, expected: str, timeout: float = 30) -> str:
        """The study's GliomaNodeStatus once it starts with ``expected`` (it is written each second)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.get(f"/studies/{study_id}/metadata/GliomaNodeStatus")
            except OSError:
                value = ""
            if value.startswith(expected) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    from glioma_node.training.synth.cohort import write_cohort

    out = tmp_path_factory.mktemp("plugin-cohort")
    write_cohort(out, cases=1, seed=33, progress=False)
    return next(p for p in (out / "dicom").iterdir() if p.is_dir())


def test_results_come_back_into_the_same_orthanc_study(case, tmp_path):
    orthanc = PluginOrthanc(tmp_path, radiogenomics=True)
    try:
        subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "GLIOMA_ORTHANC", "+sd", "+r", "-nh", "127.0.0.1",
                        str(orthanc.dicom_port), str(case)], check=True, capture_output=True, timeout=600)
        uid = next(iter(scan(case).studies))
        state = orthanc.wait(uid, ("done", "failed"))
        assert state["state"] == "done", state
        series, study_id = orthanc.series(uid)
        ours = sorted(s["MainDicomTags"]["Modality"] for s in series
                      if s["MainDicomTags"].get("SeriesDescription", "").startswith("glioma-node"))
        assert ours == sorted(MODALITY[k] for k in result_kinds())  # SEG ×2, Parametric Maps and summary (OT), SR
        assert orthanc.metadata(study_id, "done v1").startswith("done v1")
    finally:
        orthanc.stop()


def test_a_failing_study_leaves_orthanc_serving_and_says_why(case, tmp_path):
    orthanc = PluginOrthanc(tmp_path, **{"assembly.force_timeout_s": 10})
    try:
        partial = tmp_path / "partial"
        series = sorted(p for p in case.iterdir() if p.is_dir())
        for folder in series[:2]:  # two series: the study never has its four sequences
            shutil.copytree(folder, partial / folder.name)
        # a PACS forwards JPEG 2000 as it holds it (-R: no conversion); the plugin's Orthanc must take it
        first = sorted((partial / series[0].name).iterdir())[0]
        ds = pydicom.dcmread(first)
        ds.compress(JPEG2000Lossless)
        ds.save_as(first)
        sent = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "GLIOMA_ORTHANC", "+sd", "+r", "-R", "-nh",
                               "127.0.0.1", str(orthanc.dicom_port), str(partial)], capture_output=True, text=True,
                              timeout=600)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        uid = next(iter(scan(partial).studies))
        state = orthanc.wait(uid, ("failed", "done"), timeout=300)
        assert state["state"] == "failed" and "missing" in state["reason"], state
        _, study_id = orthanc.series(uid)
        assert orthanc.metadata(study_id, "failed").startswith("failed")
        assert orthanc.get("/system")["Name"] == "glioma-node"  # still serving
    finally:
        orthanc.stop()
