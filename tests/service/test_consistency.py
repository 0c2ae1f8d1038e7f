"""What the node acknowledges, records and sends agrees with what is on disk (issue 25,
items 9-12): acknowledgements leave after the fsyncs that make their instance durable,
a crash with rows still in the batch keeps their association's meaning, a study and its
job never drift apart, and no temporary file is ever sent as a result."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import MRImageStorage
from pynetdicom.transport import AssociationSocket

from glioma_node.core.files import atomic_path, partial_path, remove_partials
from glioma_node.service.assembly import series_complete
from glioma_node.service.config import with_overrides
from glioma_node.service.handoff import JobOutcome, JobResult
from glioma_node.service.paths import Paths
from glioma_node.service.reconcile import reconcile
from glioma_node.service.scp import StorageScp
from glioma_node.service.settle import settle
from glioma_node.service.spool import Spool
from glioma_node.service.state import AssociationState, JobKind, JobState, NodeState, Received, StudyState
from tests.hostile_data import mr_dataset, part10
from tests.node_harness import storescu
from tests.servers import free_port


def _write_series(folder: Path, study: str, series: str, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        ds = mr_dataset(n, study=study, series=series)
        ds.ImagesInAcquisition = count
        (folder / f"{series[-6:]}-{n}.dcm").write_bytes(part10(ds))


class _Trace:
    """``os.fsync`` calls (with the path of the descriptor) and the SCP's P-DATA PDUs, in order."""

    def __init__(self, monkeypatch):
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        real_fsync, real_send = os.fsync, AssociationSocket.send

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            real_fsync(fd)
            with self.lock:
                self.events.append(("fsync", path))

        def send(sock, data):
            if sock.assoc.is_acceptor and data[:1] == b"\x04":  # P-DATA-TF: here, a C-STORE-RSP
                with self.lock:
                    self.events.append(("rsp", ""))
            return real_send(sock, data)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(AssociationSocket, "send", send)


def test_every_acknowledgement_leaves_after_its_file_and_folder_fsyncs(tmp_path, config, monkeypatch):
    """For every C-STORE-RSP the real SCP sends, the instance's file and the folder entry
    that names it were fsynced before it left; for the first instance of a series the
    study folder and the spool root too; and a second copy of an instance (a retry) is
    acknowledged only after its folder is fsynced again, whoever wrote it."""
    study = "1.2.826.0.1.3680043.8.498.25"
    folder = tmp_path / "scanner"
    _write_series(folder, study, study + ".1", 5)
    _write_series(folder, study, study + ".2", 4)
    config = with_overrides(config, data_dir=tmp_path / "data", port=free_port())
    paths = Paths(config.data_dir)
    spool = Spool(paths.spool, 0, blanks=4)
    scp = StorageScp(config, spool, NodeState(paths.database))
    trace = _Trace(monkeypatch)
    scp.start()
    try:
        for _ in range(2):  # the second pass: every instance a duplicate
            result = storescu(folder, config.node.port)
            assert result.returncode == 0, result.stderr
    finally:
        scp.stop()
    events = list(trace.events)
    responses = [i for i, (kind, _) in enumerate(events) if kind == "rsp"]
    assert len(responses) == 18
    spooled = sorted(str(p) for p in paths.spool.rglob("*.dcm"))
    assert len(spooled) == 9
    series_dirs = {str(Path(p).parent) for p in spooled}
    study_dir = str(Path(spooled[0]).parent.parent)
    previous = -1
    seen_series: set[str] = set()
    for n, index in enumerate(responses):
        before = [path for kind, path in events[previous + 1:index] if kind == "fsync"]
        previous = index
        folders = [p for p in before if p in series_dirs]
        assert folders, f"C-STORE-RSP {n} left before any series folder was fsynced: {before}"
        if n < 9:  # a new instance: its own file was fsynced (under its temporary name) before the folder
            files = [p for p in before if os.path.basename(p).startswith(".") and p not in series_dirs]
            assert files and before.index(files[-1]) < before.index(folders[-1]), before
            if folders[-1] not in seen_series:  # the first of its series: the folders above it too
                assert study_dir in before and str(paths.spool) in before, before
                seen_series.add(folders[-1])
    assert seen_series == series_dirs


