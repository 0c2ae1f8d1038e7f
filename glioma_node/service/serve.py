"""`glioma-node serve`: the node. Receive, assemble, process, send back, durably.

One process listens (:mod:`glioma_node.service.scp`; with ``node.receivers`` > 1 more
processes listen beside it, :mod:`glioma_node.service.receivers`), assembles studies (:mod:`glioma_node.service.assembly`), sends
results (:func:`glioma_node.service.dispatch.send_pending`) and serves /health and /metrics; process
jobs run on the configured engine (:mod:`glioma_node.service.engines`: a child process
beside the node, or Celery workers sharing its data folder). Everything that matters is
on disk (spool, SQLite state, results, outbox), so after a crash — even kill -9 — a
restart reconciles the spool with the database, re-queues interrupted jobs, and goes on:
nothing acknowledged is lost and no result is sent twice under different UIDs.
"""
from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable

from glioma_node.core.files import PARTIAL_DIR, remove_partials
from glioma_node.service.assembly import tick
from glioma_node.service.config import Config, EngineKind
from glioma_node.service.dispatch import send_pending
from glioma_node.service.engines import make_engine
from glioma_node.service.metrics import MetricsServer
from glioma_node.service.paths import Paths
from glioma_node.service.receivers import Receivers
from glioma_node.service.reconcile import reconcile
from glioma_node.service.scp import StorageScp
from glioma_node.service.spool import BLANKS, Spool
from glioma_node.service.state import NodeState
from glioma_node.service.surveyor import Surveyor

log = logging.getLogger(__name__)


