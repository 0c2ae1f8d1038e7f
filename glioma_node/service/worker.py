"""The worker: ``process`` jobs (the pipeline on a spooled study), in their own process.

:func:`worker_main` runs in a child of the serving process (``python -m
glioma_node.service.worker``) so that inference never slows receiving, and so that the
serving process never imports the models (``send`` jobs run there:
:func:`glioma_node.service.dispatch.send_pending`). A process job is idempotent: one
whose results are already on disk only queues the sends.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import StudySurvey, survey
from glioma_node.inference.analyze import Models
from glioma_node.inference.lifetime import die_with_parent
from glioma_node.service.assembly import FORCED, incomplete_series
from glioma_node.service.config import Config
from glioma_node.service.dispatch import targets
from glioma_node.service.paths import Paths
from glioma_node.service.pipeline import OutcomeStatus, run_study
from glioma_node.service.spool import Spool
from glioma_node.service.state import Job, JobKind, NodeState, Study, StudyState

log = logging.getLogger(__name__)


def _findings(folder: Path) -> dict[str, Any] | None:
    path = folder / "findings.json"
    return json.loads(path.read_text()) if path.exists() else None


def _queue_sends(job: Job, config: Config, state: NodeState, paths: Paths, folder: Path) -> int:
    study = state.study(job.study_uid)
    files = sorted((folder / "dicom").glob("*.dcm"))
    planned = targets(config, study.calling_ae if study else None)
    for target in planned:
        box = paths.outbox(target, job.study_uid, job.version)
        box.mkdir(parents=True, exist_ok=True)
        for path in files:
            if not (box / path.name).exists():
                os.link(path, box / path.name)
        state.enqueue(JobKind.SEND, job.study_uid, job.version, target)
    return len(planned)


def processing_warnings(state: NodeState, study: Study) -> list[str]:
    """What the results must say about the data they were computed on: series with fewer
    instances than announced, and a study processed at the force timeout."""
    warnings = incomplete_series(state.series(study.study_uid))
    if study.reason == FORCED:
        warnings.append(f"processed at the force timeout, not because every series was complete ({study.reason})")
    return warnings


def spooled_study(folder: Path, study_uid: str, config: Config) -> StudySurvey | None:
    """The survey of one spooled study (headers only), or None when nothing in ``folder`` is readable."""
    studies = survey(scan(folder), config.sequences, decode=False, min_confidence=config.thresholds.min_role_confidence)
    return next((s for s in studies if s.study_instance_uid == study_uid), None)


def run_process(job: Job, config: Config, models: Models, state: NodeState, paths: Paths) -> None:
    """Process one study version from the spool into its results folder, then queue its sends."""
    folder = paths.results(job.study_uid, job.version)
    findings = _findings(folder)
    started = time.time()
    processed: dict[str, int] = {}
    if findings is not None and findings.get("status") == OutcomeStatus.DONE:  # a re-run: only the sends
        whole_tumour_ml = findings["segmentation"]["volumes_ml"]["whole_tumour"]
        warnings = len(findings.get("warnings", []))
    else:
        study = state.study(job.study_uid)
        spooled = spooled_study(Spool(paths.spool).study_dir(job.study_uid), job.study_uid, config)
        if spooled is None:
            reason = "no readable study in the spool"
            state.fail(job.id, reason)
            state.set_state(job.study_uid, StudyState.FAILED, reason)
            log.warning("processing failed", extra={"study": job.study_uid, "version": job.version, "reason": reason})
            return
        outcome = run_study(spooled, models, folder, required_roles=config.assembly.required_roles,
                            warnings=processing_warnings(state, study) if study else [])
        # never below the snapshot the assembly decided on, so a recorded file the scan
        # cannot use does not look new forever
        processed["processed_instances"] = max(outcome.instances, (study.processed_instances if study else None) or 0)
        if outcome.status is not OutcomeStatus.DONE:
            reason = outcome.error or "failed"
            state.fail(job.id, reason)
            state.set_state(job.study_uid, StudyState.FAILED, reason, **processed)
            log.warning("processing failed", extra={"study": job.study_uid, "version": job.version, "reason": reason})
            return
        assert outcome.findings is not None  # a DONE outcome carries its findings
        whole_tumour_ml = outcome.findings.volumes_ml["whole_tumour"]
        warnings = len(outcome.findings.warnings)
    sends = _queue_sends(job, config, state, paths, folder)
    state.set_state(job.study_uid, StudyState.SENDING if sends else StudyState.DONE, None, **processed)
    state.finish(job.id)
    log.info("processed", extra={"study": job.study_uid, "version": job.version, "seconds": round(time.time() - started, 2),
                                 "sends": sends, "whole_tumour_ml": whole_tumour_ml, "warnings": warnings})


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
    policy = config.worker
    log.info("worker ready", extra={"pid": os.getpid()})
    while parent_pid is None or os.getppid() == parent_pid:
        job = state.claim((JobKind.PROCESS,))
        if job is None:
            time.sleep(0.5)
            continue
        try:
            run_process(job, config, models, state, paths)
        except Exception as exc:  # an unexpected error: retried, then recorded; the worker lives on
            log.exception("process job error", extra={"study": job.study_uid})
            error = f"{type(exc).__name__}: {exc}"
            if job.attempts >= policy.max_attempts:
                state.fail(job.id, error)
                state.set_state(job.study_uid, StudyState.FAILED, error)
            else:
                state.retry(job.id, error, policy.retry_delay_s * job.attempts)


def main() -> None:
    """``python -m glioma_node.service.worker --config FILE --parent-pid PID`` (started by the node)."""
    import argparse

    from glioma_node.service.config import load_config

    parser = argparse.ArgumentParser(prog="python -m glioma_node.service.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args()
    worker_main(load_config(args.config), args.parent_pid)


if __name__ == "__main__":
    main()
