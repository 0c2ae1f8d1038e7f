"""Where a node's process jobs run (``execution.engine``), one class per engine and
:data:`ENGINES` to pick one.

* :class:`LocalEngine` (``local``, the embedded default): one worker process beside the
  node claims jobs from the node's database and settles them itself.
* :class:`CeleryEngine` (``celery``): the node claims each due job, publishes a task that
  names the study and version, and settles the job when a worker's ``outcome.json``
  appears in the shared data folder. A job whose worker's heartbeat went stale (the
  worker died) is published again and counts an attempt; one that no worker started
  within ``execution.requeue_after_s`` is published again without counting one, but only
  when the broker's queue holds fewer tasks than there are jobs no worker has started:
  a task queued behind busy workers is not lost, and publishing it again would only add
  a duplicate per ``requeue_after_s``.

The node drives an engine from its loop (:meth:`Engine.step`) and never imports model
code through it.
"""
from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from glioma_node.service.children import start_child
from glioma_node.service.config import Config, EngineKind
from glioma_node.service.handoff import JobOutcome, JobResult, heartbeat_age_s
from glioma_node.service.paths import Paths
from glioma_node.service.settle import processing_warnings, settle
from glioma_node.service.state import Job, JobKind, NodeState

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the node needs of an engine."""

    def start(self) -> None:
        """Begin taking jobs."""

    def step(self) -> None:
        """Hand out due jobs and collect finished ones (called about every 0.2 s)."""

    def alive(self) -> bool:
        """Whether jobs can run now (the worker process lives; the broker answers)."""

    def stop(self) -> None:
        """Stop taking jobs."""


class LocalEngine:
    """A worker process beside the node (:mod:`glioma_node.service.worker`), restarted when
    it ends: at once the first time, then after a wait that doubles with each death in a
    row (up to :data:`RESTART_MAX_S`), so a worker that cannot live (a full disk, a model
    that does not load) is no restart loop; a worker that ran :data:`RESTART_MAX_S` clears the count."""

    RESTART_MAX_S = 60.0

    def __init__(self, config: Config, state: NodeState, paths: Paths):
        self.config, self.state, self.paths = config, state, paths
        self.process: subprocess.Popen | None = None
        self._started = 0.0  # monotonic s
        self._deaths = 0  # in a row
        self._restart_at: float | None = None

    def start(self) -> None:
        self.process = start_child("glioma_node.service.worker", self.config, self.paths)
        self._started = time.monotonic()
        self._restart_at = None

    def step(self) -> None:
        if self.process is None or self.alive():
            return
        now = time.monotonic()
        if self._restart_at is None:  # just found dead
            self._deaths = 1 if now - self._started >= self.RESTART_MAX_S else self._deaths + 1
            delay = 0.0 if self._deaths == 1 else min(2.0 ** (self._deaths - 1), self.RESTART_MAX_S)
            self._restart_at = now + delay
            log.error("worker process ended; restarting it",
                      extra={"exitcode": self.process.returncode, "restart_in_s": delay, "deaths_in_a_row": self._deaths})
        if now >= self._restart_at:
            # a study the worker died on worker.max_attempts times fails: it would take the
            # worker down again (a segfault, out of memory) however often it restarted
            for job in self.state.running(JobKind.PROCESS):  # may raise (a full disk): tried again next step
                if job.attempts >= self.config.worker.max_attempts:
                    reason = f"the worker process died {job.attempts} times processing this study"
                    self.state.fail_job(job.id, job.study_uid, reason)
                    log.error("process job failed: its worker died on it", extra={"study": job.study_uid,
                                                                                  "reason": reason})
            requeued = self.state.requeue_running(JobKind.PROCESS)
            if requeued:
                log.info("jobs of the ended worker queued again", extra={"jobs": requeued})
            self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """End the worker: SIGTERM, then SIGKILL after 30 s."""
        if self.process is not None and self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class CeleryEngine:
    """Process jobs as Celery tasks (see the module doc and :mod:`glioma_node.service.celery_app`)."""

    POLL_S = 1.0  # how often running jobs are checked for an outcome or a stale heartbeat
    BROKER_RETRY_S = 5.0  # how long a job the broker refused waits before it is published again

    def __init__(self, config: Config, state: NodeState, paths: Paths):
        self.config, self.state, self.paths = config, state, paths
        self.app: Any = None
        self.broker_ok: bool | None = None  # unknown until the first publish or check
        self._polled = 0.0
        self._lost = 0  # tasks of unstarted jobs the broker does not hold (this poll's count)

    def start(self) -> None:
        from glioma_node.service.celery_app import make_app

        self.app = make_app(self.config.execution)
        # jobs that were running when the node stopped were re-queued by NodeState.recover();
        # their tasks may still be in the broker: a duplicate is settled once and computed once
        log.info("celery engine", extra={"broker": _without_password(self.config.execution.broker_url),
                                         "queue": self.config.execution.queue.value})

    def _publish(self, job: Job) -> bool:
        from glioma_node.service.celery_app import PROCESS_TASK, ProcessTask

        task = ProcessTask(job.study_uid, job.version, processing_warnings(self.state, self.state.study(job.study_uid)),
                           job.attempts)
        try:
            self.app.send_task(PROCESS_TASK, kwargs=task.__dict__, queue=self.config.execution.queue.value)
        except Exception as exc:  # noqa: BLE001 - kombu's connection errors vary by transport; the job waits
            if self.broker_ok is not False:  # said once per outage
                log.error("broker unreachable; jobs wait", extra={"error": f"{type(exc).__name__}: {exc}"})
            self.broker_ok = False
            return False
        self.broker_ok = True
        log.info("job published", extra={"study": job.study_uid, "version": job.version, "attempt": job.attempts})
        return True

    def step(self) -> None:
        # below the disk watermark a worker could not write the results: jobs wait queued
        low = self.paths.disk_low(self.config.node.min_free_bytes)
        while not low and (job := self.state.claim((JobKind.PROCESS,))) is not None:
            if not self._publish(job):
                self.state.unclaim(job.id, "broker unreachable", self.BROKER_RETRY_S)
                break
        now = time.monotonic()
        if now - self._polled >= self.POLL_S:
            self._polled = now
            running = self.state.running(JobKind.PROCESS)
            self._lost = self._lost_tasks(running)
            for job in running:
                self._check(job)

    def _lost_tasks(self, running: list[Job]) -> int:
        """How many of the running jobs no worker has started have no task in the broker
        (see the module doc); the broker is asked only when one has waited past
        ``execution.requeue_after_s``."""
        unstarted = [job for job in running if heartbeat_age_s(self.paths.heartbeat(job.study_uid, job.version)) is None
                     and not self.paths.outcome(job.study_uid, job.version).exists()]
        overdue = [job for job in unstarted
                   if time.time() - (job.started_at or time.time()) > self.config.execution.requeue_after_s]
        if not overdue:
            return 0
        queued = self._queued_in_broker()
        return len(overdue) if queued is None else max(0, min(len(overdue), len(unstarted) - queued))

    def _queued_in_broker(self) -> int | None:
        """Tasks waiting in the broker's queue, or None when the broker cannot say."""
        try:
            with self.app.connection_for_read() as connection:
                declared = connection.default_channel.queue_declare(queue=self.config.execution.queue.value,
                                                                    passive=True)
            return int(declared.message_count)
        except Exception as exc:  # noqa: BLE001 - an empty Redis queue does not exist (NOT_FOUND): nothing queued
            return 0 if "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower() else None

    def _check(self, job: Job) -> None:
        """Settle a running job whose outcome is in, or publish it again (see the module doc)."""
        execution = self.config.execution
        outcome = JobOutcome.read(self.paths.outcome(job.study_uid, job.version))
        if outcome is not None and (outcome.result is not JobResult.ERROR or outcome.attempt >= job.attempts):
            settle(job, outcome, self.config, self.state, self.paths)
            return
        heartbeat = self.paths.heartbeat(job.study_uid, job.version)
        age = heartbeat_age_s(heartbeat)
        waited = time.time() - (job.started_at or time.time())
        if age is not None and age > execution.stale_after_s:
            worker = _read(heartbeat)
            if job.attempts >= self.config.worker.max_attempts:
                reason = f"worker lost {job.attempts} times (last: {worker})"
                self.state.fail_job(job.id, job.study_uid, reason)
                heartbeat.unlink(missing_ok=True)
                log.error("process job failed: its workers died", extra={"study": job.study_uid, "reason": reason})
                return
            log.warning("worker lost; job published again", extra={"study": job.study_uid, "worker": worker,
                                                                   "heartbeat_age_s": round(age, 1)})
            self._again(job, count_attempt=True, heartbeat=heartbeat)
        elif age is None and waited > execution.requeue_after_s and self._lost > 0:
            self._lost -= 1
            log.warning("job not started and its task is not in the broker; published again",
                        extra={"study": job.study_uid, "waited_s": round(waited, 1)})
            self._again(job, count_attempt=False, heartbeat=heartbeat)

    def _again(self, job: Job, count_attempt: bool, heartbeat: Path) -> None:
        self.state.restart(job.id, count_attempt)
        heartbeat.unlink(missing_ok=True)  # the dead worker's; the next worker writes its own
        if not self._publish(replace(job, attempts=job.attempts + int(count_attempt))):
            self.state.unclaim(job.id, "broker unreachable", self.BROKER_RETRY_S)

    def alive(self) -> bool:
        return bool(self.broker_ok) or self._reachable()

    def _reachable(self) -> bool:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception:  # noqa: BLE001 - any failure means not reachable now
            return False
        self.broker_ok = True
        return True

    def stop(self) -> None:
        """Nothing runs here: workers finish their jobs; the node settles them after a restart."""


def _read(path: Path) -> str:
    try:
        return str(path.read_text().strip())
    except OSError:
        return "?"


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


ENGINES: dict[EngineKind, type[LocalEngine] | type[CeleryEngine]] = {
    EngineKind.LOCAL: LocalEngine,
    EngineKind.CELERY: CeleryEngine,
}


def make_engine(config: Config, state: NodeState, paths: Paths) -> Engine:
    """The engine ``execution.engine`` names."""
    return ENGINES[config.execution.engine](config, state, paths)
