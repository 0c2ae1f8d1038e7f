"""Find DICOM instances under a path and group them by study and series.

Headers only (``stop_before_pixels``): scanning a folder of thousands of files stays
cheap, and pixel data is decoded later, per series, by :mod:`glioma_node.dicom_io.series_reader`.
Non-DICOM files are skipped quietly; files that claim to be DICOM but cannot be read
are listed with the reason, never raised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

from glioma_node.dicom_io.errors import NotDicomError, UnreadableDicomError
from glioma_node.dicom_io.uids import InvalidUid, check_uid

_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass
class Instance:
    """One DICOM file: where it is and its header (no pixel data)."""

    path: Path
    header: Dataset

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.SOPInstanceUID)


@dataclass
class SeriesFiles:
    study_instance_uid: str
    series_instance_uid: str
    instances: list[Instance] = field(default_factory=list)


@dataclass
class StudyFiles:
    study_instance_uid: str
    series: dict[str, SeriesFiles] = field(default_factory=dict)


@dataclass
class ScanResult:
    """Studies found under a path, plus files that could not be used and why."""

    studies: dict[str, StudyFiles] = field(default_factory=dict)
    bad_files: list[tuple[Path, str]] = field(default_factory=list)
    skipped_not_dicom: list[Path] = field(default_factory=list)


def tolerate_nonconformant_values() -> None:
    """Stop pydicom warning about every value that breaks its VR (an SH over 16 characters, ...).

    Real scanners write such values all the time; glioma-node checks the attributes it
    uses itself and refuses with a reason, so the per-value warnings are only noise.
    Process-wide: called by the command line and the benchmarks, not on import.
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def read_header(path: Path) -> Dataset:
    """Read one file's header, raising :class:`NotDicomError` or :class:`UnreadableDicomError`."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        # pydicom converts values lazily; walking the dataset converts every one now, so a
        # corrupt value is reported here for this file instead of surfacing mid-series.
        ds.walk(lambda dataset, element: None)
    except InvalidDicomError as exc:
        raise NotDicomError(f"{path}: not a DICOM file ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise UnreadableDicomError(f"{path}: cannot be read: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on corrupt data (ValueError, struct.error, ...)
        raise UnreadableDicomError(f"{path}: corrupt DICOM header: {exc.__class__.__name__}: {exc}") from exc
    for keyword in _REQUIRED_UIDS:  # a UID names folders and result objects: only real UIDs pass
        try:
            setattr(ds, keyword, check_uid(ds.get(keyword), keyword).value)
        except InvalidUid as exc:
            raise UnreadableDicomError(f"{path}: {exc}; every instance needs these three UIDs") from exc
    return ds


def iter_files(root: Path) -> list[Path]:
    """All regular files under ``root`` (or ``root`` itself), sorted for stable output."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in sorted(filenames))
    return found


def scan(root: str | Path) -> ScanResult:
    """Scan ``root`` recursively and group the DICOM instances by study and series."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    result = ScanResult()
    for path in iter_files(root):
        try:
            ds = read_header(path)
        except NotDicomError:
            result.skipped_not_dicom.append(path)
            continue
        except UnreadableDicomError as exc:
            result.bad_files.append((path, str(exc)))
            continue
        if str(ds.get("SOPClassUID", "")) == MediaStorageDirectoryStorage:
            result.skipped_not_dicom.append(path)
            continue
        study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        study = result.studies.setdefault(study_uid, StudyFiles(study_uid))
        series = study.series.setdefault(series_uid, SeriesFiles(study_uid, series_uid))
        series.instances.append(Instance(path, ds))
    return result