def test_a_failed_folder_fsync_is_not_acknowledged_and_its_retry_fsyncs_again(tmp_path, monkeypatch):
    import glioma_node.service.spool as spool_module

    spool = Spool(tmp_path / "spool", 0)
    real, calls = spool_module._fsync_dir, []

    def failing_once(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(spool_module, "_fsync_dir", failing_once)
    with pytest.raises(OSError):
        spool.store("1.2", "1.2.3", "1.2.3.4", b"data")
    path, new = spool.store("1.2", "1.2.3", "1.2.3.4", b"data")  # the sender's retry
    assert not new and path.parent in calls[1:]  # durable now, by this call's own fsync


def _received(sop: str, series: str = "1.2.1", expected: int | None = 3) -> Received:
    return Received("1.2", series, sop, MRImageStorage, expected, "p")


def test_a_crash_with_rows_in_the_batch_keeps_the_series_cut_off_and_the_caller(tmp_path):
    """Two instances of a three-instance series were acknowledged (spooled) on an
    association from CT1 and the node died before their rows were committed: after the
    restart the series is still cut off (it waits for its third instance or the force
    timeout instead of being processed after the quiet period) and the study keeps CT1."""
    paths = Paths(tmp_path / "data")
    spool = Spool(paths.spool, 0)
    state = NodeState(paths.database)
    state.association_opened("a1", "CT1", "127.0.0.1")
    for n in range(2):
        ds = mr_dataset(n, study="1.2", series="1.2.1")
        ds.ImagesInAcquisition = 3
        spool.store("1.2", "1.2.1", str(ds.SOPInstanceUID), part10(ds))
    # the restart, as Node.start does it
    calling = state.open_calling_aes()
    state.recover()
    assert reconcile(spool, state, calling_aes=calling) == 2
    (series,) = state.series("1.2")
    assert series.instances == 2 and state.broken_series("1.2") == {"1.2.1"}
    assert not series_complete(series, open_association=False, quiet_s=0.0, now=1e12, broken=True)
    assert state.study("1.2").calling_ae == "CT1"


def test_a_dead_receiver_s_associations_are_interrupted_others_stay_open(tmp_path):
    state = NodeState(tmp_path / "state.db")
    state.association_opened("mine", "CT1", "127.0.0.1")
    db = state._db()
    db.execute("INSERT INTO associations(id, calling_ae, address, opened_at, state, owner) "
               "VALUES ('other','CT2','127.0.0.1',0,'open',1)")
    assert state.interrupt_associations(os.getpid()) == ["CT1"]
    states = dict(db.execute("SELECT id, state FROM associations"))
    assert states == {"mine": AssociationState.INTERRUPTED, "other": AssociationState.OPEN}


def test_recover_mends_a_study_and_job_left_apart(tmp_path):
    """A study left PROCESSING without its job (a kill between two transactions of an
    older version) gets its job; one left SENDING with every send done is DONE; one
    SENDING whose send failed is FAILED with the send's reason."""
    state = NodeState(tmp_path / "state.db")
    for n, study in enumerate(("1.1", "1.2", "1.3")):
        state.record_instance(Received(study, study + ".1", study + ".1.1", MRImageStorage, None, "p"), f"p{n}", "")
    state.set_state("1.1", StudyState.PROCESSING, "ready", version=1)
    state.set_state("1.2", StudyState.SENDING, None, version=1)
    state.enqueue(JobKind.SEND, "1.2", 1, None)
    (job,) = [j for j in state.jobs("1.2")]
    state.claim((JobKind.SEND,))
    state.finish(job.id)
    state.set_state("1.3", StudyState.SENDING, None, version=1)
    state.enqueue(JobKind.SEND, "1.3", 1, None)
    (failed,) = state.jobs("1.3")
    state.fail(failed.id, "PACS refused: 0xa700")
    state.recover()
    (process,) = state.jobs("1.1")
    assert process.kind is JobKind.PROCESS and process.version == 1 and process.state is JobState.QUEUED
    assert state.study("1.2").state is StudyState.DONE
    assert state.study("1.3").state is StudyState.FAILED and "0xa700" in state.study("1.3").reason


def test_a_study_and_its_job_move_in_one_transaction(tmp_path):
    """start_processing and fail_job change both or neither: a failure inside the
    transaction (here the job's insert) leaves the study as it was."""
    state = NodeState(tmp_path / "state.db")
    state.record_instance(_received("1.2.1.1"), "p", "")
    db = state._db()
    db.execute("CREATE TRIGGER no_jobs BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(Exception, match="disk full"):
        state.start_processing("1.2", 1, "ready", 0.0, 1)
    assert state.study("1.2").state is StudyState.RECEIVED and state.jobs("1.2") == []
    db.execute("DROP TRIGGER no_jobs")
    state.start_processing("1.2", 1, "ready", 0.0, 1)
    (job,) = state.jobs("1.2")
    assert state.study("1.2").state is StudyState.PROCESSING and job.state is JobState.QUEUED


def test_a_temporary_folder_removed_by_another_writer_mid_mkdir_is_made_again(tmp_path, monkeypatch):
    """Writers share ``.partial`` and the last one out removes it: when it vanishes between
    mkdir's attempt and its check, pathlib raises FileExistsError; the writer makes it again
    (feature extraction in parallel processes failed on this)."""
    real_mkdir, calls = Path.mkdir, []

    def vanishing(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 1:  # what pathlib raises when the folder existed, then was gone at its check
            raise FileExistsError(17, "File exists", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", vanishing)
    with atomic_path(tmp_path / "features.npz") as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "features.npz").read_bytes() == b"x" and len(calls) == 2
    monkeypatch.undo()
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / ".partial").write_text("not a folder")  # a file in the way: a clear error, no loop
    with pytest.raises(OSError, match="is .partial there a file"):
        partial_path(tmp_path / "blocked" / "a.npz")


def test_many_writers_in_one_folder_never_trip_over_its_temporary_folder(tmp_path):
    """Threads writing into one folder at once (each writer creates and may remove .partial)."""
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(150):
                with atomic_path(tmp_path / f"{k}-{i}.bin") as tmp:
                    tmp.write_bytes(b"x")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(list(tmp_path.glob("*.bin"))) == 900 and not (tmp_path / ".partial").exists()


def test_temporary_result_files_are_never_sent_and_go_at_start(tmp_path, config):
    """A writer killed inside save() leaves its temporary file; settle links only whole
    result files into the outbox, and the cleaning at start removes the leftover."""
    config = with_overrides(config, data_dir=tmp_path / "data", destinations=["PACS@127.0.0.1:11112"])
    paths = Paths(config.data_dir)
    state = NodeState(paths.database)
    state.record_instance(_received("1.2.1.1"), "p", "")
    state.start_processing("1.2", 1, "ready", 0.0, 1)
    job = state.claim((JobKind.PROCESS,))
    dicom = paths.results("1.2", 1) / "dicom"
    dicom.mkdir(parents=True)
    ds = mr_dataset(0)
    with atomic_path(dicom / "seg.dcm") as tmp:
        tmp.write_bytes(part10(ds))
    leftover = partial_path(dicom / "report.dcm")  # a second writer, killed before its rename
    leftover.write_bytes((dicom / "seg.dcm").read_bytes()[:100])
    assert sorted(p.name for p in dicom.glob("*.dcm")) == ["seg.dcm"]
    with pytest.raises(ValueError), atomic_path(dicom / "sr.dcm") as tmp:  # a writer that fails cleans up
        tmp.write_bytes(b"half")
        raise ValueError("disk full")
    assert not (dicom / "sr.dcm").exists() and sorted(p.name for p in leftover.parent.iterdir()) == [leftover.name]
    settle(job, JobOutcome(JobResult.DONE, instances=1), config, state, paths)
    (send,) = [j for j in state.jobs("1.2") if j.kind is JobKind.SEND]
    box = paths.outbox(send.target, "1.2", 1)
    assert sorted(p.name for p in box.rglob("*") if p.is_file()) == ["seg.dcm"]
    assert pydicom.dcmread(box / "seg.dcm").SOPInstanceUID == ds.SOPInstanceUID
    assert remove_partials(paths.data_dir / "results") == 1 and not leftover.exists()


def test_a_disk_that_fills_while_results_are_written_fails_no_study(tmp_path, config, monkeypatch):
    """ENOSPC while the results are written is the node's trouble: run_study raises it
    (no FAILED findings), and settling that ERROR spends no attempt, drops the stale
    outcome and leaves the job queued for when space returns, even if the failed
    writer's cleanup freed enough space that the disk no longer looks full."""
    import errno

    from glioma_node.service import pipeline

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "load_study", full)
    with pytest.raises(OSError):
        pipeline.run_study(pipeline.StudySurvey("1.2"), None, tmp_path / "out")
    assert not (tmp_path / "out" / "findings.json").exists()

    config = with_overrides(config, data_dir=tmp_path / "data")
    paths = Paths(config.data_dir)
    state = NodeState(paths.database)
    state.record_instance(_received("1.2.1.1"), "p", "")
    state.start_processing("1.2", 1, "ready", 0.0, 1)
    for _ in range(config.worker.max_attempts + 1):
        job = state.claim((JobKind.PROCESS,))
        assert job is not None
        outcome = JobOutcome(JobResult.ERROR, "OSError: [Errno 28] No space left on device", attempt=job.attempts)
        outcome.write(paths.outcome("1.2", 1))
        settle(job, outcome, config, state, paths)
        state._db().execute("UPDATE jobs SET next_at=0")
    (job,) = state.jobs("1.2")
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert state.study("1.2").state is StudyState.PROCESSING and not paths.outcome("1.2", 1).exists()


def test_a_database_failure_during_reconciliation_is_raised_so_it_is_tried_again(tmp_path, monkeypatch):
    """An acknowledged instance the database refuses to record now (full, locked) must not
    be skipped: reconcile raises, and the receivers' step keeps the death to try again."""
    import sqlite3

    paths = Paths(tmp_path / "data")
    spool = Spool(paths.spool, 0)
    state = NodeState(paths.database)
    ds = mr_dataset(0, study="1.2", series="1.2.1")
    spool.store("1.2", "1.2.1", str(ds.SOPInstanceUID), part10(ds))
    real = state.record_instances

    def full(batch):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(state, "record_instances", full)
    with pytest.raises(sqlite3.OperationalError):
        reconcile(spool, state, remove_partials=False)
    monkeypatch.setattr(state, "record_instances", real)
    assert reconcile(spool, state, remove_partials=False) == 1
    assert state.instance_location(str(ds.SOPInstanceUID)) == ("1.2", "1.2.1")


def test_a_study_recorded_without_its_caller_gets_it_from_the_sender_s_retry(tmp_path):
    """After a receiver's death its instances are recorded with no calling AE (the spool
    cannot say whose they are); the sender's retry, on an association of its own, gives
    the study its caller, so results can still go back to it."""
    state = NodeState(tmp_path / "state.db")
    recovered = state.recovered_association([])
    state.record_instance(_received("1.2.1.1"), "p1", recovered)
    assert state.study("1.2").calling_ae is None
    state.association_opened("retry", "CT1", "127.0.0.1")
    state.record_instance(_received("1.2.1.2"), "p2", "retry")
    assert state.study("1.2").calling_ae == "CT1"
    state.association_opened("other", "CT2", "127.0.0.1")
    state.record_instance(_received("1.2.1.3"), "p3", "other")
    assert state.study("1.2").calling_ae == "CT1"  # the first caller stays
