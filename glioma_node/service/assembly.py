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

:func:`decide` is the decision alone, a pure function of plain values; :func:`tick`
gathers those values from the state and the spool and carries the decision out.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import survey
from glioma_node.service.config import Assembly, Config
from glioma_node.service.spool import Spool
from glioma_node.service.state import NodeState, Series, Study, StudyState

log = logging.getLogger(__name__)
# the reason a study carries while it is processed at the force timeout (the worker warns on it)
FORCED = "forced: some series may be incomplete"


class Action(StrEnum):
    """What :func:`decide` says to do with a study now."""

    PROCESS = "process"  # queue a process job for a new version
    WAIT = "wait"  # every series complete, a required role missing: wait with that reason
    FAIL = "fail"  # the force timeout passed without the required roles
    SURVEY = "survey"  # ready to judge, but the roles in the spool are needed first
    NONE = "none"  # nothing to do yet


@dataclass(frozen=True)
class Decision:
    """What to do with one study and why."""

    study_uid: str
    action: Action
    reason: str = ""


def series_complete(series: Series, open_association: bool, quiet_s: float, now: float, broken: bool = False) -> bool:
    """Complete by count (when the header announces one) or by the quiet period once no association is open.

    ``broken``: some of the series came on an association that was aborted or was open
    when the node died. Such a series with fewer instances than announced is never
    complete by the quiet period: the sender was cut off, and only the force timeout
    (or the missing instances) ends the wait. ``now`` and the series' times are epoch seconds.
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


def decide(study: Study, series: list[Series], open_association: bool, broken_series: Collection[str],
           roles_found: Collection[str] | None, rules: Assembly, now: float) -> Decision:
    """What to do with one received or waiting study at ``now`` (epoch s); see the module doc.

    ``open_association``: an association that sent part of the study is still open;
    ``broken_series``: series UIDs that came on an aborted or interrupted association;
    ``roles_found``: the roles the study's spooled headers hold, or None when not yet
    surveyed (then a study ready to be judged gets :attr:`Action.SURVEY`, and the caller
    asks again with the roles).
    """
    complete = all(series_complete(s, open_association, rules.quiet_period_s, now, s.series_uid in broken_series)
                   for s in series)
    forced = study.last_at is not None and now - study.last_at >= rules.force_timeout_s
    if not (complete or forced):
        return Decision(study.study_uid, Action.NONE)
    if study.state is StudyState.WAITING and not forced and (study.surveyed_at or 0) >= (study.last_at or 0):
        return Decision(study.study_uid, Action.NONE)  # nothing new since the last survey
    if roles_found is None:
        return Decision(study.study_uid, Action.SURVEY)
    missing = [r for r in rules.required_roles if r not in roles_found]
    if not missing:
        return Decision(study.study_uid, Action.PROCESS, FORCED if forced and not complete
                        else "required roles complete")
    reason = f"missing {', '.join(missing)} (found {', '.join(sorted(roles_found)) or 'none'})"
    if forced:
        return Decision(study.study_uid, Action.FAIL, f"incomplete after {rules.force_timeout_s:.0f} s: {reason}")
    return Decision(study.study_uid, Action.WAIT, reason)


def spooled_roles(spool: Spool, study_uid: str, config: Config) -> set[str]:
    """The roles the headers of a study's spooled instances hold (no pixel data read)."""
    found: set[str] = set()
    limits = config.node.read_limits()
    for study in survey(scan(spool.study_dir(study_uid), limits.max_bytes), config.sequences, decode=False,
                        min_confidence=config.thresholds.min_role_confidence, limits=limits):
        found |= set(study.roles)
    return found


def tick(state: NodeState, spool: Spool, config: Config, now: float | None = None,
         roles: Callable[[str], set[str]] | None = None) -> list[Decision]:
    """One pass over the studies that may have become ready; queues process jobs.

    ``roles``: how a study's spooled roles are found (default :func:`spooled_roles` in
    this process; the standalone node surveys in a child, :mod:`glioma_node.service.surveyor`)."""
    now = time.time() if now is None else now
    roles = roles or partial(spooled_roles, spool, config=config)
    decisions = []
    candidates = state.studies((StudyState.RECEIVED, StudyState.WAITING))
    if config.assembly.reprocess_new_series:
        candidates += state.arrived_after_processing()
    for study in candidates:
        facts = (study, state.series(study.study_uid), state.has_open_association(study.study_uid),
                 state.broken_series(study.study_uid))
        decision = decide(*facts, None, config.assembly, now)
        if decision.action is Action.SURVEY:
            decision = decide(*facts, roles(study.study_uid), config.assembly, now)
        if decision.action is Action.PROCESS:
            version = study.version + 1
            state.start_processing(study.study_uid, version, decision.reason, now, study.instances)
            log.info("study ready", extra={"study": study.study_uid, "version": version, "reason": decision.reason})
        elif decision.action is Action.WAIT:
            state.set_state(study.study_uid, StudyState.WAITING, decision.reason, surveyed_at=now)
        elif decision.action is Action.FAIL:
            state.set_state(study.study_uid, StudyState.FAILED, decision.reason, surveyed_at=now, processed_at=now,
                            processed_instances=study.instances)
            log.warning("study failed", extra={"study": study.study_uid, "reason": decision.reason})
        if decision.action is not Action.NONE:
            decisions.append(decision)
    return decisions
