from __future__ import annotations

from pathlib import Path

import pytest

from glioma_node.service.config import Config, load_config


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic cases, one per vendor style (cases cycle Siemens, GE, Philips)."""
    from glioma_node.training.synth.cohort import write_cohort

    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, cases=3, seed=11, progress=False)
    return out


@pytest.fixture(scope="session")
def processed(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    """``glioma-node process`` run once over the synthetic cohort (plus a non-DICOM file):
    (completed process, output folder). Tests using it share the "synth" xdist group."""
    import subprocess
    import sys

    from tests.helpers import REPO

    dicom = synth_cohort / "dicom"
    (dicom / "README.txt").write_text("not DICOM: must be ignored")
    out = tmp_path_factory.mktemp("processed")
    # The site's clinical source knows the first patient's IDH status (the others are not in it).
    (out.parent / "lims.csv").write_text("PatientID,IDH,MGMT\nsynth-0011-0000,wildtype,\n")
    default = (REPO / "glioma_node" / "conf" / "glioma-node.yaml").read_text()
    config = out.parent / "with-clinical.yaml"
    config.write_text(default.replace("clinical:\n  path: null", "clinical:\n  path: lims.csv")
                      .replace("../models/", f"{REPO}/glioma_node/models/"))
    result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(config), "process", str(dicom),
                             "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=1800)
    return result, out
