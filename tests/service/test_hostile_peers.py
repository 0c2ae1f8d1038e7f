"""Hostile peers of the node's two ports (issue 25): a thousand idle, half-sent HTTP
connections to the health/metrics port, HTTP clients that reset, and DICOM peers whose
6-byte PDU header announces gigabytes. The real node (`glioma-node serve`) on free ports
of 127.0.0.1, held to the usual 1024 descriptors; pynetdicom as the well-behaved peer.

Each case asserts what a peer sees (an answer, a closed connection, an A-ABORT), that
/health and C-ECHO still answer, and what the node spent (descriptors, resident memory),
read from /proc.
"""
from __future__ import annotations

import json
import os
import resource
import select
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.dul import DULServiceProvider

from glioma_node.service import reactor
from tests.hostile_data import half_sent_http
from tests.node_harness import RunningNode, node_config

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile")]

HTTP_TIMEOUT_S = 3  # node.http_timeout_s here
MAX_CONNECTIONS = 32  # node.http_max_connections (the default)
ACSE_TIMEOUT_S = 3  # node.acse_timeout_s and node.network_timeout_s here
MAX_ASSOCIATIONS = 8  # node.max_associations here
IDLE = 1000  # idle connections: the node's whole descriptor table, under the old thread per connection
NODE_FILES = 1024  # the node's soft limit on descriptors (the usual default, and the systemd unit's without LimitNOFILE)
GIGABYTES = 0x7FFF_FFF0  # a PDU length announced in a 6-byte header (2 GiB)
MEMORY_SLACK_KB = 16 * 1024  # what the node may grow by, resident, while it refuses a PDU header
VERIFICATION = "1.2.840.10008.1.1"  # the Verification SOP Class (C-ECHO)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-peers")
    running = RunningNode(node_config(folder, **{"node.http_timeout_s": HTTP_TIMEOUT_S,
                                                 "node.acse_timeout_s": ACSE_TIMEOUT_S,
                                                 "node.network_timeout_s": ACSE_TIMEOUT_S,
                                                 "node.max_associations": MAX_ASSOCIATIONS,
                                                 "assembly.force_timeout_s": 3600}))
    assert running.process is not None
    _, hard = resource.prlimit(running.process.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(running.process.pid, resource.RLIMIT_NOFILE, (NODE_FILES, hard))
    yield running
    running.stop()


def _pid(node: RunningNode) -> int:
    assert node.process is not None and node.process.poll() is None, "the node died"
    return node.process.pid


def _echo(port: int) -> bool:
    """A C-ECHO from an allowed peer (pynetdicom)."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="GLIOMA_NODE")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0x0000
    finally:
        assoc.release()


def _memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at its peak), kB, of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait_closed(sockets: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Read each socket until the node closes it (EOF or a reset); those still open after ``timeout`` s."""
    selector = selectors.DefaultSelector()  # epoll: select() cannot watch descriptors past 1023
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, s)
    still = set(sockets)
    deadline = time.monotonic() + timeout
    try:
        while still and time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                s = key.data
                try:
                    if s.recv(65536):
                        continue  # an answer before the close: read on
                except BlockingIOError:
                    continue
                except OSError:  # reset: closed too
                    pass
                selector.unregister(s)
                still.discard(s)
    finally:
        selector.close()
    return [s for s in sockets if s in still]


def _health_within(node: RunningNode, seconds: float) -> dict:
    started = time.monotonic()
    health = node.health()
    took = time.monotonic() - started
    assert took < seconds, f"/health took {took:.1f} s"
    return health


# The health/metrics port -------------------------------------------------------------
def test_a_thousand_idle_http_connections_starve_neither_health_nor_dicom(node):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE + 512  # the test's own sockets; the node keeps its 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"this process may open {hard} files at most; the test needs {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    pid = _pid(node)
    calm = _descriptors(pid)
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            idle.append(half_sent_http(node.metrics_port)[0])
        held = _descriptors(pid) - calm
        assert held <= MAX_CONNECTIONS + 16, f"the node holds {held} more descriptors for {IDLE} idle HTTP clients"
        health = _health_within(node, 2.0)
        assert health["status"] == "ok", health
        assert _echo(node.port), "C-ECHO failed while idle HTTP clients were connected"
        # those the node still held are dropped after http_timeout_s; the others were already
        still_open = _wait_closed(idle, HTTP_TIMEOUT_S + 5)
        assert not still_open, f"{len(still_open)} idle connections still open {HTTP_TIMEOUT_S + 5} s later"
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _health_within(node, 2.0)["status"] == "ok"
    assert _echo(node.port)


