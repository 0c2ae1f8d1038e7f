"""The node's benchmarks, side by side with its peers (run by `make bench`).

1. Receive throughput: the same folder, the same dcmtk storescu command (one
   association, TCP_NODELAY on both ends), into dcmtk storescp, `glioma-node serve`
   (every instance fsynced before its acknowledgement) and Orthanc.
2. Turnaround: from the last instance of a study to all results stored in Orthanc,
   default models (segmentation and radiogenomics), 2 CPU cores.
3. Load: 20 studies from 4 concurrent senders (segmentation only): all processed, none
   lost, wall time and peak memory of the node and its worker.

Prints one JSON line per benchmark (tests/bench.py collects them).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pydicom
from pydicom.uid import UID

from glioma_node.dicom_io.uids import derived_uid
from tests.node_harness import RunningNode, node_config, orthanc_result_instances, storescu
from tests.servers import Orthanc, free_port

NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def _send(folder: Path, port: int, called: str) -> float:
    start = time.perf_counter()
    subprocess.run(["storescu", "-aet", "STORESCU", "-aec", called, "+sd", "+r", "-nh", "127.0.0.1", str(port),
                    str(folder)], check=True, capture_output=True, env=NODELAY, timeout=1200)
    return time.perf_counter() - start


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def copy_study(source: Path, out: Path, key: str) -> Path:
    """``source`` with new Study/Series/SOP Instance UIDs (a different study, same images)."""
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = derived_uid("bench", key, ds.StudyInstanceUID)
        ds.SeriesInstanceUID = derived_uid("bench", key, ds.SeriesInstanceUID)
        ds.SOPInstanceUID = derived_uid("bench", key, ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
        target = out / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    return out


def receive_throughput(folder: Path, work: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    port = free_port()
    out = work / "storescp"
    out.mkdir(parents=True)
    storescp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)], env=NODELAY,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        seconds_storescp = _send(folder, port, "STORESCP")
    finally:
        storescp.terminate()
        storescp.wait()
    node = RunningNode(node_config(work / "node"))
    try:
        seconds_node = _send(folder, node.port, "GLIOMA_NODE")
        stored = len(list((node.data_dir / "spool").rglob("*.dcm")))
    finally:
        node.stop()
    orthanc_port = free_port()
    orthanc = Orthanc(work / "orthanc", dicom_port=orthanc_port)
    try:
        seconds_orthanc = _send(folder, orthanc_port, "ORTHANC")
    finally:
        orthanc.stop()
    return {"benchmark": f"receive {len(files)} instances ({megabytes:.0f} MB), one association",
            "seconds": round(seconds_node, 2), "storescp_s": round(seconds_storescp, 2),
            "orthanc_s": round(seconds_orthanc, 2), "node_over_storescp": round(seconds_node / seconds_storescp, 2),
            "orthanc_over_node": round(seconds_orthanc / seconds_node, 1), "instances_spooled": stored,
            "instances_per_s": round(len(files) / seconds_node, 1)}


def turnaround(study: Path, work: Path) -> dict:
    orthanc = Orthanc(work / "pacs", dicom_port=free_port(), modalities={"node": ["GLIOMA_NODE", "127.0.0.1", 104]})
    config = node_config(work / "node-full", radiogenomics=True, **{"models.radiogenomics.workers": None},
                         destinations=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                        "port": orthanc.dicom_port}])
    node = RunningNode(config)
    try:
        uid = str(pydicom.dcmread(next(p for p in study.rglob("*") if p.is_file()), stop_before_pixels=True)
                  .StudyInstanceUID)
        _send(study, node.port, "GLIOMA_NODE")
        last_instance = time.perf_counter()
        while len(orthanc_result_instances(orthanc, uid)) < 6:
            if time.perf_counter() - last_instance > 900:
                raise RuntimeError(f"no results after 900 s: {node.state().study(uid)}")
            time.sleep(0.5)
        seconds = time.perf_counter() - last_instance
        jobs = {j.kind: j for j in node.state().jobs(uid)}
    finally:
        node.stop()
        orthanc.stop()
    return {"benchmark": "turnaround: last instance to 6 results in Orthanc (default models)",
            "seconds": round(seconds, 1), "budget_s": 60, "process_attempts": jobs["process"].attempts}


def _peak_rss_mb(pid: int) -> float:
    total = 0.0
    for p in [pid, *[int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def load(study: Path, work: Path, studies: int = 20, senders: int = 4) -> dict:
    copies = [copy_study(study, work / "copies" / f"s{n:02d}", f"load-{n}") for n in range(studies)]
    uids = [str(pydicom.dcmread(next(p for p in c.rglob("*") if p.is_file()), stop_before_pixels=True)
                .StudyInstanceUID) for c in copies]
    node = RunningNode(node_config(work / "node-load"))
    errors: list[str] = []
    try:
        start = time.perf_counter()

        def sender(batch: list[Path], n: int) -> None:
            for folder in batch:
                result = storescu(folder, node.port, calling_ae=("STORESCU", "DCMSEND", "GLIOMA_REPLAY", "SENDER_B")[n])
                if result.returncode != 0:
                    errors.append(result.stderr[-300:])
        threads = [threading.Thread(target=sender, args=(copies[n::senders], n)) for n in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        received = time.perf_counter() - start
        done = [node.wait_study(uid, ("done", "failed"), timeout=3600) for uid in uids]
        seconds = time.perf_counter() - start
        time.sleep(5)  # long enough for the assembly to start a needless second version, if it would
        versions = [node.state().study(uid).version for uid in uids]
        assert node.process is not None
        peak = _peak_rss_mb(node.process.pid)
        expected = sum(1 for c in copies for p in c.rglob("*") if p.is_file())
        stored = len(list((node.data_dir / "spool").rglob("*.dcm")))
    finally:
        node.stop()
    return {"benchmark": f"{studies} studies from {senders} concurrent senders (segmentation only)",
            "seconds": round(seconds, 1), "receive_s": round(received, 1),
            "processed": sum(s.state == "done" for s in done), "failed": sum(s.state != "done" for s in done),
            "instances_expected": expected, "instances_stored": stored, "sender_errors": len(errors),
            "processed_twice": sum(v > 1 for v in versions),
            "peak_rss_mb": round(peak)}


def main() -> None:
    from glioma_node.training.synth.cohort import write_cohort

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_cohort(work / "cohort", cases=3, seed=5, progress=False)
        studies = sorted(p for p in (work / "cohort" / "dicom").iterdir() if p.is_dir())
        every = work / "all"
        for study in studies:
            shutil.copytree(study, every / study.name)
        for name, run in (("receive", lambda: receive_throughput(every, work / "r")),
                          ("turnaround", lambda: turnaround(studies[0], work / "t")),
                          ("load", lambda: load(studies[1], work / "l"))):
            (work / name[0]).mkdir(exist_ok=True)
            print(json.dumps(run()), flush=True)


if __name__ == "__main__":
    main()
