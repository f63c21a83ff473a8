"""Liveness and readiness endpoints, served from the start of the process.

`/healthz` answers as long as the process works (a standby replica waiting for the Lease is
healthy and must not be restarted); `/readyz` only once this replica leads and its handlers run.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HealthState:
    """What the endpoints report; flipped by the operator's start-up and shutdown."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.failed = threading.Event()


def serve_health(state: HealthState, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104
    """Start the health server in a daemon thread; the caller may `shutdown()` it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            checks = {
                "/healthz": not state.failed.is_set(),
                "/readyz": state.ready.is_set() and not state.failed.is_set(),
            }
            if self.path not in checks:
                self.send_error(404)
                return
            ok = checks[self.path]
            body = b"ok\n" if ok else b"not ready\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
