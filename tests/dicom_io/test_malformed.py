"""Bad files never crash the reader or inspect: each gets a clear reason."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glioma_node.core.volume import Volume
from glioma_node.dicom_io.errors import SeriesRefused
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.series_reader import read_series
from glioma_node.dicom_io.uids import derived_uid
from glioma_node.service.intake import Refused, StoreStatus, inspect
from tests.helpers import REPO, shared

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
