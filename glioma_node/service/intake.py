"""The one intake for received instances: check, spool, record, and say what happened.

Every instance enters through :meth:`Intake.admit`, whichever door it came by (the
Storage SCP, the Orthanc plugin, or the spool itself when :func:`reconcile` records
what a crash left unrecorded): one header parse, one validation, one record. The checks are the cheap ones that catch what would
otherwise fail late, after the instance was acknowledged:

* the instance is at most ``node.max_instance_mb`` (after inflating a Deflated
  transfer syntax: the stream is inflated with that bound, so a small file that
  inflates a thousand times is refused with 0xA700 without ever being held whole);
* the header parses, no element's length field runs past the end of the data, and
  the dataset body is encoded as the transfer syntax under which it arrived says
  (explicit or implicit VR; native or encapsulated pixels). A deflated body is
  checked once inflated, as the Explicit VR Little Endian it then is: the same checks
  hold for every transfer syntax;
* Study, Series and SOP Instance UID are UIDs (:func:`glioma_node.dicom_io.uids.check_uid`): a
  value such as ``../../tmp/x`` is refused, never used; trailing padding and leading
  zeros are tolerated with a logged warning;
* the pixel data is as long as Rows × Columns × frames × samples × bits say
  (uncompressed), or encapsulated (compressed);
* Rows × Columns × frames × samples is at most ``node.max_series_voxels`` (a 1 KB
  JPEG 2000 file may declare 4096 × 4096: refused with 0xA700 before a decoder
  allocates it);
* a SOP Instance UID already stored under another study or series is refused (a
  retry of the same instance is accepted and dropped). The same SOP Instance UID with
  other bytes than the stored file is acknowledged too (a sender would retry a refusal
  forever) but kept apart as a conflict (:attr:`Outcome.CONFLICT`, a warning with both
  SHA-256 checksums): the first stored copy stays the one used.

A refusal carries a C-STORE failure status (:class:`StoreStatus`) and a reason that
goes back to the peer (Error Comment) and into the log; nothing is written for it.
"""
from __future__ import annotations

import enum
import hashlib
import io
import logging
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
)

from glioma_node.dicom_io.bounded import (
    MAX_INSTANCE_BYTES,
    MAX_SERIES_VOXELS,
    MB,
    BufferReader,
    InstanceTooLarge,
    ReadLimits,
    inflated_part10,
    is_deflated,
    read_meta,
    syntax_of,
)
from glioma_node.dicom_io.errors import UnreadableDicomError
from glioma_node.dicom_io.uids import InvalidUid, check_uid
from glioma_node.service.logs import pseudonym
from glioma_node.service.recorder import InstanceRecorder
from glioma_node.service.spool import Spool, SpoolFull
from glioma_node.service.state import NodeState, Received

log = logging.getLogger(__name__)

MR_CLASSES = frozenset({MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage})
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_PIXEL_DATA = (0x7FE0, 0x0010)
_UNDEFINED = 0xFFFFFFFF
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


