"""The survey of a complete study's spooled headers, in a child process.

Surveying reads and classifies every header of a study (about 1 ms an instance). In
the receiving process that time is taken from the GIL the SCP's threads need, so
every study that completes while an association goes on slows that association
down. :class:`Surveyor` runs :func:`glioma_node.service.assembly.spooled_roles` in
one spawned child process instead (the answer is the same set of roles) and falls
back to surveying in this process when the child cannot be started or dies.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from glioma_node.service.assembly import spooled_roles
from glioma_node.service.config import Config
from glioma_node.service.spool import Spool

log = logging.getLogger(__name__)

_child: tuple[Spool, Config] | None = None


def _start_child(spool_root: Path, config: Config) -> None:
    global _child
    from glioma_node.dicom_io.scan import tolerate_nonconformant_values
    from glioma_node.service.logs import configure

    configure()  # same JSON lines on the same stderr as the node
    tolerate_nonconformant_values()
    _child = (Spool(spool_root, min_free_bytes=0), config)


def _roles_in_child(study_uid: str) -> set[str]:
    assert _child is not None, "the surveyor's child was not initialised"
    return spooled_roles(_child[0], study_uid, _child[1])


class Surveyor:
    """``roles(study_uid)``: the roles a study's spooled headers hold, surveyed apart."""

    def __init__(self, spool: Spool, config: Config, timeout_s: float = 600.0):
        self.spool, self.config, self.timeout_s = spool, config, timeout_s
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_child, initargs=(self.spool.root, self.config))
        return self._pool

    def roles(self, study_uid: str) -> set[str]:
        """The study's roles (see :func:`spooled_roles`); surveyed here when the child fails."""
        try:
            return self._executor().submit(_roles_in_child, study_uid).result(timeout=self.timeout_s)
        except (BrokenProcessPool, OSError, TimeoutError) as exc:
            log.warning("survey child failed; surveying in the node: %s", exc or type(exc).__name__,
                        extra={"study": study_uid})
            self.close()
            return spooled_roles(self.spool, study_uid, self.config)

    def close(self) -> None:
        """End the child (a later :meth:`roles` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
