"""``glioma-node worker``: a Celery worker that runs process jobs for a node
(``execution.engine: celery``).

Run it on any machine that mounts the node's ``data_dir`` at the same path and reaches
its broker; start as many as the hardware allows. Each pool process loads the models
once, on its first job, and runs one study at a time. A worker declares the queues it
serves (``--queues gpu`` on a GPU machine, ``cpu`` elsewhere). It reads the spool and
writes the results and the job's outcome into ``data_dir``; it never touches the node's
database (see :mod:`glioma_node.service.handoff`).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery

from glioma_node.service.celery_app import PROCESS_TASK, make_app
from glioma_node.service.config import Config, QueueName
from glioma_node.service.handoff import Heartbeat, JobOutcome, JobResult, worker_name
from glioma_node.service.paths import Paths

log = logging.getLogger(__name__)
_models: dict[str, Any] = {}  # per pool process: the models, loaded on the first job


def run_task(config: Config, study_uid: str, version: int, warnings: list[str], attempt: int) -> str:
    """One process task: compute the study version (models loaded on first use) under a
    heartbeat; the result's name. Every failure ends in outcome.json, never in silence."""
    from glioma_node.service.compute import compute
    from glioma_node.service.pipeline import load_models

    paths = Paths(config.data_dir)
    with Heartbeat(paths.heartbeat(study_uid, version), config.execution.heartbeat_s):
        try:
            if "models" not in _models:
                _models["models"] = load_models(config)
        except Exception as exc:  # noqa: BLE001 - a model that does not load is this job's ERROR, retried by the node
            log.exception("models not loaded")
            outcome = JobOutcome(JobResult.ERROR, f"models not loaded: {type(exc).__name__}: {exc}", attempt=attempt,
                                 worker=worker_name())
            outcome.write(paths.outcome(study_uid, version))
            return outcome.result.value
        outcome = compute(study_uid, version, warnings=warnings, attempt=attempt, config=config,
                          models=_models["models"], paths=paths)
    return outcome.result.value


def build_app(config: Config) -> Celery:
    """The Celery application with the process task bound to ``config``."""
    app = make_app(config.execution)

    @app.task(name=PROCESS_TASK)
    def process(study_uid: str, version: int, warnings: list[str], attempt: int) -> str:
        return run_task(config, study_uid, version, warnings, attempt)

    return app


def worker_main(config: Config, queues: list[QueueName], concurrency: int = 1) -> None:
    """Run the Celery worker until it is stopped (SIGTERM finishes the running job first)."""
    from glioma_node.service.logs import configure

    configure()
    app = build_app(config)
    log.info("celery worker starting", extra={"queues": [q.value for q in queues], "concurrency": concurrency,
                                              "data_dir": str(config.data_dir)})
    app.worker_main(["worker", "--loglevel=INFO", "--queues", ",".join(q.value for q in queues),
                     "--concurrency", str(concurrency), "--pool", "prefork",
                     "--hostname", f"glioma-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"])
