"""NIfTI ↔ the Volume convention, and a NIfTI case turned into one DICOM study.

NIfTI affines are RAS (x to the right... i.e. +x = patient left is negative); DICOM and
Volume affines are LPS: the conversion flips the signs of the first two rows. NIfTI
arrays are indexed [i, j, k] and Volume voxels [k, j, i].

``nifti2dicom`` knows the role of each file only from its name, so it writes a
SeriesDescription naming the role and the typical physics of that sequence
(TR/TE/TI, inversion recovery for FLAIR, a contrast agent for T1c); recognition of
the result therefore rests on what the file names said, as it would for any PACS
import of NIfTI data.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from glioma_node.core.volume import SeriesMetadata, Volume
from glioma_node.dicom_io.mr_writer import SeriesInfo, StudyInfo, write_mr_series
from glioma_node.dicom_io.uids import derived_uid

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

# File-name patterns per role: our own names, BraTS 2021 (_flair/_t1/_t1ce/_t2) and
# BraTS 2023 (-t2f/-t1n/-t1c/-t2w). Matched against the name without .nii/.nii.gz.
ROLE_FILE_PATTERNS: dict[str, list[str]] = {
    "FLAIR": [r"^flair$", r"[_-]flair$", r"-t2f$"],
    "T1": [r"^t1$", r"_t1$", r"-t1n$"],
    "T1c": [r"^t1c$", r"^t1ce$", r"_t1ce$", r"-t1c$", r"_t1c$", r"_t1gd$"],
    "T2": [r"^t2$", r"_t2$", r"-t2w$"],
}

# Typical physics of each sequence (1.5-3 T brain protocols), ms.
ROLE_SERIES: dict[str, dict] = {
    "FLAIR": {"number": 2, "description": "AX T2 FLAIR", "contrast": "FLUID_ATTENUATED",
              "attributes": {"ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "RepetitionTime": 9000,
                             "EchoTime": 90, "InversionTime": 2500, "FlipAngle": 150, "EchoTrainLength": 16}},
    "T1": {"number": 3, "description": "AX T1 SE PRE", "contrast": "T1",
           "attributes": {"ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP"], "RepetitionTime": 550,
                          "EchoTime": 10, "FlipAngle": 90, "EchoTrainLength": 1}},
    "T1c": {"number": 5, "description": "AX T1 SE POST GD", "contrast": "T1",
            "attributes": {"ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP"], "RepetitionTime": 550,
                           "EchoTime": 10, "FlipAngle": 90, "EchoTrainLength": 1, "ContrastBolusAgent": "GADOLINIUM"}},
    "T2": {"number": 4, "description": "AX T2 TSE", "contrast": "T2",
           "attributes": {"ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP"], "RepetitionTime": 5000,
                          "EchoTime": 100, "FlipAngle": 150, "EchoTrainLength": 15}},
}


def nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_role_files(case_dir: Path) -> dict[str, Path]:
    """Role → NIfTI file in ``case_dir``; other files (masks, labels) are ignored.

    Raises ValueError when a role matches two files or no role matches anything.
    """
    found: dict[str, Path] = {}
    for path in sorted(case_dir.iterdir()):
        if not path.is_file() or not re.search(r"\.nii(\.gz)?$", path.name, re.I):
            continue
        stem = nifti_stem(path).lower()
        for role, patterns in ROLE_FILE_PATTERNS.items():
            if any(re.search(p, stem) for p in patterns):
                if role in found:
                    raise ValueError(f"{case_dir}: two files for {role}: {found[role].name} and {path.name}")
                found[role] = path
                break
    if not found:
        raise ValueError(
            f"{case_dir}: no NIfTI file named for a role; expected flair/t1/t1c/t2, BraTS 2021 _flair/_t1/_t1ce/_t2 "
            "or BraTS 2023 -t2f/-t1n/-t1c/-t2w"
        )
    return found


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels [k, j, i] and the LPS affine of a 3D NIfTI file (scaling applied when set)."""
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path.name}: not a NIfTI image ({type(img).__name__})")
    if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
        raise ValueError(f"{path.name}: a 3D image is needed, got shape {img.shape}")
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), RAS_TO_LPS @ img.affine


def read_nifti_volume(path: Path, description: str = "") -> Volume:
    """A NIfTI file as a :class:`Volume` (voxels ``[k, j, i]`` as float32, LPS affine in mm), for
    the models. No DICOM object will reference it, so its UIDs derive from the file's path
    and size: the same file gives the same UIDs."""
    voxels, affine = read_nifti(path)
    key = f"{path.resolve()}:{path.stat().st_size}"
    return Volume(voxels=np.asarray(voxels, np.float32), affine=affine,
                  sop_instance_uids=[derived_uid("nifti-volume", key, k) for k in range(voxels.shape[0])],
                  metadata=SeriesMetadata(study_instance_uid=derived_uid("nifti-volume", key, "study"),
                                          series_instance_uid=derived_uid("nifti-volume", key, "series"),
                                          series_description=description or path.name))


def write_nifti(path: Path, voxels: np.ndarray, affine_lps: np.ndarray) -> None:
    """Write Volume-convention voxels [k, j, i] with an LPS affine as NIfTI (RAS, sform and qform)."""
    img = nib.Nifti1Image(np.ascontiguousarray(voxels.transpose(2, 1, 0)), RAS_TO_LPS @ affine_lps)
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


@dataclass
class WrittenStudy:
    study_instance_uid: str
    series_dirs: dict[str, Path]


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode())
        digest.update(str(p.stat().st_size).encode())
    return digest.hexdigest()[:16]


def nifti_case_to_dicom(case_dir: Path, out_dir: Path, patient_id: str | None = None) -> WrittenStudy:
    """Write the role files of a NIfTI case as one DICOM study (one classic MR series per role).

    Geometry matches each NIfTI exactly (the LPS affine becomes IOP/IPP/PixelSpacing).
    UIDs derive from the case name and files, so converting twice gives the same UIDs.
    """
    files = find_role_files(case_dir)
    patient_id = patient_id or case_dir.name
    key = _fingerprint(list(files.values()))
    study = StudyInfo(
        study_instance_uid=derived_uid("nifti2dicom", patient_id, key, "study"),
        frame_of_reference_uid=derived_uid("nifti2dicom", patient_id, key, "frame-of-reference"),
        patient_name=f"NIFTI^{patient_id}"[:64],
        patient_id=patient_id[:64],
        accession_number=key[:16],
        study_description="MR BRAIN (converted from NIfTI)",
    )
    series_dirs: dict[str, Path] = {}
    for role, path in sorted(files.items(), key=lambda kv: ROLE_SERIES[kv[0]]["number"]):
        voxels, affine = read_nifti(path)
        spec = ROLE_SERIES[role]
        series = SeriesInfo(
            series_instance_uid=derived_uid("nifti2dicom", patient_id, key, role),
            series_number=spec["number"],
            series_description=f"{spec['description']} ({path.name})"[:64],
            series_time=f"08{spec['number']:02d}00",
            manufacturer="glioma-node nifti2dicom",
            model_name="NIfTI",
            acquisition_contrast=spec["contrast"],
            attributes={**spec["attributes"],
                        "MRAcquisitionType": "3D" if max(np.linalg.norm(affine[:3, :3], axis=0)) < 1.5 else "2D"},
        )
        folder = out_dir / f"{spec['number']:02d}_{role}"
        write_mr_series(voxels, affine, study, series, folder)
        series_dirs[role] = folder
    return WrittenStudy(study.study_instance_uid, series_dirs)
