"""The jobs: ``process`` (the whole pipeline on a spooled study) and ``send`` (dispatch).

``process`` runs in its own process (:func:`worker_main`) so that inference never
slows receiving; ``send`` runs in the serving process (:func:`send_pending`). Both are
idempotent: a process job whose results are already on disk only queues the sends, and
a send stores objects with fixed UIDs, so running a job twice never duplicates a result.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from glioma_node.dicom_io.uids import safe_part
from glioma_node.inference.lifetime import die_with_parent
from glioma_node.service.assembly import FORCED, incomplete_series
from glioma_node.service.config import Config
from glioma_node.service.dispatch import DispatchError, send, targets
from glioma_node.service.spool import Spool
from glioma_node.service.state import Job, SqliteQueue, Study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    """Where the node keeps its durable state, under ``data_dir``."""

    data_dir: Path

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    @property
    def database(self) -> Path:
        return self.data_dir / "state.db"

    def results(self, study_uid: str, version: int) -> Path:
        return self.data_dir / "results" / safe_part(study_uid) / f"v{version}"

    def outbox(self, target: str, study_uid: str, version: int) -> Path:
        return self.data_dir / "outbox" / safe_part(target.replace(":", "-")) / f"{safe_part(study_uid)}-v{version}"


def backoff_s(attempts: int, config: Config) -> float:
    """Seconds before retry number ``attempts`` (exponential, capped)."""
    return min(config.dispatch.retry_initial_s * 2 ** max(attempts - 1, 0), config.dispatch.retry_max_s)


def _study_result(folder: Path, study_uid: str) -> tuple[dict | None, Path]:
    study_folder = folder / safe_part(study_uid)
    findings = study_folder / "findings.json"
    return (json.loads(findings.read_text()) if findings.exists() else None), study_folder


def _queue_sends(job: Job, config: Config, queue: SqliteQueue, paths: Paths, study_folder: Path) -> int:
    study = queue.study(job.study_uid)
    files = sorted((study_folder / "dicom").glob("*.dcm"))
    planned = targets(config, study.calling_ae if study else None)
    for target in planned:
        box = paths.outbox(target, job.study_uid, job.version)
        box.mkdir(parents=True, exist_ok=True)
        for path in files:
            if not (box / path.name).exists():
                os.link(path, box / path.name)
        queue.enqueue("send", job.study_uid, job.version, target)
    return len(planned)


def processing_warnings(queue: SqliteQueue, study: Study) -> list[str]:
    """What the results must say about the data they were computed on: series with fewer
    instances than announced, and a study processed at the force timeout."""
    warnings = incomplete_series(queue.series(study.study_uid))
    if study.reason == FORCED:
        warnings.append(f"processed at the force timeout, not because every series was complete ({study.reason})")
    return warnings


def run_process(job: Job, config: Config, models, queue: SqliteQueue, paths: Paths) -> None:
    """Process one study version from the spool into results/, then queue its sends."""
    from glioma_node.service.pipeline import process

    folder = paths.results(job.study_uid, job.version)
    findings, study_folder = _study_result(folder, job.study_uid)
    started = time.time()
    processed: dict[str, int] = {}
    if findings is None or findings.get("status") != "done":
        study = queue.study(job.study_uid)
        warnings = processing_warnings(queue, study) if study else []
        outcomes = process(Spool(paths.spool).study_dir(job.study_uid), folder, config, models, warnings)
        outcome = next((o for o in outcomes if o.study_instance_uid == job.study_uid), None)
        if outcome is not None:  # never below the snapshot the assembly decided on, so a
            # recorded file the scan cannot use does not look new forever
            snapshot = study.processed_instances if study else None
            processed["processed_instances"] = max(outcome.instances, snapshot or 0)
        if outcome is None or outcome.status != "done":
            reason = outcome.error if outcome else "no readable study in the spool"
            queue.fail(job.id, reason)
            queue.set_state(job.study_uid, "failed", reason, **processed)
            log.warning("processing failed", extra={"study": job.study_uid, "version": job.version, "reason": reason})
            return
        findings, study_folder = _study_result(folder, job.study_uid)
    sends = _queue_sends(job, config, queue, paths, study_folder)
    queue.set_state(job.study_uid, "sending" if sends else "done", None, **processed)
    queue.finish(job.id)
    log.info("processed", extra={"study": job.study_uid, "version": job.version, "seconds": round(time.time() - started, 2),
                                 "sends": sends, "whole_tumour_ml": findings["segmentation"]["volumes_ml"]["whole_tumour"],
                                 "warnings": len(findings.get("warnings", []))})


def worker_main(config: Config, parent_pid: int | None = None) -> None:
    """The processing loop (its own process): models loaded once, one study at a time."""
    from glioma_node.service.logs import configure
    from glioma_node.service.pipeline import load_models

    configure()
    # SIGKILL with the node (even kill -9), so a restarted node never has an orphan worker
    # processing the same job beside its own; elsewhere the parent-pid check below ends it
    die_with_parent(signal.SIGKILL)
    paths = Paths(config.data_dir)
    queue = SqliteQueue(paths.database)
    models = load_models(config)
    log.info("worker ready", extra={"pid": os.getpid()})
    while parent_pid is None or os.getppid() == parent_pid:
        job = queue.claim(("process",))
        if job is None:
            time.sleep(0.5)
            continue
        try:
            run_process(job, config, models, queue, paths)
        except Exception as exc:  # an unexpected error: retried, then recorded; the worker lives on
            log.exception("process job error", extra={"study": job.study_uid})
            if job.attempts >= 3:
                queue.fail(job.id, f"{type(exc).__name__}: {exc}")
                queue.set_state(job.study_uid, "failed", f"{type(exc).__name__}: {exc}")
            else:
                queue.retry(job.id, f"{type(exc).__name__}: {exc}", 10 * job.attempts)


def send_pending(config: Config, queue: SqliteQueue, paths: Paths, local=None) -> bool:
    """Run one due send job, if any; True when one ran (``local``: see :func:`glioma_node.service.dispatch.send`)."""
    job = queue.claim(("send",))
    if job is None:
        return False
    box = paths.outbox(job.target, job.study_uid, job.version)
    files = sorted(box.glob("*.dcm"))
    try:
        count = send(job.target, files, config, local) if files else 0
    except DispatchError as exc:
        if job.attempts >= config.dispatch.max_attempts:
            queue.fail(job.id, str(exc))
            queue.set_state(job.study_uid, "failed", f"sending to {job.target} failed {job.attempts} times: {exc}")
        else:
            delay = backoff_s(job.attempts, config)
            queue.retry(job.id, str(exc), delay)
            log.warning("send failed, will retry", extra={"study": job.study_uid, "target": job.target,
                                                           "attempt": job.attempts, "retry_in_s": delay, "error": str(exc)})
        return True
    shutil.rmtree(box, ignore_errors=True)
    queue.finish(job.id)
    if queue.pending(job.study_uid, "send") == 0 and queue.pending(job.study_uid, "process") == 0:
        study = queue.study(job.study_uid)
        if study is not None and study.state == "sending":
            queue.set_state(job.study_uid, "done", None)
    log.info("sent", extra={"study": job.study_uid, "version": job.version, "target": job.target, "objects": count})
    return True


def main() -> None:
    """``python -m glioma_node.service.worker --config FILE --parent-pid PID`` (started by the node)."""
    import argparse

    from glioma_node.service.config import load_config

    parser = argparse.ArgumentParser(prog="python -m glioma_node.service.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args()
    worker_main(load_config(args.config), args.parent_pid)


if __name__ == "__main__":
    main()
