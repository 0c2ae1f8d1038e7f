"""Study assembly: is a study ready to process?

A series is complete when it has as many instances as its headers announce
(ImagesInAcquisition; one object for an enhanced multi-frame series), or when no
association that sent it is still open and nothing new arrived for the quiet period.
When every series of a study is complete, the study's headers in the spool are surveyed:
with the required roles all present it is queued for processing at once (no blanket
wait); without them it waits, with the missing roles as its reason. After the force
timeout a study is processed with what it has if the roles are there, else it fails
with the reason. Instances that arrive after processing start a new version of the
results when ``assembly.reprocess_new_series`` says so.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import survey
from glioma_node.service.config import Config
from glioma_node.service.spool import Spool
from glioma_node.service.state import Series, SqliteQueue, Study

log = logging.getLogger(__name__)
# the reason a study carries while it is processed at the force timeout (the worker warns on it)
FORCED = "forced: some series may be incomplete"


@dataclass(frozen=True)
class Decision:
    study_uid: str
    action: str  # "process", "wait", "fail", "none"
    reason: str = ""


def series_complete(series: Series, open_association: bool, quiet_s: float, now: float, broken: bool = False) -> bool:
    """Complete by count (when the header announces one) or by the quiet period once no association is open.

    ``broken``: some of the series came on an association that was aborted or was open
    when the node died. Such a series with fewer instances than announced is never
    complete by the quiet period: the sender was cut off, and only the force timeout
    (or the missing instances) ends the wait.
    """
    if series.expected and series.instances >= series.expected:
        return True
    if broken and series.expected:
        return False
    return not open_association and series.last_at is not None and now - series.last_at >= quiet_s


def incomplete_series(series: list[Series]) -> list[str]:
    """One warning per series holding fewer instances than its headers announce."""
    return [f"INCOMPLETE DATA: {s.instances} of {s.expected} instances of series {s.series_uid} (as its headers "
            "announce); results were computed without the missing ones" for s in series
            if s.expected and s.instances < s.expected]


def missing_roles(spool: Spool, study_uid: str, config: Config) -> tuple[list[str], list[str]]:
    """(required roles missing, roles found) from the headers of the study's spooled instances."""
    result = scan(spool.study_dir(study_uid))
    found: set[str] = set()
    for study in survey(result, config.sequences, decode=False, min_confidence=config.thresholds.min_role_confidence):
        found |= set(study.roles)
    return [r for r in config.assembly.required_roles if r not in found], sorted(found)


def decide(study: Study, queue: SqliteQueue, spool: Spool, config: Config, now: float) -> Decision:
    """What to do with one received or waiting study now (see the module doc)."""
    rules = config.assembly
    series = queue.series(study.study_uid)
    open_association = queue.has_open_association(study.study_uid)
    broken = queue.broken_series(study.study_uid)
    complete = all(series_complete(s, open_association, rules.quiet_period_s, now, s.series_uid in broken)
                   for s in series)
    forced = study.last_at is not None and now - study.last_at >= rules.force_timeout_s
    if not (complete or forced):
        return Decision(study.study_uid, "none")
    if study.state == "waiting" and not forced and (study.surveyed_at or 0) >= (study.last_at or 0):
        return Decision(study.study_uid, "none")  # nothing new since the last survey
    missing, found = missing_roles(spool, study.study_uid, config)
    if not missing:
        return Decision(study.study_uid, "process", FORCED if forced and not complete
                        else "required roles complete")
    reason = f"missing {', '.join(missing)} (found {', '.join(found) or 'none'})"
    if forced:
        return Decision(study.study_uid, "fail", f"incomplete after {rules.force_timeout_s:.0f} s: {reason}")
    return Decision(study.study_uid, "wait", reason)


def tick(queue: SqliteQueue, spool: Spool, config: Config, now: float | None = None) -> list[Decision]:
    """One pass over the studies that may have become ready; queues process jobs."""
    now = time.time() if now is None else now
    decisions = []
    candidates = queue.studies(("received", "waiting"))
    if config.assembly.reprocess_new_series:
        candidates += queue.arrived_after_processing()
    for study in candidates:
        decision = decide(study, queue, spool, config, now)
        if decision.action == "process":
            version = study.version + 1
            queue.set_state(study.study_uid, "processing", decision.reason, version=version, surveyed_at=now,
                            processed_at=now, processed_instances=study.instances)
            queue.enqueue("process", study.study_uid, version)
            log.info("study ready", extra={"study": study.study_uid, "version": version, "reason": decision.reason})
        elif decision.action == "wait":
            queue.set_state(study.study_uid, "waiting", decision.reason, surveyed_at=now)
        elif decision.action == "fail":
            queue.set_state(study.study_uid, "failed", decision.reason, surveyed_at=now, processed_at=now,
                            processed_instances=study.instances)
            log.warning("study failed", extra={"study": study.study_uid, "reason": decision.reason})
        if decision.action != "none":
            decisions.append(decision)
    return decisions
