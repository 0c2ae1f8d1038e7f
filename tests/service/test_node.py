"""`glioma-node serve` with real peers: dcmtk storescu and dcmsend as scanners, Orthanc as
the PACS that receives the results (checked through its REST API). Faults: an unknown
AE, an aborted association, a full disk, the PACS down for a while, kill -9 while
receiving and while processing, interleaved studies from two senders."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.uids import safe_part
from glioma_node.service.spool import Spool, SpoolFull
from tests.helpers import MODALITY, result_kinds
from tests.node_harness import (
    CountingPacs,
    RunningNode,
    Sender,
    copy_study,
    dcmsend,
    echo,
    fill,
    node_config,
    orthanc_result_instances,
    sends_done,
    storescu,
    wait_for,
)
from tests.servers import Orthanc, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("node")]

RESULTS = len(result_kinds())  # 2 SEG, a Parametric Map per prediction, SR, summary image


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[Path]:
    """Two synthetic studies (DICOM folders), one per sender."""
    from glioma_node.training.synth.cohort import write_cohort

    out = tmp_path_factory.mktemp("node-cohort")
    write_cohort(out, cases=2, seed=21, progress=False)
    return sorted(p for p in (out / "dicom").iterdir() if p.is_dir())


def _study_uid(folder: Path) -> str:
    return next(iter(scan(folder).studies))


def _instances(folder: Path) -> int:
    return sum(len(s.instances) for st in scan(folder).studies.values() for s in st.series.values())


@pytest.fixture
def orthanc(tmp_path):
    port = free_port()
    server = Orthanc(tmp_path / "orthanc", dicom_port=port, modalities={"node": ["GLIOMA_NODE", "127.0.0.1", 104]})
    yield server
    server.stop()


def test_spool_paths_never_come_from_raw_values(tmp_path):
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    path, new = spool.store("1.2.3", "../../etc", "4.5.6", b"data")
    assert new and path.is_relative_to(tmp_path / "spool") and ".." not in path.parts
    assert safe_part("../../etc").startswith("x") and safe_part("1.2.840.10008") == "1.2.840.10008"
    again, new_again = spool.store("1.2.3", "../../etc", "4.5.6", b"other data")
    assert again == path and not new_again and path.read_bytes() == b"data"
    full = Spool(tmp_path / "full", min_free_bytes=1 << 62)
    with pytest.raises(SpoolFull):
        full.store("1.2", "3.4", "5.6", b"x")


def test_echo_store_and_unknown_peer_rejected(cases, tmp_path):
    node = RunningNode(node_config(tmp_path))
    try:
        assert echo(node.port, "STORESCU")
        assert not echo(node.port, "INTRUDER")
        assert node.metrics()["glioma_node_associations_rejected_total"] >= 1
        result = storescu(cases[0], node.port)
        assert result.returncode == 0, result.stderr
        spooled = list((node.data_dir / "spool").rglob("*.dcm"))
        assert len(spooled) == _instances(cases[0])
        # what was acknowledged is on disk, byte for byte a valid DICOM file
        assert pydicom.dcmread(spooled[0]).StudyInstanceUID == _study_uid(cases[0])
        assert node.health()["status"] == "ok"
    finally:
        node.stop()


def test_full_disk_answers_out_of_resources_and_stores_nothing(cases, tmp_path):
    node = RunningNode(node_config(tmp_path, **{"node.min_free_mb": 10**9}))
    try:
        first = next(p for p in sorted(cases[0].rglob("*")) if p.is_file())
        ae = AE(ae_title="GLIOMA_REPLAY")
        ds = pydicom.dcmread(first)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="GLIOMA_NODE")
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0xA700
        assert not list((node.data_dir / "spool").rglob("*.dcm"))
    finally:
        node.stop()


def test_study_from_storescu_comes_back_to_orthanc_once(cases, tmp_path, orthanc):
    config = node_config(tmp_path, radiogenomics=True,
                         destinations=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                        "port": orthanc.dicom_port}])
    node = RunningNode(config)
    try:
        started = time.monotonic()
        assert storescu(cases[0], node.port).returncode == 0
        study = node.wait_study(_study_uid(cases[0]), ("done", "failed"))
        assert study.state == "done", study.reason
        found = orthanc_result_instances(orthanc, _study_uid(cases[0]))
        assert len(found) == RESULTS
        modalities = sorted(i["series"]["Modality"] for i in found)
        assert modalities == sorted(MODALITY[k] for k in result_kinds()), modalities  # the Parametric Maps are OT
        assert sends_done(node, _study_uid(cases[0])) == [(1, "dicom:pacs")]  # one result set, sent once
        assert time.monotonic() - started < 300
    finally:
        node.stop()


def test_aborted_association_loses_nothing_and_the_study_completes(cases, tmp_path):
    node = RunningNode(node_config(tmp_path))
    try:
        files = sorted(p for p in cases[1].rglob("*") if p.is_file())
        ae = AE(ae_title="GLIOMA_REPLAY")
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        for sop_class, syntax in {(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers}:
            ae.add_requested_context(sop_class, syntax)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="GLIOMA_NODE")
        acknowledged = []
        for path in files[: len(files) // 3]:
            if assoc.send_c_store(pydicom.dcmread(path)).Status == 0:
                acknowledged.append(path)
        assoc.abort()
        spooled = {p.name for p in (node.data_dir / "spool").rglob("*.dcm")}
        assert {f"{safe_part(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID))}.dcm"
                for p in acknowledged} <= spooled
        assert dcmsend(cases[1], node.port).returncode == 0  # the scanner sends the study again, duplicates included
        study = node.wait_study(_study_uid(cases[1]), ("done", "failed"))
        assert study.state == "done", study.reason
        assert study.instances == len(files) and study.version == 1
    finally:
        node.stop()


def test_pacs_down_then_up_gets_the_results_once(cases, tmp_path):
    port = free_port()
    config = node_config(tmp_path, destinations=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                                  "port": port}])
    node = RunningNode(config)
    orthanc = None
    try:
        assert storescu(cases[0], node.port).returncode == 0
        uid = _study_uid(cases[0])
        node.wait_study(uid, ("sending",))
        deadline = time.monotonic() + 120
        while not any(j.kind == "send" and j.attempts >= 2 for j in node.state().jobs(uid)):
            assert time.monotonic() < deadline, "the send was not retried"
            time.sleep(0.5)
        orthanc = Orthanc(tmp_path / "orthanc", dicom_port=port, modalities={"node": ["GLIOMA_NODE", "127.0.0.1", 104]})
        study = node.wait_study(uid, ("done", "failed"), timeout=120)
        assert study.state == "done", study.reason
        assert len(orthanc_result_instances(orthanc, uid)) == len(result_kinds(radiogenomics=False))  # no Parametric Maps
        assert sends_done(node, uid) == [(1, "dicom:pacs")]
    finally:
        node.stop()
        if orthanc:
            orthanc.stop()


def test_kill_9_while_receiving_and_while_processing(cases, tmp_path, orthanc):
    config = node_config(tmp_path, destinations=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                                  "port": orthanc.dicom_port}])
    node = RunningNode(config)
    uid = _study_uid(cases[0])
    try:
        sender = Sender(cases[0], node.port)
        deadline = time.monotonic() + 60
        while len(sender.acknowledged) < 20:
            assert time.monotonic() < deadline and sender.error is None, sender.error
            time.sleep(0.02)
        node.kill()
        sender.wait(60)
        assert sender.error is not None and len(sender.acknowledged) < len(sender.files)  # cut off mid-study
        node.start()
        state = node.state()
        lost = [sop for sop in sender.acknowledged if state.instance_location(sop) is None]
        assert not lost, f"{len(lost)} acknowledged instance(s) lost"
        assert node.state().study(uid).state == "received"  # the cut-off series waits, it is not processed
        assert storescu(cases[0], node.port).returncode == 0  # the scanner retries what failed
        node.wait_study(uid, ("processing",), timeout=120)
        time.sleep(3)
        node.kill()  # in the middle of the pipeline
        node.start()
        study = node.wait_study(uid, ("done", "failed"))
        assert study.state == "done", study.reason
        assert study.instances == _instances(cases[0]) and study.version == 1
        (process,) = [j for j in node.state().jobs(uid) if j.kind == "process"]
        assert process.attempts >= 2  # the interrupted job really ran again
        assert len(orthanc_result_instances(orthanc, uid)) == len(result_kinds(radiogenomics=False))
        assert sends_done(node, uid) == [(1, "dicom:pacs")]  # once, whatever the restarts
    finally:
        node.stop()


def test_interleaved_studies_from_two_senders(cases, tmp_path):
    node = RunningNode(node_config(tmp_path))
    try:
        a = storescu(cases[0], node.port, calling_ae="STORESCU", background=True)
        b = storescu(cases[1], node.port, calling_ae="SENDER_B", background=True)
        assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
        for case in cases:
            study = node.wait_study(_study_uid(case), ("done", "failed"))
            assert study.state == "done", study.reason
            assert study.instances == _instances(case)
    finally:
        node.stop()


def test_replay_and_status_commands(cases, tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    node = RunningNode(node_config(tmp_path))
    try:
        copy = tmp_path / "copy"
        shutil.copytree(cases[1], copy)
        result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "replay", str(copy), "--to",
                                 f"GLIOMA_NODE@127.0.0.1:{node.port}", "--quiet"], capture_output=True, text=True,
                                cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr
        assert f"sent {_instances(cases[1])} instance(s)" in result.stdout
        status = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(node.config_path), "status"],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
        assert _study_uid(cases[1]) in status.stdout
        metrics = node.metrics()
        assert metrics["glioma_node_instances_received_total"] == _instances(cases[1])
    finally:
        node.stop()


def test_demo_prints_what_a_radiologist_wants(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    result = subprocess.run([sys.executable, "-m", "glioma_node.cli.demo", "--out", str(tmp_path / "demo")], capture_output=True,
                            text=True, cwd=REPO, timeout=1500)
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ("RESEARCH USE ONLY", "tumour volumes: whole", "MGMT promoter methylation:", "IDH mutation:",
                 "survival risk group:",
                 "time from the last image to results in the PACS", "summary image:", "PACS:"):
        assert line in result.stdout, line
    summary = next(line for line in result.stdout.splitlines() if "summary image:" in line).split(": ", 1)[1]
    assert Path(summary.strip()).stat().st_size > 10_000


def test_a_series_after_processing_makes_version_2(cases, tmp_path):
    from glioma_node.dicom_io.uids import derived_uid

    node = RunningNode(node_config(tmp_path))
    try:
        uid = _study_uid(cases[1])
        assert storescu(cases[1], node.port).returncode == 0
        first = node.wait_study(uid, ("done", "failed"))
        assert first.state == "done" and first.version == 1
        late = tmp_path / "late"  # one more series of the same study: a repeat acquisition
        source = next(p for p in sorted(cases[1].iterdir()) if p.is_dir())
        for n, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = derived_uid("late", ds.SeriesInstanceUID)
            ds.SOPInstanceUID = derived_uid("late", ds.SOPInstanceUID)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            late.mkdir(exist_ok=True)
            ds.save_as(late / f"{n:04d}.dcm")
        assert storescu(late, node.port).returncode == 0
        deadline = time.monotonic() + 600
        while (study := node.state().study(uid)).version < 2 or study.state not in ("done", "failed"):
            assert time.monotonic() < deadline, study
            time.sleep(1)
        assert study.state == "done"
        versions = sorted(p.name for p in (node.data_dir / "results").glob("*/v*"))
        assert versions == ["v1", "v2"]
        # version 2 is marked as the newest and names the report it replaces
        results = next((node.data_dir / "results").iterdir())
        old, new = (pydicom.dcmread(results / v / "dicom" / "report.dcm", stop_before_pixels=True) for v in ("v1", "v2"))
        assert new.SeriesDescription.endswith("(v2)") and new.SeriesNumber != old.SeriesNumber
        assert new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]\
            .ReferencedSOPInstanceUID == old.SOPInstanceUID
    finally:
        node.stop()


def test_receivers_share_the_port_and_a_killed_one_comes_back(cases, tmp_path):
    """``node.receivers: 2``: a second process accepts on the node's port (SO_REUSEPORT),
    the kernel spreads associations over both, /metrics counts both, a receiver killed
    with -9 is started again, and two studies sent at once are recorded whole."""
    node = RunningNode(node_config(tmp_path, **{"node.receivers": 2}))
    counts = node.data_dir / "receivers"
    try:
        node.wait_log("receiver ready", timeout=60)
        for _ in range(16):  # all 16 on one of two sockets: 1 in 32768
            assert echo(node.port, "STORESCU")
        snapshot = wait_for(lambda: next(counts.glob("*.json"), None), 10, "the receiver's counters")
        # /metrics has them all (the receiver's snapshot is a second old at most), 16 plus the start's C-ECHO
        total = wait_for(lambda: (n := node.metrics()["glioma_node_associations_accepted_total"]) >= 17 and n, 10,
                         "every association in /metrics")
        accepted = json.loads(snapshot.read_text()).get("associations_accepted", 0)
        assert 1 <= accepted < total  # both processes accepted some

        os.kill(int(snapshot.stem), signal.SIGKILL)
        node.wait_log("receiver process ended", timeout=30)
        wait_for(lambda: any(p != snapshot for p in counts.glob("*.json")), 60, "a new receiver")

        a = storescu(cases[0], node.port, calling_ae="STORESCU", background=True)
        b = storescu(cases[1], node.port, calling_ae="SENDER_B", background=True)
        assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
        for case in cases:
            study = node.state().study(_study_uid(case))
            assert study is not None and study.instances == _instances(case)
        receivers = [int(p.stem) for p in counts.glob("*.json")]
    finally:
        node.stop()
    # the node's stop ends its receivers
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in receivers), 30, "the receivers to end")


def _store_one(port: int, folder: Path) -> int:
    """C-STORE one instance of ``folder``; the status the node answered."""
    first = next(p for p in sorted(folder.rglob("*")) if p.is_file())
    ds = pydicom.dcmread(first)
    ae = AE(ae_title="GLIOMA_REPLAY")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="GLIOMA_NODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()



@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the data folder needs root (CI is root)")
def test_a_disk_full_while_processing_keeps_the_node_up_and_it_carries_on(cases, tmp_path):
    """The data folder (a 300 MB tmpfs) fills up while a study is processed: the node stays
    up, answers C-ECHO, refuses C-STORE with 0xA700, says degraded on /health with the
    reason, and when space returns it finishes the study and the PACS gets its results,
    once, with no restart of the node."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(disk)], check=True)
    pacs = CountingPacs()
    node = None
    try:
        config = node_config(tmp_path / "node", destinations=[{"name": "pacs", "ae_title": "PACS",
                                                               "host": "127.0.0.1", "port": pacs.port}],
                             **{"data_dir": str(disk / "data"), "node.min_free_mb": 20, "worker.retry_delay_s": 1})
        node = RunningNode(config)
        uid = _study_uid(cases[0])
        assert storescu(cases[0], node.port).returncode == 0
        node.wait_log("study ready", timeout=120)
        filler = fill(disk)  # the job is running now
        # the worker meets it: mid-study (ENOSPC; the job waits, no attempt spent) or before a claim
        log = Path(node.log.name)
        wait_for(lambda: any(sign in log.read_text(errors="replace")
                             for sign in ("No space left on device", "worker takes no jobs now")),
                 300, "the worker to meet the full disk")
        time.sleep(3)  # the node's loop meets the full disk too
        assert node.process.poll() is None
        assert echo(node.port, "STORESCU")
        assert _store_one(node.port, cases[1]) == 0xA700
        health = node.health()
        assert health["status"] == "degraded" and any(r.startswith("disk:") for r in health["reasons"]), health
        assert node.state().study(uid).state == "processing"
        filler.unlink()  # space returns
        study = node.wait_study(uid, ("done", "failed"), timeout=600)
        assert study.state == "done", study.reason
        wait_for(lambda: node.health()["status"] == "ok", 60, "/health to say ok again")
        results = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                   for p in (node.data_dir / "results" / safe_part(uid) / "v1" / "dicom").glob("*.dcm")}
        assert sorted(pacs.for_study(uid)) == sorted(results) and len(results) == len(result_kinds(False))
        assert node.process.poll() is None  # never restarted: the same process carried on
    finally:
        if node is not None:
            node.stop()
        pacs.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_pacs_refusing_the_sr_costs_attempts_and_health_says_so(cases, tmp_path):
    """The PACS accepts the association but no SR context: the node stays up (no crash
    loop), the PACS gets every other object once however often the send is retried, and
    /health (503, the reason) and /metrics (failures, the oldest unsent result) say so."""
    from pydicom.uid import Comprehensive3DSRStorage

    pacs = CountingPacs(refuse=(Comprehensive3DSRStorage,))
    node = RunningNode(node_config(tmp_path, destinations=[{"name": "pacs", "ae_title": "PACS",
                                                            "host": "127.0.0.1", "port": pacs.port}]))
    try:
        uid = _study_uid(cases[0])
        assert storescu(cases[0], node.port).returncode == 0
        wait_for(lambda: node.metrics().get("glioma_node_send_failures_total", 0) >= 3, 600, "three failed sends")
        health = node.health()
        assert health["status"] == "degraded", health
        assert any("Comprehensive 3D SR Storage" in r and r.startswith("dispatch:") for r in health["reasons"])
        metrics = node.metrics()
        assert metrics["glioma_node_sends_failing"] == 1 and metrics["glioma_node_oldest_unsent_result_seconds"] > 0
        folder = node.data_dir / "results" / safe_part(uid) / "v1" / "dicom"
        others = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                        for p in folder.glob("*.dcm") if p.stem != "report")
        assert sorted(pacs.for_study(uid)) == others  # each once, however many attempts
        assert node.process.poll() is None and echo(node.port, "STORESCU")
        assert node.state().study(uid).state == "sending"
    finally:
        node.stop()
        pacs.stop()


