"""`glioma-node replay DIR --to AET@HOST:PORT`: send a folder the way a scanner does.

One association per series by default (``per_series=False``: one for everything, split
where it would propose more than 128 presentation contexts), each instance in its own
transfer syntax, with a progress bar. For offline replay tests with sample DICOM and for
``make demo``. Whatever is not stored (an unreadable file, a peer that refuses, aborts or
cannot be reached) is named with its reason; nothing stops the rest of the folder.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.status import code_to_category
from pynetdicom.utils import set_ae, validate_uid
from tqdm import tqdm

from glioma_node.dicom_io.scan import Instance, scan

_TARGET = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")


@dataclass
class ReplayResult:
    """What a replay did: instances stored, those not stored with the reason, associations
    established, and files that were not DICOM (left alone, not failures)."""

    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    associations: int = 0
    not_dicom: int = 0


def parse_target(text: str) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` → (AE title, host, port); ValueError with the expected form."""
    match = _TARGET.match(text.strip())
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"expected AET@HOST:PORT with a port from 1 to 65535 (e.g. GLIOMA_NODE@127.0.0.1:11112), "
                         f"got {text!r}")
    set_ae(match["ae"], "called AE title", allow_empty=False, allow_none=False)
    return match["ae"], match["host"], int(match["port"])


MAX_CONTEXTS = 128  # presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255)
NOT_SENT = "not sent: the association had ended"
DIMSE_TIMEOUT_S = 60  # seconds a peer has to answer each request (and the network and ACSE timeouts)
CONNECT_TIMEOUT_S = 20  # seconds to open the TCP connection (a host that drops packets would take minutes)


def _context(instance: Instance) -> tuple[str, str] | None:
    """(SOP class, transfer syntax) of an instance, None when its header lacks either or
    holds something that is not one valid UID (a presentation context could not name it)."""
    meta = getattr(instance.header, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    sop_class = instance.header.get("SOPClassUID")
    if not all(isinstance(v, str) and validate_uid(UID(v)) for v in (sop_class, syntax)):
        return None
    return str(sop_class), str(syntax)


Batch = tuple[list[tuple[str, str]], list[Instance]]  # the contexts one association proposes, its instances


def _batches(instances: list[Instance], result: ReplayResult, bar: tqdm) -> list[Batch]:
    """Split ``instances`` so no association proposes more than MAX_CONTEXTS contexts; an
    instance without SOP class or transfer syntax cannot be proposed and is failed."""
    by_context: dict[tuple[str, str], list[Instance]] = {}
    for instance in instances:
        context = _context(instance)
        if context is None:
            _fail(result, bar, [instance], "not sent: no valid SOP Class UID or Transfer Syntax UID in its header")
        else:
            by_context.setdefault(context, []).append(instance)
    ordered = sorted(by_context)
    chunks = [ordered[k:k + MAX_CONTEXTS] for k in range(0, len(ordered), MAX_CONTEXTS)]
    return [(chunk, sorted((i for c in chunk for i in by_context[c]), key=lambda i: i.path)) for chunk in chunks]


def _fail(result: ReplayResult, bar: tqdm, instances: list[Instance], reason: str) -> None:
    result.failed += [(str(i.path), reason) for i in instances]
    bar.update(len(instances))


def _send(batch: Batch, ae_title: str, host: str, port: int, calling_ae: str, result: ReplayResult,
          bar: tqdm) -> bool:
    """Store ``instances`` over one association; False when the peer could not be reached
    (so the caller does not wait again for every other series)."""
    ae = AE(ae_title=calling_ae)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.connection_timeout = CONNECT_TIMEOUT_S
    contexts, instances = batch
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    try:
        assoc = ae.associate(host, port, ae_title=ae_title)
    except (OSError, ValueError) as exc:  # a host name that does not resolve or cannot be encoded
        _fail(result, bar, instances, f"not sent: cannot connect to {host}:{port}: {exc}")
        return False
    if not assoc.is_established:
        if assoc.is_rejected:
            _fail(result, bar, instances, "not sent: the peer rejected the association")
            return True
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            _fail(result, bar, instances, "not sent: the peer accepted none of the proposed SOP classes and "
                                          "transfer syntaxes")
            return True
        _fail(result, bar, instances, f"not sent: no association with {host}:{port} (connection refused, timed "
                                      "out or aborted)")
        return False
    result.associations += 1
    try:
        for index, instance in enumerate(instances):
            try:
                dataset = pydicom.dcmread(instance.path)
            except Exception as exc:  # pydicom raises many types on a file cut or changed since the scan
                _fail(result, bar, [instance], f"not sent: cannot be read: {exc.__class__.__name__}: {exc}")
                continue
            started = time.monotonic()
            try:
                status = assoc.send_c_store(dataset)
            except RuntimeError:  # the association ended before this request
                _fail(result, bar, instances[index:], NOT_SENT)
                return True
            except ValueError as exc:  # no presentation context the peer accepted for it, or not encodable
                _fail(result, bar, [instance], f"not sent: {exc}")
                continue
            except (AttributeError, TypeError) as exc:  # its data set contradicts its file meta
                _fail(result, bar, [instance], f"not sent: cannot be encoded: {exc}")
                continue
            code = getattr(status, "Status", None)
            if code is None:  # pynetdicom gives an empty status when the association ended while it waited
                how = (f"no response within {DIMSE_TIMEOUT_S} s, so the association was aborted"
                       if time.monotonic() - started >= DIMSE_TIMEOUT_S else
                       "the association ended without a valid response (aborted by the peer, a lost connection, "
                       "or an invalid response)")
                _fail(result, bar, [instance], f"no response: {how}; the peer may have stored it")
                _fail(result, bar, instances[index + 1:], NOT_SENT)
                return True
            if code_to_category(code) in ("Success", "Warning"):
                result.sent += 1
                bar.update(1)
            else:
                _fail(result, bar, [instance], f"refused by the peer: status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return True


def replay(folder: Path, target: str, calling_ae: str = "GLIOMA_REPLAY", per_series: bool = True,
           progress: bool = True) -> ReplayResult:
    """Send every DICOM instance under ``folder`` to ``target`` (see the module doc)."""
    ae_title, host, port = parse_target(target)
    set_ae(calling_ae, "calling AE title", allow_empty=False, allow_none=False)
    found = scan(folder)
    groups = [series.instances for study in found.studies.values() for series in study.series.values()]
    if not per_series:
        groups = [[i for g in groups for i in g]]
    result = ReplayResult(not_dicom=len(found.skipped_not_dicom))
    total = sum(len(g) for g in groups) + len(found.bad_files)
    with tqdm(total=total, unit="inst", disable=not progress, desc="replay") as bar:
        result.failed += [(str(path), f"not sent: {why}") for path, why in found.bad_files]
        bar.update(len(found.bad_files))
        unreachable = False
        for instances in groups:
            for batch in _batches(instances, result, bar):
                if unreachable:
                    _fail(result, bar, batch[1], f"not sent: {host}:{port} could not be reached for an earlier series")
                elif not _send(batch, ae_title, host, port, calling_ae, result, bar):
                    unreachable = True
    return result
