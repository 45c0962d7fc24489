"""Serve an httpx-style request handler on a loopback port, in a background thread.

Used by :meth:`bot.testing.sentry.FakeSentry.serve` so the real client can be exercised
over real sockets (timeouts, connection handling) and the demo can run without Sentry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Responder = Callable[[httpx.Request, Callable[[float], None]], httpx.Response]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (timeout test) resets the socket; that is expected.
        return


@contextmanager
def serve_handler(respond: Responder, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``respond`` behind an HTTP server on ``host`` and a free port; yield its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(
                self.command,
                f"http://{self.headers.get('Host', host)}{self.path}",
                headers=list(self.headers.items()),
                content=body,
            )
            response = respond(request, time.sleep)
            try:
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)
            except OSError:
                self.close_connection = True

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: object) -> None:
            return

    server = _QuietServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-sentry", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
