"""Extra processes accepting associations on the node's port (``node.receivers`` > 1).

One Python process receives with one GIL: its associations take turns, however many
cores the machine has. With ``node.receivers`` = N the node starts N - 1 receiver
processes, and every listening socket, the node's own included, sets SO_REUSEPORT, so
the kernel spreads new connections among the N processes. A receiver runs the same
:class:`~glioma_node.service.scp.StorageScp` and intake into the same spool and state
(SQLite in WAL mode takes writers from several processes); the node alone assembles,
processes and sends. Each receiver writes its counters to
``data_dir/receivers/<pid>.json`` every second, and the node adds them to ``/metrics``.

A receiver that dies is started again by the node, which then closes the associations
it had open (interrupted: their series count as cut off) and, :data:`RECONCILE_AFTER_S`
later, records what it had acknowledged (fsynced in the spool) but not yet recorded
(:func:`glioma_node.service.reconcile.reconcile`). A receiver ends with the node
(SIGTERM on the node's death, and a parent-pid check).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter

from glioma_node.core.files import write_text_atomic
from glioma_node.core.lifetime import die_with_parent
from glioma_node.service.children import child_main, start_child
from glioma_node.service.config import Config
from glioma_node.service.paths import Paths
from glioma_node.service.reconcile import reconcile
from glioma_node.service.spool import Spool
from glioma_node.service.state import NodeState

log = logging.getLogger(__name__)

SNAPSHOT_S = 1.0  # how often a receiver writes its counters
STOP_S = 30.0  # how long a receiver may take to end its associations on SIGTERM
# after a receiver's death, the wait before its spool files are reconciled: the live
# receivers' instances of that moment have been committed by their recorders by then
RECONCILE_AFTER_S = 2.0


class Receivers:
    """The node's extra receiver processes: start, restart when one ends, stop, counters."""

    def __init__(self, config: Config, paths: Paths):
        self.config, self.paths = config, paths
        self.processes: list[subprocess.Popen] = []
        self._deaths: list[float] = []  # when a receiver died whose spool is not reconciled yet (epoch s)

    def start(self) -> None:
        """Start ``node.receivers - 1`` processes (none by default); old counter files go."""
        if self.paths.receivers.exists():
            for old in self.paths.receivers.glob("*.json"):
                old.unlink(missing_ok=True)
        self.processes = [self._start() for _ in range(self.config.node.receivers - 1)]

    def _start(self) -> subprocess.Popen:
        return start_child("glioma_node.service.receivers", self.config, self.paths)

    def step(self, spool: Spool, state: NodeState) -> None:
        """Start again any receiver that ended (its counters stay counted), close its
        associations, and reconcile what it acknowledged (see the module doc)."""
        for i, process in enumerate(self.processes):
            if process.poll() is not None:
                calling = state.interrupt_associations(process.pid)
                log.error("receiver process ended; starting it again",
                          extra={"exitcode": process.returncode, "associations_interrupted": len(calling)})
                self._deaths.append(time.time())
                self.processes[i] = self._start()
        now = time.time()
        while self._deaths and now - self._deaths[0] >= RECONCILE_AFTER_S:
            died = self._deaths[0]
            # no calling AE: the spool may hold a live receiver's instance not yet committed,
            # and results must never go back to the wrong peer (a sender's retry brings its own)
            added = reconcile(spool, state, remove_partials=False, written_before=died,
                              limits=self.config.node.read_limits())
            self._deaths.pop(0)  # only once it went through: a failure (a full disk) tries again
            log.info("receiver's spool reconciled", extra={"instances_added": added})

    def counts(self) -> Counter:
        """The receivers' counters (associations, instances by outcome), summed."""
        total: Counter = Counter()
        for snapshot in self.paths.receivers.glob("*.json") if self.paths.receivers.exists() else ():
            try:
                total.update(json.loads(snapshot.read_text()))
            except (OSError, ValueError):  # replaced while read: the next scrape has it
                continue
        return total

    def stop(self) -> None:
        """SIGTERM every receiver (they end their associations), SIGKILL after :data:`STOP_S`."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []


def receiver_main(config: Config, parent_pid: int | None = None) -> None:
    """One receiver process: listen on the node's port beside it until SIGTERM or the node ends."""
    from glioma_node.dicom_io.scan import tolerate_nonconformant_values
    from glioma_node.service.logs import configure
    from glioma_node.service.scp import StorageScp
    from glioma_node.service.spool import BLANKS

    configure()
    tolerate_nonconformant_values()
    die_with_parent(signal.SIGTERM)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    paths = Paths(config.data_dir)
    paths.receivers.mkdir(parents=True, exist_ok=True)
    counts_path = paths.receivers / f"{os.getpid()}.json"
    spool = Spool(paths.spool, config.node.min_free_bytes, blanks=BLANKS)
    scp = StorageScp(config, spool, NodeState(paths.database))
    scp.start()
    log.info("receiver ready", extra={"pid": os.getpid(), "port": config.node.port})
    written: Counter | None = None
    try:
        while not stopping.wait(SNAPSHOT_S) and (parent_pid is None or os.getppid() == parent_pid):
            counts = scp.counters.snapshot()
            if counts != written:
                write_text_atomic(counts_path, json.dumps(counts))
                written = counts
    finally:
        scp.stop()
        write_text_atomic(counts_path, json.dumps(scp.counters.snapshot()))


def main() -> None:
    """``python -m glioma_node.service.receivers --config FILE --parent-pid PID`` (started by the node)."""
    child_main("glioma_node.service.receivers", receiver_main)


if __name__ == "__main__":
    main()
