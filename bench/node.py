"""The node's benchmarks, side by side with its peers (run by `make bench`).

Every receiver and node runs pinned to the same CPUs (:data:`CPUS`, at most 2: the CI
machine's), enforced with sched_setaffinity, not just printed.

1. Receive: the same folder into dcmtk storescp (``+xa``: it accepts every transfer
   syntax, as the node does), ``glioma-node serve`` (every instance fsynced before its
   acknowledgement) and Orthanc, by dcmtk storescu (TCP_NODELAY on both ends); one
   association, and four at once. Each receiver starts fresh for each run; the node
   assembles as always but its jobs wait in a Redis queue (workers elsewhere), so no
   inference competes with receiving; one warm-up run each, then
   :data:`ROUNDS` rounds in rotating order; medians and ratios. Every run's received
   count is checked against the files sent.
2. Turnaround: from the last instance of a study to all results stored in Orthanc,
   default models; a warm-up study runs first, so worker and radiomics-pool start-up
   are not counted.
3. Load: 20 studies from 4 concurrent senders (segmentation only): processed against
   sent, instances stored against sent, wall time, and the peak memory of the node with
   all its descendants (sampled sum, not the largest process).
4. Workers: studies per hour on one batch with 1, 2 and 4 Celery workers on this
   machine (Redis broker), and the queue latency (last instance of a study to the start
   of its job), with the embedded default configuration: segmentation and radiogenomics,
   ``models.radiogenomics.workers`` unset (each worker starts its own radiomics pool).
   On 2 cores more than 2 workers cannot help; the row says so.

Prints one JSON line per benchmark (bench/__main__.py collects them).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from glioma_node.service.handoff import JobOutcome
from tests.node_harness import CeleryWorker, RunningNode, copy_study, node_config, orthanc_result_instances, storescu
from tests.servers import Orthanc, RedisServer, free_port

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
CPUS = set(sorted(os.sched_getaffinity(0))[:2])
ROUNDS = 3


def _pinned() -> None:
    os.sched_setaffinity(0, CPUS)


def _send(folders: list[Path], port: int, called: str) -> float:
    """Send each folder on its own association, all at once; seconds until the last ends."""
    start = time.perf_counter()
    senders = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", called, "+sd", "+r", "-nh",
                                 "127.0.0.1", str(port), str(folder)], env=NODELAY, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, preexec_fn=_pinned) for folder in folders]
    for sender in senders:
        _, err = sender.communicate(timeout=1200)
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-300:]}")
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


@dataclass
class Receiver:
    """One running receiver: where to send, how many instances it holds, how to stop it."""

    port: int
    called: str
    count: Callable[[], int]
    stop: Callable[[], None]


def _storescp(work: Path) -> Receiver:
    port, out = free_port(), work / "storescp"
    out.mkdir(parents=True)
    process = subprocess.Popen(["storescp", "+xa", "-aet", "STORESCP", "-od", str(out), str(port)], env=NODELAY,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pinned)
    _wait_port(port)

    def stop() -> None:
        process.terminate()
        process.wait()
    return Receiver(port, "STORESCP", lambda: sum(1 for p in out.iterdir() if p.is_file()), stop)


def _node(work: Path, receivers: int = 1) -> Receiver:
    """The node as deployed with its workers on other machines: it receives and assembles
    (surveying each complete study), and its process jobs wait in a Redis queue that no
    worker on this machine serves, so no inference competes with receiving.
    ``receivers``: processes accepting on the port (``node.receivers``)."""
    redis = RedisServer(work / "redis")
    away: dict[str, Any] = {"execution.engine": "celery", "execution.broker_url": redis.url,
                            "node.receivers": receivers}
    node = RunningNode(node_config(work / "node", **away), cpus=CPUS)
    if receivers > 1:
        node.wait_log("receiver ready", timeout=60)

    def stop() -> None:
        node.stop()
        redis.stop()
    return Receiver(node.port, "GLIOMA_NODE", lambda: len(list((node.data_dir / "spool").rglob("*.dcm"))), stop)


def _orthanc(work: Path) -> Receiver:
    port = free_port()
    # every transfer syntax accepted, as the node and storescp +xa do (the cohort has JPEG 2000 studies)
    orthanc = Orthanc(work / "orthanc", dicom_port=port, cpus=CPUS,
                      extra={"AcceptedTransferSyntaxes": ["1.2.840.10008.1.*"]})
    def count() -> int:
        statistics = orthanc.get("/statistics")
        assert isinstance(statistics, dict)
        return int(statistics["CountInstances"])
    return Receiver(port, "ORTHANC", count, orthanc.stop)


RECEIVERS: dict[str, Callable[[Path], Receiver]] = {"storescp": _storescp, "node": _node, "orthanc": _orthanc,
                                                    "node_2_receivers": lambda work: _node(work, receivers=2)}


def _split(folder: Path, parts: int) -> list[Path]:
    """``parts`` folders of about equal size (whole series), as hard links."""
    series = sorted({p.parent for p in folder.rglob("*") if p.is_file()}, key=lambda s: -len(list(s.iterdir())))
    out = [folder.parent / f"{folder.name}-part{i}" for i in range(parts)]
    sizes = [0] * parts
    for s in series:
        i = sizes.index(min(sizes))
        target = out[i] / s.relative_to(folder)
        target.mkdir(parents=True, exist_ok=True)
        for f in s.iterdir():
            os.link(f, target / f.name)
        sizes[i] += len(list(s.iterdir()))
    return out


def receive(folder: Path, work: Path, associations: int = 1) -> dict:
    """Warm-up, then :data:`ROUNDS` rounds in rotating order; medians, ratios, counts checked."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    folders = [folder] if associations == 1 else _split(folder, associations)
    # a second receiver process can only help when associations run at once
    names = [n for n in RECEIVERS if associations > 1 or n != "node_2_receivers"]
    times: dict[str, list[float]] = {n: [] for n in names}
    run = 0
    for round_ in range(-1, ROUNDS):  # round -1: the warm-up, not counted
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            run += 1
            receiver = RECEIVERS[name](work / f"{name}-{run}")
            try:
                seconds = _send(folders, receiver.port, receiver.called)
                received = receiver.count()
            finally:
                receiver.stop()
            if received != len(files):
                raise RuntimeError(f"{name} holds {received} of {len(files)} instances sent")
            if round_ >= 0:
                times[name].append(seconds)
            shutil.rmtree(work / f"{name}-{run}", ignore_errors=True)
    median = {n: statistics.median(t) for n, t in times.items()}
    return {"benchmark": f"receive {len(files)} instances ({megabytes:.0f} MB), {associations} association(s)",
            "seconds": round(median["node"], 2), "storescp_s": round(median["storescp"], 2),
            "orthanc_s": round(median["orthanc"], 2),
            "node_over_storescp": round(median["node"] / median["storescp"], 2),
            "orthanc_over_node": round(median["orthanc"] / median["node"], 2),
            **({"node_2_receivers_s": round(median["node_2_receivers"], 2),
                "node_2_receivers_over_storescp": round(median["node_2_receivers"] / median["storescp"], 2)}
               if "node_2_receivers" in median else {}),
            "rounds": ROUNDS, "runs_s": {n: [round(x, 2) for x in t] for n, t in times.items()},
            "instances_per_s": round(len(files) / median["node"], 1), "cpus": len(CPUS)}


