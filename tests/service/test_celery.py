"""Process jobs on Celery with the real engine: Debian's redis-server as the broker, the
node and two ``glioma-node worker`` processes, each in its own working directory, sharing
one data folder, as separate machines would share a volume.

The embedded default configuration (radiogenomics on, radiomics workers unset: the
workers' CPUs shared among their studies), as a site runs it. Four studies arrive. As
soon as the first worker runs a job it is killed with kill -9 (the worker and its
processes: a machine lost); later Redis is restarted without persistence while tasks
wait in its queue (they are lost). At the end every study is processed once into one
result set with its radiogenomic objects, the killed job was run again by the other
worker, the tasks Redis lost were published again, and the PACS (a receiver that keeps
every reception) got each result object exactly once.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pydicom
import pytest

from glioma_node.dicom_io.scan import scan
from tests.helpers import result_kinds
from tests.node_harness import CeleryWorker, CountingPacs, RunningNode, copy_study, dcmsend, node_config, wait_for
from tests.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("celery")]

@pytest.fixture(scope="module")
def studies(synth_cohort, tmp_path_factory) -> list[Path]:
    """The session's three synthetic studies (one per vendor style) and a copy of the first with new UIDs."""
    three = sorted(p for p in (synth_cohort / "dicom").iterdir() if p.is_dir())
    return [*three, copy_study(three[0], tmp_path_factory.mktemp("celery-copy"), "celery")]


def _heartbeats(data_dir: Path) -> dict[Path, int]:
    """Heartbeat file → pid of the process that wrote it."""
    out = {}
    for path in (data_dir / "results").glob("*/v*/heartbeat"):
        try:
            out[path] = int(path.read_text().strip().rsplit(":", 1)[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_jobs_survive_a_killed_worker_and_a_redis_restart(studies, tmp_path):
    redis = RedisServer(tmp_path / "redis")
    pacs = CountingPacs()
    config = node_config(tmp_path / "node", radiogenomics=True,
                         destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
                         **{"models.radiogenomics.workers": None,
                            "execution.engine": "celery", "execution.broker_url": redis.url,
                            "execution.heartbeat_s": 1, "execution.stale_after_s": 6,
                            "execution.requeue_after_s": 15, "execution.visibility_timeout_s": 3600})
    node = RunningNode(config)
    workers = [CeleryWorker(config, tmp_path / f"machine-{i}") for i in (1, 2)]
    try:
        uids = [next(iter(scan(folder).studies)) for folder in studies]
        for folder in studies:
            # dcmsend proposes each file's own transfer syntax (one of the studies is JPEG 2000)
            sent = dcmsend(folder, node.port)
            assert sent.returncode == 0, sent.stderr
        # the first worker to run a job is lost with it
        beats = wait_for(lambda: {p: pid for p, pid in _heartbeats(node.data_dir).items()
                               if any(w.runs(pid) for w in workers)}, 300, "a worker to start a job")
        path, pid = next(iter(beats.items()))
        victim = next(w for w in workers if w.runs(pid))
        victim.kill()
        survivor = next(w for w in workers if w is not victim)
        killed_study = path.parent.parent.name  # results/<study>/v1/heartbeat
        assert killed_study in uids
        # its job is published again once the heartbeat goes stale, and counts an attempt
        wait_for(lambda: any(j.attempts >= 2 for j in node.state().jobs(killed_study) if j.kind == "process"), 60,
              "the lost job to be published again")
        # Redis restarts without persistence while tasks wait in its queue
        wait_for(lambda: redis.queue_length("cpu"), 300, "a task waiting in Redis")  # fails unless one waits
        redis.stop()
        redis.start()
        assert redis.queue_length("cpu") == 0  # lost: only the node can publish them again
        node.wait_log("its task is not in the broker; published again", timeout=300)
        for uid in uids:
            study = node.wait_study(uid, ("done", "failed"), timeout=900)
            assert study.state == "done", (uid, study.reason)

        state = node.state()
        for uid in uids:
            study = state.study(uid)
            assert study.version == 1
            process = [j for j in state.jobs(uid) if j.kind == "process"]
            assert [(j.version, j.state) for j in process] == [(1, "done")]
            folder = node.data_dir / "results" / uid / "v1"
            results = Counter(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                              for p in (folder / "dicom").glob("*.dcm"))
            sent = Counter(pacs.for_study(uid))
            assert sent == results, f"{uid}: the PACS got {sum(sent.values())} receptions of {len(results)} objects"
            assert len(results) == len(result_kinds(radiogenomics=True)), uid  # the whole default pipeline ran
        outcome = (node.data_dir / "results" / killed_study / "v1" / "outcome.json").read_text()
        assert f":{pid}\"" not in outcome  # the job the killed worker held was finished by another
        assert survivor.process.poll() is None
    finally:
        for worker in workers:
            worker.stop()
        node.stop()
        pacs.stop()
        redis.stop()
