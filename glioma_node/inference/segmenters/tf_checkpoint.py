"""Read a TensorFlow checkpoint (tensor bundle: ``*.index`` + ``*.data-*``) without TensorFlow.

The ``.index`` file is a LevelDB-format table (TensorFlow's ``core/lib/io/table``):
data blocks of prefix-compressed keys, an index block pointing at them, and a
48-byte footer with the two block handles and the magic number. Each key is a
tensor name, each value a serialised ``BundleEntryProto`` (dtype, shape, shard,
offset, size, crc32c) locating the tensor's raw little-endian bytes in a ``.data``
shard. Only what a saved model needs is supported: uncompressed blocks, numeric
dtypes, whole (unsliced) tensors.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from glioma_node.inference.model_dir import ModelError

_MAGIC = 0xDB4775248B80FB57
# TensorFlow DataType enum → numpy dtype (types.proto).
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
           10: np.bool_, 14: np.float16, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}


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


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the table block at ``offset`` (``size`` without its trailer)."""
    if data[offset + size] != 0:
        raise ModelError("compressed TensorFlow checkpoint index blocks are not supported")
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


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint ``prefix`` (``model.ckpt`` for ``model.ckpt.index``), by name."""
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
    for _, handle in _block(data, index_offset, index_size):
        offset, size, _ = _handle(handle)
        entries.update(_block(data, offset, size))
    header = dict(_fields(entries.pop(b"", b"")))
    shards = int(header.get(1, 1))
    files = {s: prefix.with_name(f"{prefix.name}.data-{s:05d}-of-{shards:05d}") for s in range(shards)}
    blobs: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for name, value in entries.items():
        fields = _fields(value)
        entry = dict(fields)
        dtype = _DTYPES.get(int(entry.get(1, 0)))
        if dtype is None:
            raise ModelError(f"{index_path}: tensor {name.decode()!r} has an unsupported dtype {entry.get(1)!r}")
        if 7 in entry:
            raise ModelError(f"{index_path}: tensor {name.decode()!r} is saved in slices (not supported)")
        dims = [_bytes(dim) for number, dim in _fields(_bytes(entry.get(2, b""))) if number == 2]
        shape = [int(dict(_fields(dim)).get(1, 0)) for dim in dims]
        shard = int(entry.get(3, 0))
        if shard not in blobs:
            if not files[shard].is_file():
                raise ModelError(f"{files[shard]}: checkpoint data shard not found")
            blobs[shard] = files[shard].read_bytes()
        offset, size = int(entry.get(4, 0)), int(entry.get(5, 0))
        raw = blobs[shard][offset:offset + size]
        if len(raw) != size:
            raise ModelError(f"{files[shard]}: tensor {name.decode()!r} runs past the end of the shard")
        tensors[name.decode()] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return tensors
