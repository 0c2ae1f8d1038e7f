"""DICOM training cohorts (RSNA-MICCAI, TCIA's TCGA-GBM and TCGA-LGG) converted once to NIfTI.

Training reads NIfTI. Each role's series of a DICOM case is converted by dicom2nifti (the
converter docs/design.md names for training data) into ``<folder>/<case>/<ROLE>.nii.gz``,
written atomically and once: a later run, or a run resumed after a crash, reads the files.
``conversion.json`` beside them says which series became which role and why. The live path
keeps the node's own reader, because a DICOM SEG must reference each source slice by its
SOP Instance UID; the two agree voxel for voxel on real scanner series (tested).

Which series is which role:

- **RSNA-MICCAI** names a folder for each sequence (FLAIR, T1w, T1wCE, T2w): the folder decides.
- **TCIA** folders carry the scanner's free-text descriptions, so the node's own recognition
  (header physics, then the description patterns of ``conf/``; :mod:`glioma_node.dicom_io.sequences`)
  chooses, on the earliest study of the patient that has all four roles: the
  pre-operative scan, as the studies the node follows used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from glioma_node.core.files import atomic_path, write_text_atomic
from glioma_node.core.roles import ROLES
from glioma_node.dicom_io.scan import Instance, StudyFiles, scan
from glioma_node.dicom_io.sequence_rules import SequenceRules
from glioma_node.dicom_io.study import survey_study
from glioma_node.dicom_io.uids import safe_file_name
from glioma_node.training.radiogenomics.adapters import LabelledCase

RSNA_FOLDERS = {"flair": "FLAIR", "t1w": "T1", "t1wce": "T1c", "t2w": "T2"}
"""RSNA-MICCAI's sequence folder names (lower case) → role."""


class ConversionError(ValueError):
    """A DICOM case that cannot become four NIfTI files; the message says what is missing."""


@dataclass(frozen=True)
class RoleSeries:
    """The series chosen for one role: its files and why it was chosen."""

    role: str
    series_instance_uid: str
    description: str
    reason: str
    instances: list[Instance]


def _study_date(study: StudyFiles) -> str:
    header = next(iter(study.series.values())).instances[0].header
    return f"{header.get('StudyDate', '') or '99999999'}{header.get('StudyTime', '') or ''}"


def _by_folder_name(study: StudyFiles) -> dict[str, RoleSeries]:
    roles: dict[str, RoleSeries] = {}
    for series in study.series.values():
        folder = series.instances[0].path.parent.name
        role = RSNA_FOLDERS.get(folder.lower())
        if role:
            roles[role] = RoleSeries(role, series.series_instance_uid, folder, f"folder named {folder}", series.instances)
    return roles


def _by_recognition(study: StudyFiles, rules: SequenceRules) -> dict[str, RoleSeries]:
    surveyed = survey_study(study, rules, decode=False)
    return {role: RoleSeries(role, item.series_instance_uid, item.header.series_description, item.call.reason,
                             item.files.instances)
            for role, item in surveyed.roles.items()}


def role_series(dicom_dir: Path, rules: SequenceRules | None) -> dict[str, RoleSeries]:
    """Role → series of the case under ``dicom_dir`` (see the module doc for how each is chosen).

    Raises :class:`ConversionError` naming what each study lacks when no study has all four roles.
    """
    result = scan(dicom_dir)
    if not result.studies:
        raise ConversionError(f"{dicom_dir}: no readable DICOM study ({len(result.bad_files)} unreadable files)")
    lacking = []
    for study in sorted(result.studies.values(), key=lambda s: (_study_date(s), s.study_instance_uid)):
        roles = _by_folder_name(study)
        if len(roles) < len(ROLES) and rules is not None:
            roles = _by_recognition(study, rules)
        missing = [r for r in ROLES if r not in roles]
        if not missing:
            return roles
        lacking.append(f"study {study.study_instance_uid} ({_study_date(study)[:8]}) lacks {', '.join(missing)}")
    hint = "" if rules is not None else "; folders not named FLAIR/T1w/T1wCE/T2w need the sequence rules of conf/"
    raise ConversionError(f"{dicom_dir}: no study with FLAIR, T1, T1c and T2: {'; '.join(lacking)}{hint}")


def convert_series(series: RoleSeries, path: Path) -> None:
    """One series to one NIfTI file with dicom2nifti (reoriented to its canonical axes), atomically."""
    import dicom2nifti.convert_dicom
    import pydicom

    datasets = [pydicom.dcmread(str(i.path)) for i in series.instances]
    try:
        with atomic_path(path) as tmp:
            dicom2nifti.convert_dicom.dicom_array_to_nifti(datasets, str(tmp), reorient_nifti=True)
    except Exception as exc:  # dicom2nifti raises its own and numpy's errors for odd series
        raise ConversionError(f"{series.role} series {series.series_instance_uid}: dicom2nifti refused it: {exc}") from exc


def convert_case(case: LabelledCase, folder: Path, rules: SequenceRules | None) -> LabelledCase:
    """``case`` with ``images`` set to its four NIfTI files under ``folder/<case>/``, converting
    whatever is not there yet (a case with images already is returned unchanged)."""
    if case.images is not None or case.dicom_dir is None:
        return case
    out = folder / safe_file_name(case.name)
    paths = {role: out / f"{role}.nii.gz" for role in ROLES}
    record = out / "conversion.json"
    if not record.exists():
        chosen = role_series(case.dicom_dir, rules)
        out.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            convert_series(chosen[role], paths[role])
        provenance = {role: {"series_instance_uid": s.series_instance_uid, "description": s.description,
                             "reason": s.reason, "files": len(s.instances)} for role, s in chosen.items()}
        write_text_atomic(record, json.dumps({"converter": "dicom2nifti", "source": str(case.dicom_dir),
                                              "roles": provenance}, indent=1))
    return replace(case, images=paths)


def convert_cases(cases: list[LabelledCase], folder: Path, rules: SequenceRules | None
                  ) -> tuple[list[LabelledCase], dict[str, str]]:
    """Every DICOM case converted (:func:`convert_case`); returns the cases that have images
    and case name → why for those that could not be converted."""
    done, errors = [], {}
    for case in cases:
        try:
            done.append(convert_case(case, folder, rules))
        except (ConversionError, OSError) as exc:
            errors[case.name] = str(exc)
    return done, errors

