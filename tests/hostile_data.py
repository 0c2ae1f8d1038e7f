"""Crafted DICOM instances, as a hostile or broken peer would send them.

:func:`mr_dataset` is a small valid MR slice; :func:`part10` writes any dataset as a
Part 10 byte string whose file meta may *claim* another transfer syntax than the body
is encoded in; :func:`send_raw` sends such a file's bytes as they are over C-STORE
(pynetdicom's chunked send reads the dataset from the file without re-encoding it).
"""
from __future__ import annotations

import io
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage

from glioma_node.dicom_io.uids import derived_uid


def mr_dataset(n: int = 0, study: str | None = None, series: str | None = None, rows: int = 16,
               columns: int = 16, charset: str | list[str] | None = None) -> Dataset:
    """A minimal valid MR Image Storage slice (16 × 16 × 16 bit by default)."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = derived_uid("hostile", study, series, n)
    ds.StudyInstanceUID = study or derived_uid("hostile-study")
    ds.SeriesInstanceUID = series or derived_uid("hostile-series", study)
    ds.PatientID = "HOSTILE-1"
    ds.PatientName = "Hostile^Peer"
    ds.Modality = "MR"
    ds.SeriesDescription = "AX T1"
    ds.InstanceNumber = n + 1
    ds.ImagesInAcquisition = 1
    ds.ImagePositionPatient = [0, 0, float(n)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) % 4096).tobytes()
    return ds


def body_bytes(ds: Dataset, implicit: bool = False) -> bytes:
    """``ds`` encoded little endian, implicit or explicit VR, without file meta."""
    fp = io.BytesIO()
    from pydicom.filebase import DicomFileLike

    out = DicomFileLike(fp)
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return fp.getvalue()


def part10(ds: Dataset, claimed: UID = ExplicitVRLittleEndian, body: bytes | None = None,
           implicit_body: bool | None = None) -> bytes:
    """A Part 10 byte string: file meta claiming ``claimed``, then ``body`` (default: ``ds``
    encoded as ``implicit_body`` says, which defaults to what ``claimed`` says)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    # the command's Affected SOP Instance UID comes from here: a peer's own toolkit would
    # not send an invalid one there, so the crafted value stays inside the data set
    sop = str(ds.get("SOPInstanceUID", ""))
    meta.MediaStorageSOPInstanceUID = UID(sop if len(sop) <= 64 and sop.replace(".", "").isdigit()
                                          else derived_uid("crafted", sop))
    meta.TransferSyntaxUID = UID(claimed)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1418.99")
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    if body is None:
        body = body_bytes(ds, claimed == ImplicitVRLittleEndian if implicit_body is None else implicit_body)
    return fp.getvalue() + body


def deflate_bomb(ds: Dataset, megabytes: int) -> bytes:
    """``ds`` (an MR slice) made a Deflated Explicit VR Little Endian Part 10 byte string
    whose pixel data is ``megabytes`` MiB of zeros (Rows and Columns set to agree),
    deflated to about a thousandth and never held inflated here."""
    side = int((megabytes * 1024**2 // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    if "PixelData" in ds:
        del ds.PixelData
    head = body_bytes(ds) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, side * side * 2)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts, left, zeros = [squeeze.compress(head)], side * side * 2, b"\0" * 1024**2
    while left:
        parts.append(squeeze.compress(zeros[:min(left, len(zeros))]))
        left -= min(left, len(zeros))
    return part10(ds, DeflatedExplicitVRLittleEndian, body=b"".join(parts) + squeeze.flush())


def half_sent_http(port: int) -> tuple[socket.socket, bool]:
    """A connection to 127.0.0.1:``port`` holding an HTTP request whose head never ends
    (the blank line never comes); whether it connected and sent (the node may refuse or
    close it at once: that is what it may do)."""
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    except OSError:
        return s, False
    return s, True


def explicit_element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element; ``length`` overrides the length field (a lie)."""
    length = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return struct.pack("<HH2sHI", group, element, vr, 0, length) + value
    return struct.pack("<HH2sH", group, element, vr, length) + value


def nested_sequences(depth: int) -> bytes:
    """A private SQ nested ``depth`` levels deep (undefined lengths), explicit VR LE."""
    item_start, item_end, seq_end = (struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF),
                                     struct.pack("<HHI", 0xFFFE, 0xE00D, 0),
                                     struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    head = struct.pack("<HH2sHI", 0x0009, 0x1010, b"SQ", 0, 0xFFFFFFFF)
    return (head + item_start) * depth + (item_end + seq_end) * depth


def send_raw(port: int, data: bytes, folder: Path, calling_ae: str = "GLIOMA_REPLAY",
             context_syntax: UID | None = None, sop_class: UID = MRImageStorage) -> Dataset | None:
    """C-STORE ``data`` (Part 10 bytes) exactly as it is, on one association; the status
    dataset the node answered (None: no answer, association refused or aborted)."""
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import AE, _config

    path = folder / f"raw-{abs(hash(data))}.dcm"
    path.write_bytes(data)
    claimed = UID(str(read_file_meta_info(path).TransferSyntaxUID))
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(sop_class, context_syntax or claimed)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes, not a re-encoding of them
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="GLIOMA_NODE")
        if not assoc.is_established:
            return None
        status = assoc.send_c_store(path)
        if assoc.is_established:
            assoc.release()
        return status if status else None
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
