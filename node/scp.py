"""The Storage SCP: C-ECHO, and C-STORE of MR into the spool before the success status.

MR Image Storage and Enhanced MR Image Storage are spooled; every other storage class
is accepted and dropped, so a PACS forwarding a whole study never sees a failure.
Peers not in ``node.allowed_peers`` (calling AE title and host) are rejected at
association. Each accepted instance is written and fsynced (:mod:`node.spool`) and
recorded (:mod:`node.state`) before 0x0000 goes back; a full disk answers 0xA700.
"""
from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pydicom
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from node import reactor
from node.config import Config
from node.logs import pseudonym
from node.spool import Spool, SpoolFull
from node.state import SqliteQueue

log = logging.getLogger(__name__)

MR_CLASSES = {UID("1.2.840.10008.5.1.4.1.1.4"), UID("1.2.840.10008.5.1.4.1.1.4.1"),
              UID("1.2.840.10008.5.1.4.1.1.4.4")}  # MR, Enhanced MR, Legacy Converted Enhanced MR
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
_NEEDED = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "ImagesInAcquisition",
           "NumberOfFrames"]


@dataclass
class ScpCounters:
    """What /metrics reports about receiving (this process, since start)."""

    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n


def expected_instances(ds) -> int | None:
    """Instances the series should have, where the header says (classic: ImagesInAcquisition)."""
    if "NumberOfFrames" in ds and int(ds.get("NumberOfFrames") or 1) > 1:
        return 1  # one enhanced multi-frame object is the whole series
    value = ds.get("ImagesInAcquisition")
    try:
        return int(value) if value not in (None, "") and int(value) > 0 else None
    except (TypeError, ValueError):
        return None


class StorageScp:
    """pynetdicom SCP wired to the spool and the state database (see the module doc)."""

    def __init__(self, config: Config, spool: Spool, queue: SqliteQueue, counters: ScpCounters | None = None):
        self.config, self.spool, self.queue = config, spool, queue
        self.counters = counters or ScpCounters()
        settings = config.node
        self.allowed = {(p.ae_title, p.host) for p in settings.allowed_peers}
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_associations = settings.max_associations
        self.ae.maximum_pdu_size = settings.max_pdu_bytes
        self.ae.network_timeout = 60
        self.ae.dimse_timeout = 60
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.server = None

    def _peer_allowed(self, calling_ae: str, address: str) -> bool:
        hosts = {socket.gethostbyname(h) if not h[0].isdigit() and ":" not in h else h
                 for ae, h in self.allowed if ae == calling_ae}
        return address in hosts

    def _on_requested(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title.strip()
        address = event.assoc.requestor.address
        if not self._peer_allowed(calling, address):
            self.counters.add("associations_rejected")
            log.warning("association rejected: calling AE not allowed", extra={"calling_ae": calling, "address": address})
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent; service user; calling AE not recognised

    def _on_accepted(self, event: evt.Event) -> None:
        event.assoc.glioma_id = uuid.uuid4().hex
        reactor.shorten_dul_delay(event)
        self.counters.add("associations_accepted")
        self.queue.association_opened(event.assoc.glioma_id, event.assoc.requestor.ae_title.strip(),
                                      event.assoc.requestor.address)

    def _on_closed(self, event: evt.Event) -> None:
        association = getattr(event.assoc, "glioma_id", None)
        if association:
            self.queue.association_closed(association)

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        sop_class = UID(event.request.AffectedSOPClassUID)
        if sop_class not in MR_CLASSES:
            self.counters.add("instances_ignored")
            return SUCCESS
        data = event.encoded_dataset(include_meta=True)
        try:  # only the tags the node needs, not the whole dataset
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_NEEDED)
            study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        except Exception as exc:  # an undecodable dataset or one without its UIDs
            self.counters.add("instances_refused")
            log.warning("instance refused: %s", exc, extra={"sop_class": str(sop_class)})
            return CANNOT_UNDERSTAND
        try:
            path, new = self.spool.store(study, series, sop, data)
        except SpoolFull as exc:
            self.counters.add("instances_out_of_resources")
            log.error("instance not stored: %s", exc)
            return OUT_OF_RESOURCES
        except OSError as exc:
            self.counters.add("instances_out_of_resources")
            log.error("instance not stored: %s", exc)
            return OUT_OF_RESOURCES
        recorded = self.queue.record_instance(study, series, sop, str(sop_class), str(path),
                                              getattr(event.assoc, "glioma_id", ""), expected_instances(ds),
                                              pseudonym(str(ds.get("PatientID", ""))))
        self.counters.add("instances_received" if recorded and new else "instances_duplicate")
        return SUCCESS

    def start(self) -> None:
        """Listen (non-blocking) on the configured address and port."""
        reactor.install()
        settings = self.config.node
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_RELEASED, self._on_closed), (evt.EVT_ABORTED, self._on_closed),
                    (evt.EVT_CONN_CLOSE, self._on_closed), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_C_STORE, self._on_store)]
        context = None
        if settings.tls.enabled:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(settings.tls.ca_certificates))
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(str(settings.tls.certificate), str(settings.tls.private_key))
        self.server = self.ae.start_server((settings.bind_address, settings.port), block=False,
                                           evt_handlers=handlers, ssl_context=context)
        accept = self.server.get_request

        def get_request():  # Nagle's algorithm would hold back every small C-STORE response
            sock, address = accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock, address
        self.server.get_request = get_request
        log.info("listening", extra={"ae_title": settings.ae_title, "address": settings.bind_address,
                                     "port": settings.port, "tls": settings.tls.enabled})

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
