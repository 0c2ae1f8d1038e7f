"""Send decisions without a network: which targets a study goes to, and how a send job
retries, gives up and finishes, with a fake sender in place of the PACS."""
from __future__ import annotations

import pytest

from glioma_node.service import dispatch
from glioma_node.service.config import with_overrides
from glioma_node.service.dispatch import DispatchError, send, send_pending, targets
from glioma_node.service.paths import Paths
from glioma_node.service.state import JobKind, JobState, NodeState, Received, StudyState
from glioma_node.service.target import ORTHANC_SELF, Target, TargetKind
from tests.servers import free_port

PACS = Target(TargetKind.DICOM, "pacs-0")  # with_overrides names destinations <aet>-<n>


@pytest.fixture
def node(tmp_path, config):
    config = with_overrides(config, data_dir=tmp_path / "data", destinations=["PACS@127.0.0.1:11112"])
    config = config.model_copy(update={"dispatch": config.dispatch.model_copy(update={"retry_initial_s": 0.001,
                                                                                       "max_attempts": 3})})
    paths = Paths(config.data_dir)
    state = NodeState(paths.database)
    state.record_instance(Received("1.2", "1.2.1", "1.2.1.1", "1.2.840.10008.5.1.4.1.1.4", None, "x"), "p", "")
    state.set_state("1.2", StudyState.SENDING, None, version=1)
    box = paths.outbox(PACS, "1.2", 1)
    box.mkdir(parents=True)
    (box / "seg.dcm").write_bytes(b"x")
    state.enqueue(JobKind.SEND, "1.2", 1, PACS)
    return config, state, paths


