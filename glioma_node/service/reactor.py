"""pynetdicom's acceptor loop, without the fixed sleeps that cap its receive rate.

pynetdicom 3.0's ``Association._run_reactor`` sleeps 1 ms before it looks for each
DIMSE message, and its DUL thread sleeps 1 ms whenever a loop found nothing to do, so
every C-STORE waits one to two milliseconds for nothing: a third of the time of a
one-association transfer of 800 instances. :func:`install` swaps in, for the
associations the node accepts (requestors keep the stock loop), the same loop
waiting on the message queue (it wakes when a message arrives, and still checks for
release, abort, a dead DUL and the network timeout every millisecond), and shortens
the DUL's idle delay of the node's associations. It changes nothing else and only
installs on the pynetdicom versions it was written against.
"""
from __future__ import annotations

import logging
import queue

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association

log = logging.getLogger(__name__)

SUPPORTED = ("3.0.",)
DUL_IDLE_DELAY_S = 0.0001
_original = Association._run_reactor


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
            context_id, msg = self.dimse.msg_queue.get(block=True, timeout=0.001)
        except queue.Empty:
            context_id, msg = None, None
        if msg and context_id is not None:
            self._serve_request(msg, context_id)
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
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


def install() -> bool:
    """Use the queue-waiting loop for every association of this process; False (and the
    stock loop) on a pynetdicom version it was not written for."""
    if not pynetdicom.__version__.startswith(SUPPORTED):
        log.warning("pynetdicom %s: keeping its stock acceptor loop", pynetdicom.__version__)
        return False
    Association._run_reactor = _run_reactor  # type: ignore[method-assign]  # the point of this module
    return True


def shorten_dul_delay(event: evt.Event) -> None:
    """EVT_ACCEPTED handler: the association's DUL thread naps 0.1 ms, not 1 ms, when idle."""
    event.assoc.dul._run_loop_delay = DUL_IDLE_DELAY_S
