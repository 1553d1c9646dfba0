"""The service's HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` (liveness) and ``/readyz``.

What the probes answer is decided by the service (:class:`Probes`); this module only serves it, on a
threaded server whose polling loop is the http thread's heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from frame_buffer import metrics
from frame_buffer.supervisor import Heartbeat


class Probes(Protocol):
    """What ``/healthz`` and ``/readyz`` report: a JSON object with ``alive`` / ``ready`` true or false."""

    def health(self) -> dict[str, Any]: ...

    def ready(self) -> dict[str, Any]: ...


class HTTPServer(ThreadingHTTPServer):
    """Beats the http thread's heartbeat on every poll of ``serve_forever``."""

    daemon_threads = True
    heartbeat: Heartbeat | None = None

    def service_actions(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()


def handler_for(probes: Probes, exposition: Callable[[], bytes] | None = None) -> type[BaseHTTPRequestHandler]:
    """A request handler answering from ``probes``: 200 when alive / ready, else 503 with the reasons.

    ``exposition`` makes ``/metrics`` (default: this process's registry); a parent of worker processes adds
    theirs.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = exposition() if exposition is not None else generate_latest(metrics.REGISTRY)
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                health = probes.health()
                self._send(200 if health["alive"] else 503, json.dumps(health).encode() + b"\n", "application/json")
            elif self.path == "/readyz":
                state = probes.ready()
                self._send(200 if state["ready"] else 503, json.dumps(state).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Access logs stay out of the event log."""

    return Handler