def _study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(p for p in folder.rglob("*") if p.is_file()), stop_before_pixels=True)
               .StudyInstanceUID)


def turnaround(study: Path, warmup: Path, work: Path) -> dict:
    orthanc = Orthanc(work / "pacs", dicom_port=free_port(), modalities={"node": ["GLIOMA_NODE", "127.0.0.1", 104]})
    config = node_config(work / "node-full", radiogenomics=True, **{"models.radiogenomics.workers": None},
                         destinations=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                        "port": orthanc.dicom_port}])
    node = RunningNode(config, cpus=CPUS)
    try:
        seconds = []
        for folder in (warmup, study):  # the first one warms the worker and the radiomics pool
            uid = _study_uid(folder)
            _send([folder], node.port, "GLIOMA_NODE")
            last_instance = time.perf_counter()
            while len(orthanc_result_instances(orthanc, uid)) < 6:
                if time.perf_counter() - last_instance > 900:
                    raise RuntimeError(f"no results after 900 s: {node.state().study(uid)}")
                time.sleep(0.5)
            seconds.append(time.perf_counter() - last_instance)
        jobs = {j.kind: j for j in node.state().jobs(uid)}
    finally:
        node.stop()
        orthanc.stop()
    return {"benchmark": "turnaround: last instance to 6 results in Orthanc (default models, warm worker)",
            "seconds": round(seconds[1], 1), "cold_s": round(seconds[0], 1), "budget_s": 60,
            "process_attempts": jobs["process"].attempts, "cpus": len(CPUS)}


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants now (MB; the process tree of
    :func:`bench.faults.descendants`)."""
    from bench.faults import descendants, status_kb

    return sum(status_kb(p, "VmRSS") or 0 for p in descendants(pid)) / 1024


class PeakMemory:
    """Samples :func:`_tree_rss_mb` every 0.2 s in a thread; :attr:`peak_mb` the largest sum seen."""

    def __init__(self, pid: int):
        self.pid, self.peak_mb = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def load(study: Path, work: Path, studies: int = 20, senders: int = 4) -> dict:
    copies = [copy_study(study, work / "copies" / f"s{n:02d}", f"load-{n}") for n in range(studies)]
    uids = [_study_uid(c) for c in copies]
    node = RunningNode(node_config(work / "node-load"), cpus=CPUS)
    assert node.process is not None
    memory = PeakMemory(node.process.pid)
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
        expected = sum(1 for c in copies for p in c.rglob("*") if p.is_file())
        stored = len(list((node.data_dir / "spool").rglob("*.dcm")))
    finally:
        peak = memory.stop()
        node.stop()
    processed = sum(s.state == "done" for s in done)
    return {"benchmark": f"{studies} studies from {senders} concurrent senders (segmentation only)",
            "seconds": round(seconds, 1), "receive_s": round(received, 1),
            "studies_sent": studies, "processed": processed, "failed": sum(s.state != "done" for s in done),
            "all_processed": processed == studies, "instances_expected": expected, "instances_stored": stored,
            "all_stored": stored == expected, "sender_errors": len(errors),
            "processed_twice": sum(v > 1 for v in versions),
            "peak_rss_mb_node_and_children": round(peak), "cpus": len(CPUS)}


def workers(study: Path, work: Path, counts: tuple[int, ...] = (1, 2, 4), batch: int = 4) -> dict:
    """Studies per hour on one batch with 1, 2, 4 Celery workers; queue latency per study.
    The embedded default configuration: radiogenomics on, ``models.radiogenomics.workers``
    unset (the CPUs available, at most 4, per worker), as a site deploys it."""
    copies = [copy_study(study, work / "copies" / f"w{n:02d}", f"workers-{n}") for n in range(batch)]
    uids = [_study_uid(c) for c in copies]
    rows = []
    for count in counts:
        run = work / f"{count}-workers"
        redis = RedisServer(run / "redis")
        celery: dict[str, Any] = {"execution.engine": "celery", "execution.broker_url": redis.url,
                                  "models.radiogenomics.workers": None}
        config = node_config(run / "node", radiogenomics=True, **celery)
        node = RunningNode(config, cpus=CPUS)
        pool = [CeleryWorker(config, run / f"machine-{i}", cpus=CPUS) for i in range(count)]
        try:
            start = time.perf_counter()
            for folder in copies:
                _send([folder], node.port, "GLIOMA_NODE")
            for uid in uids:
                assert node.wait_study(uid, ("done", "failed"), timeout=3600).state == "done", uid
            seconds = time.perf_counter() - start
            state = node.state()
            latency = []
            for uid in uids:
                outcome = JobOutcome.read(node.data_dir / "results" / uid / "v1" / "outcome.json")
                last_at = state.study(uid).last_at
                assert outcome is not None and last_at is not None
                latency.append(outcome.started_at - last_at)
            results = [len(list((node.data_dir / "results" / uid / "v1" / "dicom").glob("*.dcm"))) for uid in uids]
        finally:
            for worker in pool:
                worker.stop()
            node.stop()
            redis.stop()
        rows.append({"workers": count, "seconds": round(seconds, 1),
                     "studies_per_hour": round(batch / seconds * 3600, 1),
                     "queue_latency_median_s": round(statistics.median(latency), 1),
                     "queue_latency_max_s": round(max(latency), 1),
                     "result_objects_per_study": min(results)})
    return {"benchmark": f"{batch} studies on 1, 2 and 4 Celery workers (default configuration: segmentation and "
                         "radiogenomics, Redis broker)",
            "seconds": rows[0]["seconds"], "runs": rows, "cpus": len(CPUS), "radiogenomics": True,
            "radiomics_workers": "unset (default: the CPUs available, at most 4, per Celery worker)",
            "note": f"the embedded default configuration (segmentation and radiogenomics, "
                    f"models.radiogenomics.workers unset); {len(CPUS)} CPU cores bind every worker count here; "
                    "each run includes its workers' model loading"}


def main() -> None:
    """``python -m bench.node [--only receive-1,receive-4,...]``: every benchmark, or those named."""
    import argparse

    from glioma_node.training.synth.cohort import write_cohort

    parser = argparse.ArgumentParser(prog="python -m bench.node")
    parser.add_argument("--only", default="", help="comma-separated: receive-1, receive-4, turnaround, load, workers")
    only = {name for name in parser.parse_args().only.split(",") if name}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_cohort(work / "cohort", cases=3, seed=5, progress=False)
        studies = sorted(p for p in (work / "cohort" / "dicom").iterdir() if p.is_dir())
        every = work / "all"
        for study in studies:
            shutil.copytree(study, every / study.name)
        for name, run in (("receive-1", lambda: receive(every, work / "r1", 1)),
                          ("receive-4", lambda: receive(every, work / "r4", 4)),
                          ("turnaround", lambda: turnaround(studies[0], studies[2], work / "t")),
                          ("load", lambda: load(studies[1], work / "l")),
                          ("workers", lambda: workers(studies[1], work / "w"))):
            if only and name not in only:
                continue
            (work / name).mkdir(exist_ok=True)
            print(json.dumps(run()), flush=True)


if __name__ == "__main__":
    main()
