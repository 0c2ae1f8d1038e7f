"""Reading DICOM within bounds: what a small file may make the reader hold.

Two ways a file of a few kilobytes can make a reader allocate gigabytes, and the bound
on each (the node's configuration sets them, ``node.max_instance_mb`` and
``node.max_series_voxels``; dicom_io takes them as parameters, with the defaults here):

* **Deflated Explicit VR Little Endian** (PS3.5 A.5): the whole data set is one deflate
  stream, and zeros deflate a thousand to one. pydicom inflates it in one call, without
  a limit, even to read the header only. :func:`inflate` streams it with
  ``zlib.decompressobj`` and ``max_length`` and stops (:class:`InstanceTooLarge`) once
  the output passes ``max_bytes``, never holding more than that.
* **Compressed pixel data** declaring a large matrix (a 1 KB JPEG 2000 file may say
  4096 × 4096): the voxel count is checked from the header before any array is
  allocated (:func:`image_voxels`; the series reader sums it over a series).

Only regular files are opened (:func:`open_regular`): a named pipe in a folder would
block ``open``/``read`` forever, a device would never end.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from glioma_node.dicom_io.errors import NotDicomError, UnreadableDicomError

if TYPE_CHECKING:
    from typing_extensions import Buffer

MB = 1024**2
MAX_INSTANCE_BYTES = 512 * MB
"""Default bound on one instance after inflating, bytes (``node.max_instance_mb`` is 512 by default)."""
MAX_SERIES_VOXELS = 2**28
"""Default bound on Rows × Columns × frames (× samples, × instances of a series) before
any pixel array is allocated (``node.max_series_voxels``; 2**28 float32 voxels are 1 GiB)."""


@dataclass(frozen=True)
class ReadLimits:
    """What reading one study may hold: an instance's bytes after inflating, a series'
    voxels (the configuration's ``node.max_instance_mb`` and ``node.max_series_voxels``)."""

    max_bytes: int = MAX_INSTANCE_BYTES
    max_voxels: int = MAX_SERIES_VOXELS

_OUT_CHUNK = 1 * MB  # inflated bytes per step: the overshoot past the bound is at most this
_IN_CHUNK = 64 * 1024  # deflated bytes fed per step: keeps zlib's unconsumed tail (a copy) small


class InstanceTooLarge(UnreadableDicomError):
    """An instance larger than the bound (after inflating); ``max_bytes`` is that bound."""

    def __init__(self, message: str, max_bytes: int):
        super().__init__(message)
        self.max_bytes = max_bytes


class NotRegularFile(NotDicomError):
    """A named pipe, socket or device where a file was expected: never opened for reading."""


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (after following links),
    else :class:`NotRegularFile`. Opened non-blocking and checked on the open descriptor,
    so a FIFO put in place of a file after a directory listing cannot block either."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{path}: not a regular file ({_kind(mode)}); skipped")
        os.set_blocking(fd, True)
        handle = open(fd, "rb", closefd=True)  # noqa: SIM115 - returned to the caller, who closes it
    except BaseException:
        os.close(fd)
        raise
    return cast(BinaryIO, handle)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: Path) -> str | None:
    """None when ``path`` (links followed) is a regular file, else what it is (for a warning)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot be examined: {exc.strerror or exc}"
    return None if stat.S_ISREG(mode) else _kind(mode)


def inflate(deflated: bytes | memoryview, max_bytes: int, prefix: bytes = b"") -> bytearray:
    """``prefix`` followed by the raw deflate stream ``deflated`` inflated (RFC 1951, no
    zlib header, as PS3.5 A.5 writes it). :class:`InstanceTooLarge` as soon as the
    inflated bytes pass ``max_bytes``: inflating holds at most ``max_bytes`` + 1 MB (parsing the
    result then copies each element it reads once: up to twice the inflated size in all).
    :class:`UnreadableDicomError` for a corrupt or cut-off stream."""
    source = memoryview(deflated)
    out = bytearray(prefix)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    fed = 0
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                pending: bytes | memoryview = inflater.unconsumed_tail
            else:
                pending, fed = source[fed:fed + _IN_CHUNK], min(fed + _IN_CHUNK, len(source))
            chunk = inflater.decompress(pending, _OUT_CHUNK)
            out += chunk
            if len(out) - len(prefix) > max_bytes:
                raise InstanceTooLarge(f"deflated data set inflates past {max_bytes / MB:g} MB", max_bytes)
            if not chunk and not inflater.unconsumed_tail and fed >= len(source):
                break  # all input given and nothing more comes out: the stream was cut short
    except zlib.error as exc:
        raise UnreadableDicomError(f"the deflated data set cannot be inflated: {exc}") from exc
    if not inflater.eof:
        raise UnreadableDicomError("the deflated data set ends before its deflate stream does (cut short)")
    return out


class BufferReader(io.RawIOBase):
    """A read-only, seekable file over a buffer without copying it (``io.BytesIO`` copies
    a bytearray): pydicom parses an inflated data set in place."""

    def __init__(self, buffer: bytes | bytearray | memoryview):
        super().__init__()
        self._view = memoryview(buffer)
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes (all the rest when negative) as one new bytes object: the one copy
        pydicom keeps as an element's value (RawIOBase.read would make a bytearray first,
        then copy it again)."""
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._at + size)
        data = bytes(self._view[self._at:end])
        self._at = max(self._at, end)
        return data

    def readinto(self, buffer: Buffer) -> int:
        target = memoryview(buffer).cast("B")
        n = max(0, min(len(target), len(self._view) - self._at))
        target[:n] = self._view[self._at:self._at + n]
        self._at += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._at = base + offset
        return self._at

    def tell(self) -> int:
        return self._at


