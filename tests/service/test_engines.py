"""The Celery engine's decisions without a broker: what is published, when a job is
published again, and how an outcome settles it, with a fake Celery app in place of Redis
and a real node database."""
from __future__ import annotations

import os
import time

import pytest

from glioma_node.service.config import with_overrides
from glioma_node.service.engines import CeleryEngine
from glioma_node.service.handoff import Heartbeat, JobOutcome, JobResult
from glioma_node.service.paths import Paths
from glioma_node.service.state import JobKind, JobState, NodeState, Received, StudyState

STUDY = "1.2.3"


class FakeApp:
    """Records published tasks; refuses them while ``down``."""

    def __init__(self):
        self.sent: list[dict] = []
        self.down = False
        self.queued: int | None = None  # what the broker says its queue holds (None: it cannot say)

    def send_task(self, name, kwargs, queue):
        if self.down:
            raise ConnectionRefusedError("broker down")
        self.sent.append({"name": name, "queue": queue, **kwargs})

    def connection_for_read(self):
        import contextlib
        from types import SimpleNamespace

        app = self

        class Channel:
            def queue_declare(self, queue, passive):
                if app.queued is None:
                    raise ConnectionRefusedError("broker down")
                return SimpleNamespace(message_count=app.queued)

        return contextlib.nullcontext(SimpleNamespace(default_channel=Channel()))


@pytest.fixture
def engine(tmp_path, config):
    config = with_overrides(config, data_dir=tmp_path / "data", destinations=["PACS@127.0.0.1:11112"])
    execution = config.execution.model_copy(update={"engine": "celery", "heartbeat_s": 0.05, "stale_after_s": 0.5,
                                                    "requeue_after_s": 1.0})
    config = config.model_copy(update={"execution": execution})
    paths = Paths(config.data_dir)
    state = NodeState(paths.database)
    state.record_instance(Received(STUDY, "1.2.3.1", "1.2.3.1.1", "1.2.840.10008.5.1.4.1.1.4", 20, "x"), "p", "")
    state.set_state(STUDY, StudyState.PROCESSING, None, version=1)
    state.enqueue(JobKind.PROCESS, STUDY, 1)
    engine = CeleryEngine(config, state, paths)
    engine.app = FakeApp()
    return engine


def _job(engine):
    return next(j for j in engine.state.jobs(STUDY) if j.kind == JobKind.PROCESS)


def _check(engine):
    engine._polled = 0.0
    engine.step()


def test_a_due_job_is_published_once_with_what_the_node_knows_of_its_data(engine):
    engine.step()
    engine.step()
    assert len(engine.app.sent) == 1
    task = engine.app.sent[0]
    assert (task["name"], task["queue"], task["study_uid"], task["version"], task["attempt"]) == \
        ("glioma_node.process", "cpu", STUDY, 1, 1)
    assert task["warnings"] == ["INCOMPLETE DATA: 1 of 20 instances of series 1.2.3.1 (as its headers announce); "
                                "results were computed without the missing ones"]
    assert _job(engine).state == JobState.RUNNING


def test_a_job_the_broker_refuses_waits_without_spending_an_attempt(engine):
    engine.app.down = True
    engine.step()
    job = _job(engine)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert job.next_at > time.time()
    assert engine.broker_ok is False
    engine.app.down = False
    engine.step()
    assert _job(engine).state == JobState.QUEUED  # not before its retry time
    engine.state.unclaim(job.id, "test: due now", 0)
    engine.step()
    assert [t["attempt"] for t in engine.app.sent] == [1]


def test_a_done_outcome_settles_the_job_and_queues_the_sends(engine):
    engine.step()
    paths = engine.paths
    (paths.results(STUDY, 1) / "dicom").mkdir(parents=True)
    (paths.results(STUDY, 1) / "dicom" / "seg.dcm").write_bytes(b"x")
    JobOutcome(JobResult.DONE, instances=1, attempt=1, worker="w:1").write(paths.outcome(STUDY, 1))
    _check(engine)
    assert _job(engine).state == JobState.DONE
    assert engine.state.study(STUDY).state == StudyState.SENDING
    assert [j.kind for j in engine.state.jobs(STUDY)] == [JobKind.PROCESS, JobKind.SEND]


def test_an_error_of_an_earlier_attempt_is_not_this_attempts(engine):
    engine.step()
    engine.state.restart(_job(engine).id, count_attempt=True)  # attempt 2 runs now
    JobOutcome(JobResult.ERROR, "boom", attempt=1).write(engine.paths.outcome(STUDY, 1))
    _check(engine)
    assert _job(engine).state == JobState.RUNNING
    JobOutcome(JobResult.ERROR, "boom", attempt=2).write(engine.paths.outcome(STUDY, 1))
    _check(engine)
    job = _job(engine)
    assert (job.state, job.error) == (JobState.QUEUED, "boom")  # retried after worker.retry_delay_s


