"""The local worker: ``process`` jobs of the embedded engine (``execution.engine: local``),
in a child process of the node.

:func:`worker_main` runs as ``python -m glioma_node.service.worker`` so that inference
never slows receiving, and so that the serving process never imports the models. On one
machine the worker may write the node's database, so it settles each job itself
(:func:`glioma_node.service.settle.settle`) right after computing it
(:func:`glioma_node.service.compute.compute`); Celery workers on other machines leave
the settling to the node (:mod:`glioma_node.service.engines`).
"""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time

from glioma_node.core.lifetime import die_with_parent
from glioma_node.inference.analyze import Models
from glioma_node.service.children import child_main
from glioma_node.service.compute import compute
from glioma_node.service.config import Config
from glioma_node.service.handoff import Heartbeat
from glioma_node.service.paths import Paths
from glioma_node.service.settle import processing_warnings, settle
from glioma_node.service.state import Job, JobKind, NodeState

log = logging.getLogger(__name__)


def run_process(job: Job, config: Config, models: Models, state: NodeState, paths: Paths) -> None:
    """Compute one claimed process job and settle it."""
    warnings = processing_warnings(state, state.study(job.study_uid))
    with Heartbeat(paths.heartbeat(job.study_uid, job.version), config.execution.heartbeat_s):
        outcome = compute(job.study_uid, job.version, warnings=warnings, attempt=job.attempts, config=config,
                          models=models, paths=paths)
    settle(job, outcome, config, state, paths)


def worker_main(config: Config, parent_pid: int | None = None) -> None:
    """The processing loop (its own process): models loaded once, one study at a time."""
    from glioma_node.service.logs import configure
    from glioma_node.service.pipeline import load_models

    configure()
    # SIGKILL with the node (even kill -9), so a restarted node never has an orphan worker
    # processing the same job beside its own; elsewhere the parent-pid check below ends it
    die_with_parent(signal.SIGKILL)
    paths = Paths(config.data_dir)
    state = NodeState(paths.database)
    models = load_models(config)
    log.info("worker ready", extra={"pid": os.getpid()})
    waiting = ""  # why the worker takes no job now (said once)
    while parent_pid is None or os.getppid() == parent_pid:
        try:
            # below the watermark results could not be written: the jobs wait queued until space returns
            if paths.disk_low(config.node.min_free_bytes):
                job, why = None, "the data folder is below node.min_free_mb"
            else:
                job, why = state.claim((JobKind.PROCESS,)), ""
        except (OSError, sqlite3.Error) as exc:  # a full disk, a locked database: wait, never die
            job, why = None, f"{type(exc).__name__}: {exc}"
        if why != waiting:
            if why:
                log.error("worker takes no jobs now", extra={"reason": why})
            else:
                log.info("worker takes jobs again")
            waiting = why
        if job is None:
            time.sleep(2.0 if why else 0.5)
            continue
        try:
            run_process(job, config, models, state, paths)
        except Exception as exc:  # noqa: BLE001 - settling failed (the database, the disk): the job runs again
            log.exception("process job error", extra={"study": job.study_uid})
            while True:  # a job left running would wait for this worker's death: queue it again, however long it takes
                try:
                    state.retry(job.id, f"{type(exc).__name__}: {exc}", config.worker.retry_delay_s * job.attempts)
                    break
                except sqlite3.Error:
                    log.exception("process job not re-queued yet", extra={"study": job.study_uid})
                    time.sleep(2.0)


def main() -> None:
    """``python -m glioma_node.service.worker --config FILE --parent-pid PID`` (started by the node)."""
    child_main("glioma_node.service.worker", worker_main)


if __name__ == "__main__":
    main()
