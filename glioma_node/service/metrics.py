"""Health and Prometheus metrics over HTTP, on 127.0.0.1 unless configured otherwise.

``GET /health``: ``{"status": "ok"|"degraded", ...}`` (degraded: spool below its
watermark or the worker process gone; HTTP 503 then). ``GET /metrics``: the Prometheus
text format: instances and associations received, studies by state, queue depth per
job kind, stage durations (sum and count per job kind), failures, spool free bytes,
and this server's own dropped connections.

The port must not be a way to starve the node, which shares one process (and its
descriptors) with the DICOM listener. So a connection gets no thread while its request
arrives: one thread waits on every connection at once (``selectors``) until its request
head is complete, and only then hands it to a thread that answers and closes it (one
request per connection, as HTTP/1.0). A client that has not sent its whole head within
``timeout_s`` (node.http_timeout_s; a total, so a byte every few seconds does not keep
it) is dropped, and the server holds at most ``max_connections``
(node.http_max_connections) at once: past it the oldest connection still sending its
head is dropped for the new one (a flood of idle connections cannot lock /health out
until they time out), or, when every one is being answered, the new one gets a 503 and
is closed at once, without a thread. Nothing a client does writes to stderr: errors go
to the log, one JSON record each.
"""
from __future__ import annotations

import errno
import json
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from glioma_node.service.config import NodeSettings

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192  # a request line and headers; /health and /metrics need none of them
WARN_EVERY_S = 60.0  # how often a full server says so in the log, at most
_ACCEPT_BURST = 64  # connections accepted per wake-up before timers and reads are looked at again
_OUT_OF_FILES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


class Dropped(StrEnum):
    """Why the server closed a connection without answering it (a /metrics counter each)."""

    TIMED_OUT = "timed_out"  # its request head was not complete within timeout_s
    EVICTED = "evicted"  # still sending its head when the server was full and another came
    REFUSED = "refused"  # came when every connection was being answered (got a 503)
    HEAD_TOO_LARGE = "head_too_large"  # more than MAX_HEAD_BYTES without the blank line
    CLOSED = "closed"  # the client closed or reset it before its request was complete


@dataclass
class _Pending:
    """A connection whose request head is still arriving; ``deadline`` on time.monotonic()."""

    deadline: float
    head: bytearray = field(default_factory=bytearray)


def _end_of_head(head: bytearray) -> int:
    """Where the request head ends (its blank line), or -1 while it is incomplete."""
    for mark in (b"\r\n\r\n", b"\n\n"):
        at = head.find(mark)
        if at >= 0:
            return at
    return -1


