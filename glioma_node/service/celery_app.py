"""The Celery application the node publishes to and the workers consume from
(``execution.engine: celery``).

Delivery is at least once, and every setting below serves that:

* ``task_acks_late``: a task is acknowledged after it ran, not when it was received, so
  a worker that dies mid-job leaves it unacknowledged;
* ``task_reject_on_worker_lost``: (for a prefork pool; the node's workers use threads,
  see :mod:`glioma_node.service.celery_worker`) a pool process killed mid-job puts its
  task back on the queue at once;
* ``worker_prefetch_multiplier`` 1: a worker holds one task beyond the one it runs, so a
  dying worker strands at most that many;
* ``visibility_timeout`` (Redis): a task not acknowledged within it goes to another worker;
  it is above the longest job (``execution.visibility_timeout_s``, checked against
  ``stale_after_s``) so a job still running is never handed out twice by the broker.

The broker is only a doorbell: the task names a study and a version, never DICOM bytes,
and the node's database stays the source of truth; the node publishes a task again when
its worker's heartbeat goes stale or no worker started it within
``execution.requeue_after_s`` (a broker restart that lost its queue), see
:mod:`glioma_node.service.engines`. Results are idempotent (deterministic UIDs), so a
duplicate costs time, never a second result set.

This module imports no model code: the node imports it to publish.
"""
from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from glioma_node.service.config import Execution

PROCESS_TASK = "glioma_node.process"


@dataclass(frozen=True)
class ProcessTask:
    """The arguments of a process task: the study, the version to compute, the node's
    warnings about its data, and the attempt number (for the outcome)."""

    study_uid: str
    version: int
    warnings: list[str]
    attempt: int


def make_app(execution: Execution) -> Celery:
    """The Celery application for ``execution`` (broker, queue and delivery settings)."""
    app = Celery("glioma_node", broker=execution.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=execution.queue.value,
        broker_transport_options={"visibility_timeout": execution.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # publishing fails fast when the broker is down: the node keeps the job queued and tries again
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 1},
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
