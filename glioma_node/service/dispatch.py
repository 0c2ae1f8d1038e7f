"""Dispatch: results from the outbox to each destination, by C-STORE or STOW-RS.

:func:`send_pending` runs one due ``send`` job in the serving process (the worker queues
them); :func:`send` delivers one result set to one :class:`~glioma_node.service.target.Target`.

Every send job names one target and one result version; its files sit in
``outbox/<target>/<study>-v<version>/`` (hard links: the results folder keeps its own
copy), and each leaves the outbox as soon as the destination acknowledged it, so a retry,
or a restart after a crash in the middle of a send, sends only what was not yet stored
(at most the one object whose acknowledgement was in flight at a crash is sent again; its
UIDs are fixed, so the PACS replaces it). A refused connection or a failed status raises
:class:`DispatchError`; the job is retried with exponential backoff.
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
from glioma_node.service.state import Job, JobKind, NodeState
from glioma_node.service.target import ORTHANC_SELF, Target, TargetKind

log = logging.getLogger(__name__)

# Requested explicitly, whatever the files
RESULT_CLASSES = (SegmentationStorage, Comprehensive3DSRStorage, ParametricMapStorage, SecondaryCaptureImageStorage)

LocalStore = Callable[[bytes], None]
"""Stores one Part 10 file into the Orthanc the node runs in (plugin mode)."""


class DispatchError(RuntimeError):
    """A send did not go through, wholly or in part (the job is retried); ``stored``: the
    files the destination did accept, which a retry does not send again."""

    def __init__(self, message: str, stored: list[Path] | None = None):
        super().__init__(message)
        self.stored = list(stored or [])


def _read_whole(path: Path) -> pydicom.Dataset:
    """A result file read back, or ValueError when it is cut short: pydicom stops quietly
    at the end of a truncated file and keeps what it read."""
    ds = pydicom.dcmread(path)
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            raise ValueError(f"no {keyword}: the file is cut short or not a result object")
    for element in ds:
        value, length = getattr(element, "value", None), getattr(element, "length", 0)
        if isinstance(value, bytes) and length != 0xFFFFFFFF and len(value) < length:
            raise ValueError(f"element {element.tag} claims {length} bytes; the file ends after {len(value)}")
    return ds


def _sop_class_name(uid: str) -> str:
    return pydicom.uid.UID(uid).name or uid


def c_store(files: list[Path], destination: Destination, calling_ae: str, timeout_s: float,
            on_stored: Callable[[Path], None] | None = None) -> list[Path]:
    """C-STORE ``files`` to ``destination`` in one association; the files stored.

    Every file the destination takes is sent, whatever it refuses: a file that does not
    read, a SOP class for which it accepted no presentation context, a failure status.
    When anything was refused, :class:`DispatchError` says what and why (the PACS's
    answer) and lists what was stored. ``timeout_s`` bounds the association request,
    each response and any silence (s); ``on_stored(path)`` runs as each file is acknowledged."""
    refused: list[str] = []
    datasets: list[tuple[Path, pydicom.Dataset]] = []
    for path in files:
        try:
            datasets.append((path, _read_whole(path)))
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: reported, the rest still sent
            refused.append(f"{path.name} does not read ({type(exc).__name__}: {str(exc)[:120]})")
    ae = AE(ae_title=calling_ae)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = timeout_s
    classes = list(dict.fromkeys([*RESULT_CLASSES, *(str(ds.SOPClassUID) for _, ds in datasets)]))
    for sop_class in classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DispatchError(f"{where}: association {'rejected' if assoc.is_rejected else 'failed'}")
    stored: list[Path] = []
    accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
    try:
        for path, ds in datasets:
            sop_class = str(ds.SOPClassUID)
            if sop_class not in accepted:
                refused.append(f"{path.name}: the PACS accepted no presentation context for "
                               f"{_sop_class_name(sop_class)}")
                continue
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, AttributeError, RuntimeError) as exc:  # pynetdicom: no usable context, bad data
                refused.append(f"{path.name}: not sent ({exc})")
                continue
            if not assoc.is_established:
                refused.append(f"{path.name}: the association ended before its answer")
                break
            code = getattr(status, "Status", None)
            if code is None or not (code == 0x0000 or 0xB000 <= code <= 0xBFFF):
                comment = getattr(status, "ErrorComment", None) if status is not None else None
                refused.append(f"{path.name}: C-STORE answered {'nothing' if code is None else hex(code)}"
                               + (f" ({comment})" if comment else ""))
                continue
            stored.append(path)
            if on_stored is not None:
                on_stored(path)
    finally:
        if assoc.is_established:
            assoc.release()
    if refused or len(stored) < len(datasets):
        missing = len(files) - len(stored)
        raise DispatchError(f"{where}: {missing} of {len(files)} not stored: " + "; ".join(refused[:6])
                            + (f"; and {len(refused) - 6} more" if len(refused) > 6 else ""), stored)
    return stored


def stow(files: list[Path], destination: StowDestination, timeout_s: float) -> list[Path]:
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
    return files


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


def _leave_outbox(path: Path) -> None:
    """Take a file a destination accepted out of the outbox (the results folder keeps it)."""
    path.unlink(missing_ok=True)


def _to_orthanc(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> list[Path]:
    if local is None:
        raise DispatchError(f"{target} needs the Orthanc plugin (the node is not running inside Orthanc)")
    stored: list[Path] = []
    for path in files:
        try:
            local(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - Orthanc's own refusal of one file: the rest goes on
            raise DispatchError(f"{target}: Orthanc refused {path.name}: {exc}", stored) from None
        stored.append(path)
        _leave_outbox(path)
    return stored


def _to_destination(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> list[Path]:
    destination = next(d for d in config.destinations if d.name == target.name)
    return c_store(files, destination, config.node.ae_title, config.dispatch.timeout_s, _leave_outbox)


def _to_stow(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> list[Path]:
    stored = stow(files, next(d for d in config.dispatch.dicomweb if d.name == target.name),
                  config.dispatch.stow_timeout_s)
    for path in stored:  # one request: all stored together
        _leave_outbox(path)
    return stored


def _to_caller(target: Target, files: list[Path], config: Config, local: LocalStore | None) -> list[Path]:
    destination = next(Destination(name=target.name, ae_title=p.ae_title, host=p.host, port=p.port)
                       for p in config.node.allowed_peers if p.ae_title == target.name and p.port is not None)
    return c_store(files, destination, config.node.ae_title, config.dispatch.timeout_s, _leave_outbox)


SENDERS: dict[TargetKind, Callable[[Target, list[Path], Config, LocalStore | None], list[Path]]] = {
    TargetKind.ORTHANC: _to_orthanc,
    TargetKind.DICOM: _to_destination,
    TargetKind.STOW: _to_stow,
    TargetKind.CALLER: _to_caller,
}
"""How each kind of target is sent to: one handler per kind, each taking outbox files, removing
each from the outbox as the target acknowledges it, and returning the files stored."""


def send(target: Target, files: list[Path], config: Config, local: LocalStore | None = None) -> list[Path]:
    """Send ``files`` to one target (as :func:`targets` names it); ``local`` stores one
    Part 10 file into the Orthanc the node runs in (plugin mode). The files stored, or
    :class:`DispatchError` (whatever went wrong: a send never raises anything else)."""
    try:
        return SENDERS[target.kind](target, files, config, local)
    except StopIteration:
        raise DispatchError(f"target {target} is no longer in the configuration") from None
    except DispatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a peer or a file can make any library raise: a failed attempt
        raise DispatchError(f"{target}: {type(exc).__name__}: {exc}") from None


def backoff_s(attempts: int, config: Config) -> float:
    """Seconds before send retry number ``attempts`` (exponential, capped)."""
    return min(config.dispatch.retry_initial_s * 2 ** max(attempts - 1, 0), config.dispatch.retry_max_s)


_UNSETTLED: set[int] = set()
"""Send jobs of this process whose end could not be written (the database full or
locked after the claim): queued again by the next :func:`send_pending` before it claims,
so none stays ``running`` (and its study ``sending``) until a restart. Sends run only in
the serving process, one at a time."""


def send_pending(config: Config, state: NodeState, paths: Paths, local: LocalStore | None = None) -> bool:
    """Run one due send job, if any; True when one ran (``local``: see :func:`glioma_node.service.dispatch.send`)."""
    for job_id in sorted(_UNSETTLED):
        state.retry(job_id, "its end was not recorded (the node's database could not be written); sent again", 0)
        _UNSETTLED.discard(job_id)
    job = state.claim((JobKind.SEND,))
    if job is None:
        return False
    try:
        return _run(job, config, state, paths, local)
    except BaseException:
        _UNSETTLED.add(job.id)
        raise


def _run(job: Job, config: Config, state: NodeState, paths: Paths, local: LocalStore | None) -> bool:
    assert job.target is not None  # every send job names its target
    box = paths.outbox(job.target, job.study_uid, job.version)
    try:
        files = sorted(box.glob("*.dcm"))
        stored = send(job.target, files, config, local) if files else []
    except DispatchError as exc:
        # what was accepted has left the outbox already (each sender's part): a retry sends only the rest
        _failed_attempt(job, str(exc), config, state)
        return True
    except Exception as exc:  # noqa: BLE001 - reading the outbox (a full or broken disk): an attempt, never the node
        _failed_attempt(job, f"{type(exc).__name__}: {exc}", config, state)
        return True
    shutil.rmtree(box, ignore_errors=True)
    state.complete_send(job.id, job.study_uid)
    log.info("sent", extra={"study": job.study_uid, "version": job.version, "target": str(job.target),
                            "objects": len(stored)})
    return True


def _failed_attempt(job: Job, error: str, config: Config, state: NodeState) -> None:
    """One failed attempt of a send job: retried with backoff, or failed with its study
    after ``dispatch.max_attempts``."""
    if job.attempts >= config.dispatch.max_attempts:
        state.fail_job(job.id, job.study_uid, f"sending to {job.target} failed {job.attempts} times: {error}")
        log.error("send failed for good", extra={"study": job.study_uid, "target": str(job.target),
                                                 "attempts": job.attempts, "error": error})
        return
    delay = backoff_s(job.attempts, config)
    state.retry(job.id, error, delay)
    log.warning("send failed, will retry", extra={"study": job.study_uid, "target": str(job.target),
                                                   "attempt": job.attempts, "retry_in_s": delay, "error": error})
