"""The one intake for received instances: check, spool, record, and say what happened.

Every instance enters through :meth:`Intake.admit`, whichever door it came by (the
Storage SCP, the Orthanc plugin, or the spool itself when :func:`reconcile` records
what a crash left unrecorded): one header parse, one validation, one record. The checks are the cheap ones that catch what would
otherwise fail late, after the instance was acknowledged:

* the header parses, no element's length field runs past the end of the data, and
  the dataset body is encoded as the transfer syntax under which it arrived says
  (explicit or implicit VR; native or encapsulated pixels);
* Study, Series and SOP Instance UID are UIDs (:func:`glioma_node.dicom_io.uids.check_uid`): a
  value such as ``../../tmp/x`` is refused, never used; trailing padding and leading
  zeros are tolerated with a logged warning;
* the pixel data is as long as Rows × Columns × frames × samples × bits say
  (uncompressed), or encapsulated (compressed);
* a SOP Instance UID already stored under another study or series is refused (a
  retry of the same instance is accepted and dropped).

A refusal carries a C-STORE failure status (:class:`StoreStatus`) and a reason that
goes back to the peer (Error Comment) and into the log; nothing is written for it.
"""
from __future__ import annotations

import enum
import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
)

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


@dataclass(frozen=True)
class Answer:
    """The intake's answer for one instance: status for the peer, outcome, reason, path."""

    status: StoreStatus
    outcome: Outcome
    reason: str = ""
    path: Path | None = None


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


def _meta_end(data: bytes) -> int:
    """Offset of the dataset body in a Part 10 byte string (after the file meta group)."""
    if data[128:132] != b"DICM":
        return 0
    offset = 132
    while offset + 8 <= len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            return offset
        vr = data[offset + 4:offset + 6]
        if vr in _LONG_VRS:
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    return offset


def _check_body_encoding(data: bytes, syntax: UID) -> None:
    """The first element of the body must be encoded as ``syntax`` says (explicit VR
    carries two letters after the tag, implicit VR a 4-byte length). pydicom guesses
    its way past a mismatch; dcmtk and most PACS do not, so it is refused here."""
    body = data[_meta_end(data):]
    if len(body) < 8:
        raise Refused(StoreStatus.CANNOT_UNDERSTAND, "the data set is empty or shorter than one element")
    looks_explicit = body[4:6] in _VRS
    if syntax == ImplicitVRLittleEndian and looks_explicit:
        raise Refused(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                      "transfer syntax is implicit VR, but the data set is encoded with explicit VR")
    if syntax != ImplicitVRLittleEndian and not looks_explicit:
        raise Refused(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                      f"transfer syntax {syntax.name or syntax} is explicit VR, but the data set is implicit VR")


def _pixel_element(data: bytes, offset: int, syntax: UID) -> tuple[int, int] | None:
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


def _check_pixels(ds: Dataset, data: bytes, offset: int, syntax: UID) -> None:
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


def inspect(data: bytes, sop_class: str) -> Received:
    """Check one MR instance (a Part 10 byte string whose file meta names the transfer
    syntax it arrived in); its facts, or :class:`Refused` (see the module doc)."""
    fp = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        pixel_offset = fp.tell()
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
        values = {k: ds.get(k) for k in (*_UID_KEYWORDS, "PatientID", "Rows", "Columns", "NumberOfFrames",
                                          "SamplesPerPixel", "BitsAllocated", "ImagesInAcquisition")}
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on crafted data
        raise Refused(StoreStatus.CANNOT_UNDERSTAND,
                      f"the header cannot be parsed: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not syntax.is_transfer_syntax:
        raise Refused(StoreStatus.CANNOT_UNDERSTAND, f"unknown transfer syntax {syntax}")
    _check_lengths(ds)
    raw = not syntax.is_deflated  # a deflated body is checked by parsing it (above) only
    if raw:
        _check_body_encoding(data, syntax)
    checked, tolerated = {}, []
    for keyword in _UID_KEYWORDS:
        try:
            uid = check_uid(values[keyword], keyword)
        except InvalidUid as exc:
            raise Refused(StoreStatus.INVALID_UID, str(exc)) from exc
        checked[keyword] = uid.value
        tolerated += [f"{keyword}: {t}" for t in uid.tolerated]
    if raw:
        _check_pixels(ds, data, pixel_offset, syntax)
    return Received(study_uid=checked["StudyInstanceUID"], series_uid=checked["SeriesInstanceUID"],
                    sop_uid=checked["SOPInstanceUID"], sop_class=str(sop_class), expected=expected_instances(ds),
                    patient=pseudonym(str(values["PatientID"] or "")), tolerated=tuple(tolerated))


class Intake:
    """Check, spool and record received instances (see the module doc).

    ``recorder``: record in batches on its thread (:mod:`glioma_node.service.recorder`;
    the SCP's many small C-STOREs) instead of one transaction per instance."""

    def __init__(self, spool: Spool, state: NodeState, recorder: InstanceRecorder | None = None):
        self.spool, self.state, self.recorder = spool, state, recorder

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
            received = inspect(data, sop_class)
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
        if known is not None:
            return Answer(StoreStatus.SUCCESS, Outcome.DUPLICATE)
        try:
            path, new = (spooled, True) if spooled else self.spool.store(received.study_uid, received.series_uid,
                                                                         received.sop_uid, data)
        except (SpoolFull, OSError) as exc:
            log.error("instance not stored: %s", exc, extra={"peer": peer})
            return Answer(StoreStatus.OUT_OF_RESOURCES, Outcome.OUT_OF_RESOURCES, str(exc))
        if self.recorder is not None:
            self.recorder.record(received, str(path), association)
        else:
            new = self.state.record_instance(received, str(path), association)
        return Answer(StoreStatus.SUCCESS, Outcome.RECEIVED if new else Outcome.DUPLICATE, path=path)


def reconcile(spool: Spool, state: NodeState) -> int:
    """Record spooled instances the database missed (a crash between fsync and commit)
    through the same intake; how many. Partial files (never acknowledged) are removed first."""
    removed = spool.remove_partials()
    known = state.known_paths()
    intake = Intake(spool, state)
    added = 0
    for path in spool.root.rglob("*.dcm"):
        if str(path) in known:
            continue
        try:
            # the spool holds Part 10 files the intake wrote: the meta names the class
            sop_class = str(read_file_meta_info(path).MediaStorageSOPClassUID)
            answer = intake.admit(path.read_bytes(), sop_class, peer="spool", spooled=path)
        except Exception as exc:  # noqa: BLE001 - OSError, a parse error: the file is kept, not used
            log.warning("spooled file not recorded: %s", exc, extra={"path": str(path)})
            continue
        if answer.outcome is Outcome.RECEIVED:
            added += 1
        elif answer.outcome is Outcome.REFUSED:
            log.warning("spooled file not recorded: %s", answer.reason, extra={"path": str(path)})
    if removed or added:
        log.info("reconciled spool", extra={"partials_removed": removed, "instances_added": added})
    return added
