"""Where the node keeps its durable files under ``data_dir``: the one place that turns
UIDs into paths for the service (every name goes through
:func:`glioma_node.dicom_io.uids.safe_part`: a valid UID names itself, anything else
becomes a hash, so no received value can climb out of the data folder).

::

    data_dir/spool/<study>/<series>/<sop>.dcm      received instances (see spool.py)
    data_dir/state.db                                the node's state (see state.py)
    data_dir/results/<study>/v<N>/                   one version of a study's results
    data_dir/results/<study>/v<N>/outcome.json       how its process job ended (see handoff.py)
    data_dir/results/<study>/v<N>/heartbeat          touched while a worker runs the job
    data_dir/outbox/<kind>-<name>/<study>-v<N>/      hard links of one result set, per target
    data_dir/receivers/<pid>.json                    counters of an extra receiver process (see receivers.py)
    data_dir/child-config.yaml                       the configuration the node's child processes read
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from glioma_node.dicom_io.uids import safe_part
from glioma_node.service.target import Target


@dataclass(frozen=True)
class Paths:
    """The layout of one node's ``data_dir`` (see the module doc)."""

    data_dir: Path

    def disk_low(self, min_free_bytes: int) -> bool:
        """Whether the data folder's file system has less than ``min_free_bytes`` free
        (``node.min_free_mb``; True when it cannot be asked)."""
        try:
            return shutil.disk_usage(self.data_dir).free < min_free_bytes
        except OSError:
            return True

    @property
    def spool(self) -> Path:
        """Received instances, one folder per study (see spool.py)."""
        return self.data_dir / "spool"

    @property
    def database(self) -> Path:
        """The node's state (SQLite)."""
        return self.data_dir / "state.db"

    def results(self, study_uid: str, version: int) -> Path:
        """The folder of one version of a study's results (findings.json, dicom/, nifti/, summary.png)."""
        return self.data_dir / "results" / safe_part(study_uid) / f"v{version}"

    def outcome(self, study_uid: str, version: int) -> Path:
        """How the process job of one study version ended, written by whichever worker ran it."""
        return self.results(study_uid, version) / "outcome.json"

    def heartbeat(self, study_uid: str, version: int) -> Path:
        """Touched every ``execution.heartbeat_s`` while a worker runs the job; its content names the worker."""
        return self.results(study_uid, version) / "heartbeat"

    def outbox(self, target: Target, study_uid: str, version: int) -> Path:
        """The files one send job delivers to ``target``."""
        return self.data_dir / "outbox" / safe_part(f"{target.kind.value}-{target.name}") / \
            f"{safe_part(study_uid)}-v{version}"

    @property
    def receivers(self) -> Path:
        """The counter snapshots of the node's extra receiver processes, one file per process."""
        return self.data_dir / "receivers"

    @property
    def child_config(self) -> Path:
        """The node's configuration as its child processes (worker, receivers) read it."""
        return self.data_dir / "child-config.yaml"