def _explicit_prefix() -> bytes:
    """A Part 10 preamble and the shortest file meta (group length, Transfer Syntax UID)
    that makes pydicom read what follows as Explicit VR Little Endian."""
    syntax = str(ExplicitVRLittleEndian).encode() + b"\0"
    element = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(syntax)) + syntax
    return b"\0" * 128 + b"DICM" + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(element)) + element


EXPLICIT_PREFIX = _explicit_prefix()


def read_meta(fp: BinaryIO) -> FileMetaDataset:
    """The file meta group of the Part 10 file at ``fp``'s start, read as pydicom reads it
    (so both agree on the transfer syntax); ``fp`` is left at the data set's first byte.
    pydicom's InvalidDicomError when there is no preamble and "DICM"."""
    read_preamble(fp, False)
    return _read_file_meta_info(fp)


def syntax_of(meta: Dataset) -> UID:
    """The transfer syntax the file meta names (Implicit VR Little Endian when it names none)."""
    return UID(str(meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)))


def is_deflated(syntax: UID) -> bool:
    """Whether the data set after the file meta is one deflate stream (as pydicom would inflate it)."""
    return syntax == DeflatedExplicitVRLittleEndian


def inflated_part10(data: bytes | memoryview, body_at: int, max_bytes: int) -> bytearray:
    """A deflated Part 10 byte string (data set from ``body_at``) as an Explicit VR Little
    Endian Part 10 byte string (:data:`EXPLICIT_PREFIX`, then the inflated data set), within ``max_bytes``."""
    return inflate(memoryview(data)[body_at:], max_bytes, EXPLICIT_PREFIX)


def read_file(path: Path, max_bytes: int = MAX_INSTANCE_BYTES, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` of a regular file, a deflated data set inflated within ``max_bytes``.

    Raises :class:`NotRegularFile`, :class:`InstanceTooLarge`, :class:`UnreadableDicomError`
    for a bad deflate stream, or what pydicom raises (InvalidDicomError: no "DICM")."""
    with open_regular(path) as fp:
        meta = read_meta(fp)
        if not is_deflated(syntax_of(meta)):
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)
        else:
            buffer = inflate(fp.read(), max_bytes, EXPLICIT_PREFIX)
            ds = pydicom.dcmread(BufferReader(buffer), stop_before_pixels=stop_before_pixels)
            ds.file_meta = meta  # the file's own: its transfer syntax is Deflated, and pydicom decodes the
            # (now inflated, native) pixel data of that syntax
    ds.filename = str(path)
    return ds


def image_voxels(ds: Dataset) -> tuple[int, str]:
    """Rows × Columns × frames × samples an instance's header declares (the array a decoder
    allocates), and that product spelt out for a message. Missing values count as 1
    (Rows, Columns: 0); a value that is not a number raises ValueError naming it."""
    values = []
    for keyword, default in (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1), ("SamplesPerPixel", 1)):
        value = ds.get(keyword)
        if value is None or value == "":
            values.append(default)
            continue
        try:
            values.append(max(int(float(str(value))), 0))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{keyword} is not a number: {str(value)[:40]!r}") from None
    rows, columns, frames, samples = values
    return (rows * columns * frames * samples,
            f"Rows {rows} × Columns {columns} × {frames} frame(s) × {samples} sample(s)")
