"""An httpx transport that reports each response's path and status (Sentry API metrics).

Wraps the real transport, so retries and rate-limit answers are counted as what they
are: each HTTP exchange once, with its status (``error`` when none came back).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

OnResponse = Callable[[str, "int | str"], None]


class CountingTransport(httpx.BaseTransport):
    """``inner`` (default: httpx's own), calling ``on_response(path, status)`` per request."""

    def __init__(self, on_response: OnResponse, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner or httpx.HTTPTransport()
        self._on_response = on_response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError:
            self._on_response(request.url.path, "error")
            raise
        self._on_response(request.url.path, response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()
