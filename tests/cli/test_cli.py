"""The command line as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _series(folder: Path, description: str, count: int = 3) -> None:
    from tests.hostile_data import mr_dataset, part10

    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        ds = mr_dataset(n, study="1.2.826.0.1.3680043.9.2514", series="1.2.826.0.1.3680043.9.2514.1")
        ds.SeriesDescription = description
        ds.SeriesNumber = 7
        (folder / f"{n}.dcm").write_bytes(part10(ds))


def test_inspect_on_a_folder_with_a_named_pipe_returns(tmp_path):
    _series(tmp_path, "AX T1")
    os.mkfifo(tmp_path / "pipe")
    try:
        result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "inspect", "--json", str(tmp_path)],
                                capture_output=True, text=True, cwd=REPO, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("inspect waited on a named pipe")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped_not_dicom"] == 1 and len(report["studies"]) == 1
    assert "skipped" in result.stderr and "named pipe" in result.stderr


def test_inspect_shows_control_characters_of_a_description_escaped(tmp_path):
    _series(tmp_path, "T1\x1b[2J\x07\rFAKE\nROW")
    result = _run("inspect", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in result.stdout, repr(result.stdout)
    (row,) = [line for line in result.stdout.splitlines() if "#7" in line]
    assert "T1\\x1b[2J\\x07\\x0dFAKE\\x0aROW" in row, row  # one row, every character visible
    assert not any(line.startswith("ROW") for line in result.stdout.splitlines())


def test_inspect_refuses_compressed_files_declaring_a_huge_series(tmp_path):
    """The issue's case: 24 JPEG 2000 files of under 1 KB each declaring 4096 × 4096
    (402 million voxels, 1.6 GB as float32) are refused from their headers, not decoded."""
    from tests.dicom_io.test_malformed import _jpeg2000_series

    _jpeg2000_series(tmp_path, 24)
    result = _run("inspect", "--json", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (series,) = json.loads(result.stdout)["studies"][0]["series"]
    assert series["refused"]["code"] == "too_large", series["refused"]
    assert "268435456 voxels" in series["refused"]["reason"] and series["role"] == "other"
