"""CaPTk's DeepMedic model, read from its TensorFlow checkpoint and rebuilt in PyTorch.

The model files are read where they lie (../shared/data/captk-deepmedic) and never
copied. A wrong port shows as a bad Dice on the real case; that is the main test.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from glioma_node.core.grid import Grid
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.inference.brain_extraction import BrainExtractor, ExtractorKind
from glioma_node.inference.model_dir import ModelError
from glioma_node.inference.regions import region_dice
from glioma_node.inference.resample import resample
from glioma_node.inference.segmentation import segment
from glioma_node.inference.segmenters import load_segmenter
from glioma_node.inference.segmenters.deepmedic import (
    Architecture,
    CaptkDeepMedicSegmenter,
    read_model_config,
    subsampled_segment,
    tile_starts,
)
from glioma_node.inference.segmenters.tf_checkpoint import crc32c_many, read_checkpoint
from tests.helpers import nifti_volumes, shared

MODEL = ("captk-deepmedic",)


def test_checkpoint_reader_finds_every_variable_of_the_network():
    tensors = read_checkpoint(shared(*MODEL) / "model.ckpt")
    assert tensors["net/W"].shape == (10, 4, 3, 3, 3)  # first normal-pathway convolution: [out, in, r, c, z]
    assert tensors["net/W_26"].shape == (5, 80, 1, 1, 1)  # classification layer
    assert tensors["net/varBnsForRollingAverage_23"].shape == (60, 80)
    assert (tensors["net/varBnsForRollingAverage_23"] > 0).all()
    assert all(np.isfinite(t).all() for t in tensors.values())


def test_a_damaged_checkpoint_is_refused_with_its_name(tmp_path):
    shutil.copy(shared(*MODEL, "model.ckpt.index"), tmp_path / "model.ckpt.index")
    with pytest.raises(ModelError, match="data shard not found"):
        read_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt.index").write_bytes(b"\0" * 100)
    with pytest.raises(ModelError, match="bad table magic"):
        read_checkpoint(tmp_path / "model.ckpt")


SHARD = "model.ckpt.data-00000-of-00001"
# The 33-bit CRC-32C generator in the order a reflected CRC reads bits (x^32 first, then
# the reflected polynomial), as 5 bytes: XORed into data anywhere, it is a multiple of the
# generator and leaves the crc32c unchanged, which is how weights can be changed behind a
# checksum that is not cryptographic.
GENERATOR = (1 | 0x82F63B78 << 1).to_bytes(5, "little")


def _crc32c(data: bytes) -> int:
    """Bit-by-bit CRC-32C, independent of the reader's numpy version."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    """TensorFlow's crc32c::Mask."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _table_block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A LevelDB table block (no prefix sharing, one restart) with its type byte and masked crc."""
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    body += struct.pack("<II", 0, 1) + b"\0"
    return body + struct.pack("<I", _mask(_crc32c(body)))


def _write_checkpoint(prefix: Path, tensors: dict[str, tuple[int, tuple[int, ...], bytes]]) -> None:
    """A one-shard TensorFlow tensor bundle: name → (DataType enum, shape, raw little-endian bytes)."""
    data, entries = b"", [(b"", _field(1, 1))]  # BundleHeaderProto: num_shards = 1
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        shape_proto = b"".join(_field(2, _field(1, d)) for d in shape)
        entry = _field(1, dtype) + _field(2, shape_proto) + _field(4, len(data)) + _field(5, len(raw))
        entry += _varint(6 << 3 | 5) + struct.pack("<I", _mask(_crc32c(raw)))
        entries.append((name.encode(), entry))
        data += raw
    block = _table_block(entries)
    index = _table_block([(entries[-1][0], _varint(0) + _varint(len(block) - 5))])
    handles = _varint(0) + _varint(0) + _varint(len(block)) + _varint(len(index) - 5)
    footer = handles.ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    prefix.with_name(prefix.name + ".index").write_bytes(block + index + footer)
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(data)


def _copy_model(folder: Path) -> Path:
    for name in ("modelConfig.txt", "VERSION.yaml", "model.ckpt.index", SHARD):
        shutil.copy(shared(*MODEL, name), folder / name)
        (folder / name).chmod(0o644)  # the shared copies are read-only
    return folder


def test_crc32c_matches_the_bitwise_definition_for_every_length_and_batch():
    rng = np.random.default_rng(3)
    buffers = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
               for n in (0, 1, 3, 4, 5, 255, 256, 257, 1023, 1024, 1025, 5000, 20000)]
    assert crc32c_many(buffers) == [_crc32c(b) for b in buffers]
    assert crc32c_many([b"123456789"]) == [0xE3069283]  # the published check value


