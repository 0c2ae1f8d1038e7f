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
from glioma_node.service.state import Job, NodeState, Study
from glioma_node.service.target import Target

log = logging.getLogger(__name__)


def processing_warnings(state: NodeState, study: Study | None) -> list[str]:
    """What the results must say about the data they were computed on: series with fewer
    instances than announced, a study processed at the force timeout, and instances a
    peer sent again with other content (the first copy was kept and used)."""
    if study is None:
        return []
    warnings = incomplete_series(state.series(study.study_uid))
    warnings += [f"CONFLICTING RESEND: SOP Instance {sop} arrived again with other content (sha256 {received[:12]}… "
                 f"from {peer or 'a peer'}); the first copy (sha256 {stored[:12]}…) was kept and used"
                 for sop, _, stored, received, peer in state.conflicts(study.study_uid)]
    if study.reason == FORCED:
        warnings.append(f"processed at the force timeout, not because every series was complete ({study.reason})")
    return warnings


def _fill_outboxes(job: Job, config: Config, state: NodeState, paths: Paths) -> list[Target]:
    """Link the version's result files into one outbox per target; the targets."""
    study = state.study(job.study_uid)
    files = sorted((paths.results(job.study_uid, job.version) / "dicom").glob("*.dcm"))
    planned = targets(config, study.calling_ae if study else None)
    for target in planned:
        box = paths.outbox(target, job.study_uid, job.version)
        box.mkdir(parents=True, exist_ok=True)
        for path in files:
            if not (box / path.name).exists():
                os.link(path, box / path.name)
    return planned


def _disk_trouble(error: str, config: Config, paths: Paths) -> bool:
    """Whether a job's failure is the data folder's (full now, or full when it failed)."""
    return paths.disk_low(config.node.min_free_bytes) or any(
        sign in error for sign in ("[Errno 28]", "[Errno 122]", "database or disk is full"))


def settle(job: Job, outcome: JobOutcome, config: Config, state: NodeState, paths: Paths) -> None:
    """Record how a running process job ended: DONE queues the sends, FAILED fails the
    study with its reason, ERROR runs the job again after ``worker.retry_delay_s`` × the
    attempt number, until ``worker.max_attempts``."""
    study = state.study(job.study_uid)
    extra = {"study": job.study_uid, "version": job.version, "worker": outcome.worker}
    if outcome.result is JobResult.ERROR:
        error = outcome.error or "error"
        if _disk_trouble(error, config, paths):
            # a full data folder is the node's trouble, not the study's: no attempt spent,
            # the job waits and runs when space returns (its stale outcome would settle it again)
            paths.outcome(job.study_uid, job.version).unlink(missing_ok=True)
            state.unclaim(job.id, f"data folder full: {error}", config.worker.retry_delay_s)
        elif job.attempts >= config.worker.max_attempts:
            state.fail_job(job.id, job.study_uid, error)
        else:
            state.retry(job.id, error, config.worker.retry_delay_s * job.attempts)
        log.warning("process job error", extra={**extra, "attempt": job.attempts, "error": error})
        return
    # never below the snapshot the assembly decided on, so a recorded file the scan
    # cannot use does not look new forever
    processed = {"processed_instances": max(outcome.instances, (study.processed_instances if study else None) or 0)}
    if outcome.result is JobResult.FAILED:
        reason = outcome.error or "failed"
        state.fail_job(job.id, job.study_uid, reason, **processed)
        log.warning("processing failed", extra={**extra, "reason": reason})
        return
    planned = _fill_outboxes(job, config, state, paths)
    state.complete_processing(job.id, job.study_uid, job.version, planned, **processed)
    log.info("processed", extra={**extra, "sends": len(planned), "whole_tumour_ml": outcome.whole_tumour_ml,
                                 "warnings": outcome.warnings})
