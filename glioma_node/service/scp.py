"""The Storage SCP: C-ECHO, and C-STORE of MR into the spool before the success status.

Associations: peers not in ``node.allowed_peers`` (calling AE title and host) get an
A-ASSOCIATE-RJ (rejected-permanent, calling AE title not recognised), and so does a
peer calling another AE title than ours (called AE title not recognised) unless
``node.require_called_ae_title`` is off. Every instance goes through the one intake
(:mod:`glioma_node.service.intake`): MR is checked, written, fsynced and recorded before 0x0000 goes
back; other storage classes are accepted and dropped, so a PACS forwarding a whole
study never sees a failure; a refusal answers a failure status with an Error Comment
saying why, and a full disk answers 0xA700.

Timeouts (``node.*_timeout_s``): a peer that connects and never asks for an
association is dropped after the ACSE timeout, one that goes silent inside an
association after the network timeout. With TLS, the handshake runs in the
connection's own thread with its own timeout, never on the accept loop, so one
silent connection cannot hold up the others.
"""
from __future__ import annotations

import logging
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, VerificationPresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from glioma_node.dicom_io.part10 import part10
from glioma_node.service import reactor
from glioma_node.service.config import Config
from glioma_node.service.intake import Intake, StoreStatus
from glioma_node.service.recorder import InstanceRecorder
from glioma_node.service.spool import Spool
from glioma_node.service.state import AssociationState, NodeState

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source (service user), diagnostic
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, calling AE title not recognised
LISTEN_BACKLOG = 128
CLOSE_ATTEMPTS = 30  # tries, a second apart, to record an association's end while the database refuses


@dataclass
class ScpCounters:
    """What /metrics reports about receiving (this process, since start)."""

    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        """Count one event (associations, instances by outcome) for /metrics."""
        with self.lock:
            self.counts[name] += n

    def snapshot(self) -> Counter:
        """A copy of the counts, taken under the lock."""
        with self.lock:
            return Counter(self.counts)


class _ReusePortServer(ThreadedAssociationServer):
    """pynetdicom's server with SO_REUSEPORT: several processes accept on one port
    (``node.receivers``; :mod:`glioma_node.service.receivers`), the kernel spreads the connections."""

    def server_bind(self) -> None:
        cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


# The attribute an accepted association carries its id in (the state's key for it).
_ASSOCIATION_ID = "glioma_id"


def _association_id(assoc: Association) -> str:
    """The id the node gave an accepted association ("" for one it rejected)."""
    return str(getattr(assoc, _ASSOCIATION_ID, ""))


