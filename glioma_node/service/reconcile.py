"""Reconciliation: record what the spool holds and the database missed.

An instance is acknowledged once its spool file is fsynced; its row follows a moment
later (:mod:`glioma_node.service.recorder`). A process that dies in between (the node,
or one receiver of several) leaves acknowledged instances without a row, and they are
recorded here, through the same intake and its checks, at the node's start and after a
receiver's death.

Such an instance was acknowledged on an association that was still open when its process
died (an association's instances are all recorded before its end is), so it is recorded
under an *interrupted* association (:meth:`NodeState.recovered_association`): its series
counts as cut off, as it would have with its own association, and a series that is short
of the count its headers announce waits for the rest or the force timeout instead of
being processed after the quiet period.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from pydicom.filereader import read_file_meta_info

from glioma_node.dicom_io.bounded import ReadLimits
from glioma_node.service.intake import Intake, Outcome
from glioma_node.service.spool import Spool
from glioma_node.service.state import NodeState

log = logging.getLogger(__name__)


def reconcile(spool: Spool, state: NodeState, *, calling_aes: Sequence[str] = (), remove_partials: bool = True,
              written_before: float | None = None, limits: ReadLimits | None = None) -> int:
    """Record spooled instances the database missed; how many. A database error
    (``sqlite3.Error``: locked, full) is raised: nothing may be skipped for it.

    ``calling_aes``: the AE titles of the associations the death interrupted (with one,
    the study keeps its caller for ``dispatch.return_to_caller``); ``remove_partials``:
    delete temporary files first (never acknowledged; only when nothing else writes the
    spool, i.e. at the node's start); ``written_before``: consider only files whose
    modification time (epoch s) is earlier (after a receiver's death, so that the live
    receivers' instances that are waiting for their batch commit are left to it);
    ``limits``: the intake's bounds (:meth:`NodeSettings.read_limits`)."""
    removed = spool.remove_partials() if remove_partials else 0
    known = state.known_paths()
    intake = Intake(spool, state, limits=limits)
    association: str | None = None
    added = 0
    for path in spool.root.rglob("*.dcm"):
        if str(path) in known or not path.is_file():
            continue
        try:
            if written_before is not None and path.stat().st_mtime >= written_before:
                continue
            # the spool holds Part 10 files the intake wrote: the meta names the class
            sop_class = str(read_file_meta_info(path).MediaStorageSOPClassUID)
            if association is None:
                association = state.recovered_association(list(calling_aes))
            answer = intake.admit(path.read_bytes(), sop_class, association=association, peer="spool", spooled=path)
        except sqlite3.Error:  # the database, not the file: the caller tries the whole reconciliation again
            raise
        except Exception as exc:  # noqa: BLE001 - OSError, a parse error: the file is kept, not used
            log.warning("spooled file not recorded: %s", exc, extra={"path": str(path)})
            continue
        if answer.outcome is Outcome.RECEIVED:
            added += 1
        elif answer.outcome is Outcome.REFUSED:
            log.warning("spooled file not recorded: %s", answer.reason, extra={"path": str(path)})
    if removed or added:
        log.info("reconciled spool", extra={"partials_removed": removed, "instances_added": added,
                                            "association": association})
    return added
