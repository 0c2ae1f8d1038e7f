"""Read a TensorFlow checkpoint (tensor bundle: ``*.index`` + ``*.data-*``) without TensorFlow.

The ``.index`` file is a LevelDB-format table (TensorFlow's ``core/lib/io/table``):
data blocks of prefix-compressed keys, an index block pointing at them, and a
48-byte footer with the two block handles and the magic number. Each block is
followed by a type byte and the masked crc32c of the block and that byte. Each key
is a tensor name, each value a serialised ``BundleEntryProto`` (dtype, shape, shard,
offset, size, masked crc32c) locating the tensor's raw little-endian bytes in a
``.data`` shard. Only what a saved model needs is supported: uncompressed blocks,
numeric dtypes, whole (unsliced) tensors.

Every checksum is verified, as TensorFlow's own reader does: a flipped bit in a
model file would otherwise change the segmentation silently. CRC-32C is not built
into Python and no crc32c package is a dependency, so it is computed here with
numpy (:func:`crc32c_many`): the CRC is linear over GF(2), so every tensor is cut
into short lanes, all lanes of all tensors advance one byte per numpy step, and
the lanes are joined with "append n zero bytes" matrices. On the 3.9 MB CaPTk model
that takes about 25 ms, against 0.35 s for a byte-by-byte Python loop.

The checkpoint's identity (:attr:`Checkpoint.files`) is the sha256 of the index
*and* of every data shard, taken from the very bytes that were parsed: the index
alone names the tensors but not their values, so two models with one index would
otherwise share a checksum, and with it the UIDs of their results.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from glioma_node.inference.model_dir import ModelError

_MAGIC = 0xDB4775248B80FB57
_BFLOAT16 = 14
# TensorFlow DataType enum (types.proto) → the little-endian numpy dtype of the stored bytes.
# 14 is DT_BFLOAT16 (stored as its 16 raw bits, widened to float32 when read); 19 is DT_HALF.
_DTYPES: dict[int, str] = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
                           _BFLOAT16: "<u2", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}

# CRC-32C (Castagnoli), reflected polynomial; TensorFlow and LevelDB store it masked.
_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table: np.ndarray = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_LANE = 256  # bytes per lane: every lane of every buffer advances one byte per numpy step
_BITS = np.arange(32, dtype=np.uint32)


def _crc_loop(data: bytes | memoryview, state: int = 0xFFFFFFFF) -> int:
    table = _TABLE_LIST
    for byte in bytes(data):
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def _apply(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The GF(2)-linear map ``matrix`` (column ``b`` = the image of bit ``b``) applied to each of ``x``."""
    bits = ((x[..., None] >> _BITS) & 1).astype(bool)
    return np.bitwise_xor.reduce(np.where(bits, matrix, np.uint32(0)), axis=-1).astype(np.uint32)


