"""The durable spool: every received instance on disk, fsynced, before it is acknowledged.

Layout: ``<data_dir>/spool/<study>/<series>/<sop>.dcm``. Path parts come from
:func:`glioma_node.dicom_io.uids.safe_part` (the UID when it is one, a hash otherwise), so no tag
value ever becomes a path (no ``..``, no slashes). A second copy of a SOP
Instance UID is accepted and dropped (the first is kept): C-STORE retries are
idempotent. Below the free-space watermark :meth:`Spool.store` refuses with
:class:`SpoolFull`, which the SCP answers with "out of resources" (0xA700): the sender
keeps the instance and retries, nothing is lost.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from glioma_node.dicom_io.uids import safe_part


class SpoolFull(OSError):
    """Free space is below the watermark; the instance was not stored."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Instances on disk under ``root`` (see the module doc); ``min_free_bytes`` is the watermark."""

    def __init__(self, root: Path, min_free_bytes: int = 2 * 1024**3):
        self.root = root
        self.min_free_bytes = min_free_bytes
        root.mkdir(parents=True, exist_ok=True)

    def study_dir(self, study_uid: str) -> Path:
        """The spool folder of one study (its name from :func:`safe_part`)."""
        return self.root / safe_part(study_uid)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """Where one instance is stored: ``<study>/<series>/<sop>.dcm``, every part through :func:`safe_part`."""
        return self.study_dir(study_uid) / safe_part(series_uid) / f"{safe_part(sop_uid)}.dcm"

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system."""
        return shutil.disk_usage(self.root).free

    def store(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> tuple[Path, bool]:
        """Write one instance (a DICOM Part 10 byte string) durably; (path, newly stored).

        The file is written under a temporary name, fsynced, renamed into place and its
        directory fsynced, so after a crash it is either complete or absent.
        """
        path = self.path_for(study_uid, series_uid, sop_uid)
        if path.exists():
            return path, False
        if self.free_bytes() - len(data) < self.min_free_bytes:
            raise SpoolFull(f"free space below the watermark of {self.min_free_bytes // 1024**2} MB in {self.root}")
        new_dirs = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.partial")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if new_dirs:
            _fsync_dir(path.parent.parent)
            _fsync_dir(self.root)
        return path, True

    def remove_partials(self) -> int:
        """Delete temporary files a crash left behind (never acknowledged); how many."""
        count = 0
        for tmp in self.root.rglob(".*.partial"):
            tmp.unlink(missing_ok=True)
            count += 1
        return count
