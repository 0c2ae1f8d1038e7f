"""What passes between the node and a worker through the shared data folder.

The node owns the study state (SQLite, on its own machine); a worker may run anywhere
that mounts ``data_dir``. A worker therefore never writes the database: it writes the
study's results, then :class:`JobOutcome` as ``outcome.json`` (atomically, last), and
keeps a :class:`Heartbeat` file fresh while it works. The node reads both
(:mod:`glioma_node.service.engines`): an outcome settles the job, a stale heartbeat means
the worker died and the job is queued again.

The shared filesystem must make a rename atomic and a written file durable after fsync
(NFSv4, CephFS, a local or block-backed Kubernetes volume; see docs/deploy.md).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from glioma_node.core.files import atomic_path


class JobResult(StrEnum):
    """How a process job ended: DONE (results written), FAILED (the study cannot be used:
    a missing sequence, unreadable data; not retried), ERROR (an unexpected error: retried
    up to ``worker.max_attempts``)."""

    DONE = "done"
    FAILED = "failed"
    ERROR = "error"


@dataclass(frozen=True)
class JobOutcome:
    """The record a worker leaves for the node.

    ``instances``: instances the pipeline read; ``attempt``: the job attempt that wrote it
    (an ERROR of an earlier attempt is not the current attempt's); ``worker``: host and
    pid; ``started_at``, ``finished_at``: epoch seconds (the compute step's, so
    ``started_at`` minus the study's last arrival is the queue latency).
    """

    result: JobResult
    error: str | None = None
    instances: int = 0
    attempt: int = 1
    worker: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    whole_tumour_ml: float | None = None
    warnings: int = 0

    def write(self, path: Path) -> None:
        """Write atomically and durably (temporary name, fsync, rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, fsync=True) as tmp:
            tmp.write_text(json.dumps({**asdict(self), "result": self.result.value}), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> JobOutcome | None:
        """The outcome at ``path``, or None when there is none (or it is unreadable, which a
        complete atomic write never leaves)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{**raw, "result": JobResult(raw["result"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None


def worker_name() -> str:
    """``host:pid`` of this process: who ran a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """A file touched every ``interval_s`` seconds (in a thread) while the ``with`` block
    runs, and removed after it; it holds :func:`worker_name`."""

    def __init__(self, path: Path, interval_s: float):
        self.path, self.interval_s = path, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                os.utime(self.path)
            except OSError:  # the folder went away (a re-run cleared it): the next beat writes it again
                self._touch()

    def _touch(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(worker_name() + "\n")

    def __enter__(self) -> Heartbeat:
        self._touch()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


def heartbeat_age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the heartbeat file was last touched, or None when there is none."""
    try:
        return (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return None