def test_an_idle_http_connection_is_dropped_after_http_timeout_s(node):
    closed_after = None
    with socket.create_connection(("127.0.0.1", node.metrics_port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and then a byte a second: the timeout is a total
        while time.monotonic() - started < HTTP_TIMEOUT_S + 5:
            if select.select([s], [], [], 1.0)[0]:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed_after = time.monotonic() - started
                    break
            else:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
    assert closed_after is not None, f"a slow HTTP client was still connected {HTTP_TIMEOUT_S + 5} s later"
    assert HTTP_TIMEOUT_S - 0.5 <= closed_after <= HTTP_TIMEOUT_S + 2, closed_after
    assert node.metrics()["glioma_node_http_dropped_timed_out_total"] >= 1


def test_a_complete_request_is_still_answered_at_once(node):
    """The other side of the same server: an ordinary scrape works, HEAD too, and an unknown path is a 404."""
    with socket.create_connection(("127.0.0.1", node.metrics_port), timeout=5) as s:
        s.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n"), answer
    assert "glioma_node_spool_free_bytes" in node.metrics()
    with socket.create_connection(("127.0.0.1", node.metrics_port), timeout=5) as s:
        s.sendall(b"GET /nothing HTTP/1.0\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 404 ")


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # with linger 0: an RST, not a FIN


def _not_json_objects(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except ValueError:
            bad.append(line)
    return bad


def test_clients_that_reset_leave_one_json_object_per_log_line(node):
    log = Path(node.log.name)
    start = log.stat().st_size
    for n in range(90):
        port = node.metrics_port if n % 2 == 0 else node.port
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if port == node.metrics_port:
            s.sendall([b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /health HTTP/1.1\r\n",
                       b"GET /health HTTP/1.1\r\n\r\n"][n % 3])
        elif n % 3 == 0:  # half an A-ASSOCIATE-RQ
            s.sendall(struct.pack(">BBL", 0x01, 0, 68) + b"\x00\x01\x00\x00GLIOMA_NODE")
        if n % 5 == 0:
            time.sleep(0.01)  # now and then the answer is on its way when the reset comes
        _reset(s)
    time.sleep(1)
    assert _health_within(node, 2.0)["status"] == "ok"
    assert _echo(node.port)
    text = log.read_bytes()[start:].decode("utf-8", "replace")
    bad = _not_json_objects(text)
    assert not bad, "log lines that are not one JSON object:\n" + "\n".join(bad[:20])


def test_an_uncaught_exception_is_one_json_line():
    """logs.configure's hooks: a thread's crash, an ignored exception and the program's end."""
    code = ("from glioma_node.service.logs import configure\n"
            "configure()\n"
            "import threading\n"
            "t = threading.Thread(target=lambda: 1 / 0, name='doomed'); t.start(); t.join()\n"
            "class Leaky:\n"
            "    def __del__(self): raise ValueError('in __del__')\n"
            "Leaky()\n"
            "raise RuntimeError('the end')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert not _not_json_objects(result.stderr), result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["level"] for r in records] == ["error", "warning", "critical"], records
    assert "ZeroDivisionError" in records[0]["error"] and "doomed" in records[0]["message"]
    assert "RuntimeError: the end" in records[2]["error"]


# PDU lengths -------------------------------------------------------------------------
def _read_to_close(s: socket.socket, timeout: float) -> bytes:
    """What the node sent until it closed the connection; AssertionError if it did not within ``timeout`` s."""
    s.settimeout(timeout)
    received = b""
    try:
        while chunk := s.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the node kept the connection open {timeout} s after the header") from None
    return received


@pytest.mark.parametrize("pdu_type", [0x01, 0x04], ids=["A-ASSOCIATE-RQ", "P-DATA-TF"])
def test_an_unknown_peer_announcing_gigabytes_is_closed_before_any_is_allocated(node, pdu_type):
    pid = _pid(node)
    before = _memory_kb(pid)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(struct.pack(">BBL", pdu_type, 0, GIGABYTES))
        answer = _read_to_close(s, 10)
    after = _memory_kb(pid)
    assert not answer or answer[:1] == b"\x07", f"not an A-ABORT: {answer[:16]!r}"
    assert after["VmHWM"] - before["VmHWM"] < MEMORY_SLACK_KB, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < MEMORY_SLACK_KB, (before, after)
    assert _echo(node.port)


def test_peers_that_stop_in_the_middle_of_a_pdu_are_dropped_and_free_their_slots(node):
    """More stalled peers than node.max_associations: each is closed after acse_timeout_s
    (a thread blocked reading a PDU once held its association slot for good)."""
    stalled = []
    try:
        for n in range(MAX_ASSOCIATIONS + 2):
            s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
            stalled.append(s)
            # an A-ASSOCIATE-RQ of 68 bytes announced, 10 sent (or 3 bytes of a header)
            s.sendall((struct.pack(">BBL", 0x01, 0, 68) + b"\x00\x01\x00\x00GLIOM") if n % 2 else b"\x01\x00\x00")
        still_open = _wait_closed(stalled, ACSE_TIMEOUT_S + 5)
        assert not still_open, f"{len(still_open)} stalled peers still connected {ACSE_TIMEOUT_S + 5} s later"
    finally:
        for s in stalled:
            s.close()
    assert _echo(node.port), "the stalled peers' association slots were not freed"


def test_peers_that_trickle_a_pdu_a_byte_at_a_time_are_dropped_too(node):
    """More peers than node.max_associations each send an A-ASSOCIATE-RQ header and then a
    byte every second (under the timeout between bytes): the whole PDU must arrive within
    acse_timeout_s of its first byte, so each is closed and DICOM is not locked out."""
    import threading

    peers = [socket.create_connection(("127.0.0.1", node.port), timeout=10) for _ in range(MAX_ASSOCIATIONS + 2)]
    stop = threading.Event()

    def trickle() -> None:
        for s in peers:
            try:
                s.sendall(struct.pack(">BBL", 0x01, 0, 60000))
            except OSError:
                pass
        while not stop.wait(1.0):
            for s in peers:
                try:
                    s.sendall(b"\x00")
                except OSError:  # closed by the node: what the test waits for
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        still_open = _wait_closed(peers, ACSE_TIMEOUT_S + 6)
        assert not still_open, f"{len(still_open)} trickling peers still connected {ACSE_TIMEOUT_S + 6} s later"
        assert _echo(node.port), "the trickling peers' association slots were not freed"
    finally:
        stop.set()
        thread.join(5)
        for s in peers:
            s.close()


def test_an_association_announcing_a_pdu_over_max_pdu_bytes_is_aborted(node):
    pid = _pid(node)
    ae = AE(ae_title="GLIOMA_REPLAY")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GLIOMA_NODE")
    assert assoc.is_established
    before = _memory_kb(pid)
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    assoc.dul.socket.socket.sendall(struct.pack(">BBL", 0x04, 0, GIGABYTES) + b"\0" * 65536)
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    after = _memory_kb(pid)
    established = assoc.is_established
    if established:
        assoc.abort()
    assert not established and assoc.is_aborted, "the node did not abort the association"
    assert after["VmHWM"] - before["VmHWM"] < MEMORY_SLACK_KB, (before, after)
    assert _echo(node.port)


# The node's own sends: the same bound (pynetdicom's reading is patched process-wide) --
class _HostilePacs:
    """A pynetdicom Storage SCP on 127.0.0.1 whose C-ECHO answer is a P-DATA-TF header
    announcing 2 GiB and ``then`` bytes of it; the connection is closed when
    :attr:`release` is set (mid-PDU)."""

    def __init__(self, then: int):
        self.then = then
        self.release = threading.Event()
        ae = AE(ae_title="PACS")
        ae.add_supported_context(VERIFICATION)
        ae.network_timeout = ae.dimse_timeout = 60
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, self._echo)])
        assert server is not None
        self.server = server
        self.port = server.server_address[1]

    def _echo(self, event) -> int:
        raw = event.assoc.dul.socket.socket
        try:
            raw.sendall(struct.pack(">BBL", 0x04, 0, GIGABYTES) + b"\0" * self.then)
        except OSError:  # the requestor closed it, as it should
            pass
        self.release.wait(60)
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return 0x0000

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.mark.parametrize("max_pdu, then", [(16382, 0), (0, 4 * 1024 * 1024)],
                         ids=["over the requestor's maximum", "unlimited: grows only with what arrives"])
def test_a_send_whose_peer_announces_gigabytes_costs_only_what_arrived(monkeypatch, max_pdu, then):
    monkeypatch.setattr(DULServiceProvider, "_read_pdu_data", reactor._read_pdu_data)
    pacs = _HostilePacs(then)
    try:
        ae = AE(ae_title="GLIOMA_NODE")
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        before = _memory_kb(os.getpid())
        assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS", max_pdu=max_pdu)
        assert assoc.is_established
        result: list[object] = []
        sender = threading.Thread(target=lambda: result.append(assoc.send_c_echo()), daemon=True)
        sender.start()
        if then:  # an unlimited PDU is read as it arrives: what arrived, and no more, is held
            time.sleep(3)
            held = _memory_kb(os.getpid())
            assert assoc.is_established, "the whole PDU had not come, and the association was over"
            assert held["VmHWM"] - before["VmHWM"] < then // 1024 + MEMORY_SLACK_KB, (before, held)
            pacs.release.set()  # the connection ends mid-PDU
        sender.join(15)
        after = _memory_kb(os.getpid())
        assert not sender.is_alive(), "the C-ECHO never ended"
        deadline = time.monotonic() + 10  # the association's own thread notes the abort a moment later
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established and assoc.is_aborted
        assert not result[0], "a C-ECHO answer from a PDU that was never complete"
        assert after["VmHWM"] - before["VmHWM"] < then // 1024 + MEMORY_SLACK_KB, (before, after)
    finally:
        pacs.stop()
