"""The command line as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO, shared


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glioma_node.cli.main", *args], capture_output=True, text=True, cwd=REPO)


def test_inspect_json_on_real_scanner_data_has_the_documented_keys():
    result = _run("inspect", "--json", str(shared("dcm_qa_philips_enh")))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (study,) = report["studies"]
    series = {s["series_description"]: s for s in study["series"]}
    mprage = series["ADNI_Sag3D MPRAGE"]
    assert mprage["role"] == "T1" and mprage["selected"] and mprage["series_instance_uid"]
    assert mprage["geometry"]["shape_slices_rows_columns"] == [170, 256, 256]
    fieldmap = series["fcMRI Field Mapping"]
    assert fieldmap["role"] == "other" and fieldmap["refused"]["code"] == "mixed_components"
    for s in study["series"]:
        assert s["role"] in ("FLAIR", "T1", "T1c", "T2", "other") and s["reason"]


def test_inspect_text_names_refusals():
    result = _run("inspect", str(shared("dcm_qa_nih")))
    assert result.returncode == 0
    assert "REFUSED (time_series)" in result.stdout and "10 volumes" in result.stdout


def test_missing_path_is_a_clear_error(tmp_path):
    result = _run("inspect", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "does not exist" in result.stderr
