"""The one intake, without a network: what each crafted instance gets, and that nothing
refused is written (the same checks run at C-STORE, in the Orthanc plugin and when the
spool is reconciled after a crash)."""
from __future__ import annotations

import functools
import hashlib
import struct
import tracemalloc
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
)

from glioma_node.dicom_io.bounded import ReadLimits
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.uids import InvalidUid, check_uid, safe_part
from glioma_node.service.intake import Intake, Outcome, StoreStatus
from glioma_node.service.reconcile import reconcile
from glioma_node.service.spool import Spool
from glioma_node.service.state import NodeState
from tests.hostile_data import body_bytes, explicit_element, mr_dataset, nested_sequences, part10

CT = CTImageStorage
MR = MRImageStorage


def deflate(data: bytes) -> bytes:
    """A raw deflate stream (RFC 1951, no zlib header), as PS3.5 A.5 writes a deflated data set."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


@pytest.fixture
def intake(tmp_path):
    return Intake(Spool(tmp_path / "spool", min_free_bytes=0), NodeState(tmp_path / "state.db"))


def files(tmp_path):
    return sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".dcm")


@pytest.mark.parametrize("value, reason", [
    ("../../../../tmp/x", "only digits and dots"),
    ("1.2.3/../../x", "only digits and dots"),
    ("1.2.840.abc", "only digits and dots"),
    ("1." + "2" * 70, "at most 64"),
    ("1..2", "empty component"),
    (".1.2", "empty component"),
    ("", "empty"),
    (None, "missing"),
])
def test_values_that_are_not_uids_are_refused(value, reason):
    with pytest.raises(InvalidUid, match=reason):
        check_uid(value, "StudyInstanceUID")
    assert safe_part(value).startswith("x") and "/" not in safe_part(value) and ".." not in safe_part(value)


@pytest.mark.parametrize("value, clean, tolerated", [
    ("1.2.840.10008.1", "1.2.840.10008.1", ()),
    ("1.2.840.10008.1 ", "1.2.840.10008.1", ("trailing padding (space or NUL)",)),
    ("1.2.840.10008.1\0", "1.2.840.10008.1", ("trailing padding (space or NUL)",)),
    ("1.2.840.010008.1", "1.2.840.010008.1", ("a component with a leading zero",)),
])
def test_what_old_equipment_writes_is_tolerated_and_named(value, clean, tolerated):
    checked = check_uid(value)
    assert checked.value == clean and checked.tolerated == tolerated and safe_part(value) == clean


def _changed(ds, change: dict):
    """``ds`` with each keyword of ``change`` set to its value (None: removed)."""
    for keyword, value in change.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("name, change, status", [
    ("traversal study UID", dict(StudyInstanceUID="../../../../../../tmp/x"), StoreStatus.INVALID_UID),
    ("letters in a series UID", dict(SeriesInstanceUID="1.2.abc"), StoreStatus.INVALID_UID),
    ("overlong SOP UID", dict(SOPInstanceUID="1." + "9" * 80), StoreStatus.INVALID_UID),
    ("half the pixel data", dict(PixelData=b"\0" * 256), StoreStatus.PIXEL_DATA_MISMATCH),
    ("no pixel data at all", dict(PixelData=None), StoreStatus.PIXEL_DATA_MISMATCH),
    ("0-length pixel data", dict(PixelData=b""), StoreStatus.PIXEL_DATA_MISMATCH),
    ("a billion frames claimed", dict(NumberOfFrames=1_000_000_000), StoreStatus.PIXEL_DATA_MISMATCH),
    ("65535 rows claimed", dict(Rows=65535), StoreStatus.PIXEL_DATA_MISMATCH),
])
def test_crafted_instances_get_a_failure_status_and_nothing_is_written(intake, tmp_path, name, change, status):
    ds = _changed(mr_dataset(), change)
    answer = intake.admit(part10(ds), MR)
    assert answer.status == status and answer.outcome is Outcome.REFUSED and answer.reason, name
    assert files(tmp_path) == [] and intake.state.studies() == []


def test_a_body_encoded_otherwise_than_its_transfer_syntax_says_is_refused(intake, tmp_path):
    ds = mr_dataset()
    implicit_as_explicit = intake.admit(part10(ds, ExplicitVRLittleEndian, implicit_body=True), MR)
    explicit_as_implicit = intake.admit(part10(ds, ImplicitVRLittleEndian, implicit_body=False), MR)
    native_as_jpeg2000 = intake.admit(part10(ds, JPEG2000Lossless, body=body_bytes(ds)), MR)
    for answer in (implicit_as_explicit, explicit_as_implicit, native_as_jpeg2000):
        assert answer.status == StoreStatus.TRANSFER_SYNTAX_MISMATCH, answer
    assert "implicit VR" in implicit_as_explicit.reason and "not encapsulated" in native_as_jpeg2000.reason
    assert files(tmp_path) == []


def test_a_4_gb_pixel_data_length_field_is_refused(intake, tmp_path):
    ds = mr_dataset()
    del ds.PixelData
    body = body_bytes(ds) + explicit_element(0x7FE0, 0x0010, b"OW", b"\0" * 512, length=0xFFFFFFF0)
    answer = intake.admit(part10(ds, ExplicitVRLittleEndian, body=body), MR)
    assert answer.status == StoreStatus.PIXEL_DATA_MISMATCH and "only 512 arrived" in answer.reason
    assert files(tmp_path) == []


def _long_private_element(ds) -> bytes:
    """``ds`` with a private OB element whose length field says 4 GB, inside a real header."""
    ds.add_new(0x00091010, "OB", b"\0" * 16)
    honest = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 16)
    body = body_bytes(ds)
    assert body.count(honest) == 1
    return body.replace(honest, struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0))


@pytest.mark.parametrize("name, body, status, reason", [
    ("a 4 GB private element", _long_private_element, StoreStatus.CANNOT_UNDERSTAND, "claims 4294967280 bytes"),
    ("sequences nested 5000 deep", lambda ds: nested_sequences(5000), StoreStatus.CANNOT_UNDERSTAND,
     "RecursionError"),
    ("garbage after the meta", lambda ds: b"\xff" * 64, StoreStatus.TRANSFER_SYNTAX_MISMATCH, "implicit VR"),
    ("an empty body", lambda ds: b"", StoreStatus.CANNOT_UNDERSTAND, "empty"),
])
def test_bodies_that_do_not_parse_are_refused(intake, tmp_path, name, body, status, reason):
    ds = mr_dataset()
    answer = intake.admit(part10(ds, ExplicitVRLittleEndian, body=body(ds)), MR)
    assert answer.status == status and reason in answer.reason, (name, answer)
    assert answer.outcome is Outcome.REFUSED and files(tmp_path) == []


def test_a_good_instance_is_stored_once_and_a_reused_sop_uid_elsewhere_is_refused(intake, tmp_path):
    ds = mr_dataset()
    first = intake.admit(part10(ds), MR)
    assert first.status == StoreStatus.SUCCESS and first.outcome is Outcome.RECEIVED and first.path.exists()
    again = intake.admit(part10(ds), MR)
    assert again.status == StoreStatus.SUCCESS and again.outcome is Outcome.DUPLICATE
    ds.StudyInstanceUID = "1.2.3.4.5"  # the same SOP Instance UID in another study
    conflict = intake.admit(part10(ds), MR)
    assert conflict.status == StoreStatus.SOP_INSTANCE_CONFLICT and "another study" in conflict.reason
    assert files(tmp_path) == [first.path]  # no orphan file for the refused one


def test_tolerated_uid_defects_are_stored_under_the_clean_uid(intake):
    ds = mr_dataset()
    ds.StudyInstanceUID = "1.2.840.0113619.2.1"  # a leading zero, as some old consoles write
    answer = intake.admit(part10(ds), MR)
    assert answer.status == StoreStatus.SUCCESS
    assert answer.path.parts[-3] == "1.2.840.0113619.2.1"


def test_other_storage_classes_are_accepted_and_dropped(intake, tmp_path):
    answer = intake.admit(b"anything at all", CT)
    assert answer.status == StoreStatus.SUCCESS and answer.outcome is Outcome.IGNORED and files(tmp_path) == []


def test_a_large_private_element_is_valid_and_stored(intake):
    ds = mr_dataset()
    ds.add_new(0x00091010, "OB", b"\1" * (8 * 1024 * 1024))
    assert intake.admit(part10(ds), MR).status == StoreStatus.SUCCESS


def test_reconcile_records_what_the_spool_holds_with_the_same_checks(intake, tmp_path):
    ds = mr_dataset()
    good = intake.spool.store(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, part10(ds))[0]
    bad = mr_dataset(1)
    bad.PixelData = b"\0" * 10
    intake.spool.store(bad.StudyInstanceUID, bad.SeriesInstanceUID, bad.SOPInstanceUID, part10(bad))
    (good.parent / ".x.dcm.1.2.partial").write_bytes(b"half")
    assert reconcile(intake.spool, intake.state) == 1
    assert intake.state.instance_location(ds.SOPInstanceUID) is not None
    assert intake.state.instance_location(bad.SOPInstanceUID) is None
    assert not list(tmp_path.rglob("*.partial"))


def test_a_folder_with_a_traversal_uid_is_reported_never_used(tmp_path):
    ds = mr_dataset()
    ds.StudyInstanceUID = "../../../../tmp/x"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(part10(ds))
    result = scan(tmp_path / "in")
    assert result.studies == {} and "not a UID" in result.bad_files[0][1]


def test_case_names_from_label_files_cannot_leave_the_cache():
    from glioma_node.dicom_io.uids import safe_file_name

    assert safe_file_name("BraTS2021_00001") == "BraTS2021_00001"
    for crafted in ("../../etc/x", "..", ".hidden", "a/b", "", "x" * 200):
        name = safe_file_name(crafted)
        assert name.startswith("x") and "/" not in name and ".." not in name and len(name) <= 41


# issue 25: bounds on what a small instance may make the intake hold, for every transfer syntax
def deflated(ds, body: bytes | None = None) -> bytes:
    """``ds`` (or ``body``) as a Deflated Explicit VR Little Endian Part 10 byte string."""
    return part10(ds, DeflatedExplicitVRLittleEndian, body=deflate(body_bytes(ds) if body is None else body))


@pytest.mark.parametrize("name, change, status", [
    ("half the pixel data", dict(PixelData=b"\0" * 256), StoreStatus.PIXEL_DATA_MISMATCH),
    ("no pixel data at all", dict(PixelData=None), StoreStatus.PIXEL_DATA_MISMATCH),
    ("a billion frames claimed", dict(NumberOfFrames=1_000_000_000), StoreStatus.PIXEL_DATA_MISMATCH),
    ("traversal study UID", dict(StudyInstanceUID="../../../../../../tmp/x"), StoreStatus.INVALID_UID),
])
def test_a_deflated_instance_gets_the_checks_of_explicit_vr(intake, tmp_path, name, change, status):
    ds = _changed(mr_dataset(), change)
    explicit, deflate_answer = intake.admit(part10(ds), MR), intake.admit(deflated(ds), MR)
    assert explicit.status == deflate_answer.status == status, (name, explicit, deflate_answer)
    assert deflate_answer.outcome is Outcome.REFUSED and deflate_answer.reason == explicit.reason
    assert files(tmp_path) == []


def test_a_deflated_body_encoded_implicit_is_refused(intake, tmp_path):
    ds = mr_dataset()
    answer = intake.admit(deflated(ds, body_bytes(ds, implicit=True)), MR)
    assert answer.status == StoreStatus.TRANSFER_SYNTAX_MISMATCH and "implicit VR" in answer.reason
    assert files(tmp_path) == []


def test_a_good_deflated_instance_is_stored_as_it_arrived(intake):
    ds = mr_dataset()
    data = deflated(ds)
    answer = intake.admit(data, MR)
    assert answer.status == StoreStatus.SUCCESS and answer.outcome is Outcome.RECEIVED
    assert answer.path.read_bytes() == data  # the deflated bytes, not the inflated check copy
    stored = pydicom.dcmread(answer.path)
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert stored.pixel_array.tobytes() == ds.PixelData


def _deflate_bomb(megabytes: int) -> bytes:
    """A valid MR header whose pixel data is ``megabytes`` MB of zeros, deflated (about a thousandth of that)."""
    side = int((megabytes * 1024**2 // 2) ** 0.5)
    ds = mr_dataset(rows=side, columns=side)
    del ds.PixelData
    head = body_bytes(ds) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, side * side * 2)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [squeeze.compress(head)]
    zeros = b"\0" * 1024**2
    left = side * side * 2
    while left:
        parts.append(squeeze.compress(zeros[:min(left, len(zeros))]))
        left -= min(left, len(zeros))
    ds.PixelData = b""
    return part10(ds, DeflatedExplicitVRLittleEndian, body=b"".join(parts) + squeeze.flush())


def test_a_deflate_bomb_is_refused_without_being_inflated_whole(tmp_path):
    bomb = _deflate_bomb(200)
    assert len(bomb) < 1024**2
    intake = Intake(Spool(tmp_path / "spool", min_free_bytes=0), NodeState(tmp_path / "state.db"),
                    limits=ReadLimits(max_bytes=32 * 1024**2))
    tracemalloc.start()
    try:
        answer = intake.admit(bomb, MR)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.status == StoreStatus.OUT_OF_RESOURCES and answer.outcome is Outcome.REFUSED
    assert "inflates past 32 MB" in answer.reason and "node.max_instance_mb" in answer.reason
    assert peak < 48 * 1024**2, f"{peak / 1024**2:.0f} MB held for a 32 MB bound"
    assert files(tmp_path) == []


def test_an_instance_larger_than_the_bound_is_refused(tmp_path):
    intake = Intake(Spool(tmp_path / "spool", min_free_bytes=0), NodeState(tmp_path / "state.db"),
                    limits=ReadLimits(max_bytes=1024**2))
    ds = mr_dataset(rows=1024, columns=1024)  # 2 MB of pixels
    answer = intake.admit(part10(ds), MR)
    assert answer.status == StoreStatus.OUT_OF_RESOURCES and "node.max_instance_mb" in answer.reason
    assert files(tmp_path) == []


def test_a_cut_deflate_stream_is_refused(intake, tmp_path):
    data = deflated(mr_dataset())
    answer = intake.admit(data[:-40], MR)
    assert answer.status == StoreStatus.CANNOT_UNDERSTAND and "cut short" in answer.reason
    assert files(tmp_path) == []


def _jpeg2000(ds, rows: int, columns: int) -> bytes:
    """``ds`` declaring ``rows`` × ``columns``, its pixels a real JPEG 2000 codestream of zeros (a few hundred bytes)."""
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = encapsulate([_zeros_codestream(rows, columns)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return part10(ds, JPEG2000Lossless)


@functools.cache
def _zeros_codestream(rows: int, columns: int) -> bytes:
    import openjpeg

    return bytes(openjpeg.encode(np.zeros((rows, columns), dtype=np.uint16), codec_format=0))


def test_compressed_pixels_declaring_more_voxels_than_the_bound_are_refused(tmp_path):
    intake = Intake(Spool(tmp_path / "spool", min_free_bytes=0), NodeState(tmp_path / "state.db"),
                    limits=ReadLimits(max_voxels=2**22))
    big = _jpeg2000(mr_dataset(), 4096, 4096)
    assert len(big) < 2048
    answer = intake.admit(big, MR)
    assert answer.status == StoreStatus.OUT_OF_RESOURCES and answer.outcome is Outcome.REFUSED
    assert answer.reason.startswith("16777216 voxels over node.max_series_voxels 4194304"), answer.reason
    small = intake.admit(_jpeg2000(mr_dataset(1), 512, 512), MR)
    assert small.status == StoreStatus.SUCCESS, small
    assert files(tmp_path) == [small.path]


def test_a_series_of_small_compressed_files_is_bounded_by_its_summed_voxels(tmp_path):
    """24 JPEG 2000 files of under 2 KB declaring 4096 × 4096 each are a 1.6 GB series: with
    the default bound (2**28 voxels) the 16th is refused (16 × 4096² = 2**28 is the last
    that fits), with the reason, before anything is written for it."""
    intake = Intake(Spool(tmp_path / "spool", min_free_bytes=0), NodeState(tmp_path / "state.db"))
    answers = [intake.admit(_jpeg2000(mr_dataset(n), 4096, 4096), MR) for n in range(24)]
    assert [a.status for a in answers[:16]] == [StoreStatus.SUCCESS] * 16
    assert {a.status for a in answers[16:]} == {StoreStatus.OUT_OF_RESOURCES}
    assert "would hold 17 × 16777216 voxels, over node.max_series_voxels 268435456" in answers[16].reason
    assert len(files(tmp_path)) == 16


def test_the_same_sop_instance_uid_with_other_content_is_a_conflict_with_both_checksums(intake, tmp_path, caplog):
    ds = mr_dataset()
    first = intake.admit(part10(ds), MR)
    stored = first.path.read_bytes()
    assert intake.admit(part10(ds), MR).outcome is Outcome.DUPLICATE  # a retry: the same bytes
    ds.PixelData = bytes(reversed(ds.PixelData))
    other = part10(ds)
    with caplog.at_level("WARNING", logger="glioma_node.service.intake"):
        answer = intake.admit(other, MR)
    assert answer.status == StoreStatus.SUCCESS and answer.outcome is Outcome.CONFLICT
    assert answer.outcome.value == "instances_conflicting"
    conflict = answer.conflict
    assert conflict is not None and (conflict.study_uid, conflict.series_uid, conflict.sop_uid) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert conflict.stored_sha256 == hashlib.sha256(stored).hexdigest()
    assert conflict.received_sha256 == hashlib.sha256(other).hexdigest() != conflict.stored_sha256
    assert conflict.stored_path == first.path and first.path.read_bytes() == stored  # the first copy is kept
    warned = [r.getMessage() for r in caplog.records if "other content" in r.getMessage()]
    assert warned and conflict.stored_sha256 in warned[0] and conflict.received_sha256 in warned[0]
    assert files(tmp_path) == [first.path] and intake.state.instance_location(ds.SOPInstanceUID) is not None
    # visible where an operator and a reader look: `status`, and the study's results
    from glioma_node.cli.status import render
    from glioma_node.service.settle import processing_warnings

    state = intake.state
    assert [c[0] for c in state.conflicts(str(ds.StudyInstanceUID))] == [str(ds.SOPInstanceUID)]
    assert conflict.received_sha256[:16] in render(state)
    warnings = processing_warnings(state, state.study(str(ds.StudyInstanceUID)))
    assert any(w.startswith("CONFLICTING RESEND") and str(ds.SOPInstanceUID) in w for w in warnings)


def test_a_retry_re_encoded_in_another_native_syntax_is_a_duplicate_not_a_conflict(intake):
    """Real MR carries private tags: read back implicitly they are UN bytes, explicitly a
    typed value; the same content either way is a duplicate."""
    ds = mr_dataset()
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    block.add_new(0x0B, "DS", "3.5")
    block.add_new(0x0C, "IS", "1000")
    assert intake.admit(part10(ds), MR).outcome is Outcome.RECEIVED
    again = intake.admit(part10(ds, ImplicitVRLittleEndian), MR)
    assert again.outcome is Outcome.DUPLICATE and intake.state.conflicts() == []
