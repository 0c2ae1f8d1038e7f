"""The one intake, without a network: what each crafted instance gets, and that nothing
refused is written (the same checks run at C-STORE, in the Orthanc plugin and when the
spool is reconciled after a crash)."""
from __future__ import annotations

import struct

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage

from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.uids import InvalidUid, check_uid, safe_part
from glioma_node.service.intake import Intake, Outcome, StoreStatus, reconcile
from glioma_node.service.spool import Spool
from glioma_node.service.state import NodeState
from tests.hostile_data import body_bytes, explicit_element, mr_dataset, nested_sequences, part10

CT = CTImageStorage
MR = MRImageStorage


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
    ds = mr_dataset()
    for keyword, value in change.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
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
