"""What every result object of one study shares: its sources, its UIDs, its device and its series.

Determinism: UIDs come from :func:`glioma_node.dicom_io.uids.derived_uid` over the study, the
source instances and the model checksums, and every date and time in the objects is
the moment the findings were completed. Writing the same findings twice therefore
gives byte-identical files, so a retried send replaces rather than duplicates.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from highdicom.base_content import ContributingEquipment
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from glioma_node.core.files import atomic_path
from glioma_node.core.findings import Findings
from glioma_node.dicom_io.results import codes
from glioma_node.dicom_io.uids import derived_uid

D = TypeVar("D", bound=Dataset)  # a result object: stamping keeps its own type


def software_version() -> str:
    try:
        return importlib.metadata.version("glioma-node")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


MANUFACTURER = "glioma-node project"
MODEL_NAME = "glioma-node"
DEVICE_SERIAL = "glioma-node"


@dataclass(frozen=True)
class ResultSeries:
    """A result series: its number and description, and the file stem of its one object."""

    number: int
    description: str
    stem: str


#: SeriesNumber and SeriesDescription of each result object (kind, role or target)
SERIES = {
    ("seg", "T1c"): ResultSeries(901, "glioma-node tumour segmentation on T1c (research)", "seg-t1c"),
    ("seg", "FLAIR"): ResultSeries(902, "glioma-node tumour segmentation on FLAIR (research)", "seg-flair"),
    ("pmap", "mgmt"): ResultSeries(903, "glioma-node Grad-CAM MGMT methylation (research)", "gradcam-mgmt"),
    ("pmap", "idh"): ResultSeries(904, "glioma-node Grad-CAM IDH mutation (research)", "gradcam-idh"),
    ("sr", ""): ResultSeries(905, "glioma-node tumour report TID 1500 (research)", "report"),
    ("sc", ""): ResultSeries(906, "glioma-node summary, research use only", "summary"),
    # a study without T1c is read on its T1, or on its T2 when that is all it has
    ("seg", "T1"): ResultSeries(907, "glioma-node tumour segmentation on T1 (research)", "seg-t1"),
    ("seg", "T2"): ResultSeries(908, "glioma-node tumour segmentation on T2 (research)", "seg-t2"),
    ("pmap", "chemo-benefit"): ResultSeries(909, "glioma-node Grad-CAM chemotherapy benefit (research)",
                                            "gradcam-chemo-benefit"),
}


SERIES_STEP = 100
"""SeriesNumber of version n of a result series: the first version's + SERIES_STEP × (n - 1)."""


@dataclass(frozen=True)
class ResultVersion:
    """Which version of a study's results these are: ``number`` counts from 1 (new
    instances after processing make the next, see the node's assembly); ``predecessors``
    are the headers of the SR of the version they replace, which the new SR names in its
    Predecessor Documents Sequence."""

    number: int = 1
    predecessors: tuple[Dataset, ...] = ()


def previous_reports(results: Path, version: int) -> tuple[Dataset, ...]:
    """The header of the latest SR written before ``version`` under ``results`` (the
    study's results folder, one ``v<N>`` folder per version), or none."""
    import pydicom

    for earlier in range(version - 1, 0, -1):
        report = results / f"v{earlier}" / "dicom" / f"{SERIES[('sr', '')].stem}.dcm"
        if report.is_file():
            try:
                return (pydicom.dcmread(report, stop_before_pixels=True),)
            except Exception:  # noqa: BLE001 - an unreadable earlier report is not named; the new one still goes out
                return ()
    return ()


