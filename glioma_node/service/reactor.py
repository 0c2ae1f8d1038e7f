"""pynetdicom's acceptor loops, without the fixed sleeps that cap its receive rate.

pynetdicom 3.0 polls: ``Association._run_reactor`` sleeps 1 ms before it looks for
each DIMSE message, and the DUL thread sleeps 1 ms whenever a loop found nothing to
do, then asks the socket with a zero-timeout select; it reads a PDU 4 KiB at a time.
Every C-STORE so waited one to two milliseconds for nothing, and the polling threads
took the GIL from the one that writes and fsyncs. :func:`install` swaps in, for the
associations the node accepts (requestors keep the stock loops):

* the association loop waiting on its message queue (it wakes when a message
  arrives, and still checks for release, abort, a dead DUL and the network timeout
  every :data:`CHECK_S`);
* the DUL loop waiting in ``select`` on its socket and on a wake-up socket pair that
  :meth:`DULServiceProvider.send_pdu` and ``kill_dul`` write to, so a response leaves
  at once and an idle association costs nothing (timers are still checked every
  :data:`CHECK_S`);
* ``EVT_RELEASED`` handlers run before the A-RELEASE-RP is sent, not after;
* a connection closed before its A-ASSOCIATE-RQ ends the association at once, not
  after ``acse_timeout_s`` (peers that connect and reset would hold every slot).

And for every association of the process, the node's own requestors included
(:func:`_read_pdu_data`), reading a PDU is bounded: its announced length (4 bytes of a
6-byte header, up to 4 GiB, sent before the calling AE title is even checked) must not
exceed the association's maximum PDU size (``node.max_pdu_bytes`` on the node's side,
the requestor's own maximum on its sends) for a P-DATA-TF, or :data:`CONTROL_PDU_LIMIT`
for any other PDU and for anything before the association is established; a peer that
announces more is aborted before anything is allocated. A PDU within its bound is read
into one buffer of its length (up to :data:`CHUNK` bytes: every normal PDU); a longer one
(``max_pdu_bytes: 0`` is unlimited) grows by at most :data:`CHUNK` ahead of the bytes that
actually arrived, so a header alone costs nothing.

The protocol is untouched: the same state machine handles the same events in the
same order. The loops only install on the pynetdicom versions they were written
against; so does the bounded read, which replaces pynetdicom 3.0's ``_read_pdu_data``.
Errors of a connection's thread go to the log as one JSON record
(:func:`_handle_error`), not as socketserver's traceback on stderr.
"""
from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import time

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationServer, AssociationSocket

log = logging.getLogger(__name__)

SUPPORTED = ("3.0.",)
CHECK_S = 0.005  # how often waiting loops look at timers, release and abort
# Bytes a PDU's buffer may run ahead of what arrived, and the size up to which a PDU is
# read into one buffer of its announced length (max_pdu_bytes is 256 KiB by default).
CHUNK = 1 << 20
# The largest PDU other than a P-DATA-TF, bytes (an A-ASSOCIATE-RQ holds at most 128
# presentation contexts: ~120 KiB with a dozen 64-character transfer syntaxes each, and
# a user identity of up to 2 x 64 KiB), and of any PDU before the association is
# established (the calling AE title is not known to be allowed yet).
CONTROL_PDU_LIMIT = 1 << 20
P_DATA_TF = 0x04
PDU_TYPES = frozenset(range(0x01, 0x08))
# the states of PS3.8 9.2 in which an association is established (release included)
_ESTABLISHED = frozenset(f"Sta{n}" for n in range(6, 13))
_ZEROS = bytes(CHUNK)  # what a growing buffer is extended with before bytes are read into it
_original = Association._run_reactor
_original_dul = DULServiceProvider.run_reactor
_original_send_pdu = DULServiceProvider.send_pdu
_original_kill_dul = DULServiceProvider.kill_dul
# each accepting DUL's wake-up pair (read end, write end), while its loop runs
_WAKE: dict[DULServiceProvider, tuple[socket.socket, socket.socket]] = {}


