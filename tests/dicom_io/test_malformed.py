"""Bad files never crash the reader or inspect: each gets a clear reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from glioma_node.core.volume import Volume
from glioma_node.dicom_io.errors import NotDicomError, SeriesRefused
from glioma_node.dicom_io.scan import read_header, scan
from glioma_node.dicom_io.series_reader import decode_pixels, layout, read_series
from glioma_node.dicom_io.uids import derived_uid
from glioma_node.service.intake import Refused, StoreStatus, inspect
from tests.helpers import REPO, shared
from tests.hostile_data import deflate_bomb, mr_dataset, part10

SOURCE = ("dcmqi", "segmentations", "24x38x3", "image")


def _copy_series(tmp_path: Path) -> list[Path]:
    out = []
    for p in sorted(shared(*SOURCE).iterdir()):
        target = tmp_path / p.name
        target.write_bytes(p.read_bytes())
        out.append(target)
    return out


def _read_all(folder: Path):
    found = scan(folder)
    results: list[Volume | SeriesRefused] = []
    for study in found.studies.values():
        for series in study.series.values():
            try:
                results.append(read_series(series.instances))
            except SeriesRefused as exc:
                results.append(exc)
    return found, results


def test_truncated_pixel_data_refuses_the_series(tmp_path):
    files = _copy_series(tmp_path)
    files[1].write_bytes(files[1].read_bytes()[:-300])
    found, results = _read_all(tmp_path)
    assert not found.bad_files  # the header is intact
    (refusal,) = results
    assert isinstance(refusal, SeriesRefused) and refusal.code == "pixel_decode"
    assert files[1].name in str(refusal)


def test_truncated_header_is_a_bad_file(tmp_path):
    files = _copy_series(tmp_path)
    files[0].write_bytes(files[0].read_bytes()[:400])
    found, _ = _read_all(tmp_path)
    assert [p.name for p, _ in found.bad_files] == [files[0].name]


def test_missing_position_refuses_with_the_tag_named(tmp_path):
    files = _copy_series(tmp_path)
    ds = pydicom.dcmread(files[2])
    del ds.ImagePositionPatient
    ds.save_as(files[2])
    _, (refusal,) = _read_all(tmp_path)
    assert refusal.code == "missing_geometry" and "ImagePositionPatient" in str(refusal)


def test_missing_uid_is_a_bad_file(tmp_path):
    files = _copy_series(tmp_path)
    ds = pydicom.dcmread(files[0])
    del ds.SeriesInstanceUID
    ds.save_as(files[0])
    found, _ = _read_all(tmp_path)
    assert "SeriesInstanceUID" in found.bad_files[0][1]


def test_wrong_transfer_syntax_refuses(tmp_path):
    files = _copy_series(tmp_path)
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.save_as(files[0], implicit_vr=False, little_endian=True)
    raw = files[0].read_bytes()
    explicit_le = b"1.2.840.10008.1.2.1\x00"
    assert explicit_le in raw
    # Same length: the file now claims RLE Lossless but holds native pixels.
    files[0].write_bytes(raw.replace(explicit_le, b"1.2.840.10008.1.2.5\x00", 1))
    found, (refusal,) = _read_all(tmp_path)
    assert not found.bad_files
    assert isinstance(refusal, SeriesRefused) and refusal.code == "pixel_decode" and files[0].name in str(refusal)


def test_gap_and_missing_slice_are_refused(tmp_path):
    files = _copy_series(tmp_path)
    files[1].unlink()  # 3 slices at 2.5 mm, the middle one gone: 2 slices 5 mm apart is still uniform
    extra = pydicom.dcmread(files[2])
    extra.SOPInstanceUID = derived_uid("extra slice", extra.SOPInstanceUID)
    extra.ImagePositionPatient = [float(v) for v in extra.ImagePositionPatient[:2]] + [float(extra.ImagePositionPatient[2]) + 2.5]
    extra.save_as(tmp_path / "extra.dcm")
    _, (refusal,) = _read_all(tmp_path)
    assert refusal.code == "gap" and "apart" in str(refusal)


def test_mixed_orientation_is_refused(tmp_path):
    files = _copy_series(tmp_path)
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(files[1])
    _, (refusal,) = _read_all(tmp_path)
    assert refusal.code == "mixed_orientation"


def test_not_dicom_files_are_skipped_and_inspect_reports_bad_ones(tmp_path):
    _copy_series(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.dcm").write_bytes(b"")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00garbage")
    result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "inspect", "--json", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [Path(b["path"]).name for b in report["bad_files"]] == ["bad.dcm"]
    assert report["skipped_not_dicom"] == 2
    assert report["studies"][0]["series"][0]["refused"] is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_bytes_never_crash(tmp_path, data):
    """Random corruption of a real file: the reader either reads, or says why; nothing else escapes."""
    source = sorted(shared(*SOURCE).iterdir())[0].read_bytes()
    raw = bytearray(source)
    for _ in range(data.draw(st.integers(1, 12))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "x.dcm").write_bytes(bytes(raw))
    found = scan(folder)  # documented never to raise on a bad file: any exception fails the test
    listed = [i.path for st in found.studies.values() for se in st.series.values() for i in se.instances]
    bad = {path: reason for path, reason in found.bad_files}
    assert len(listed) + len(bad) + len(found.skipped_not_dicom) == 1
    assert all(reason.strip() for reason in bad.values())
    for study in found.studies.values():
        for series in study.series.values():
            try:
                volume = read_series(series.instances)
            except SeriesRefused as exc:
                assert exc.code and str(exc)
                continue
            assert isinstance(volume, Volume) and volume.voxels.ndim == 3 and volume.voxels.size > 0
    # the node's intake on the same bytes answers a status: it stores or refuses, never raises
    try:
        received = inspect(bytes(raw), "1.2.840.10008.5.1.4.1.1.4")
    except Refused as exc:
        assert exc.status != StoreStatus.SUCCESS and str(exc)
    else:
        assert received.study_uid and received.sop_uid


# issue 25: bounded reading (deflate bombs, declared matrices, files that are not files)
def _deflated_copy(files: list[Path], out: Path) -> list[Path]:
    """The series written again in Deflated Explicit VR Little Endian (pydicom deflates on write)."""
    out.mkdir()
    copies = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(out / path.name, enforce_file_format=True)
        copies.append(out / path.name)
    return copies


def test_a_deflated_series_reads_as_the_same_volume(tmp_path):
    (tmp_path / "explicit").mkdir()
    files = _copy_series(tmp_path / "explicit")
    copies = _deflated_copy(files, tmp_path / "deflated")
    assert pydicom.dcmread(copies[0]).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    _, (plain,) = _read_all(tmp_path / "explicit")
    _, (inflated,) = _read_all(tmp_path / "deflated")
    assert isinstance(inflated, Volume), inflated
    assert np.array_equal(plain.voxels, inflated.voxels) and np.allclose(plain.affine, inflated.affine)


def _deflate_bomb(path: Path, megabytes: int) -> None:
    """A valid MR header whose pixel data is ``megabytes`` MB of zeros, deflated, as a file."""
    path.write_bytes(deflate_bomb(mr_dataset(), megabytes))


def test_a_deflate_bomb_in_a_folder_is_a_bad_file_with_the_reason(tmp_path):
    _copy_series(tmp_path)
    _deflate_bomb(tmp_path / "bomb.dcm", 100)
    assert (tmp_path / "bomb.dcm").stat().st_size < 1024**2
    tracemalloc.start()
    try:
        found = scan(tmp_path, max_bytes=16 * 1024**2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(p.name, "inflates past 16 MB" in why) for p, why in found.bad_files] == [("bomb.dcm", True)]
    assert "node.max_instance_mb" in found.bad_files[0][1]
    assert peak < 32 * 1024**2, f"{peak / 1024**2:.0f} MB held to refuse a 16 MB bound"
    (series,) = [s for study in found.studies.values() for s in study.series.values()]
    assert len(series.instances) == 3  # the good files are read as before


def test_a_deflated_file_is_inflated_within_the_bound_when_its_pixels_are_read(tmp_path):
    _deflate_bomb(tmp_path / "bomb.dcm", 40)
    with pytest.raises(SeriesRefused) as refused:
        decode_pixels(tmp_path / "bomb.dcm", max_bytes=8 * 1024**2)
    assert refused.value.code == "too_large" and "inflates past 8 MB" in str(refused.value)


def _jpeg2000_series(folder: Path, count: int, side: int = 4096) -> list[Path]:
    """``count`` MR slices declaring ``side`` × ``side``, each a real JPEG 2000 codestream of zeros (< 1 KB)."""
    import openjpeg

    folder.mkdir(parents=True, exist_ok=True)
    codestream = bytes(openjpeg.encode(np.zeros((side, side), dtype=np.uint16), codec_format=0))
    paths = []
    for n in range(count):
        ds = mr_dataset(n, study="1.2.826.0.1.3680043.9.2525", series="1.2.826.0.1.3680043.9.2525.1",
                        rows=side, columns=side)
        ds.PixelData = encapsulate([codestream])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        paths.append(folder / f"{n:03d}.dcm")
        paths[-1].write_bytes(part10(ds, JPEG2000Lossless))
    return paths


def test_compressed_files_declaring_a_huge_series_are_refused_before_decoding(tmp_path):
    paths = _jpeg2000_series(tmp_path / "j2k", 4)
    assert max(p.stat().st_size for p in paths) < 2048
    found = scan(tmp_path / "j2k")
    (series,) = [s for study in found.studies.values() for s in study.series.values()]
    tracemalloc.start()
    try:
        with pytest.raises(SeriesRefused) as refused:
            read_series(series.instances, max_voxels=2**25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == "too_large" and "node.max_series_voxels" in str(refused.value)
    assert "Rows 4096 × Columns 4096" in str(refused.value)
    assert peak < 16 * 1024**2  # nothing decoded, nothing allocated
    with pytest.raises(SeriesRefused, match="more than 33554432 voxels"):
        layout(series.instances, max_voxels=2**25)  # the headers-only survey refuses it the same way
    one = series.instances[0].path
    assert decode_pixels(one, max_voxels=2**24)[1].shape == (4096, 4096)  # one image within the bound decodes
    with pytest.raises(SeriesRefused, match="declares Rows 4096 × Columns 4096 × 1 frame"):
        decode_pixels(one, max_voxels=2**23)


def test_a_named_pipe_in_a_folder_is_skipped_not_waited_on(tmp_path, caplog):
    _copy_series(tmp_path)
    os.mkfifo(tmp_path / "pipe.dcm")
    found: list = []
    with caplog.at_level("WARNING", logger="glioma_node.dicom_io.scan"):
        reader = threading.Thread(target=lambda: found.append(scan(tmp_path)), daemon=True)
        reader.start()
        reader.join(timeout=60)
    assert not reader.is_alive(), "scan blocked on a named pipe"
    (result,) = found
    assert tmp_path / "pipe.dcm" in result.skipped_not_dicom and not result.bad_files
    assert any("named pipe" in r.getMessage() for r in caplog.records)
    (series,) = [s for study in result.studies.values() for s in study.series.values()]
    assert len(series.instances) == 3


def test_a_named_pipe_put_in_place_of_a_file_is_refused_on_open(tmp_path):
    os.mkfifo(tmp_path / "pipe.dcm")  # as if swapped in after the folder was listed
    outcome: list = []

    def read() -> None:
        try:
            read_header(tmp_path / "pipe.dcm")
        except NotDicomError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "read_header blocked on a named pipe"
    assert outcome and "not a regular file (a named pipe)" in outcome[0]