def test_a_killed_receiver_s_acknowledged_instances_are_recorded_without_a_restart(cases, tmp_path):
    """``node.receivers: 2``; a receiver is killed with -9 while three associations send:
    every instance a sender saw acknowledged is recorded (and the dead receiver's
    associations are closed as interrupted) within seconds, without restarting the node."""
    node = RunningNode(node_config(tmp_path, **{"node.receivers": 2}))
    counts = node.data_dir / "receivers"
    try:
        node.wait_log("receiver ready", timeout=60)
        snapshot = wait_for(lambda: next(counts.glob("*.json"), None), 10, "the receiver's counters")
        victim = int(snapshot.stem)
        third = copy_study(cases[0], tmp_path / "third", "receiver-kill")
        senders = [Sender(cases[0], node.port, "STORESCU"), Sender(cases[1], node.port, "SENDER_B"),
                   Sender(third, node.port, "GLIOMA_REPLAY")]
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        acknowledged = set()
        for sender in senders:
            acknowledged |= set(sender.wait(300).acknowledged)
        node.wait_log("receiver's spool reconciled", timeout=60)
        state = node.state()
        lost = [sop for sop in acknowledged if state.instance_location(sop) is None]
        assert not lost, f"{len(lost)} acknowledged instance(s) not recorded"
        spooled = len(list((node.data_dir / "spool").rglob("*.dcm")))
        assert state.metrics()["glioma_node_instances_stored"] == spooled
        still_open = state._db().execute("SELECT COUNT(*) FROM associations WHERE state='open' AND owner=?",
                                         (victim,)).fetchone()[0]
        assert still_open == 0
        assert node.process.poll() is None
    finally:
        node.stop()