@dataclass
class ResultContext:
    """One study's sources and the shared facts of its result objects.

    ``sources`` maps each source SeriesInstanceUID to its instance headers (pixel data
    not needed), in any order; ``created`` is when the findings were completed (UTC).
    """

    findings: Findings
    sources: dict[str, list[Dataset]]
    created: datetime
    software: str = field(default_factory=software_version)
    version: ResultVersion = field(default_factory=ResultVersion)

    def series(self, kind: str, key: str = "") -> ResultSeries:
        """The SeriesNumber, SeriesDescription and file stem of one result object of this
        version: version 1 as in :data:`SERIES`; a later version numbered above it and
        described with ``(vN)``, so that a PACS lists the newest apart from the old."""
        base = SERIES[(kind, key)]
        n = self.version.number
        if n <= 1:
            return base
        return ResultSeries(base.number + SERIES_STEP * (n - 1), f"{base.description} (v{n})"[:64], base.stem)

    @property
    def study_instance_uid(self) -> str:
        return self.findings.study_instance_uid

    @cached_property
    def version_key(self) -> str:
        """A digest of what the results depend on: the source instances (whatever order
        the files were found in) and the models."""
        digest = hashlib.sha256()
        for uid in sorted(self.sources):
            digest.update(uid.encode())
            for sop in sorted(str(ds.SOPInstanceUID) for ds in self.sources[uid]):
                digest.update(sop.encode())
        for model in self.findings.models:
            digest.update(str(model.get("sha256", "")).encode())
        return digest.hexdigest()[:32]

    def uid(self, *parts: object) -> str:
        """A UID for a part of this study's results (same findings and version, same UID;
        a later version's objects never reuse an earlier one's, even from the same sources,
        as when the series that made it is one no role uses)."""
        version = () if self.version.number <= 1 else (f"v{self.version.number}",)
        return derived_uid("glioma-node results", self.study_instance_uid, self.version_key, *version, *parts)

    @property
    def device_uid(self) -> str:
        """The Device Observer UID of this glioma-node version (stable across studies)."""
        return derived_uid("glioma-node device", self.software)

    def ordered_sources(self, series_instance_uid: str, sop_instance_uids: list[str],
                        frame_numbers: list[int] | None) -> list[Dataset]:
        """The source headers of one series in slice order (one multi-frame header when
        ``frame_numbers`` is given); a clear error when a slice's instance is missing."""
        by_uid = {str(ds.SOPInstanceUID): ds for ds in self.sources.get(series_instance_uid, [])}
        wanted = list(dict.fromkeys(sop_instance_uids)) if frame_numbers else sop_instance_uids
        missing = [u for u in wanted if u not in by_uid]
        if missing:
            raise ValueError(f"source series {series_instance_uid}: {len(missing)} instance(s) named by the findings "
                             f"are not among the source files (first {missing[0]}); write results from the same "
                             "files that were analysed")
        return [by_uid[u] for u in wanted]

    def contributing_equipment(self) -> list[ContributingEquipment]:
        """The IHE AI Results Contributing Equipment item (purpose: Processing Algorithm)."""
        equipment = ContributingEquipment(
            MANUFACTURER, codes.PROCESSING_EQUIPMENT, manufacturer_model_name=MODEL_NAME,
            software_versions=self.software, device_serial_number=DEVICE_SERIAL,
            contribution_datetime=self.created.strftime("%Y%m%d%H%M%S"),
            contribution_description="Automatic brain tumour segmentation and radiogenomic prediction; "
                                     "research use only, not for diagnosis")
        # highdicom accepts only CID 7005 purposes; IHE AI Results asks for its own code
        equipment.PurposeOfReferenceCodeSequence = [CodedConcept.from_code(codes.PROCESSING_ALGORITHM)]
        return [equipment]

    def stamp(self, ds: D, series: ResultSeries, laterality: bool = False) -> D:
        """Fix what makes an object differ between two writes (dates, times, generated
        UIDs) and set its series description; ``laterality`` adds an empty Laterality
        (the IODs whose General Series makes it Type 2C: the brain is unpaired, so empty)."""
        date, time = self.created.strftime("%Y%m%d"), self.created.strftime("%H%M%S")
        for day, clock, always in (("ContentDate", "ContentTime", True),
                                   ("InstanceCreationDate", "InstanceCreationTime", True),
                                   ("SeriesDate", "SeriesTime", False),
                                   ("DateOfSecondaryCapture", "TimeOfSecondaryCapture", False)):
            if always or day in ds:
                setattr(ds, day, date)
                setattr(ds, clock, time)
        for item in ds.get("ContributingEquipmentSequence", []):  # highdicom adds its own item, stamped now
            item.ContributionDateTime = date + time
        if "DimensionOrganizationSequence" in ds:
            organization = self.uid(series.stem, "dimension-organization")
            for item in ds.DimensionOrganizationSequence:
                item.DimensionOrganizationUID = organization
            for item in ds.get("DimensionIndexSequence", []):
                item.DimensionOrganizationUID = organization
        ds.SeriesDescription = series.description
        if laterality and "Laterality" not in ds:
            ds.Laterality = ""
        return ds


def text_neutral(sources: dict[str, list[Dataset]]) -> tuple[dict[str, list[Dataset]], str | list[str] | None]:
    """(views of ``sources`` with every text value decoded and no Specific Character Set,
    the reference character set to give the results).

    highdicom accepts only the character sets of its own enumeration (not a first value
    left empty as ISO 2022 Japanese studies write it, nor ISO_IR 192 or GB18030), so the
    builders get decoded copies, and :func:`apply_character_set` puts the source's own
    value back on each result: pydicom then encodes the copied patient and study text in
    exactly the character set the scanner used."""
    views: dict[str, list[Dataset]] = {}
    charset = None
    for uid in sorted(sources):
        views[uid] = []
        for ds in sources[uid]:
            if charset is None and "SpecificCharacterSet" in ds:
                charset = ds.SpecificCharacterSet
            view = Dataset()
            view.update(ds)
            view.decode()  # text values become str, read in the dataset's own character set
            if "SpecificCharacterSet" in view:
                del view.SpecificCharacterSet
            views[uid].append(view)
    return views, charset


def apply_character_set(ds: Dataset, charset: str | list[str] | None) -> Dataset:
    """Give a result object the sources' Specific Character Set (see :func:`text_neutral`)."""
    if charset is not None:
        ds.SpecificCharacterSet = charset
    return ds


def created_time(findings: Findings) -> datetime:
    """When the findings were completed (UTC); now for findings that do not say."""
    if findings.completed_utc:
        return datetime.fromisoformat(findings.completed_utc).astimezone(UTC)
    return datetime.now(UTC).replace(microsecond=0)


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM Part 10 file atomically (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, fsync=True) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