def requests_only(dimse: DIMSEServiceProvider) -> None:
    """Let a requestor's reactor take only requests off ``dimse``'s queue, never a response.

    A requestor pauses its reactor to send and then reads the answer itself
    (``get_msg(block=True)``). pynetdicom's pause is racy: the reactor may pass its
    checkpoint just as a send begins and take the C-STORE-RSP meant for ``send_c_store``
    ("Received unexpected C-STORE service message", then a DIMSE timeout and an abort: a
    dispatch that is sent again, a replay that stops). Seen under load in ``make demo``,
    where the replay runs in the node's process. The reactor's non-blocking reads now
    leave anything but a request for this side to serve at the head of the queue.
    """
    stock = dimse.get_msg

    def get_msg(block: bool = False) -> tuple[int | None, object]:
        if block:  # a send_*() waiting on its answer
            return stock(block=True)
        _, msg = dimse.peek_msg()
        if msg is None or not getattr(msg, "is_valid_request", False):
            return None, None
        return stock(block=False)

    dimse.get_msg = get_msg  # type: ignore[method-assign,assignment]


def _run_reactor(self: Association) -> None:
    if not self.is_acceptor:
        # Waiting on the queue here would widen pynetdicom's pause race (requests_only):
        # the node's dispatch, and a replay run in the same process as the node (make
        # demo), keep the stock loop, which now takes only requests off the queue.
        requests_only(self.dimse)
        return _original(self)
    self._is_paused = False
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        try:  # the only change: wait on the queue instead of sleeping, then polling it
            context_id, msg = self.dimse.msg_queue.get(block=True, timeout=CHECK_S)
        except queue.Empty:
            context_id, msg = None, None
        if msg and context_id is not None:
            self._serve_request(msg, context_id)
        if self.is_established and self.acse.is_release_requested():
            # EVT_RELEASED before the A-RELEASE-RP leaves (pynetdicom: after), so what its
            # handlers record is in place by the time the peer sees its release complete
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.acse.send_release(is_response=True)
            self.kill()
            return
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return
        if not self.dul.is_alive():
            self.kill()
            return
        if self.dul.idle_timer_expired():
            log.error("network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def _wake(dul: DULServiceProvider) -> None:
    pair = _WAKE.get(dul)
    if pair is not None:
        try:
            pair[1].send(b"\0")
        except OSError:  # closed at the end of the loop, or already full of wake-ups: nothing to do
            pass


def _send_pdu(self: DULServiceProvider, primitive) -> None:
    _original_send_pdu(self, primitive)
    _wake(self)


def _kill_dul(self: DULServiceProvider) -> None:
    _original_kill_dul(self)
    _wake(self)


def _wait(dul: DULServiceProvider, wake: socket.socket) -> None:
    """Until the peer sent data, a primitive is queued to send, or :data:`CHECK_S` passed."""
    sock = getattr(dul.socket, "socket", None)
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return  # decrypted bytes already buffered: select would not see them
    if not dul.to_provider_queue.empty() or not dul.event_queue.empty():
        return
    try:
        ready, _, _ = select.select([wake] if sock is None else [sock, wake], [], [], CHECK_S)
    except (OSError, ValueError):  # the socket closed under us: the loop's own read reports it
        return
    if wake in ready:
        try:
            wake.recv(4096)
        except OSError:
            pass


def _dul_run_reactor(self: DULServiceProvider) -> None:
    """pynetdicom 3.0's DUL loop with :func:`_wait` where it slept (see the module doc)."""
    if not self.assoc.is_acceptor:
        return _original_dul(self)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    _WAKE[self] = (wake_r, wake_w)
    try:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                _wait(self, wake_r)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # as pynetdicom: abort the association, never hang it
                log.exception("DUL loop failed; aborting the association: %s", exc)
                abort = A_ABORT_RQ()
                abort.source, abort.reason_diagnostic = 0x02, 0x00
                if self.socket is not None:
                    self.socket.send(abort.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            before = self.state_machine.current_state
            self.state_machine.do_action(event)
            if event == "Evt17" and before == "Sta2":
                # the connection closed before any A-ASSOCIATE-RQ: end the association's wait
                # for one now (None is what its timeout returns), not acse_timeout_s later; a
                # peer that connects and resets would otherwise hold a slot of max_associations
                self.to_user_queue.put(None)  # type: ignore[arg-type]
            idle = False
    finally:
        _WAKE.pop(self, None)
        wake_r.close()
        wake_w.close()


def _fill(sock: socket.socket, buffer: bytearray, start: int, total: int, deadline: float | None = None) -> int:
    """Read into ``buffer`` from ``start`` until it holds ``total`` bytes or the peer
    closed; the number of bytes it then holds. ``buffer`` is grown by at most
    :data:`CHUNK` bytes ahead of what arrived (never to ``total`` on a header's word).
    ``deadline`` (time.monotonic() s): :class:`TimeoutError` once it passes, however the
    bytes trickle in (a byte every few seconds would otherwise hold the thread for weeks)."""
    read = start
    while read < total:
        if read == len(buffer):
            buffer.extend(memoryview(_ZEROS)[:min(CHUNK, total - len(buffer))])
        if deadline is not None:
            # past the deadline only what is already here is read (timeout 0: no wait), so a
            # thread the machine was slow to run is never cut off with its bytes waiting
            sock.settimeout(max(deadline - time.monotonic(), 0.0))
        with memoryview(buffer) as view:
            try:
                count = sock.recv_into(view[read:])
            except (BlockingIOError, ssl.SSLWantReadError):  # nothing waiting and the time is up
                raise TimeoutError("the PDU did not arrive whole in time") from None
        if not count:
            break
        read += count
    return read


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """pynetdicom's ``recv`` (read ``nr_bytes``, less only when the peer closed): one
    buffer for up to :data:`CHUNK` bytes, a growing one beyond."""
    sock = self.socket
    if sock is None:
        return bytearray()
    buffer = bytearray(min(nr_bytes, CHUNK))
    del buffer[_fill(sock, buffer, 0, nr_bytes):]
    return buffer


def pdu_limit(dul: DULServiceProvider, pdu_type: int) -> int | None:
    """The most bytes a PDU of ``pdu_type`` may announce after its 6-byte header now
    (None: no limit). A P-DATA-TF on an established association: the maximum this side
    told its peer (ae.maximum_pdu_size, node.max_pdu_bytes, for the node; 0 is
    unlimited); anything else, or anything before the association is established:
    :data:`CONTROL_PDU_LIMIT`."""
    if pdu_type == P_DATA_TF and dul.state_machine.current_state in _ESTABLISHED:
        assoc = dul.assoc
        local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
        return local.maximum_length or None
    return CONTROL_PDU_LIMIT


def _refuse(dul: DULServiceProvider, pdu_type: int, length: int, limit: int) -> None:
    """Abort a peer that announced a PDU over its bound, before reading or allocating it:
    an A-ABORT (service provider, invalid PDU parameter value), then the connection is
    closed (Evt17: the state machine ends the association as for a lost connection)."""
    assoc = dul.assoc
    log.warning("PDU over the allowed length: association aborted",
                extra={"address": getattr(assoc.requestor if assoc.is_acceptor else assoc.acceptor, "address", None),
                       "pdu_type": pdu_type, "announced_bytes": length, "limit_bytes": limit,
                       "state": dul.state_machine.current_state})
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x02, 0x06
    assoc_socket = dul.socket
    if assoc_socket is None:
        return
    raw = assoc_socket.socket
    if raw is not None:
        try:  # straight on the socket: the close below is the one Evt17 the state machine gets
            raw.settimeout(1.0)  # 10 bytes; a peer that reads nothing does not hold the thread
            raw.sendall(abort.encode())
        except (OSError, ValueError):
            pass
    assoc_socket.close()


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom 3.0's ``_read_pdu_data`` (same events, same order) with the PDU's
    announced length checked against :func:`pdu_limit` before anything is read or
    allocated, read as :func:`_fill` reads (see the module doc), and a peer silent in
    the middle of a PDU for the association's timeout (acse_timeout_s before it is
    established, network_timeout_s after) treated as gone: the whole PDU must arrive
    within that timeout of its first byte, so a peer trickling a byte at a time is gone too.

    The timeout is the socket's (sends get it too, as pynetdicom's requestor sockets
    have it): an accepted socket has none of its own, and a thread blocked in a read
    cannot see its association's timers, so a peer that stopped mid-PDU held its thread
    and its association slot for good. It is set when it changes (at establishment), not
    per PDU."""
    assoc_socket = self.socket
    sock = assoc_socket.socket if assoc_socket is not None else None
    if sock is None:
        self.event_queue.put("Evt17")
        return
    assoc = self.assoc
    wait = assoc.network_timeout if self.state_machine.current_state in _ESTABLISHED else assoc.acse_timeout
    # the whole PDU, header and body, within one timeout from its first byte
    deadline = time.monotonic() + wait if wait is not None else None
    try:
        return _read_pdu_within(self, sock, deadline)
    finally:
        if wait is not None:  # sends keep the association's timeout, not what was left of the PDU's
            try:
                sock.settimeout(wait)
            except OSError:  # closed meanwhile
                pass


def _read_pdu_within(self: DULServiceProvider, sock: socket.socket, deadline: float | None) -> None:
    header = bytearray(6)
    try:
        got = _fill(sock, header, 0, 6, deadline)
    except TimeoutError:
        log.warning("the peer stopped in the middle of a PDU header: connection closed")
        self.event_queue.put("Evt17")
        return
    except (OSError, ValueError) as exc:  # a reset, a socket closed under us
        log.info("connection closed before a PDU was received: %s", exc)
        self.event_queue.put("Evt17")
        return
    if got < 6:  # the peer closed (between PDUs: the usual end of a connection)
        self.event_queue.put("Evt17")
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in PDU_TYPES:
        log.warning("unknown PDU type 0x%02X received", pdu_type)
        self.event_queue.put("Evt19")
        return
    limit = pdu_limit(self, pdu_type)
    if limit is not None and length > limit:
        _refuse(self, pdu_type, length, limit)
        return
    total = 6 + length
    buffer = bytearray(min(total, CHUNK))
    buffer[:6] = header
    try:
        got = _fill(sock, buffer, 6, total, deadline)
    except (OSError, ValueError) as exc:  # TimeoutError included: the peer stopped mid-PDU
        log.warning("connection closed before the entire PDU was received: %s", exc,
                    extra={"announced_bytes": total})
        self.event_queue.put("Evt17")
        return
    if got != total:
        log.warning("the received PDU is shorter than announced",
                    extra={"received_bytes": got, "announced_bytes": total})
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = self._decode_pdu(buffer)
    except Exception as exc:  # as pynetdicom: an undecodable PDU is Evt19, never a dead thread
        log.warning("unable to decode the received PDU: %s", exc)
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def _handle_error(self: AssociationServer, request: object, client_address: object) -> None:
    """socketserver prints a failed connection's traceback to stderr; the log keeps one
    JSON record per event, so it goes there (the traceback in its ``error`` field)."""
    log.error("connection failed", exc_info=True, extra={"address": str(client_address)})


def install() -> bool:
    """Use the waiting loops for every association this process accepts; False (and the
    stock loops) on a pynetdicom version they were not written for."""
    if not pynetdicom.__version__.startswith(SUPPORTED):
        log.warning("pynetdicom %s: keeping its stock acceptor loop", pynetdicom.__version__)
        return False
    # the point of this module: replace pynetdicom's polling loops
    Association._run_reactor = _run_reactor  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = _dul_run_reactor  # type: ignore[method-assign]
    DULServiceProvider.send_pdu = _send_pdu  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = _kill_dul  # type: ignore[method-assign]
    AssociationSocket.recv = _recv  # type: ignore[method-assign]
    # every association of the process, the node's own requestors included
    DULServiceProvider._read_pdu_data = _read_pdu_data  # type: ignore[method-assign]
    AssociationServer.handle_error = _handle_error  # type: ignore[method-assign,assignment]
    return True