@lru_cache(maxsize=64)
def _zeros_matrix(n: int) -> np.ndarray:
    """The map from a raw CRC register to the register after ``n`` zero bytes (``n`` a power of two)."""
    if n == 1:
        basis = np.uint32(1) << _BITS
        return (_TABLE[basis & 0xFF] ^ (basis >> 8)).astype(np.uint32)
    half = _zeros_matrix(n // 2)
    return _apply(half, half)


def crc32c_many(buffers: Sequence[bytes | memoryview]) -> list[int]:
    """CRC-32C of each buffer, all computed in one pass of numpy steps.

    Each buffer is cut into a power-of-two count of ``_LANE``-byte lanes, padded with
    zero bytes in front (they leave a zero register unchanged); the standard initial
    register 0xFFFFFFFF is the same as complementing the first four real bytes and
    starting from zero. All lanes of all buffers run in lockstep from a zero register,
    then neighbouring lanes are joined, since crc(a + b) = zeros(len b)(crc a) ^ crc b.
    """
    out = [0] * len(buffers)
    groups: dict[int, list[int]] = {}  # lanes per buffer → the buffers cut into that many
    for i, data in enumerate(buffers):
        if len(data) < 4:
            out[i] = _crc_loop(data) ^ 0xFFFFFFFF
        else:
            groups.setdefault(1 << (-(-len(data) // _LANE) - 1).bit_length(), []).append(i)
    if not groups:
        return out
    total = sum(count * len(members) for count, members in groups.items())
    flat = np.zeros(total * _LANE, np.uint8)
    end = 0
    for count, members in groups.items():
        for i in members:
            end += count * _LANE
            start = end - len(buffers[i])
            flat[start:end] = np.frombuffer(buffers[i], np.uint8)
            flat[start:start + 4] ^= 0xFF
    state = np.zeros(total, np.uint32)
    table = _TABLE
    for column in np.ascontiguousarray(flat.reshape(total, _LANE).T):
        state = table[(state ^ column) & 0xFF] ^ (state >> 8)
    first = 0
    for count, members in groups.items():
        joined: np.ndarray = state[first:first + count * len(members)].reshape(len(members), count)
        first += count * len(members)
        length = _LANE
        while joined.shape[1] > 1:
            joined = _apply(_zeros_matrix(length), joined[:, 0::2]) ^ joined[:, 1::2]
            length *= 2
        for i, crc in zip(members, joined[:, 0]):
            out[i] = int(crc) ^ 0xFFFFFFFF
    return out


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data`` (the check value of ``b"123456789"`` is ``0xE3069283``)."""
    return crc32c_many([data])[0]


def unmask(masked: int) -> int:
    """TensorFlow's ``crc32c::Unmask``: the stored form is rotated and offset so that a
    CRC of data that embeds CRCs stays meaningful."""
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def mask(crc: int) -> int:
    """TensorFlow's ``crc32c::Mask`` (the inverse of :func:`unmask`)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelError("truncated varint in a TensorFlow checkpoint index")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _bytes(value: int | bytes) -> bytes:
    """A length-delimited protobuf field's bytes (a varint where bytes belong is a damaged index)."""
    if not isinstance(value, bytes):
        raise ModelError(f"TensorFlow checkpoint index: expected an embedded message, found the number {value}")
    return value


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, length-delimited as bytes."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise ModelError(f"unsupported protobuf wire type {wire} in a TensorFlow checkpoint index")
        out.append((number, value))
    return out


def _block(data: bytes, offset: int, size: int, path: Path) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the table block at ``offset`` (``size`` without its
    5-byte trailer: a compression type byte and the masked crc32c of block and type)."""
    if offset + size + 5 > len(data) - 48:
        raise ModelError(f"{path}: a block of the TensorFlow checkpoint index runs past its end (damaged file)")
    if data[offset + size] != 0:
        raise ModelError(f"{path}: compressed TensorFlow checkpoint index blocks are not supported")
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if unmask(stored) != crc32c(memoryview(data)[offset:offset + size + 1]):
        raise ModelError(f"{path}: crc32c checksum mismatch in the index block at byte {offset}: the file is "
                         f"damaged; copy the model folder again from the CaPTk installation")
    block = data[offset:offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + length]))
        pos += length
    return entries


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _decode(raw: bytes, dtype: int, shape: list[int]) -> np.ndarray:
    values = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape)
    if dtype == _BFLOAT16:  # bfloat16 is the high half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(values.dtype.newbyteorder("="))  # a native-order copy


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's tensors by name, and the sha256 of each file they were read from
    (index first, then the data shards in order), of the bytes actually parsed."""

    tensors: dict[str, np.ndarray]
    files: dict[str, str]  # file name → hex sha256


def load_checkpoint(prefix: Path) -> Checkpoint:
    """The checkpoint ``prefix`` (``model.ckpt`` for ``model.ckpt.index``): every tensor,
    each checked against its crc32c, and the sha256 of the index and of every shard."""
    prefix = Path(prefix)
    index_path = prefix.with_name(prefix.name + ".index")
    if not index_path.is_file():
        raise ModelError(f"{index_path}: TensorFlow checkpoint index not found")
    data = index_path.read_bytes()
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise ModelError(f"{index_path}: not a TensorFlow checkpoint index (bad table magic)")
    footer = data[-48:]
    _, _, pos = _handle(footer)
    index_offset, index_size, _ = _handle(footer, pos)
    entries: dict[bytes, bytes] = {}
    for _, handle in _block(data, index_offset, index_size, index_path):
        offset, size, _ = _handle(handle)
        entries.update(_block(data, offset, size, index_path))
    header = dict(_fields(entries.pop(b"", b"")))
    shards = int(header.get(1, 1))
    paths = [prefix.with_name(f"{prefix.name}.data-{s:05d}-of-{shards:05d}") for s in range(shards)]
    files = {index_path.name: hashlib.sha256(data).hexdigest()}
    blobs: list[bytes] = []
    for path in paths:
        if not path.is_file():
            raise ModelError(f"{path}: checkpoint data shard not found")
        blobs.append(path.read_bytes())
        files[path.name] = hashlib.sha256(blobs[-1]).hexdigest()
    located: list[tuple[str, int, list[int], int, int, int | None, bytes]] = []
    for key, value in entries.items():
        name = key.decode(errors="replace")
        entry = dict(_fields(value))
        dtype = int(entry.get(1, 0))
        if dtype not in _DTYPES:
            raise ModelError(f"{index_path}: tensor {name!r} has an unsupported dtype {dtype} "
                             f"(TensorFlow DataType enum; numeric types only)")
        if 7 in entry:
            raise ModelError(f"{index_path}: tensor {name!r} is saved in slices (not supported)")
        dims = [_bytes(dim) for number, dim in _fields(_bytes(entry.get(2, b""))) if number == 2]
        shape = [int(dict(_fields(dim)).get(1, 0)) for dim in dims]
        shard = int(entry.get(3, 0))
        if not 0 <= shard < shards:
            raise ModelError(f"{index_path}: tensor {name!r} names data shard {shard}, but the index has {shards}")
        offset, size = int(entry.get(4, 0)), int(entry.get(5, 0))
        raw = blobs[shard][offset:offset + size]
        if len(raw) != size:
            raise ModelError(f"{paths[shard]}: tensor {name!r} runs past the end of the shard")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if size != expected:
            raise ModelError(f"{index_path}: tensor {name!r} has {size} bytes, its shape {shape} needs {expected}")
        stored = entry.get(6)
        located.append((name, dtype, shape, shard, offset, None if stored is None else int(stored), raw))
    crcs = crc32c_many([raw for *_, raw in located])
    tensors: dict[str, np.ndarray] = {}
    for (name, dtype, shape, shard, offset, stored, raw), crc in zip(located, crcs):
        if stored is not None and unmask(stored) != crc:
            raise ModelError(f"{paths[shard]}: tensor {name!r} fails its crc32c check (bytes {offset}-"
                             f"{offset + len(raw)} differ from what {index_path.name} recorded): the file is damaged "
                             f"or does not belong to this index; copy the model folder again")
        tensors[name] = _decode(raw, dtype, shape)
    return Checkpoint(tensors, files)


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint ``prefix`` (``model.ckpt`` for ``model.ckpt.index``), by name."""
    return load_checkpoint(prefix).tensors
