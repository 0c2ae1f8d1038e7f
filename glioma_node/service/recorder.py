"""Record received instances in the node's state in batches, off the acknowledging thread.

An instance is acknowledged once its spool file is fsynced (:mod:`glioma_node.service.spool`):
the spool is the durable record, and :func:`glioma_node.service.reconcile.reconcile` records
at start whatever a crash left unrecorded. The SQLite row can therefore follow a
moment later, grouped with its neighbours in one transaction, instead of costing
each C-STORE a transaction of its own. :class:`InstanceRecorder` keeps what it has not
committed yet in memory, so a duplicate or a conflicting SOP Instance UID is still
caught at once, and :meth:`InstanceRecorder.flush` commits everything before an
association's end is recorded (a sender that has released its association finds all
of its instances in the state).
"""
from __future__ import annotations

import logging
import sqlite3
import threading

from glioma_node.service.state import NodeState, Received

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed commit (database locked past its busy timeout, disk full)


class InstanceRecorder:
    """Batches :meth:`NodeState.record_instances` on one thread (see the module doc).

    ``delay_s``: how long the thread gathers instances after the first before it
    commits (seconds); ``max_batch``: commit at once when this many are waiting.
    """

    def __init__(self, state: NodeState, delay_s: float = 0.05, max_batch: int = 500):
        self.state, self.delay_s, self.max_batch = state, delay_s, max_batch
        self._pending: list[tuple[Received, str, str]] = []
        self._locations: dict[str, tuple[str, str]] = {}  # SOP Instance UID -> (study, series), not yet committed
        self._queued = self._committed = 0
        self._changed = threading.Condition()
        self._closing = False
        self._flushing = 0  # callers of flush waiting now: commit without gathering
        self._thread: threading.Thread | None = None

    def location(self, sop_uid: str) -> tuple[str, str] | None:
        """(study, series) a received SOP Instance UID belongs to (committed or not), or None."""
        with self._changed:
            pending = self._locations.get(sop_uid)
        return pending or self.state.instance_location(sop_uid)

    def pending_in_series(self, series_uid: str) -> int:
        """Instances of one series queued and not yet committed."""
        with self._changed:
            return sum(1 for _, series in self._locations.values() if series == series_uid)

    def record(self, instance: Received, path: str, association: str) -> None:
        """Queue one spooled instance for the next commit (returns at once)."""
        with self._changed:
            if self._closing:
                raise RuntimeError("the instance recorder is closed")
            self._pending.append((instance, path, association))
            self._locations[instance.sop_uid] = (instance.study_uid, instance.series_uid)
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="instance-recorder", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every instance queued before this call is committed; False on timeout."""
        with self._changed:
            target = self._queued
            self._flushing += 1
            self._changed.notify_all()
            try:
                return self._changed.wait_for(lambda: self._committed >= target, timeout_s)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Commit what is queued and stop the thread."""
        self.flush()
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closing)
                if not self._pending and self._closing:
                    return
                # gather neighbours unless someone waits for this commit (flush) or the batch is full
                self._changed.wait_for(lambda: len(self._pending) >= self.max_batch or self._closing
                                       or self._flushing > 0, self.delay_s)
                batch, self._pending = self._pending, []
            try:
                self.state.record_instances(batch)
            except sqlite3.Error as exc:
                log.error("instances not recorded yet, retrying: %s", exc, extra={"instances": len(batch)})
                with self._changed:
                    self._pending[:0] = batch
                    self._changed.wait(RETRY_S)
                continue
            with self._changed:
                for instance, _, _ in batch:
                    if self._locations.get(instance.sop_uid) == (instance.study_uid, instance.series_uid):
                        del self._locations[instance.sop_uid]
                self._committed += len(batch)
                self._changed.notify_all()
