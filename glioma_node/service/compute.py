"""The compute step of a process job, the same in every worker: the pipeline on one
spooled study version, into its results folder, ending with ``outcome.json``.

It reads only the shared data folder (spool, results) and never the node's database, so
it runs in the local worker process and on Celery workers on other machines alike (see
:mod:`glioma_node.service.handoff`). It is idempotent: a version whose results are
already complete is not computed again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from glioma_node.dicom_io.results.context import ResultVersion, previous_reports
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import StudySurvey, survey
from glioma_node.inference.analyze import Models
from glioma_node.service.config import Config
from glioma_node.service.handoff import JobOutcome, JobResult, worker_name
from glioma_node.service.paths import Paths
from glioma_node.service.pipeline import OutcomeStatus, clinical_source, run_study
from glioma_node.service.spool import Spool

log = logging.getLogger(__name__)


def spooled_study(folder: Path, study_uid: str, config: Config) -> StudySurvey | None:
    """The survey of one spooled study (headers only), or None when nothing in ``folder`` is readable."""
    limits = config.node.read_limits()
    studies = survey(scan(folder, limits.max_bytes), config.sequences, decode=False,
                     min_confidence=config.thresholds.min_role_confidence, limits=limits)
    return next((s for s in studies if s.study_instance_uid == study_uid), None)


def _finished(paths: Paths, study_uid: str, version: int) -> JobOutcome | None:
    """The outcome of an earlier run of this version that needs no new one (DONE or FAILED);
    results of a release without outcome.json count when their findings.json says done."""
    outcome = JobOutcome.read(paths.outcome(study_uid, version))
    if outcome is not None:
        return outcome if outcome.result is not JobResult.ERROR else None
    findings = paths.results(study_uid, version) / "findings.json"
    if findings.exists() and json.loads(findings.read_text()).get("status") == OutcomeStatus.DONE:
        return JobOutcome(JobResult.DONE, worker=worker_name(), finished_at=time.time())
    return None


def compute(study_uid: str, version: int, *, warnings: list[str], attempt: int, config: Config, models: Models,
            paths: Paths) -> JobOutcome:
    """Run the pipeline on ``study_uid`` as spooled into ``paths.results(study_uid, version)``;
    the outcome, also written there as outcome.json (last). ``warnings``: what the node
    knows about the data (incomplete series, a forced study), carried into the results."""
    earlier = _finished(paths, study_uid, version)
    if earlier is not None:
        log.info("already computed", extra={"study": study_uid, "version": version})
        return earlier
    started = time.time()
    try:
        spooled = spooled_study(Spool(paths.spool).study_dir(study_uid), study_uid, config)
        if spooled is None:
            outcome = JobOutcome(JobResult.FAILED, "no readable study in the spool", attempt=attempt)
        else:
            folder = paths.results(study_uid, version)
            # a later version is marked as such and names the report it replaces
            marked = ResultVersion(version, previous_reports(folder.parent, version))
            run = run_study(spooled, models, folder, required_roles=config.assembly.required_roles,
                            warnings=warnings, clinical=clinical_source(config), version=marked)
            findings = run.findings
            outcome = JobOutcome(JobResult(run.status.value), run.error, run.instances, attempt,
                                 whole_tumour_ml=findings.volumes_ml["whole_tumour"] if findings else None,
                                 warnings=len(findings.warnings) if findings else 0)
    except Exception as exc:  # noqa: BLE001 - recorded as ERROR: the node retries it, the worker lives on
        log.exception("process job error", extra={"study": study_uid, "version": version})
        outcome = JobOutcome(JobResult.ERROR, f"{type(exc).__name__}: {exc}", attempt=attempt)
    outcome = replace(outcome, worker=worker_name(), started_at=started, finished_at=time.time())
    outcome.write(paths.outcome(study_uid, version))
    log.info("computed", extra={"study": study_uid, "version": version, "result": outcome.result.value,
                                "seconds": round(time.time() - started, 2)})
    return outcome