class FakePacs:
    """Fails the first ``failures`` sends, then stores everything."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def __call__(self, target, files, config, local):
        self.calls += 1
        if self.calls <= self.failures:
            raise DispatchError(f"{target}: association rejected")
        return files


def _run_due(config, state, paths) -> None:
    import time

    for _ in range(20):
        send_pending(config, state, paths)
        time.sleep(0.01)


def test_a_send_that_fails_is_retried_then_the_study_is_done(node, monkeypatch):
    config, state, paths = node
    pacs = FakePacs(failures=2)
    monkeypatch.setitem(dispatch.SENDERS, TargetKind.DICOM, pacs)
    _run_due(config, state, paths)
    (job,) = state.jobs("1.2")
    assert pacs.calls == 3 and job.state is JobState.DONE and job.attempts == 3 and job.target == PACS
    assert state.study("1.2").state is StudyState.DONE
    assert not paths.outbox(PACS, "1.2", 1).exists()  # the outbox copy goes once the set is stored


def test_a_send_that_keeps_failing_fails_the_study_with_the_reason(node, monkeypatch):
    config, state, paths = node
    monkeypatch.setitem(dispatch.SENDERS, TargetKind.DICOM, FakePacs(failures=99))
    _run_due(config, state, paths)
    (job,) = state.jobs("1.2")
    study = state.study("1.2")
    assert job.state is JobState.FAILED and study.state is StudyState.FAILED
    assert study.reason.startswith("sending to dicom:pacs-0 failed 3 times") and "association rejected" in study.reason
    assert paths.outbox(PACS, "1.2", 1).exists()  # kept for a manual resend


def test_targets_follow_the_configuration(config):
    config = with_overrides(config, destinations=["PACS@10.0.0.1:104"], allow=["CT1@10.0.0.2:4006"])
    config = config.model_copy(update={"dispatch": config.dispatch.model_copy(update={"return_to_caller": True,
                                                                                       "orthanc_self": True})})
    assert targets(config, "CT1") == [PACS, ORTHANC_SELF, Target(TargetKind.CALLER, "CT1")]
    assert targets(config, "UNKNOWN") == [PACS, ORTHANC_SELF]  # never back to a peer that is not allowed


def test_a_removed_destination_and_plugin_only_targets_say_what_is_wrong(config, tmp_path):
    with pytest.raises(DispatchError, match="no longer in the configuration"):
        send(Target(TargetKind.DICOM, "gone"), [tmp_path / "a.dcm"], config)
    with pytest.raises(DispatchError, match="needs the Orthanc plugin"):
        send(ORTHANC_SELF, [tmp_path / "a.dcm"], config)


@pytest.mark.parametrize("text", ["pacs", "dicom:", "ftp:pacs"])
def test_a_target_string_that_names_no_target_is_refused(text):
    with pytest.raises(ValueError, match="target"):
        Target.parse(text)
    assert Target.parse("stow:archive") == Target(TargetKind.STOW, "archive") and str(PACS) == "dicom:pacs-0"


class PickyPacs:
    """A real Storage SCP (pynetdicom) on 127.0.0.1 that takes only ``classes``; what it stored, by SOP Instance UID."""

    def __init__(self, classes: list[str]):
        from pynetdicom import AE, evt

        self.stored: list[str] = []
        ae = AE(ae_title="PACS")
        for sop_class in classes:
            ae.add_supported_context(sop_class)

        def on_store(event):
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        self.port = free_port()
        server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert server is not None
        self.server = server

    def close(self) -> None:
        self.server.shutdown()


def _result(path, sop_class, uid: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = sop_class, uid, "1.2"
    ds.SeriesInstanceUID, ds.Modality, ds.PatientID = UID(uid + ".1"), "OT", "P"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, UID(uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_a_pacs_refusing_some_classes_and_a_truncated_file_cost_attempts_not_the_node(tmp_path, config):
    """The PACS takes SEG and Secondary Capture but no Parametric Map or SR, and one outbox
    file is cut short: what it takes is stored once, the rest is retried and then fails
    the study with the PACS's reasons; send_pending itself never raises."""
    from pydicom.uid import (
        Comprehensive3DSRStorage,
        ParametricMapStorage,
        SecondaryCaptureImageStorage,
        SegmentationStorage,
    )

    pacs = PickyPacs([SegmentationStorage, SecondaryCaptureImageStorage])
    try:
        config = with_overrides(config, data_dir=tmp_path / "data", destinations=[f"PACS@127.0.0.1:{pacs.port}"])
        config = config.model_copy(update={"dispatch": config.dispatch.model_copy(update={
            "retry_initial_s": 0.001, "max_attempts": 3, "timeout_s": 10})})
        paths = Paths(config.data_dir)
        state = NodeState(paths.database)
        state.record_instance(Received("1.2", "1.2.1", "1.2.1.1", "1.2.840.10008.5.1.4.1.1.4", None, "x"), "p", "")
        state.set_state("1.2", StudyState.SENDING, None, version=1)
        box = paths.outbox(PACS, "1.2", 1)
        box.mkdir(parents=True)
        for name, sop_class in [("seg", SegmentationStorage), ("map", ParametricMapStorage),
                                ("sr", Comprehensive3DSRStorage), ("summary", SecondaryCaptureImageStorage),
                                ("cut", SegmentationStorage)]:
            _result(box / f"{name}.dcm", sop_class, f"1.2.9.{len(name)}{ord(name[0])}")
        (box / "cut.dcm").write_bytes((box / "cut.dcm").read_bytes()[:150])
        state.enqueue(JobKind.SEND, "1.2", 1, PACS)

        assert send_pending(config, state, paths)  # the first attempt: no exception escapes
        (job,) = state.jobs("1.2")
        assert job.state is JobState.QUEUED and job.attempts == 1
        assert "accepted no presentation context for Parametric Map Storage" in job.error
        assert "Comprehensive 3D SR Storage" in job.error and "cut.dcm does not read" in job.error
        assert sorted(p.name for p in box.iterdir()) == ["cut.dcm", "map.dcm", "sr.dcm"]  # the rest waits
        _run_due(config, state, paths)
        (job,) = state.jobs("1.2")
        study = state.study("1.2")
        assert job.state is JobState.FAILED and job.attempts == 3
        assert study.state is StudyState.FAILED and "Parametric Map Storage" in study.reason
        assert sorted(pacs.stored) == sorted(["1.2.9.3115", "1.2.9.7115"])  # SEG and summary, each once
    finally:
        pacs.close()


def test_a_send_whose_end_cannot_be_written_is_queued_again_not_left_running(node, monkeypatch):
    """The database refuses the send's completion once (full, locked): the error reaches
    the node's loop, and the next call queues the job again instead of leaving it
    running (and its study sending) until a restart."""
    import sqlite3

    config, state, paths = node
    monkeypatch.setitem(dispatch.SENDERS, TargetKind.DICOM, FakePacs(failures=0))
    real = state.complete_send

    def full(*args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(state, "complete_send", full)
    with pytest.raises(sqlite3.OperationalError):
        send_pending(config, state, paths)
    assert state.jobs("1.2")[0].state is JobState.RUNNING
    monkeypatch.setattr(state, "complete_send", real)
    _run_due(config, state, paths)
    (job,) = state.jobs("1.2")
    assert job.state is JobState.DONE and state.study("1.2").state is StudyState.DONE
