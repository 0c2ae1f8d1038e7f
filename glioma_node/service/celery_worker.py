"""``glioma-node worker``: a Celery worker that runs process jobs for a node
(``execution.engine: celery``).

Run it on any machine that mounts the node's ``data_dir`` at the same path and reaches
its broker; start as many as the hardware allows. ``--concurrency N`` runs N studies at
once in threads of one process (Celery's ``threads`` pool); each thread loads its own
copy of the models on its first job (about 2 GB each: a network is never shared by two
studies at once, since Grad-CAM hooks its layers). Not prefork: its pool processes are daemonic, and a daemonic process
may not start the radiomics worker processes a study needs (every study failed with
"daemonic processes are not allowed to have children"). The radiomics workers are
counted against the worker's CPUs: with ``models.radiogenomics.workers`` unset, each
study gets the CPUs this process may use divided by N (at least one, at most four). A worker declares the queues it
serves (``--queues gpu`` on a GPU machine, ``cpu`` elsewhere). It reads the spool and
writes the results and the job's outcome into ``data_dir``; it never touches the node's
database (see :mod:`glioma_node.service.handoff`).
"""
from __future__ import annotations

import logging
import os
import threading

from celery import Celery

from glioma_node.service.celery_app import PROCESS_TASK, make_app
from glioma_node.service.config import Config, QueueName
from glioma_node.service.handoff import Heartbeat, JobOutcome, JobResult, worker_name
from glioma_node.service.paths import Paths

log = logging.getLogger(__name__)
# Each pool thread loads its own models on its first job: the networks are not shared
# between studies running at once (Grad-CAM's hooks on a shared network would catch the
# other study's forward pass and return its map).
_models = threading.local()


def run_task(config: Config, study_uid: str, version: int, warnings: list[str], attempt: int) -> str:
    """One process task: compute the study version (models loaded on first use) under a
    heartbeat; the result's name. Every failure ends in outcome.json, never in silence."""
    from glioma_node.service.compute import compute
    from glioma_node.service.pipeline import load_models

    paths = Paths(config.data_dir)
    with Heartbeat(paths.heartbeat(study_uid, version), config.execution.heartbeat_s):
        try:
            if getattr(_models, "models", None) is None:
                _models.models = load_models(config)
        except Exception as exc:  # noqa: BLE001 - a model that does not load is this job's ERROR, retried by the node
            log.exception("models not loaded")
            outcome = JobOutcome(JobResult.ERROR, f"models not loaded: {type(exc).__name__}: {exc}", attempt=attempt,
                                 worker=worker_name())
            outcome.write(paths.outcome(study_uid, version))
            return outcome.result.value
        outcome = compute(study_uid, version, warnings=warnings, attempt=attempt, config=config,
                          models=_models.models, paths=paths)
    return outcome.result.value


def build_app(config: Config) -> Celery:
    """The Celery application with the process task bound to ``config``."""
    app = make_app(config.execution)

    @app.task(name=PROCESS_TASK)
    def process(study_uid: str, version: int, warnings: list[str], attempt: int) -> str:
        return run_task(config, study_uid, version, warnings, attempt)

    return app


def radiomics_workers(config: Config, concurrency: int) -> Config:
    """``config`` with ``models.radiogenomics.workers`` set, when it is not, to this
    process's CPUs shared among ``concurrency`` studies at once (1 to 4 each)."""
    rg = config.models.radiogenomics
    if rg.workers is not None:
        return config
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, min(4, cpus // max(concurrency, 1)))
    models = config.models.model_copy(update={"radiogenomics": rg.model_copy(update={"workers": share})})
    return config.model_copy(update={"models": models})


def worker_main(config: Config, queues: list[QueueName], concurrency: int = 1) -> None:
    """Run the Celery worker until it is stopped (SIGTERM finishes the running job first)."""
    from glioma_node.service.logs import configure

    configure()
    config = radiomics_workers(config, concurrency)
    app = build_app(config)
    log.info("celery worker starting", extra={"queues": [q.value for q in queues], "concurrency": concurrency,
                                              "radiomics_workers": config.models.radiogenomics.workers,
                                              "data_dir": str(config.data_dir)})
    app.worker_main(["worker", "--loglevel=INFO", "--queues", ",".join(q.value for q in queues),
                     "--concurrency", str(concurrency), "--pool", "threads",
                     "--hostname", f"glioma-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"])
