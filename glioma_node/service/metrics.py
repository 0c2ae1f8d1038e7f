"""Health and Prometheus metrics over HTTP, on 127.0.0.1 unless configured otherwise.

``GET /health``: ``{"status": "ok"|"degraded", ...}`` (degraded: spool below its
watermark or the worker process gone; HTTP 503 then). ``GET /metrics``: the Prometheus
text format: instances and associations received, studies by state, queue depth per
job kind, stage durations (sum and count per job kind), failures, spool free bytes.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MetricsServer:
    """Serves ``health()`` and ``metrics()`` (name → value) on ``address``:``port``."""

    def __init__(self, port: int, health: Callable[[], dict], metrics: Callable[[], dict[str, float]],
                 address: str = "127.0.0.1"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/health":
                    report = outer.health()
                    body, kind = json.dumps(report).encode(), "application/json"
                    status = 200 if report.get("status") == "ok" else 503
                elif self.path == "/metrics":
                    lines = [f"{name} {value}" for name, value in sorted(outer.metrics().items())]
                    body, kind, status = ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4", 200
                else:
                    body, kind, status = b"not found\n", "text/plain", 404
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.health, self.metrics = health, metrics
        self.server = ThreadingHTTPServer((address, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="metrics")
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
