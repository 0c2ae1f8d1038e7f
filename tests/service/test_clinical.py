"""The site's clinical source: known MGMT/IDH/EGFR status read from a LIMS export."""
from __future__ import annotations

from pathlib import Path

import pytest

from glioma_node.service.clinical import ClinicalSource
from glioma_node.service.config import ConfigError, load_config


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> ClinicalSource:
    path = tmp_path / "lims.csv"
    path.write_text(text, encoding=encoding)
    return ClinicalSource(path)


def test_a_study_takes_its_accession_row_before_its_patient_rows(tmp_path):
    source = _csv(tmp_path, "patientid,AccessionNumber,MGMT,IDH,EGFR,Comment\n"
                            "P1,,unmethylated,wildtype,not amplified,first biopsy\n"
                            "P1,A7,Methylated,IDH1 R132H,amplified,\n")
    by_accession = source.lookup("P1", "A7")
    assert by_accession.markers == {"mgmt": 1, "idh": 1, "egfr": 1} and "AccessionNumber A7" in by_accession.source
    by_patient = source.lookup("P1", "A8")
    assert by_patient.markers == {"mgmt": 0, "idh": 0, "egfr": 0} and "PatientID P1" in by_patient.source
    assert source.lookup("P2", "").markers == {} and source.lookup("", "").markers == {}


def test_unknown_or_contradictory_values_stay_unknown_and_say_so(tmp_path):
    source = _csv(tmp_path, "PatientID,MGMT,IDH\nP1,indeterminate,mutant\nP1,,wildtype\n")
    found = source.lookup("P1", "")
    assert found.markers == {} and any("disagree on IDH" in w for w in found.warnings)


@pytest.mark.parametrize("content", ["MGMT,IDH\nmethylated,mutant\n", "\x00\x01binary"])
def test_an_unusable_file_gives_a_warning_not_a_failure(tmp_path, content):
    found = _csv(tmp_path, content).lookup("P1", "A1")
    assert found.markers == {} and "unreadable" in found.warnings[0]


def test_a_configured_file_that_is_not_there_is_a_config_error(tmp_path):
    config = tmp_path / "node.yaml"
    default = (Path(__file__).parents[2] / "glioma_node" / "conf" / "glioma-node.yaml").read_text()
    config.write_text(default.replace("clinical:\n  path: null", "clinical:\n  path: lims-export.csv")
                      .replace("../models/", str(Path(__file__).parents[2] / "glioma_node" / "models") + "/"))
    with pytest.raises(ConfigError, match=r"clinical\.path: no such file"):
        load_config(config)