class Node:
    """The running node (see the module doc); :meth:`run` blocks until :meth:`stop`.

    ``listen`` False: no DICOM listener (the Orthanc plugin feeds the spool itself);
    ``local`` stores a result file into the Orthanc the node runs in; ``on_tick`` runs
    once a second in the loop (the plugin's ingest and status reports); ``survey_apart``
    surveys complete studies in a child process (:mod:`glioma_node.service.surveyor`), off
    the GIL the listener needs (the standalone node; inside Orthanc the survey stays in
    the embedded interpreter).
    """

    def __init__(self, config: Config, listen: bool = True, local: Callable[[bytes], None] | None = None,
                 on_tick: Callable[[], None] | None = None, survey_apart: bool = False):
        self.config = config
        self.paths = Paths(config.data_dir)
        self.spool = Spool(self.paths.spool, config.node.min_free_bytes, blanks=BLANKS if listen else 0)
        self.state = NodeState(self.paths.database)
        self.scp = StorageScp(config, self.spool, self.state) if listen else None
        self.local, self.on_tick = local, on_tick
        self.stopping = threading.Event()
        self.engine = make_engine(config, self.state, self.paths)
        self.metrics: MetricsServer | None = None
        self.surveyor = Surveyor(self.spool, config) if survey_apart else None
        self.receivers = Receivers(config, self.paths) if listen else None
        self.faults: dict[str, str] = {}  # loop step -> its current error (see run)

    def health(self) -> dict:
        """``/health``: ok or degraded with the reasons (the disk below its watermark, the
        worker or broker down, a step of the node's loop failing, sends failing), whether
        the worker lives, free spool bytes, whether the SCP listens, the oldest result not
        yet delivered (s)."""
        reasons: list[str] = []
        free = self.spool.free_bytes()
        if free < self.spool.min_free_bytes:
            reasons.append(f"disk: {free // 1024**2} MB free in data_dir, below node.min_free_mb "
                           f"({self.spool.min_free_bytes // 1024**2} MB); C-STORE is answered 0xA700")
        worker_alive = self.engine.alive()
        if not worker_alive:
            reasons.append("worker: not running" if self.config.execution.engine is EngineKind.LOCAL
                           else "broker: not reachable")
        reasons += [f"{step}: {error}" for step, error in sorted(self.faults.items())]
        report: dict = {"worker_alive": worker_alive, "spool_free_bytes": free,
                        "listening": self.scp is not None and self.scp.server is not None}
        try:
            sends = self.state.send_health()
        except sqlite3.Error as exc:
            reasons.append(f"state: {exc}")
        else:
            if sends.failing:
                reasons.append(f"dispatch: {sends.failing} send(s) failing, the last: {sends.last_error}")
            report |= {"sends_failing": sends.failing, "oldest_unsent_s": round(sends.oldest_unsent_s, 1)}
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, **report}

    def metric_values(self) -> dict[str, float]:
        """``/metrics``: the state's counts, the SCP's counters, free spool bytes, worker up."""
        values = dict(self.state.metrics())
        counts = self.scp.counters.snapshot() if self.scp else Counter()
        if self.receivers is not None:
            counts.update(self.receivers.counts())
        for name, count in counts.items():
            values[f"glioma_node_{name}_total"] = count
        values["glioma_node_spool_free_bytes"] = self.spool.free_bytes()
        values["glioma_node_worker_up"] = int(self.engine.alive())
        return values

    def start(self) -> None:
        """Recover interrupted jobs, reconcile the spool, start the worker, the listener and /metrics."""
        interrupted = self.state.open_calling_aes()
        requeued = self.state.recover()
        reconcile(self.spool, self.state, calling_aes=interrupted, limits=self.config.node.read_limits())
        # temporary files a killed writer left in the data folder (a Celery worker elsewhere
        # may be writing now: only those older than a worker's heartbeat can be stale)
        grace = self.config.execution.stale_after_s if self.config.execution.engine is EngineKind.CELERY else 0.0
        removed = sum(remove_partials(self.paths.data_dir / part, older_than_s=grace)
                      for part in ("results", "outbox", "receivers", PARTIAL_DIR))
        if removed:
            log.info("temporary files of interrupted writers removed", extra={"files": removed})
        if requeued:
            log.info("jobs re-queued after restart", extra={"jobs": requeued})
        self.engine.start()
        if self.scp is not None:
            self.scp.start()
        if self.receivers is not None:
            self.receivers.start()
        if self.config.node.metrics_port:
            self.metrics = MetricsServer.for_node(self.config.node, self.health, self.metric_values)

    def run(self) -> None:
        """Assemble and dispatch until stopped (the SCP and the worker run alongside).

        No step's failure ends the node: a full disk, a locked or broken database, a
        surveyor that died are each logged once, reported by ``/health`` (degraded, with
        the reason) and tried again; when they pass the node carries on by itself."""
        last_tick = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - last_tick >= 1.0:
                last_tick = now
                if self.on_tick is not None:
                    self._step("plugin", self.on_tick)
                self._step("assembly", lambda: tick(self.state, self.spool, self.config,
                                                    roles=self.surveyor.roles if self.surveyor else None))
            self._step("engine", self.engine.step)
            if (receivers := self.receivers) is not None:
                self._step("receivers", lambda: receivers.step(self.spool, self.state))
            sent = self._step("dispatch", lambda: send_pending(self.config, self.state, self.paths, self.local))
            if self.faults:
                self.stopping.wait(1.0)  # something is failing: try again in a second, do not spin
            elif not sent:
                self.stopping.wait(0.2)

    def _step(self, name: str, step: Callable[[], object]) -> object:
        """Run one step of the loop; a failure is recorded in :attr:`faults` (and logged
        when it is new), never raised."""
        try:
            result = step()
        except Exception as exc:  # noqa: BLE001 - the node stays up whatever a step meets (see run)
            error = f"{type(exc).__name__}: {exc}"
            if self.faults.get(name) != error:
                log.error("node step failed; retrying", extra={"step": name, "error": error})
            self.faults[name] = error
            return None
        if self.faults.pop(name, None) is not None:
            log.info("node step recovered", extra={"step": name})
        return result

    def stop(self) -> None:
        """Stop listening and serving metrics; end the worker (SIGTERM, then SIGKILL after 30 s)."""
        self.stopping.set()
        if self.scp is not None:
            self.scp.stop()
        if self.receivers is not None:
            self.receivers.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self.engine.stop()
        if self.surveyor is not None:
            self.surveyor.close()


def serve(config: Config) -> None:
    """Run the node until SIGINT or SIGTERM."""
    node = Node(config, survey_apart=True)
    node.start()

    def on_signal(signum, frame) -> None:
        log.info("stopping", extra={"signal": signum})
        node.stopping.set()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        node.run()
    finally:
        node.stop()