def test_bfloat16_half_and_float_tensors_read_their_values(tmp_path):
    values = np.array([[1.0, -2.5, 0.15625], [3.140625, 0.0, -1e-3]], np.float32)
    bfloat16 = (values.view(np.uint32) >> 16).astype("<u2")  # DT_BFLOAT16 = 14: the high 16 bits
    half = np.array([0.5, -65504.0, 1e-4], "<f2")  # DT_HALF = 19
    floats = np.array([1.5, 2.25], "<f4")  # DT_FLOAT = 1
    _write_checkpoint(tmp_path / "model.ckpt", {"bf": (14, (2, 3), bfloat16.tobytes()),
                                               "half": (19, (3,), half.tobytes()),
                                               "float": (1, (2,), floats.tobytes())})
    tensors = read_checkpoint(tmp_path / "model.ckpt")
    assert tensors["bf"].dtype == np.float32 and tensors["bf"].shape == (2, 3)
    expected = (bfloat16.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(tensors["bf"], expected)
    np.testing.assert_allclose(tensors["bf"], values, rtol=1e-2)  # bfloat16 keeps 8 bits of mantissa
    assert tensors["bf"][0, 1] == -2.5 and tensors["bf"][1, 0] == 3.140625
    np.testing.assert_array_equal(tensors["half"], half)
    assert tensors["half"].dtype == np.float16
    np.testing.assert_array_equal(tensors["float"], floats)


def test_a_flipped_byte_in_a_data_shard_fails_the_tensor_crc_naming_tensor_and_file(tmp_path):
    folder = _copy_model(tmp_path)
    data = bytearray((folder / SHARD).read_bytes())
    data[100] ^= 0x01  # inside net/W, the first tensor of the shard (bytes 0-4320)
    (folder / SHARD).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"{SHARD}: tensor 'net/W' fails its crc32c check"):
        read_checkpoint(folder / "model.ckpt")
    with pytest.raises(ModelError, match="fails its crc32c check"):
        load_segmenter("captk-deepmedic", folder)


def test_a_flipped_byte_in_the_index_fails_its_block_crc(tmp_path):
    folder = _copy_model(tmp_path)
    index = bytearray((folder / "model.ckpt.index").read_bytes())
    index[100] ^= 0x01
    (folder / "model.ckpt.index").write_bytes(bytes(index))
    with pytest.raises(ModelError, match="model.ckpt.index: crc32c checksum mismatch in the index block"):
        read_checkpoint(folder / "model.ckpt")


def test_other_weights_behind_the_same_index_give_another_model_sha256(tmp_path):
    folder = _copy_model(tmp_path)
    original = CaptkDeepMedicSegmenter(folder).describe()["sha256"]
    # what `sha256sum modelConfig.txt model.ckpt.index model.ckpt.data-* | sha256sum` prints
    lines = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n"
                    for n in ("modelConfig.txt", "model.ckpt.index", SHARD))
    assert original == hashlib.sha256(lines.encode()).hexdigest()
    before = read_checkpoint(folder / "model.ckpt")["net/W"]
    data = bytearray((folder / SHARD).read_bytes())
    data[8:13] = bytes(a ^ b for a, b in zip(data[8:13], GENERATOR))  # net/W's weights 2-3, crc kept
    (folder / SHARD).write_bytes(bytes(data))
    assert _crc32c(bytes(data[:4320])) == _crc32c((shared(*MODEL, SHARD)).read_bytes()[:4320])
    after = read_checkpoint(folder / "model.ckpt")["net/W"]  # the crc check cannot tell
    assert not np.array_equal(before, after, equal_nan=True)
    changed = CaptkDeepMedicSegmenter(folder).describe()["sha256"]
    assert changed != original
    (folder / SHARD).write_bytes((folder / SHARD).read_bytes() + b"\0")  # even bytes no tensor uses count
    assert CaptkDeepMedicSegmenter(folder).describe()["sha256"] not in (original, changed)


def test_architecture_follows_model_config():
    arch = Architecture.from_config(read_model_config(shared(*MODEL, "modelConfig.txt")))
    assert arch.receptive_field == 17 and arch.factors == ((3, 3, 3), (5, 5, 5))
    assert arch.residual_normal == (3, 5, 7) and arch.residual_fc == (1,)
    assert arch.fc == (60, 80) and arch.fc_first_kernel == (3, 3, 3) and arch.segment_inference == (45, 45, 45)


def test_tiles_cover_the_image_and_low_resolution_segments_pad_with_the_border_value():
    assert tile_starts(100, 45, 29) == [0, 29, 55]
    image = np.arange(40 ** 3, dtype=np.float32).reshape(1, 40, 40, 40)
    border = np.array([-7.0], np.float32)
    low = subsampled_segment(image, (0, 0, 0), (29, 29, 29), (3, 3, 3), 17, border)
    assert low.shape == (1, 26, 26, 26)
    # the segment starts 16 voxels before the image: as DeepMedic places it, the first
    # 16 // 3 = 5 rows are border and row 5 is the image's first, then every third
    assert (low[0, :5] == -7).all()
    assert low[0, 5, 5, 5] == image[0, 0, 0, 0] and low[0, 6, 6, 6] == image[0, 3, 3, 3]


@pytest.mark.slow
def test_the_port_segments_the_real_tcga_case_like_the_brats_algorithms():
    segmenter = load_segmenter("captk-deepmedic", shared(*MODEL))
    case = shared("tcga-lgg_fg-6692", "brats_space")
    result = segment(nifti_volumes(case), segmenter, BrainExtractor(ExtractorKind.NONE))
    reference, affine = read_nifti(case / "seg" / "fusion_simple.nii.gz")
    dice = region_dice(resample(result.labels, result.grid, Grid(reference.shape, affine), interpolation="nearest"),
                       reference)
    # measured 0.919 / 0.877 / 0.895: a wrong channel order, normalisation or layer order falls far below
    assert dice["whole_tumour"] >= 0.85 and dice["tumour_core"] >= 0.8 and dice["enhancing_tumour"] >= 0.8, dice
    assert segmenter.describe()["kind"] == "captk-deepmedic"
    assert segmenter.required_roles == ("T1", "T1c", "T2", "FLAIR")