class MetricsServer:
    """Serves ``health()`` and ``metrics()`` (name → value) on ``address``:``port`` (see
    the module doc for ``timeout_s``, seconds, and ``max_connections``)."""

    def __init__(self, port: int, health: Callable[[], dict], metrics: Callable[[], dict[str, float]],
                 address: str = "127.0.0.1", timeout_s: float = 10.0, max_connections: int = 32):
        if timeout_s <= 0 or max_connections < 1:
            raise ValueError(f"timeout_s must be > 0 and max_connections >= 1, got {timeout_s} and {max_connections}")
        self.health, self.metrics = health, metrics
        self.timeout_s, self.max_connections = timeout_s, max_connections
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.listener = socket.create_server((address, port), family=family, backlog=128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.dropped: Counter[Dropped] = Counter()
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first (insertion order is accept order)
        self._answering = 0
        self._lock = threading.Lock()  # guards _answering, which answering threads decrement
        self._warned = -WARN_EVERY_S
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._loop, daemon=True, name="metrics")
        self.thread.start()

    @classmethod
    def for_node(cls, settings: NodeSettings, health: Callable[[], dict],
                 metrics: Callable[[], dict[str, float]]) -> MetricsServer:
        """The server ``node`` configures: metrics_port, metrics_bind_address,
        http_timeout_s and http_max_connections."""
        return cls(settings.metrics_port, health, metrics, settings.metrics_bind_address,
                   timeout_s=settings.http_timeout_s, max_connections=settings.http_max_connections)

    # the waiting thread -------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                wait = None
                if self._pending:
                    wait = max(0.0, next(iter(self._pending.values())).deadline - time.monotonic())
                for key, _ in self._selector.select(wait):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic())
        except Exception:  # never silently: /health would just stop answering
            log.exception("the health/metrics server stopped")
        finally:
            for conn in list(self._pending):
                self._drop(conn, None)

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                conn, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EINVAL):  # the listener itself is closed: stopping
                    raise
                if exc.errno not in _OUT_OF_FILES:  # a connection's own error (EPROTO, ENETUNREACH): skip it
                    log.info("health/metrics connection not accepted: %s", exc.strerror)
                    continue
                # out of descriptors: free one that waits for its head, else let the
                # kernel's backlog hold the connection a moment
                log.warning("health/metrics server cannot accept: %s", exc.strerror)
                if self._pending:
                    self._drop(next(iter(self._pending)), Dropped.EVICTED)
                else:
                    time.sleep(0.05)
                return
            if len(self._pending) + self._answering >= self.max_connections:
                self._full()
                if self._pending:
                    self._drop(next(iter(self._pending)), Dropped.EVICTED)
                else:
                    self._refuse(conn)
                    continue
            conn.setblocking(False)
            self._pending[conn] = _Pending(time.monotonic() + self.timeout_s)
            self._selector.register(conn, selectors.EVENT_READ)

    def _full(self) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning("health/metrics server full: node.http_max_connections reached; dropping the oldest "
                        "connection still sending its request", extra={"max_connections": self.max_connections,
                                                                        "dropped": {str(k): v for k, v in
                                                                                    self.dropped.items()}})

    def _refuse(self, conn: socket.socket) -> None:
        self.dropped[Dropped.REFUSED] += 1
        try:
            conn.setblocking(False)
            conn.send(_BUSY)
        except OSError:
            pass
        conn.close()

    def _read(self, conn: socket.socket) -> None:
        pending = self._pending.get(conn)
        if pending is None:
            return
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn, Dropped.CLOSED)
            return
        pending.head += data
        end = _end_of_head(pending.head)
        if end < 0:
            if len(pending.head) > MAX_HEAD_BYTES:
                self._drop(conn, Dropped.HEAD_TOO_LARGE)
            return
        self._selector.unregister(conn)
        del self._pending[conn]
        with self._lock:
            self._answering += 1
        try:
            threading.Thread(target=self._answer, args=(conn, bytes(pending.head[:end])), daemon=True,
                             name="metrics-answer").start()
        except RuntimeError as exc:  # no thread to be had: the client retries
            log.warning("health/metrics server cannot start a thread: %s", exc)
            with self._lock:
                self._answering -= 1
            self._refuse(conn)

    def _expire(self, now: float) -> None:
        while self._pending:
            conn, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                return
            self._drop(conn, Dropped.TIMED_OUT)

    def _drop(self, conn: socket.socket, why: Dropped | None) -> None:
        self._pending.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
        if why is not None:
            self.dropped[why] += 1

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # the answering threads ------------------------------------------------------------
    def _answer(self, conn: socket.socket, head: bytes) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(self.timeout_s)  # a client that reads nothing holds this thread no longer
            conn.sendall(self._response(head))
        except OSError as exc:  # the client reset or went away: its loss, nothing of the node's
            log.debug("health/metrics client gone: %s", exc)
        except Exception:
            log.exception("health/metrics request failed")
        finally:
            conn.close()
            with self._lock:
                self._answering -= 1

    def _response(self, head: bytes) -> bytes:
        method, path, status, kind, body = self._route(head)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", f"Content-Type: {kind}",
                 f"Content-Length: {len(body)}", "Connection: close"]
        if status == 405:
            lines.append("Allow: GET, HEAD")
        response = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return response if method == "HEAD" else response + body

    def _route(self, head: bytes) -> tuple[str, str, int, str, bytes]:
        """(method, path, status, content type, body) for a request head."""
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return "", "", 400, "text/plain", b"bad request\n"
        method, path = parts[0].decode("latin-1"), parts[1].decode("latin-1").split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return method, path, 405, "text/plain", b"method not allowed\n"
        try:
            if path == "/health":
                report = self.health()
                status = 200 if report.get("status") == "ok" else 503
                return method, path, status, "application/json", json.dumps(report).encode()
            if path == "/metrics":
                values = dict(self.metrics())
                for why in Dropped:
                    values[f"glioma_node_http_dropped_{why.value}_total"] = self.dropped[why]
                lines = [f"{name} {value}" for name, value in sorted(values.items())]
                return method, path, 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()
        except Exception:
            log.exception("health/metrics: %s failed", path)
            return method, path, 500, "text/plain", b"internal error (see the node's log)\n"
        return method, path, 404, "text/plain", b"not found\n"

    def stop(self) -> None:
        """Stop serving and close the socket (connections being answered finish on their own)."""
        self._stopping.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self.thread.join(timeout=10)
        self._selector.close()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()
