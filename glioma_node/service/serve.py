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
import threading
import time
from collections import Counter
from collections.abc import Callable

from glioma_node.service.assembly import tick
from glioma_node.service.config import Config
from glioma_node.service.dispatch import send_pending
from glioma_node.service.engines import make_engine
from glioma_node.service.intake import reconcile
from glioma_node.service.metrics import MetricsServer
from glioma_node.service.paths import Paths
from glioma_node.service.receivers import Receivers
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
        self.spool = Spool(self.paths.spool, config.node.min_free_mb * 1024**2, blanks=BLANKS if listen else 0)
        self.state = NodeState(self.paths.database)
        self.scp = StorageScp(config, self.spool, self.state) if listen else None
        self.local, self.on_tick = local, on_tick
        self.stopping = threading.Event()
        self.engine = make_engine(config, self.state, self.paths)
        self.metrics: MetricsServer | None = None
        self.surveyor = Surveyor(self.spool, config) if survey_apart else None
        self.receivers = Receivers(config, self.paths) if listen else None

    def health(self) -> dict:
        """``/health``: ok or degraded, whether the worker lives, free spool bytes, whether the SCP listens."""
        free = self.spool.free_bytes()
        worker_alive = self.engine.alive()
        ok = worker_alive and free >= self.spool.min_free_bytes
        return {"status": "ok" if ok else "degraded", "worker_alive": worker_alive, "spool_free_bytes": free,
                "listening": self.scp is not None and self.scp.server is not None}

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
        requeued = self.state.recover()
        reconcile(self.spool, self.state)
        if requeued:
            log.info("jobs re-queued after restart", extra={"jobs": requeued})
        self.engine.start()
        if self.scp is not None:
            self.scp.start()
        if self.receivers is not None:
            self.receivers.start()
        if self.config.node.metrics_port:
            self.metrics = MetricsServer(self.config.node.metrics_port, self.health, self.metric_values,
                                         self.config.node.metrics_bind_address)

    def run(self) -> None:
        """Assemble and dispatch until stopped (the SCP and the worker run alongside)."""
        last_tick = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - last_tick >= 1.0:
                if self.on_tick is not None:
                    self.on_tick()
                tick(self.state, self.spool, self.config, roles=self.surveyor.roles if self.surveyor else None)
                last_tick = now
            self.engine.step()
            if self.receivers is not None:
                self.receivers.step()
            if not send_pending(self.config, self.state, self.paths, self.local):
                self.stopping.wait(0.2)

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