class StorageScp:
    """pynetdicom SCP wired to the intake (see the module doc)."""

    def __init__(self, config: Config, spool: Spool, state: NodeState, counters: ScpCounters | None = None):
        self.config, self.state = config, state
        self.recorder = InstanceRecorder(state)
        self.intake = Intake(spool, state, self.recorder, config.node.read_limits())
        self.counters = counters or ScpCounters()
        settings = config.node
        self.allowed = {(p.ae_title, p.host) for p in settings.allowed_peers}
        self.ae = AE(ae_title=settings.ae_title)
        # shared out among the processes listening on the port (node.receivers)
        self.ae.maximum_associations = -(-settings.max_associations // settings.receivers)
        self.ae.maximum_pdu_size = settings.max_pdu_bytes
        self.ae.acse_timeout = settings.acse_timeout_s
        self.ae.network_timeout = settings.network_timeout_s
        self.ae.dimse_timeout = settings.dimse_timeout_s
        self.ae.require_called_aet = settings.require_called_ae_title
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax:
                self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        for context in VerificationPresentationContexts:
            if context.abstract_syntax:
                self.ae.add_supported_context(context.abstract_syntax)
        self.server: ThreadedAssociationServer | None = None

    def _peer_allowed(self, calling_ae: str, address: str) -> bool:
        hosts = set()
        for ae, host in self.allowed:
            if ae != calling_ae:
                continue
            try:
                hosts.add(socket.gethostbyname(host) if not host[0].isdigit() and ":" not in host else host)
            except OSError:  # a name that no longer resolves allows nobody
                continue
        return address in hosts

    def _on_requested(self, event: evt.Event) -> None:
        primitive = event.assoc.requestor.primitive
        calling = primitive.calling_ae_title.strip() if primitive else ""
        address = event.assoc.requestor.address
        if not self._peer_allowed(calling, address):
            self.counters.add("associations_rejected")
            log.warning("association rejected: calling AE not allowed", extra={"calling_ae": calling, "address": address})
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
            # as pynetdicom does for its own rejections: let the DUL send the A-ASSOCIATE-RJ
            # before the connection is closed (else the peer only sees the socket close)
            event.assoc.kill()

    def _on_rejected(self, event: evt.Event) -> None:
        """pynetdicom's own rejections: another called AE title, or too many associations."""
        self.counters.add("associations_rejected")
        answer = event.assoc.acceptor.primitive
        reasons: dict[object, str] = {0x07: "called AE title is not ours", 0x02: "too many associations"}
        reason = reasons.get(getattr(answer, "diagnostic", None), "rejected")
        requested = event.assoc.requestor.primitive
        log.warning("association rejected: %s", reason,
                    extra={"called_ae": requested.called_ae_title.strip() if requested else None,
                           "address": event.assoc.requestor.address})

    def _on_accepted(self, event: evt.Event) -> None:
        association = uuid.uuid4().hex
        setattr(event.assoc, _ASSOCIATION_ID, association)
        self.counters.add("associations_accepted")
        self.state.association_opened(association, event.assoc.requestor.ae_title.strip(),
                                      event.assoc.requestor.address)

    def _on_released(self, event: evt.Event) -> None:
        self._closed(event, AssociationState.RELEASED)

    def _on_aborted(self, event: evt.Event) -> None:
        """A-ABORT, a network timeout, or a connection closed (after a release this changes nothing)."""
        self._closed(event, AssociationState.ABORTED)

    def _closed(self, event: evt.Event, how: AssociationState) -> None:
        association = _association_id(event.assoc)
        if association:  # rejected associations were never recorded
            # its instances first: an association recorded as ended has all of its instances
            if not self.recorder.flush():
                log.error("instances of an ended association not recorded yet", extra={"association": association})
            for attempt in range(CLOSE_ATTEMPTS):  # a full or locked database: an open row would hold its studies
                try:
                    self.state.association_closed(association, how)
                    return
                except sqlite3.Error as exc:
                    if attempt == CLOSE_ATTEMPTS - 1:
                        log.error("association end not recorded (a restart marks it interrupted): %s", exc,
                                  extra={"association": association})
                        return
                    time.sleep(1.0)

    def _on_echo(self, event: evt.Event) -> int:
        return StoreStatus.SUCCESS

    def _on_store(self, event: evt.Event) -> int | Dataset:
        request = cast(C_STORE, event.request)
        peer = f"{event.assoc.requestor.ae_title.strip()}@{event.assoc.requestor.address}"
        try:
            # pynetdicom's encoded_dataset(include_meta=True) writes the same bytes through
            # pydicom, at a hundred times the cost
            with cast(BytesIO, request.DataSet).getbuffer() as received:  # a view: one copy less of a large object
                data = part10(received, str(request.AffectedSOPClassUID),
                              str(request.AffectedSOPInstanceUID), str(event.context.transfer_syntax))
        except ValueError as exc:
            answer = self.intake.refuse(StoreStatus.CANNOT_UNDERSTAND, f"the C-STORE command cannot be stored: {exc}",
                                        peer, str(request.AffectedSOPClassUID))
        else:
            answer = self.intake.admit(data, str(request.AffectedSOPClassUID), _association_id(event.assoc), peer)
        self.counters.add(answer.outcome.value)
        if answer.status == StoreStatus.SUCCESS:
            return int(answer.status)
        status = Dataset()
        status.Status = int(answer.status)
        status.ErrorComment = answer.reason[:64]  # LO: 64 characters; the log has the whole reason
        return status

    def start(self) -> None:
        """Listen (non-blocking) on the configured address and port."""
        reactor.install()
        settings = self.config.node
        handlers: list[Any] = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_RELEASED, self._on_released), (evt.EVT_ABORTED, self._on_aborted),
                    (evt.EVT_CONN_CLOSE, self._on_aborted), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_C_STORE, self._on_store)]
        context = None
        if settings.tls.enabled:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(settings.tls.ca_certificates))
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(str(settings.tls.certificate), str(settings.tls.private_key))
        server_class = _ReusePortServer if settings.receivers > 1 else ThreadedAssociationServer
        self.server = self.ae.make_server((settings.bind_address, settings.port), evt_handlers=handlers,
                                          ssl_context=context, server_class=server_class)
        # as AE.start_server(block=False) runs it, with the server class chosen above (the
        # server's shutdown removes itself from the AE's list of servers)
        self.ae._servers.append(self.server)
        threading.Thread(target=self.server.serve_forever, name=f"acceptor-{settings.port}", daemon=True).start()
        self._accept_without_handshake(self.server, context, settings.tls_handshake_timeout_s)
        log.info("listening", extra={"ae_title": settings.ae_title, "address": settings.bind_address,
                                     "port": settings.port, "tls": settings.tls.enabled})

    @staticmethod
    def _accept_without_handshake(server, context: ssl.SSLContext | None, handshake_timeout_s: float) -> None:
        """Accept connections without blocking the accept loop: pynetdicom wraps and
        handshakes TLS sockets on it, so one silent TCP connection would stall every
        other peer. The handshake moves to the connection's own thread, with a timeout."""
        listener = server.socket
        # socketserver listens with a backlog of 5: a burst of senders would see refused
        # connections instead of an association answer (accept, or reject when busy)
        listener.listen(LISTEN_BACKLOG)

        def get_request():
            sock, address = listener.accept()
            # Nagle's algorithm would hold back every small C-STORE response
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            return sock, address

        serve_connection = server.process_request_thread

        def process_request_thread(request, client_address):
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(handshake_timeout_s)
                    request.do_handshake()
                    request.settimeout(None)
                except (OSError, ValueError) as exc:  # ssl.SSLError and socket.timeout are OSErrors
                    log.warning("TLS handshake failed: %s", exc, extra={"address": client_address[0]})
                    server.shutdown_request(request)
                    return
            serve_connection(request, client_address)

        server.get_request = get_request
        server.process_request_thread = process_request_thread

    def stop(self) -> None:
        """Stop listening; open associations are aborted."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.recorder.close()
