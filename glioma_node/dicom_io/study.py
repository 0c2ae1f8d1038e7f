"""A study's series surveyed: geometry or refusal, role, and the one series chosen per role.

:func:`survey` works from headers (plus, by default, a full pixel decode so that a
truncated file is caught here rather than mid-inference); :func:`load_study` turns a
survey into the :class:`glioma_node.core.study.StudyInput` that inference consumes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from glioma_node.core.roles import ROLES
from glioma_node.core.study import StudyInput
from glioma_node.core.volume import Volume
from glioma_node.dicom_io.bounded import ReadLimits
from glioma_node.dicom_io.errors import SeriesRefused
from glioma_node.dicom_io.geometry import affine_directions
from glioma_node.dicom_io.header import SeriesHeader
from glioma_node.dicom_io.patient import age_years, sex
from glioma_node.dicom_io.scan import ScanResult, SeriesFiles, StudyFiles
from glioma_node.dicom_io.sequence_rules import SequenceRules
from glioma_node.dicom_io.sequences import Candidate, RoleCall, recognise, select_roles
from glioma_node.dicom_io.series_reader import layout, read_series


@dataclass
class SeriesSurvey:
    """One series: its header, its geometry (or why it was refused) and its role."""

    files: SeriesFiles
    header: SeriesHeader
    call: RoleCall
    shape: tuple[int, int, int] | None = None
    affine: np.ndarray | None = None
    refusal: SeriesRefused | None = None
    selected: bool = False
    volume: Volume | None = None

    @property
    def series_instance_uid(self) -> str:
        return self.header.series_instance_uid

    def geometry(self) -> dict[str, Any] | None:
        """Shape, spacing (column, row, slice; mm), orientation name and direction cosines."""
        if self.affine is None or self.shape is None:
            return None
        direction, spacing = affine_directions(self.affine)
        return {
            "shape_slices_rows_columns": list(self.shape),
            "spacing_mm_column_row_slice": [round(float(s), 4) for s in spacing],
            "orientation": orientation_name(direction[:, 2]),
            "direction_lps": np.round(direction, 5).T.tolist(),
            "origin_lps_mm": np.round(self.affine[:3, 3], 3).tolist(),
            "frame_of_reference_uid": self.header.frame_of_reference_uid,
        }


@dataclass
class StudySurvey:
    study_instance_uid: str
    series: list[SeriesSurvey] = field(default_factory=list)
    roles: dict[str, SeriesSurvey] = field(default_factory=dict)
    limits: ReadLimits = field(default_factory=ReadLimits)  # what reading its series may hold (load_study)

    @property
    def missing_roles(self) -> list[str]:
        return [r for r in ROLES if r not in self.roles]

    def source_headers(self) -> dict[str, list[Dataset]]:
        """SeriesInstanceUID → instance headers of each chosen role series (what the
        result writers reference)."""
        return {item.series_instance_uid: [i.header for i in item.files.instances] for item in self.roles.values()}

    @property
    def shared_frame_of_reference(self) -> bool:
        uids = {s.header.frame_of_reference_uid for s in self.roles.values()}
        return len(self.roles) > 1 and len(uids) == 1 and None not in uids


def orientation_name(normal: np.ndarray) -> str:
    """axial, sagittal or coronal by the dominant axis of the slice normal; oblique beyond 10°."""
    axis = int(np.argmax(np.abs(normal)))
    name = ("sagittal", "coronal", "axial")[axis]
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[axis]) / np.linalg.norm(normal)))))
    return name if tilt <= 10 else f"oblique ({name}, {tilt:.0f}°)"


def _survey_series(files: SeriesFiles, rules: SequenceRules, decode: bool, min_confidence: float,
                   keep_volumes: bool, limits: ReadLimits) -> SeriesSurvey:
    header = SeriesHeader.from_dataset(files.instances[0].header)
    call = recognise(header, rules)
    item = SeriesSurvey(files=files, header=header, call=call)
    try:
        if decode:
            volume = read_series(files.instances, limits.max_voxels, limits.max_bytes)
            item.shape, item.affine = volume.shape, volume.affine
            item.volume = volume if keep_volumes else None
        else:
            plan = layout(files.instances, limits.max_voxels)
            item.shape, item.affine = plan.shape, plan.affine
    except SeriesRefused as exc:
        item.refusal = exc
        item.call = RoleCall("other", call.confidence,
                             f"refused ({exc.code}), so no role; the header alone says {call.role}: {call.reason}")
    if item.refusal is None and call.role in ROLES and call.confidence < min_confidence:
        item.call = RoleCall("other", call.confidence, f"confidence {call.confidence:.2f} below {min_confidence}: {call.reason}")
    return item


def _candidate(item: SeriesSurvey) -> Candidate:
    assert item.affine is not None and item.shape is not None
    _, spacing = affine_directions(item.affine)
    iso = item.header.mr_acquisition_type == "3D" and max(spacing) <= 1.2 * min(spacing)
    return Candidate(
        series_instance_uid=item.series_instance_uid,
        call=item.call,
        is_3d_isotropic=iso,
        slices=item.shape[0],
        series_date=item.header.series_date,
        series_time=item.header.series_time,
        series_number=item.header.series_number,
    )


def survey_study(study: StudyFiles, rules: SequenceRules, decode: bool = True, min_confidence: float = 0.5,
                 keep_volumes: bool = False, limits: ReadLimits | None = None) -> StudySurvey:
    """Survey every series of a study and choose one per role (only readable series compete).

    ``decode`` reads the pixel data too, so a corrupt file is refused here; the volumes
    are kept only with ``keep_volumes`` (a report over a large folder must not hold them all);
    ``limits``: what reading a series may hold (default: :class:`ReadLimits`' defaults).
    """
    result = StudySurvey(study.study_instance_uid, limits=limits or ReadLimits())
    for files in study.series.values():
        result.series.append(_survey_series(files, rules, decode, min_confidence, keep_volumes, result.limits))
    result.series.sort(key=lambda s: (s.header.series_number or 0, s.series_instance_uid))
    readable = [s for s in result.series if s.refusal is None]
    chosen = select_roles(_candidate(s) for s in readable)
    by_uid = {s.series_instance_uid: s for s in readable}
    for role, candidate in chosen.items():
        result.roles[role] = by_uid[candidate.series_instance_uid]
        by_uid[candidate.series_instance_uid].selected = True
    return result


def survey(scan_result: ScanResult, rules: SequenceRules, decode: bool = True, min_confidence: float = 0.5,
           keep_volumes: bool = False, limits: ReadLimits | None = None) -> list[StudySurvey]:
    """Survey every study of a scan, in StudyInstanceUID order (see :func:`survey_study`)."""
    return [survey_study(scan_result.studies[uid], rules, decode, min_confidence, keep_volumes, limits)
            for uid in sorted(scan_result.studies)]


def load_study(study: StudySurvey) -> StudyInput:
    """The StudyInput of a surveyed study: its chosen role volumes and patient facts."""
    volumes: dict[str, Volume] = {}
    for role, item in study.roles.items():
        volumes[role] = item.volume if item.volume is not None else read_series(
            item.files.instances, study.limits.max_voxels, study.limits.max_bytes)
    first = next(iter(study.roles.values()), None) or (study.series[0] if study.series else None)
    ds = first.files.instances[0].header if first else None
    warnings = [f"missing role {r}" for r in study.missing_roles]
    return StudyInput(
        study_instance_uid=study.study_instance_uid,
        volumes=volumes,
        age_years=age_years(ds) if ds is not None else None,
        sex=sex(ds) if ds is not None else None,
        shared_frame_of_reference=study.shared_frame_of_reference,
        warnings=warnings,
        patient_id=str(ds.get("PatientID", "") or "") if ds is not None else "",
        accession_number=str(ds.get("AccessionNumber", "") or "") if ds is not None else "",
    )