class StoreStatus(enum.IntEnum):
    """The C-STORE status the peer gets (PS3.4 Annex B.2.3; 0xC0xx: "cannot understand")."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    PIXEL_DATA_MISMATCH = 0xA900  # the data set does not match its own image description
    CANNOT_UNDERSTAND = 0xC000  # the header does not parse
    INVALID_UID = 0xC001
    SOP_INSTANCE_CONFLICT = 0xC002  # the SOP Instance UID is already stored in another study or series
    TRANSFER_SYNTAX_MISMATCH = 0xC003  # the body is not encoded as its transfer syntax says


class Outcome(enum.Enum):
    """What the intake did with one instance (the /metrics counters are named after these)."""

    RECEIVED = "instances_received"
    DUPLICATE = "instances_duplicate"
    IGNORED = "instances_ignored"  # not MR: accepted and dropped, so a forwarding PACS never fails
    REFUSED = "instances_refused"
    OUT_OF_RESOURCES = "instances_out_of_resources"
    # a stored SOP Instance UID again, with other bytes: acknowledged (0x0000, so the sender
    # does not loop), not stored, logged with both checksums
    CONFLICT = "instances_conflicting"


@dataclass(frozen=True)
class Conflict:
    """A SOP Instance UID received again with other content than the stored file (which
    stays the one used): what a record of it needs. Checksums are SHA-256 hex digests
    of the Part 10 bytes (the stored file; the received data set behind the same file
    meta). A retry re-encoded in another transfer syntax differs in bytes too: the
    syntaxes are named so a reader can tell."""

    study_uid: str
    series_uid: str
    sop_uid: str
    stored_sha256: str
    received_sha256: str
    stored_path: Path
    stored_syntax: str
    received_syntax: str


@dataclass(frozen=True)
class Answer:
    """The intake's answer for one instance: status for the peer, outcome, reason, path
    (``conflict``: with :attr:`Outcome.CONFLICT`, what differs)."""

    status: StoreStatus
    outcome: Outcome
    reason: str = ""
    path: Path | None = None
    conflict: Conflict | None = None


class Refused(Exception):
    """An instance the node will not store; ``status`` is the C-STORE answer."""

    def __init__(self, status: StoreStatus, reason: str):
        super().__init__(reason)
        self.status = status


def expected_instances(ds: Dataset) -> int | None:
    """Instances the series should have, where the header says (classic: ImagesInAcquisition)."""
    if "NumberOfFrames" in ds and _int(ds.get("NumberOfFrames"), 1) > 1:
        return 1  # one enhanced multi-frame object is the whole series
    value = _int(ds.get("ImagesInAcquisition"), 0)
    return value if value > 0 else None


def _int(value, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _meta_end(data: bytes | bytearray) -> int:
    """Offset of the dataset body in a Part 10 byte string (after the file meta group)."""
    if data[128:132] != b"DICM":
        return 0
    offset = 132
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            return offset
        vr = bytes(data[offset + 4:offset + 6])
        if vr in _LONG_VRS:
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    return offset


def _check_body_encoding(data: bytes | bytearray, syntax: UID) -> None:
    """The first element of the body must be encoded as ``syntax`` says (explicit VR
    carries two letters after the tag, implicit VR a 4-byte length). pydicom guesses
    its way past a mismatch; dcmtk and most PACS do not, so it is refused here."""
    start = _meta_end(data)
    if len(data) - start < 8:
        raise Refused(StoreStatus.CANNOT_UNDERSTAND, "the data set is empty or shorter than one element")
    looks_explicit = bytes(data[start + 4:start + 6]) in _VRS
    if syntax == ImplicitVRLittleEndian and looks_explicit:
        raise Refused(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                      "transfer syntax is implicit VR, but the data set is encoded with explicit VR")
    if syntax != ImplicitVRLittleEndian and not looks_explicit:
        raise Refused(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                      f"transfer syntax {syntax.name or syntax} is explicit VR, but the data set is implicit VR")


def _pixel_element(data: bytes | bytearray, offset: int, syntax: UID) -> tuple[int, int] | None:
    """(value length, bytes left after the element header) of the top-level Pixel Data
    element at ``offset``, or None when there is none."""
    little = syntax != ExplicitVRBigEndian
    fmt = "<" if little else ">"
    if offset + 8 > len(data):
        return None
    group, element = struct.unpack_from(fmt + "HH", data, offset)
    if (group, element) != _PIXEL_DATA:
        return None
    if syntax == ImplicitVRLittleEndian:
        length, header = struct.unpack_from(fmt + "I", data, offset + 4)[0], 8
    else:
        if offset + 12 > len(data):
            return None
        length, header = struct.unpack_from(fmt + "I", data, offset + 8)[0], 12
    return length, len(data) - offset - header


def _check_pixels(ds: Dataset, data: bytes | bytearray, offset: int, syntax: UID) -> None:
    element = _pixel_element(data, offset, syntax)
    if element is None:
        raise Refused(StoreStatus.PIXEL_DATA_MISMATCH, "the image has no Pixel Data")
    length, available = element
    if syntax.is_encapsulated:
        if length != _UNDEFINED:
            raise Refused(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                          f"transfer syntax {syntax.name} is compressed, but the pixel data is not encapsulated")
        return  # fragment sizes are the decoder's business; the series reader refuses a bad one
    if length == _UNDEFINED:
        raise Refused(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                      f"transfer syntax {syntax.name} is uncompressed, but the pixel data is encapsulated")
    rows, columns = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    frames, samples = _int(ds.get("NumberOfFrames"), 1), _int(ds.get("SamplesPerPixel"), 1)
    bits = _int(ds.get("BitsAllocated"), 0)
    if min(rows, columns, frames, samples, bits) <= 0:
        raise Refused(StoreStatus.PIXEL_DATA_MISMATCH,
                      f"image description incomplete: Rows {rows}, Columns {columns}, NumberOfFrames {frames}, "
                      f"SamplesPerPixel {samples}, BitsAllocated {bits}")
    expected = (rows * columns * frames * samples * bits + 7) // 8
    if length > available:
        raise Refused(StoreStatus.PIXEL_DATA_MISMATCH,
                      f"pixel data length field says {length} bytes but only {available} arrived")
    if length not in (expected, expected + 1):  # + 1: the pad byte of an odd length
        raise Refused(StoreStatus.PIXEL_DATA_MISMATCH,
                      f"pixel data has {length} bytes; Rows {rows} × Columns {columns} × {frames} frame(s) × "
                      f"{samples} sample(s) × {bits} bits need {expected}")


def _check_lengths(ds: Dataset) -> None:
    """pydicom stops quietly at the end of the data and keeps what it read of an element
    whose length field runs past it; such a data set is cut short or crafted."""
    for element in ds.elements():
        value = getattr(element, "value", None)
        length = getattr(element, "length", 0)
        if isinstance(value, bytes) and length != _UNDEFINED and len(value) < length:
            raise Refused(StoreStatus.CANNOT_UNDERSTAND,
                          f"element {element.tag} claims {length} bytes but the data set ends after {len(value)}")


def _check_voxels(ds: Dataset, max_voxels: int) -> int:
    """Rows × Columns × frames × samples within ``max_voxels``, for every transfer syntax:
    a compressed image of 1 KB may declare what a decoder then allocates."""
    rows, columns = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    frames, samples = _int(ds.get("NumberOfFrames"), 1), _int(ds.get("SamplesPerPixel"), 1)
    voxels = max(rows, 0) * max(columns, 0) * max(frames, 0) * max(samples, 0)
    if voxels > max_voxels:
        raise Refused(StoreStatus.OUT_OF_RESOURCES,
                      f"{voxels} voxels over node.max_series_voxels {max_voxels}: Rows {rows} x Columns {columns} "
                      f"x {frames} frame(s) x {samples} sample(s)")
    return voxels


def _readable(data: bytes, max_bytes: int) -> tuple[UID, bytes | bytearray]:
    """The transfer syntax the instance arrived in, and the Part 10 bytes to check:
    ``data`` itself, or for a deflated data set its inflated form behind a file meta
    saying Explicit VR Little Endian (inflated within ``max_bytes``)."""
    fp = io.BytesIO(data)
    syntax = syntax_of(read_meta(fp))
    if not is_deflated(syntax):
        return syntax, data
    return syntax, inflated_part10(data, fp.tell(), max_bytes)


def inspect(data: bytes, sop_class: str, max_bytes: int = MAX_INSTANCE_BYTES,
            max_voxels: int = MAX_SERIES_VOXELS) -> Received:
    """Check one MR instance (a Part 10 byte string whose file meta names the transfer
    syntax it arrived in); its facts, or :class:`Refused` (see the module doc).

    ``max_bytes``: the largest instance, bytes, after inflating (``node.max_instance_mb``);
    ``max_voxels``: the largest image, Rows × Columns × frames × samples (``node.max_series_voxels``)."""
    if len(data) > max_bytes:
        raise Refused(StoreStatus.OUT_OF_RESOURCES,
                      f"instance of {len(data) / MB:.0f} MB over node.max_instance_mb {max_bytes / MB:g}")
    try:
        syntax, view = _readable(data, max_bytes)
        # BytesIO shares a bytes object; an inflated bytearray is read in place, not copied
        fp = cast(BinaryIO, io.BytesIO(view) if isinstance(view, bytes) else BufferReader(view))
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        pixel_offset = fp.tell()
        values = {k: ds.get(k) for k in (*_UID_KEYWORDS, "PatientID", "Rows", "Columns", "NumberOfFrames",
                                          "SamplesPerPixel", "BitsAllocated", "ImagesInAcquisition")}
    except InstanceTooLarge as exc:
        raise Refused(StoreStatus.OUT_OF_RESOURCES, f"{exc} (node.max_instance_mb)") from exc
    except UnreadableDicomError as exc:
        raise Refused(StoreStatus.CANNOT_UNDERSTAND, str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on crafted data
        raise Refused(StoreStatus.CANNOT_UNDERSTAND,
                      f"the header cannot be parsed: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not syntax.is_transfer_syntax:
        raise Refused(StoreStatus.CANNOT_UNDERSTAND, f"unknown transfer syntax {syntax}")
    # a deflated body is checked as what it is once inflated: the same checks for every syntax
    encoded = ExplicitVRLittleEndian if is_deflated(syntax) else syntax
    _check_lengths(ds)
    _check_body_encoding(view, encoded)
    checked, tolerated = {}, []
    for keyword in _UID_KEYWORDS:
        try:
            uid = check_uid(values[keyword], keyword)
        except InvalidUid as exc:
            raise Refused(StoreStatus.INVALID_UID, str(exc)) from exc
        checked[keyword] = uid.value
        tolerated += [f"{keyword}: {t}" for t in uid.tolerated]
    _check_pixels(ds, view, pixel_offset, encoded)
    voxels = _check_voxels(ds, max_voxels)
    return Received(study_uid=checked["StudyInstanceUID"], series_uid=checked["SeriesInstanceUID"],
                    sop_uid=checked["SOPInstanceUID"], sop_class=str(sop_class), expected=expected_instances(ds),
                    patient=pseudonym(str(values["PatientID"] or "")), tolerated=tuple(tolerated), voxels=voxels)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _same_content(stored: Path, data: bytes) -> bool:
    """Whether two Part 10 encodings of one instance in different native transfer
    syntaxes (a retry re-encoded: explicit or implicit VR) hold the same data set; False
    when either is compressed or deflated (their bytes cannot be compared cheaply) or
    does not parse."""
    try:
        encoded = []
        for source in (stored.read_bytes(), data):
            syntax = syntax_of(read_meta(io.BytesIO(source)))
            if syntax.is_compressed or syntax.is_deflated:
                return False
            # compared as implicit VR bytes: values a peer's private tags carry compare as
            # bytes, whatever VR the explicit encoding gave them (UN once read implicitly)
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, True
            write_dataset(out, pydicom.dcmread(io.BytesIO(source)))
            encoded.append(out.getvalue())
    except Exception:  # noqa: BLE001 - unreadable: not shown to be the same
        return False
    return encoded[0] == encoded[1]


def _syntax_name(source: bytes | Path) -> str:
    """The transfer syntax a Part 10 file or byte string names, for a log line ("?" when unreadable)."""
    try:
        if isinstance(source, Path):
            with open(source, "rb") as handle:
                syntax = syntax_of(read_meta(handle))
        else:
            syntax = syntax_of(read_meta(io.BytesIO(source)))
    except Exception:  # noqa: BLE001 - only a label for the log
        return "?"
    return syntax.name or str(syntax)


class Intake:
    """Check, spool and record received instances (see the module doc).

    ``recorder``: record in batches on its thread (:mod:`glioma_node.service.recorder`;
    the SCP's many small C-STOREs) instead of one transaction per instance.
    ``limits``: the bounds of :func:`inspect` and of a series' voxels
    (``node.max_instance_mb``, ``node.max_series_voxels``: :meth:`NodeSettings.read_limits`)."""

    def __init__(self, spool: Spool, state: NodeState, recorder: InstanceRecorder | None = None,
                 limits: ReadLimits | None = None):
        self.spool, self.state, self.recorder = spool, state, recorder
        self.limits = limits or ReadLimits()

    @staticmethod
    def refuse(status: StoreStatus, reason: str, peer: str, sop_class: str) -> Answer:
        """The answer for an instance the node will not store (logged with its reason)."""
        log.warning("instance refused: %s", reason, extra={"status": f"0x{status:04X}", "peer": peer,
                                                           "sop_class": str(sop_class)})
        return Answer(status, Outcome.REFUSED, reason)

    def admit(self, data: bytes, sop_class: str, association: str = "", peer: str = "",
              spooled: Path | None = None) -> Answer:
        """Take one instance (Part 10 bytes, file meta naming the transfer syntax it
        arrived in); the answer for the peer. Success means it is fsynced and recorded.

        ``spooled``: the instance is already this file of the spool (reconciliation after
        a crash), so it is checked and recorded, not written again."""
        if UID(sop_class) not in MR_CLASSES:
            return Answer(StoreStatus.SUCCESS, Outcome.IGNORED)
        try:
            received = inspect(data, sop_class, self.limits.max_bytes, self.limits.max_voxels)
            known = (self.recorder.location if self.recorder else self.state.instance_location)(received.sop_uid)
            if known is not None and known != (received.study_uid, received.series_uid):
                raise Refused(StoreStatus.SOP_INSTANCE_CONFLICT,
                              f"already stored in another {'study' if known[0] != received.study_uid else 'series'}"
                              f": SOP Instance UID {received.sop_uid}")
        except Refused as exc:
            return self.refuse(exc.status, str(exc), peer, sop_class)
        if received.tolerated:
            log.warning("instance accepted with UID defects older equipment writes: %s",
                        "; ".join(received.tolerated), extra={"peer": peer, "sop_instance": received.sop_uid})
        if known is None and spooled is None:
            refusal = self._series_too_large(received)
            if refusal is not None:
                return self.refuse(StoreStatus.OUT_OF_RESOURCES, refusal, peer, sop_class)
        if known is not None:
            try:  # acknowledged only once durable, whoever wrote it (a concurrent C-STORE of the same instance)
                stored = self.spool.durable(*known, received.sop_uid) or self.spool.path_for(*known, received.sop_uid)
            except OSError as exc:
                log.error("instance not made durable: %s", exc, extra={"peer": peer})
                return Answer(StoreStatus.OUT_OF_RESOURCES, Outcome.OUT_OF_RESOURCES, str(exc))
            return self._record_conflict(self._again(received, data, stored, peer), peer)
        try:
            path, written = (spooled, True) if spooled else self.spool.store(received.study_uid, received.series_uid,
                                                                             received.sop_uid, data)
        except (SpoolFull, OSError) as exc:
            log.error("instance not stored: %s", exc, extra={"peer": peer})
            return Answer(StoreStatus.OUT_OF_RESOURCES, Outcome.OUT_OF_RESOURCES, str(exc))
        new = written
        if self.recorder is not None:
            self.recorder.record(received, str(path), association)
        else:
            new = self.state.record_instance(received, str(path), association)
        if not written:  # the spool had a file of that name not yet recorded: the same bytes?
            again = self._again(received, data, path, peer)
            if again.outcome is Outcome.CONFLICT:
                return self._record_conflict(again, peer)
        return Answer(StoreStatus.SUCCESS, Outcome.RECEIVED if new else Outcome.DUPLICATE, path=path)

    def _series_too_large(self, received: Received) -> str | None:
        """Why a new instance would take its series past ``max_voxels`` (what reading the
        series allocates: its instances' voxels summed, or as many as the headers
        announce), or None: 24 JPEG 2000 files of 1 KB declaring 4096 × 4096 each are a
        1.6 GB series."""
        if not received.voxels:
            return None
        recorded = self.state.series_instances(received.series_uid)
        if self.recorder is not None:
            recorded += self.recorder.pending_in_series(received.series_uid)
        count = max(recorded + 1, received.expected or 0)
        if count * received.voxels <= self.limits.max_voxels:
            return None
        return (f"series {received.series_uid} would hold {count} × {received.voxels} voxels, over "
                f"node.max_series_voxels {self.limits.max_voxels}")

    def _record_conflict(self, answer: Answer, peer: str) -> Answer:
        """Keep a conflicting resend in the state, where ``status`` and the study's results show it."""
        conflict = answer.conflict
        if answer.outcome is Outcome.CONFLICT and conflict is not None:
            try:
                self.state.record_conflict(conflict.sop_uid, conflict.study_uid, conflict.stored_sha256,
                                           conflict.received_sha256, peer)
            except sqlite3.Error as exc:  # the log line has it; the instance itself was stored before
                log.error("conflict not recorded: %s", exc, extra={"sop_instance": conflict.sop_uid})
        return answer

    @staticmethod
    def _again(received: Received, data: bytes, stored: Path, peer: str) -> Answer:
        """The answer for a SOP Instance UID already stored at ``stored`` (same study and
        series): a duplicate when the bytes are the same, else a conflict (see the module doc)."""
        received_sha256 = hashlib.sha256(data).hexdigest()
        try:
            stored_sha256 = _sha256_file(stored)
        except OSError as exc:  # recorded but gone or unreadable: nothing to compare with
            log.warning("a stored instance received again could not be compared: %s", exc,
                        extra={"peer": peer, "sop_instance": received.sop_uid, "path": str(stored)})
            return Answer(StoreStatus.SUCCESS, Outcome.DUPLICATE, path=stored)
        if stored_sha256 == received_sha256 or _same_content(stored, data):
            return Answer(StoreStatus.SUCCESS, Outcome.DUPLICATE, path=stored)
        conflict = Conflict(study_uid=received.study_uid, series_uid=received.series_uid, sop_uid=received.sop_uid,
                            stored_sha256=stored_sha256, received_sha256=received_sha256, stored_path=stored,
                            stored_syntax=_syntax_name(stored), received_syntax=_syntax_name(data))
        reason = (f"SOP Instance UID {received.sop_uid} received again with other content (SHA-256 "
                  f"{received_sha256}, {conflict.received_syntax}) than the stored copy (SHA-256 {stored_sha256}, "
                  f"{conflict.stored_syntax}); the stored copy is kept")
        log.warning("instance conflict: %s", reason,
                    extra={"peer": peer, "study": received.study_uid, "sop_instance": received.sop_uid,
                           "stored_sha256": stored_sha256, "received_sha256": received_sha256})
        return Answer(StoreStatus.SUCCESS, Outcome.CONFLICT, reason, path=stored, conflict=conflict)

