"""The node's side of a process job: what the results must say about their data, and
what a job's :class:`~glioma_node.service.handoff.JobOutcome` does to the study state.

Only the node runs this (it owns the database); it never imports model code.
"""
from __future__ import annotations

import logging
import os

from glioma_node.service.assembly import FORCED, incomplete_series
from glioma_node.service.config import Config
from glioma_node.service.dispatch import targets
from glioma_node.service.handoff import JobOutcome, JobResult
from glioma_node.service.paths import Paths
from glioma_node.service.state import Job, JobKind, NodeState, Study, StudyState

log = logging.getLogger(__name__)


def processing_warnings(state: NodeState, study: Study | None) -> list[str]:
    """What the results must say about the data they were computed on: series with fewer
    instances than announced, and a study processed at the force timeout."""
    if study is None:
        return []
    warnings = incomplete_series(state.series(study.study_uid))
    if study.reason == FORCED:
        warnings.append(f"processed at the force timeout, not because every series was complete ({study.reason})")
    return warnings


def _queue_sends(job: Job, config: Config, state: NodeState, paths: Paths) -> int:
    study = state.study(job.study_uid)
    files = sorted((paths.results(job.study_uid, job.version) / "dicom").glob("*.dcm"))
    planned = targets(config, study.calling_ae if study else None)
    for target in planned:
        box = paths.outbox(target, job.study_uid, job.version)
        box.mkdir(parents=True, exist_ok=True)
        for path in files:
            if not (box / path.name).exists():
                os.link(path, box / path.name)
        state.enqueue(JobKind.SEND, job.study_uid, job.version, target)
    return len(planned)


def settle(job: Job, outcome: JobOutcome, config: Config, state: NodeState, paths: Paths) -> None:
    """Record how a running process job ended: DONE queues the sends, FAILED fails the
    study with its reason, ERROR runs the job again after ``worker.retry_delay_s`` × the
    attempt number, until ``worker.max_attempts``."""
    study = state.study(job.study_uid)
    extra = {"study": job.study_uid, "version": job.version, "worker": outcome.worker}
    if outcome.result is JobResult.ERROR:
        error = outcome.error or "error"
        if job.attempts >= config.worker.max_attempts:
            state.fail(job.id, error)
            state.set_state(job.study_uid, StudyState.FAILED, error)
        else:
            state.retry(job.id, error, config.worker.retry_delay_s * job.attempts)
        log.warning("process job error", extra={**extra, "attempt": job.attempts, "error": error})
        return
    # never below the snapshot the assembly decided on, so a recorded file the scan
    # cannot use does not look new forever
    processed = {"processed_instances": max(outcome.instances, (study.processed_instances if study else None) or 0)}
    if outcome.result is JobResult.FAILED:
        reason = outcome.error or "failed"
        state.fail(job.id, reason)
        state.set_state(job.study_uid, StudyState.FAILED, reason, **processed)
        log.warning("processing failed", extra={**extra, "reason": reason})
        return
    sends = _queue_sends(job, config, state, paths)
    state.set_state(job.study_uid, StudyState.SENDING if sends else StudyState.DONE, None, **processed)
    state.finish(job.id)
    log.info("processed", extra={**extra, "sends": sends, "whole_tumour_ml": outcome.whole_tumour_ml,
                                 "warnings": outcome.warnings})
