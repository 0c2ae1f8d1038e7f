"""The pieces of the receive path made fast for issue 16, each checked against what it
replaced: batched recording, blanks created ahead in the spool, the Part 10 wrapping."""
from __future__ import annotations

import io
import sqlite3
import threading

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from glioma_node.dicom_io.part10 import file_meta, part10
from glioma_node.dicom_io.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from glioma_node.service.recorder import InstanceRecorder
from glioma_node.service.spool import INCOMING, Spool
from glioma_node.service.state import NodeState, Received


def _instance(sop: str, series: str = "1.2.1") -> Received:
    return Received("1.2", series, sop, MRImageStorage, 3, "x")


def test_recorder_knows_what_it_has_not_committed_and_commits_on_flush(tmp_path):
    state = NodeState(tmp_path / "state.db")
    recorder = InstanceRecorder(state, delay_s=30)  # it would wait 30 s to gather more
    recorder.record(_instance("1.2.1.1"), "p1", "a1")
    recorder.record(_instance("1.2.1.2"), "p2", "a1")
    # a retry or a conflict is caught before the commit
    assert recorder.location("1.2.1.1") == ("1.2", "1.2.1")
    assert recorder.flush(timeout_s=10)  # flush does not wait for the gathering delay
    assert state.instance_location("1.2.1.2") == ("1.2", "1.2.1")
    assert state.series("1.2")[0].instances == 2
    recorder.close()
    with pytest.raises(RuntimeError):
        recorder.record(_instance("1.2.1.3"), "p3", "a1")


def test_recorder_retries_a_failed_commit_and_loses_nothing(tmp_path, monkeypatch):
    state = NodeState(tmp_path / "state.db")
    real, failures = state.record_instances, []

    def locked_once(batch):
        if not failures:
            failures.append(len(batch))
            raise sqlite3.OperationalError("database is locked")
        return real(batch)
    monkeypatch.setattr(state, "record_instances", locked_once)
    monkeypatch.setattr("glioma_node.service.recorder.RETRY_S", 0.05)
    recorder = InstanceRecorder(state, delay_s=0.01)
    for n in range(20):
        recorder.record(_instance(f"1.2.1.{n}"), f"p{n}", "a1")
    assert recorder.flush(timeout_s=10)
    assert failures and state.series("1.2")[0].instances == 20
    recorder.close()


def test_many_threads_record_at_once(tmp_path):
    state = NodeState(tmp_path / "state.db")
    recorder = InstanceRecorder(state)
    threads = [threading.Thread(target=lambda t=t: [recorder.record(_instance(f"1.2.{t}.{n}", f"1.2.{t}"), "p", "a")
                                                    for n in range(50)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    assert sorted(s.instances for s in state.series("1.2")) == [50, 50, 50, 50]


def test_spool_with_blanks_stores_the_same_bytes_and_start_keeps_live_blanks(tmp_path):
    spool = Spool(tmp_path / "spool", min_free_bytes=0, blanks=2)
    stale = spool.root / INCOMING / ".leftover-of-a-crash.partial"
    stale.write_bytes(b"half")
    for n in range(5):
        path, new = spool.store("1.2", "1.2.1", f"1.2.1.{n}", b"instance %d" % n)
        assert new and path.read_bytes() == b"instance %d" % n
    assert spool.remove_partials() == 1 and not stale.exists()
    # the blanks made ahead are still there and still used
    path, _ = spool.store("1.2", "1.2.1", "1.2.1.9", b"after the start")
    assert path.read_bytes() == b"after the start"
    assert sorted(p.name for p in (spool.root / "1.2" / "1.2.1").iterdir()) == [f"1.2.1.{n}.dcm" for n in (0, 1, 2, 3, 4, 9)]


@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.10.1418.99.123456789"])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_part10_is_what_pydicom_writes(sop_instance, syntax):
    expected = encode_file_meta(create_file_meta(sop_class_uid=MRImageStorage, sop_instance_uid=sop_instance,
                                                 transfer_syntax=syntax, implementation_uid=IMPLEMENTATION_CLASS_UID,
                                                 implementation_version=IMPLEMENTATION_VERSION))
    assert file_meta(MRImageStorage, sop_instance, syntax) == expected
    ds = Dataset()
    ds.SOPInstanceUID, ds.PatientID = sop_instance, "P1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=False)
    read = pydicom.dcmread(io.BytesIO(part10(body.getvalue(), MRImageStorage, sop_instance, syntax)))
    assert read.file_meta.MediaStorageSOPInstanceUID == sop_instance and read.PatientID == "P1"
    assert read.file_meta.TransferSyntaxUID == syntax


def test_part10_refuses_a_value_no_length_field_can_hold():
    with pytest.raises(ValueError, match="at most"):
        file_meta(MRImageStorage, "1." * 40000, ExplicitVRLittleEndian)


def test_survey_in_a_child_finds_what_the_node_finds_and_falls_back_when_it_dies(tmp_path, caplog):
    import multiprocessing
    import os
    import signal

    from glioma_node.dicom_io.scan import scan
    from glioma_node.service.assembly import spooled_roles
    from glioma_node.service.config import load_config
    from glioma_node.service.surveyor import Surveyor
    from tests.helpers import shared

    folder = shared("dcm_qa_ge", "ge_pioneer_3dt1_mprage_phantom")
    study_uid = next(iter(scan(folder).studies))
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    spool.study_dir(study_uid).symlink_to(folder, target_is_directory=True)  # read in place, never copied
    config = load_config()
    expected = spooled_roles(spool, study_uid, config)
    assert expected  # the phantom's 3D T1 has a role
    surveyor = Surveyor(spool, config)
    try:
        assert surveyor.roles(study_uid) == expected
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)
        assert surveyor.roles(study_uid) == expected  # surveyed in this process instead
        assert "survey child failed" in caplog.text
        assert surveyor.roles(study_uid) == expected  # and a new child afterwards
    finally:
        surveyor.close()


def test_a_start_that_cleans_partials_while_blanks_are_made_never_takes_a_live_one(tmp_path):
    """The node cleans the spool's partial files at start while its blank-maker is already
    creating files; a blank must never be deleted between its creation and its use."""
    spool = Spool(tmp_path / "spool", min_free_bytes=0, blanks=8)
    for n in range(200):
        spool.remove_partials()
        path, new = spool.store("1.2", "1.2.1", f"1.2.1.{n}", b"instance %d" % n)
        assert new and path.read_bytes() == b"instance %d" % n
