"""The durable spool: every received instance on disk, fsynced, before it is acknowledged.

Layout: ``<data_dir>/spool/<study>/<series>/<sop>.dcm``. Path parts come from
:func:`glioma_node.dicom_io.uids.safe_part` (the UID when it is one, a hash otherwise), so no tag
value ever becomes a path (no ``..``, no slashes). A second copy of a SOP
Instance UID is accepted and dropped (the first is kept): C-STORE retries are
idempotent. Below the free-space watermark :meth:`Spool.store` refuses with
:class:`SpoolFull`, which the SCP answers with "out of resources" (0xA700): the sender
keeps the instance and retries, nothing is lost.

With ``blanks`` > 0 a thread keeps that many empty files created ahead in
``<spool>/.incoming`` (same file system, so moving one into its series is a rename):
creating a file costs a journal transaction, and measured on a single association
that creation was the largest single step of a C-STORE after the fsyncs. Unused
blanks are partial files, removed at the next start like any other.
"""
from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
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


BLANKS = 8  # blanks a listening process keeps ready (one association uses one at a time)
_PARTIAL = ".{}.partial"  # a file not (yet) acknowledged: the name remove_partials looks for
INCOMING = ".incoming"


class _Blanks:
    """Empty files created ahead by a daemon thread; :meth:`take` one (path, fd) or None."""

    def __init__(self, folder: Path, count: int):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._ready: queue.Queue[tuple[Path, int]] = queue.Queue(maxsize=count)
        # made by this process and not yet renamed into the spool: not a crash's leftover
        self.live: set[Path] = set()
        threading.Thread(target=self._fill, name="spool-blanks", daemon=True).start()

    def _fill(self) -> None:
        while True:
            path = self.folder / _PARTIAL.format(uuid.uuid4().hex)
            self.live.add(path)  # before the file exists: remove_partials must never see it unlisted
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except OSError:  # a full disk: store() creates its own file and reports the error
                self.live.discard(path)
                threading.Event().wait(1.0)
                continue
            self._ready.put((path, fd))

    def take(self) -> tuple[Path, int] | None:
        """A blank to write into (it stays live until :meth:`done`), or None when none is ready."""
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return None

    def done(self, path: Path) -> None:
        """The blank at ``path`` was renamed into the spool, or removed."""
        self.live.discard(path)


class Spool:
    """Instances on disk under ``root`` (see the module doc); ``min_free_bytes`` is the
    watermark; ``blanks`` empty files are kept created ahead for :meth:`store`."""

    def __init__(self, root: Path, min_free_bytes: int = 2 * 1024**3, blanks: int = 0):
        self.root = root
        self.min_free_bytes = min_free_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._blanks = _Blanks(root / INCOMING, blanks) if blanks > 0 else None
        self._durable: set[Path] = set()  # series folders whose entries this process fsynced
        self._durable_lock = threading.Lock()

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

        The file is written under a partial name, fsynced, renamed into place and its
        directory fsynced, so after a crash it is either complete or absent. Writing on
        another thread while the intake parses the header was measured slower (the
        threads contend for the GIL), so it happens here, on the caller's thread.
        """
        path = self.path_for(study_uid, series_uid, sop_uid)
        if path.exists():
            # another writer's file (a concurrent C-STORE of the same instance, another
            # receiver, an attempt whose directory fsync failed): durable before it is
            # acknowledged again, whoever wrote it
            self._make_durable(path)
            return path, False
        if self.free_bytes() - len(data) < self.min_free_bytes:
            raise SpoolFull(f"free space below the watermark of {self.min_free_bytes // 1024**2} MB in {self.root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        blank = self._blanks.take() if self._blanks is not None else None
        if blank is not None:
            tmp, fd = blank
        else:
            tmp = path.with_name(_PARTIAL.format(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with open(fd, "wb", closefd=True) as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if blank is not None and self._blanks is not None:
                self._blanks.done(tmp)
        self._make_durable(path)
        return path, True

    def durable(self, study_uid: str, series_uid: str, sop_uid: str) -> Path | None:
        """An already stored instance's path once its folder entries are fsynced (see
        :meth:`_make_durable`), for acknowledging a second copy; None when it is not in the spool."""
        path = self.path_for(study_uid, series_uid, sop_uid)
        if not path.exists():
            return None
        self._make_durable(path)
        return path

    def _make_durable(self, path: Path) -> None:
        """fsync the folder holding ``path`` (its entry), and once per series folder and
        process the study folder and the spool root (the entries of the folders): this
        process fsynced them itself before it trusts them, whoever created them, so a
        second instance of a new series is not acknowledged before the first writer's
        folder fsyncs are done."""
        series = path.parent
        _fsync_dir(series)
        if series not in self._durable:
            _fsync_dir(series.parent)
            _fsync_dir(self.root)
            with self._durable_lock:
                if len(self._durable) > 100_000:  # a long-running node: forget old series, fsync them again
                    self._durable.clear()
                self._durable.add(series)

    def remove_partials(self) -> int:
        """Delete temporary files a crash left behind (never acknowledged); how many."""
        count = 0
        live = self._blanks.live if self._blanks is not None else set()
        for tmp in self.root.rglob(".*.partial"):
            if tmp in live:  # looked up now, not copied first: the blank-maker adds as we go
                continue
            tmp.unlink(missing_ok=True)
            count += 1
        return count
