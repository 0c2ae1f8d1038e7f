"""The node's replacement of pynetdicom's loops (service/reactor.py): decisions tested
on pynetdicom's own DIMSE provider and primitives."""
from __future__ import annotations

from types import SimpleNamespace

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_STORE

from glioma_node.service.reactor import requests_only


def _provider() -> DIMSEServiceProvider:
    return DIMSEServiceProvider(SimpleNamespace(dimse_timeout=0.5))  # type: ignore[arg-type]


def test_a_requestors_reactor_never_takes_the_response_its_send_waits_for():
    """pynetdicom's pause race let the requestor's reactor take the C-STORE-RSP meant for
    send_c_store (a DIMSE timeout, an abort, a dispatch sent again); the reactor's reads
    now leave a response on the queue for the blocking read of the send."""
    dimse = _provider()
    requests_only(dimse)
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.Status = 0x0000
    dimse.msg_queue.put((1, response))
    assert dimse.get_msg(block=False) == (None, None)  # the reactor's poll
    assert dimse.msg_queue.qsize() == 1
    assert dimse.get_msg(block=True) == (1, response)  # send_c_store's read


def test_a_requestors_reactor_still_serves_requests_from_its_peer():
    dimse = _provider()
    requests_only(dimse)
    request = C_ECHO()
    request.MessageID = 3
    request.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert request.is_valid_request
    dimse.msg_queue.put((1, request))
    assert dimse.get_msg(block=False) == (1, request)
    assert dimse.get_msg(block=False) == (None, None)
