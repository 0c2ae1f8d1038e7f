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
* reading a PDU into one buffer of its announced length;
* ``EVT_RELEASED`` handlers run before the A-RELEASE-RP is sent, not after.

The protocol is untouched: the same state machine handles the same events in the
same order. It only installs on the pynetdicom versions it was written against.
"""
from __future__ import annotations

import logging
import queue
import select
import socket
import ssl

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

SUPPORTED = ("3.0.",)
CHECK_S = 0.005  # how often waiting loops look at timers, release and abort
_original = Association._run_reactor
_original_dul = DULServiceProvider.run_reactor
_original_send_pdu = DULServiceProvider.send_pdu
_original_kill_dul = DULServiceProvider.kill_dul
# each accepting DUL's wake-up pair (read end, write end), while its loop runs
_WAKE: dict[DULServiceProvider, tuple[socket.socket, socket.socket]] = {}


def _run_reactor(self: Association) -> None:
    if not self.is_acceptor:
        # A requestor pauses its reactor to send and then reads the answer itself; waiting
        # on the queue here would widen pynetdicom's pause race until this loop takes the
        # C-STORE-RSP meant for send_c_store ("Received unexpected C-STORE service
        # message", then a DIMSE timeout). The node's dispatch, and a replay run in the
        # same process as the node (make demo), keep the stock loop.
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
            self.state_machine.do_action(event)
            idle = False
    finally:
        _WAKE.pop(self, None)
        wake_r.close()
        wake_w.close()


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """pynetdicom's ``recv`` (read ``nr_bytes``, less only when the peer closed) into one buffer."""
    sock = self.socket
    if sock is None:
        return bytearray()
    buffer = bytearray(nr_bytes)
    view, read = memoryview(buffer), 0
    while read < nr_bytes:
        count = sock.recv_into(view[read:], nr_bytes - read)
        if not count:
            return buffer[:read]
        read += count
    return buffer


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
    return True
