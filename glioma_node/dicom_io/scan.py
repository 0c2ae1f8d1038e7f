"""Find DICOM instances under a path and group them by study and series.

Headers only (``stop_before_pixels``): scanning a folder of thousands of files stays
cheap, and pixel data is decoded later, per series, by :mod:`glioma_node.dicom_io.series_reader`.
Non-DICOM files are skipped quietly; files that claim to be DICOM but cannot be read
are listed with the reason, never raised. Only regular files are opened: a named pipe,
socket or device under the path is skipped with a logged warning (reading a FIFO
would wait forever). A Deflated data set is inflated within ``max_bytes``
(:mod:`glioma_node.dicom_io.bounded`); one that inflates past it is listed as
unreadable with that reason.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

from glioma_node.dicom_io.bounded import MAX_INSTANCE_BYTES, InstanceTooLarge, read_file, regular_file
from glioma_node.dicom_io.errors import NotDicomError, UnreadableDicomError
from glioma_node.dicom_io.uids import InvalidUid, check_uid

log = logging.getLogger(__name__)
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


def read_header(path: Path, max_bytes: int = MAX_INSTANCE_BYTES) -> Dataset:
    """Read one file's header, raising :class:`NotDicomError` (also for a file that is
    not a regular file) or :class:`UnreadableDicomError` (also for a Deflated data set
    inflating past ``max_bytes``, :class:`glioma_node.dicom_io.bounded.InstanceTooLarge`)."""
    try:
        ds = read_file(path, max_bytes, stop_before_pixels=True)
        # pydicom converts values lazily; walking the dataset converts every one now, so a
        # corrupt value is reported here for this file instead of surfacing mid-series.
        ds.walk(lambda dataset, element: None)
    except NotDicomError:
        raise  # not a regular file: its message names it
    except InstanceTooLarge as exc:
        raise InstanceTooLarge(f"{path}: {exc}, more than this reader holds for one instance "
                               "(node.max_instance_mb); not read", exc.max_bytes) from exc
    except UnreadableDicomError as exc:  # a deflate stream that does not inflate
        raise UnreadableDicomError(f"{path}: {exc}") from exc
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


def iter_files(root: Path, skipped: list[Path] | None = None) -> list[Path]:
    """All regular files under ``root`` (or ``root`` itself), sorted for stable output.

    Anything else (a named pipe, a socket, a device: opening or reading one can block
    forever or never end) is left out with a logged warning, and appended to ``skipped``."""
    if root.is_dir():
        candidates: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            candidates.extend(Path(dirpath) / name for name in sorted(filenames))
    else:
        candidates = [root]
    found: list[Path] = []
    for path in candidates:
        kind = regular_file(path)
        if kind is None:
            found.append(path)
            continue
        log.warning("skipped %s: %s, not a file to read", path, kind)
        if skipped is not None:
            skipped.append(path)
    return found


def scan(root: str | Path, max_bytes: int = MAX_INSTANCE_BYTES) -> ScanResult:
    """Scan ``root`` recursively and group the DICOM instances by study and series.

    ``max_bytes``: the largest instance read, bytes, after inflating a Deflated transfer
    syntax (``node.max_instance_mb``); a larger one is listed in ``bad_files``."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    result = ScanResult()
    for path in iter_files(root, result.skipped_not_dicom):
        try:
            ds = read_header(path, max_bytes)
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
