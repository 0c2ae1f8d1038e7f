"""StudyInput: what inference needs of one study (data only, no DICOM)."""
from __future__ import annotations

from dataclasses import dataclass, field

from glioma_node.core.volume import Volume


@dataclass
class StudyInput:
    """One study: patient facts and one Volume per recognised role (FLAIR, T1, T1c, T2).

    ``age_years`` comes from PatientAge, or PatientBirthDate and StudyDate; ``None``
    when neither is present. ``shared_frame_of_reference`` is True when every role
    volume lies in one DICOM Frame of Reference, so their affines already align and
    co-registration can start from the identity. ``patient_id`` and ``accession_number``
    are the study's own (what a site's clinical source is keyed by). ``known_markers``:
    marker (:class:`~glioma_node.core.clinical.Marker`) → 1/0 status from the site's
    clinical source, with ``known_from`` saying which source and row; empty when none.
    """

    study_instance_uid: str
    volumes: dict[str, Volume]
    age_years: float | None = None
    sex: str | None = None
    shared_frame_of_reference: bool = False
    warnings: list[str] = field(default_factory=list)
    patient_id: str = ""
    accession_number: str = ""
    known_markers: dict[str, int] = field(default_factory=dict)
    known_from: str = ""
