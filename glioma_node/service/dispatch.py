"""Dispatch: results from the outbox to each destination, by C-STORE or STOW-RS.

:func:`send_pending` runs one due ``send`` job in the serving process (the worker queues
them); :func:`send` delivers one result set to one :class:`~glioma_node.service.target.Target`.

Every send job names one target and one result version; its files sit in
``outbox/<target>/<study>-v<version>/`` until the whole set is accepted, and are then
removed (the results folder keeps its own copy). A refused connection or a failed
status raises :class:`DispatchError`; the job is retried with exponential backoff, and
since the objects' UIDs are fixed a retry replaces what a previous attempt stored.
"""
from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from pynetdicom import AE

from glioma_node.service.config import Config, Destination, StowDestination
from glioma_node.service.paths import Paths
from glioma_node.service.state import JobKind, NodeState, StudyState
from glioma_node.service.target import ORTHANC_SELF, Target, TargetKind

log = logging.getLogger(__name__)

# Requested explicitly, whatever the files
RESULT_CLASSES = (SegmentationStorage, Comprehensive3DSRStorage, ParametricMapStorage, SecondaryCaptureImageStorage)

LocalStore = Callable[[bytes], None]
"""Stores one Part 10 file into the Orthanc the node runs in (plugin mode)."""


class DispatchError(RuntimeError):
    """A send did not go through (the job is retried)."""


def c_store(files: list[Path], destination: Destination, calling_ae: str, timeout_s: float) -> int:
    """C-STORE ``files`` to ``destination`` in one association; how many were stored.
    ``timeout_s`` bounds the association request, each response and any silence (s)."""
    datasets = [pydicom.dcmread(path) for path in files]
    ae = AE(ae_title=calling_ae)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = timeout_s
    classes = list(dict.fromkeys([*RESULT_CLASSES, *(str(ds.SOPClassUID) for ds in datasets)]))
    for sop_class in classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DispatchError(f"{destination.ae_title}@{destination.host}:{destination.port}: association "
                            f"{'rejected' if assoc.is_rejected else 'failed'}")
    try:
        for path, ds in zip(files, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None or not (code == 0x0000 or 0xB000 <= code <= 0xBFFF):
                raise DispatchError(f"{destination.ae_title}: C-STORE of {path.name} answered "
                                    f"{'nothing' if code is None else hex(code)}")
    finally:
        if assoc.is_established:
            assoc.release()
    return len(files)


def stow(files: list[Path], destination: StowDestination, timeout_s: float) -> int:
    """STOW-RS ``files`` to ``destination.url`` (``…/studies``) in one multipart request
    answered within ``timeout_s`` seconds."""
    boundary = uuid.uuid4().hex
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(destination.url.rstrip("/") + "/studies", data=body, method="POST", headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status not in (200, 202):
                raise DispatchError(f"{destination.name}: STOW-RS answered HTTP {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise DispatchError(f"{destination.name}: STOW-RS failed: {exc}") from None
    return len(files)


def targets(config: Config, calling_ae: str | None) -> list[Target]:
    """The send targets of a study: every destination, STOW endpoint, the caller if asked,
    and in plugin mode the Orthanc the node runs in."""
    out = [Target(TargetKind.DICOM, d.name) for d in config.destinations]
    out += [Target(TargetKind.STOW, d.name) for d in config.dispatch.dicomweb]
    if config.dispatch.orthanc_self:
        out.append(ORTHANC_SELF)
    if config.dispatch.return_to_caller and calling_ae:
        if any(p.ae_title == calling_ae and p.port for p in config.node.allowed_peers):
            out.append(Target(TargetKind.CALLER, calling_ae))
    return out


def _to_orthanc(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> int:
    if local is None:
        raise DispatchError(f"{target} needs the Orthanc plugin (the node is not running inside Orthanc)")
    for path in files:
        local(path.read_bytes())
    return len(files)


def _to_destination(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> int:
    destination = next(d for d in config.destinations if d.name == target.name)
    return c_store(files, destination, config.node.ae_title, config.dispatch.timeout_s)


def _to_stow(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> int:
    return stow(files, next(d for d in config.dispatch.dicomweb if d.name == target.name),
                config.dispatch.stow_timeout_s)


def _to_caller(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> int:
    destination = next(Destination(name=target.name, ae_title=p.ae_title, host=p.host, port=p.port)
                       for p in config.node.allowed_peers if p.ae_title == target.name and p.port is not None)
    return c_store(files, destination, config.node.ae_title, config.dispatch.timeout_s)


SENDERS: dict[TargetKind, Callable[[Target, list[Path], Config, LocalStore | None], int]] = {
    TargetKind.ORTHANC: _to_orthanc,
    TargetKind.DICOM: _to_destination,
    TargetKind.STOW: _to_stow,
    TargetKind.CALLER: _to_caller,
}
"""How each kind of target is sent to: one handler per kind, each returning the objects stored."""


def send(target: Target, files: list[Path], config: Config, local: LocalStore | None = None) -> int:
    """Send ``files`` to one target (as :func:`targets` names it); ``local`` stores one
    Part 10 file into the Orthanc the node runs in (plugin mode). How many were stored,
    or :class:`DispatchError`."""
    try:
        return SENDERS[target.kind](target, files, config, local)
    except StopIteration:
        raise DispatchError(f"target {target} is no longer in the configuration") from None
    except DispatchError:
        raise
    except (OSError, RuntimeError) as exc:
        raise DispatchError(f"{target}: {exc}") from None


def backoff_s(attempts: int, config: Config) -> float:
    """Seconds before send retry number ``attempts`` (exponential, capped)."""
    return min(config.dispatch.retry_initial_s * 2 ** max(attempts - 1, 0), config.dispatch.retry_max_s)


def send_pending(config: Config, state: NodeState, paths: Paths, local: LocalStore | None = None) -> bool:
    """Run one due send job, if any; True when one ran (``local``: see :func:`glioma_node.service.dispatch.send`)."""
    job = state.claim((JobKind.SEND,))
    if job is None:
        return False
    assert job.target is not None  # every send job names its target
    box = paths.outbox(job.target, job.study_uid, job.version)
    files = sorted(box.glob("*.dcm"))
    try:
        count = send(job.target, files, config, local) if files else 0
    except DispatchError as exc:
        if job.attempts >= config.dispatch.max_attempts:
            state.fail(job.id, str(exc))
            state.set_state(job.study_uid, StudyState.FAILED,
                            f"sending to {job.target} failed {job.attempts} times: {exc}")
        else:
            delay = backoff_s(job.attempts, config)
            state.retry(job.id, str(exc), delay)
            log.warning("send failed, will retry", extra={"study": job.study_uid, "target": str(job.target),
                                                           "attempt": job.attempts, "retry_in_s": delay, "error": str(exc)})
        return True
    shutil.rmtree(box, ignore_errors=True)
    state.finish(job.id)
    if state.pending(job.study_uid, JobKind.SEND) == 0 and state.pending(job.study_uid, JobKind.PROCESS) == 0:
        study = state.study(job.study_uid)
        if study is not None and study.state is StudyState.SENDING:
            state.set_state(job.study_uid, StudyState.DONE, None)
    log.info("sent", extra={"study": job.study_uid, "version": job.version, "target": str(job.target), "objects": count})
    return True