def test_a_stale_heartbeat_publishes_the_job_again_and_counts_an_attempt(engine):
    engine.step()
    heartbeat = engine.paths.heartbeat(STUDY, 1)
    with Heartbeat(heartbeat, 0.05):
        time.sleep(0.3)
        _check(engine)
        assert len(engine.app.sent) == 1  # a live worker: nothing happens
    heartbeat.write_text("host:4242\n")  # the worker died: its file stays, untouched
    old = time.time() - 5
    os.utime(heartbeat, (old, old))
    _check(engine)
    assert [t["attempt"] for t in engine.app.sent] == [1, 2]
    assert _job(engine).attempts == 2
    assert not heartbeat.exists()


def test_a_job_no_worker_started_is_published_again_without_counting(engine):
    engine.step()
    _check(engine)
    assert len(engine.app.sent) == 1
    time.sleep(1.1)  # execution.requeue_after_s
    _check(engine)
    assert [t["attempt"] for t in engine.app.sent] == [1, 1]
    assert _job(engine).attempts == 1


def test_a_task_queued_behind_busy_workers_is_not_published_again(engine):
    """Past requeue_after_s with no worker started, the job's task is published again only
    when the broker's queue no longer holds it (a Redis restart lost it)."""
    engine.step()
    engine.app.queued = 1  # still waiting in the queue: the workers are busy
    time.sleep(1.1)
    for _ in range(3):
        _check(engine)
    assert len(engine.app.sent) == 1 and _job(engine).attempts == 1
    engine.app.queued = 0  # the queue lost it
    _check(engine)
    assert [t["attempt"] for t in engine.app.sent] == [1, 1] and _job(engine).attempts == 1


def test_workers_dying_on_every_attempt_fail_the_study(engine):
    engine.step()
    heartbeat = engine.paths.heartbeat(STUDY, 1)
    for _ in range(engine.config.worker.max_attempts):
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.write_text("host:4242\n")
        old = time.time() - 5
        os.utime(heartbeat, (old, old))
        _check(engine)
    study = engine.state.study(STUDY)
    assert study.state == StudyState.FAILED
    assert "worker lost 3 times" in study.reason
    assert _job(engine).state == JobState.FAILED


def test_each_celery_pool_thread_runs_studies_on_its_own_models(monkeypatch, config, tmp_path):
    """Two studies at once in the threads pool never share a network (Grad-CAM hooks its
    layers: a shared one returned the other study's map); one thread's later jobs reuse its copy."""
    import threading

    from glioma_node.service import celery_worker, compute, pipeline

    config = with_overrides(config, data_dir=tmp_path / "data")
    monkeypatch.setattr(pipeline, "load_models", lambda c: object())
    used: list[tuple[int, object]] = []

    def fake_compute(study_uid, version, *, models, **kwargs):
        used.append((threading.get_ident(), models))
        return JobOutcome(JobResult.DONE)

    monkeypatch.setattr(compute, "compute", fake_compute)
    barrier = threading.Barrier(2)

    def two_jobs(n: int) -> None:
        barrier.wait()
        for version in (1, 2):
            celery_worker.run_task(config, f"1.2.{n}", version, [], 1)

    threads = [threading.Thread(target=two_jobs, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_thread: dict[int, set[int]] = {}
    for ident, models in used:
        by_thread.setdefault(ident, set()).add(id(models))
    assert len(by_thread) == 2 and all(len(ids) == 1 for ids in by_thread.values())
    (first,), (second,) = by_thread.values()
    assert first != second


def test_a_study_that_kills_the_local_worker_fails_after_max_attempts(tmp_path, config, monkeypatch):
    """The local worker dies on the same study every time (a segfault, out of memory): after
    worker.max_attempts deaths the study fails with the reason instead of taking the
    worker down forever."""
    import subprocess
    import sys

    from glioma_node.service import engines

    config = with_overrides(config, data_dir=tmp_path / "data")
    paths = Paths(config.data_dir)
    state = NodeState(paths.database)
    state.record_instance(Received(STUDY, "1.2.3.1", "1.2.3.1.1", "1.2.840.10008.5.1.4.1.1.4", None, "x"), "p", "")
    state.start_processing(STUDY, 1, "ready", 0.0, 1)
    # a "worker" that claims the job and dies at once, as one crashing on the study would
    claim_and_die = (f"import os; from glioma_node.service.state import NodeState, JobKind; "
                     f"NodeState(__import__('pathlib').Path({str(paths.database)!r})).claim((JobKind.PROCESS,)); "
                     f"os._exit(139)")
    monkeypatch.setattr(engines, "start_child", lambda *a: subprocess.Popen([sys.executable, "-c", claim_and_die]))
    engine = engines.LocalEngine(config, state, paths)
    monkeypatch.setattr(engines.LocalEngine, "RESTART_MAX_S", 0.0)  # no wait between restarts here
    engine.start()
    deadline = time.monotonic() + 60
    while state.study(STUDY).state is not StudyState.FAILED:
        assert time.monotonic() < deadline, state.jobs(STUDY)
        engine.process.wait(10)
        engine.step()
    (job,) = state.jobs(STUDY)
    assert job.state is JobState.FAILED and job.attempts == config.worker.max_attempts
    assert "worker process died 3 times" in state.study(STUDY).reason
