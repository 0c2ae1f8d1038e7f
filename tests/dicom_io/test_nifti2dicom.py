"""nifti2dicom: a NIfTI case becomes one DICOM study whose geometry matches the NIfTI exactly."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from glioma_node.cli.inspect import inspect_path
from glioma_node.dicom_io.nifti import RAS_TO_LPS, find_role_files, nifti_case_to_dicom, read_nifti
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.series_reader import read_series
from glioma_node.dicom_io.study import load_study, survey
from glioma_node.service.config import load_config
from tests.helpers import REPO, dcm2niix, on_grid, shared


def _volumes_by_role(folder):
    found = scan(folder)
    (study,) = found.studies.values()
    out = {}
    for series in study.series.values():
        volume = read_series(series.instances)
        role = series.instances[0].path.parent.name.split("_", 1)[1]
        out[role] = volume
    return out


def test_tcga_native_becomes_four_recognised_series_with_exact_geometry(tmp_path):
    case = shared("tcga-lgg_fg-6692", "native")
    result = nifti_case_to_dicom(case, tmp_path)
    assert set(result.series_dirs) == {"FLAIR", "T1", "T1c", "T2"}
    volumes = _volumes_by_role(tmp_path)
    for role, path in find_role_files(case).items():
        voxels, affine = read_nifti(path)
        volume = volumes[role]
        # Same voxels at the same places; the slice order may be reversed when the NIfTI's
        # k axis runs against the DICOM normal, which on_grid accounts for exactly.
        mapped = on_grid(volume.voxels, volume.affine, affine, voxels.shape)
        assert np.array_equal(mapped, voxels.astype(np.float32)), role
    report = inspect_path(tmp_path, load_config())
    (study,) = report["studies"]
    roles = {s["role"] for s in study["series"]}
    assert roles == {"FLAIR", "T1", "T1c", "T2"} and not study["missing_roles"]
    assert study["shared_frame_of_reference"]

    # What inference will receive: the four chosen volumes, linked by one frame of reference.
    (surveyed,) = survey(scan(tmp_path), load_config().sequences)
    study_input = load_study(surveyed)
    assert set(study_input.volumes) == {"FLAIR", "T1", "T1c", "T2"}
    assert study_input.shared_frame_of_reference and not study_input.warnings
    assert study_input.volumes["T1c"].shape == (26, 224, 256)
    assert study_input.age_years is None  # NIfTI carries no age; nothing is invented


def test_study_with_missing_roles_says_which(tmp_path):
    source = shared("tcga-lgg_fg-6692", "native")
    case = tmp_path / "case"
    case.mkdir()
    for name in ("t1", "t2"):
        (case / f"{name}.nii.gz").symlink_to(source / f"{name}.nii.gz")
    nifti_case_to_dicom(case, tmp_path / "dicom")
    (surveyed,) = survey(scan(tmp_path / "dicom"), load_config().sequences, decode=False)
    study_input = load_study(surveyed)
    assert set(study_input.volumes) == {"T1", "T2"}
    assert study_input.warnings == ["missing role FLAIR", "missing role T1c"]


@pytest.mark.integration
def test_dcm2niix_reads_our_dicom_back_to_the_source_nifti(tmp_path):
    case = shared("tcga-lgg_fg-6692", "native")
    nifti_case_to_dicom(case, tmp_path / "dicom")
    source_voxels, source_affine = read_nifti(case / "flair.nii.gz")
    (converted,) = dcm2niix(tmp_path / "dicom" / "02_FLAIR", tmp_path / "nii")
    img = nib.load(str(converted))
    theirs = np.asarray(img.get_fdata(), np.float32).transpose(2, 1, 0)
    mapped = on_grid(theirs, RAS_TO_LPS @ img.affine, source_affine, source_voxels.shape)
    assert np.array_equal(mapped, source_voxels.astype(np.float32))



@pytest.mark.parametrize("names", [
    {"flair": "case_flair", "t1": "case_t1", "t1c": "case_t1ce", "t2": "case_t2"},  # BraTS 2021
    {"flair": "BraTS-GLI-00001-000-t2f", "t1": "BraTS-GLI-00001-000-t1n", "t1c": "BraTS-GLI-00001-000-t1c",
     "t2": "BraTS-GLI-00001-000-t2w"},
])
def test_brats_file_names_map_to_roles_and_masks_are_ignored(tmp_path, names):
    source = shared("tcga-lgg_fg-6692", "native")
    case = tmp_path / "case"
    case.mkdir()
    for ours, theirs in names.items():
        (case / f"{theirs}.nii.gz").symlink_to(source / f"{ours}.nii.gz")
    (case / "case_seg.nii.gz").symlink_to(source / "t1.nii.gz")
    (case / "notes.txt").write_text("not an image")
    assert set(find_role_files(case)) == {"FLAIR", "T1", "T1c", "T2"}


def test_brats23_case_via_cli_is_deterministic(tmp_path):
    case = shared("brats23-gli-00001-000")
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "nifti2dicom", str(case), "--out", str(tmp_path / out)],
                       check=True, cwd=REPO, capture_output=True)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    assert len(files_a) == 4 * 155
    for rel in files_a[::97]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    report = json.loads(subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "inspect", "--json", str(tmp_path / "a")],
                                       check=True, cwd=REPO, capture_output=True, text=True).stdout)
    assert sorted(s["role"] for s in report["studies"][0]["series"]) == ["FLAIR", "T1", "T1c", "T2"]


def test_no_role_files_is_a_clear_error(tmp_path):
    (tmp_path / "mask.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="no NIfTI file named for a role"):
        find_role_files(tmp_path)
