"""A recording incoming-webhook receiver that answers like Slack.

Use it as an ``httpx.MockTransport`` handler (``webhook.client()``) or as a real HTTP
server on a loopback port (``with webhook.serve() as url:``). Every request is
recorded; replies can be scripted, otherwise it behaves like a Slack hook:

- ``200 ok`` for a JSON object with a non-empty ``text`` or ``blocks``;
- ``400 invalid_payload`` for a body that is not a JSON object, ``400 no_text`` for
  one with neither ``text`` nor ``blocks``;
- after ``remove("no_service")`` every request gets ``404 no_service``; after
  ``archive()`` every request gets ``410 channel_is_archived``.

Scripted replies (``script(Reply.rate_limited(2), Reply.server_error(), Reply.ok())``)
are consumed one per request, in order, before the default behaviour applies. A
scripted ``Reply.timeout()`` raises ``httpx.ReadTimeout`` (MockTransport only).

``webhook.notifier()`` is the in-memory twin of the :class:`~bot.notify.port.Notifier`
port over the same receiver, without HTTP; tests/contract/test_notifier_contract.py
holds it and the real Slack adapter to the same assertions.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from bot.errors import NotifyRetryLater
from bot.json_types import JsonValue
from bot.notify.port import NotifyPermanent, Payload

HOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: str = "ok"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: bool = False

    @classmethod
    def ok(cls) -> Reply:
        return cls()

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1) -> Reply:
        headers = (("Retry-After", _num(retry_after)),) if retry_after is not None else ()
        return cls(429, "rate_limited", headers)

    @classmethod
    def server_error(cls, status: int = 500, body: str = "rollup_error") -> Reply:
        return cls(status, body)

    @classmethod
    def refused(cls, status: int, body: str) -> Reply:
        """An error answer of our choosing, e.g. ``refused(403, "action_prohibited")``."""
        return cls(status, body)

    @classmethod
    def read_timeout(cls) -> Reply:
        return cls(0, "", (), True)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and what it answered."""

    payload: JsonValue  # parsed JSON, or None when the body was not JSON
    raw: bytes
    status: int
    path: str
    content_type: str = ""


class RecordingWebhook:
    """A Slack-like incoming webhook that records every request it gets."""

    def __init__(self, *replies: Reply) -> None:
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque(replies)
        self._gone: tuple[int, str] | None = None
        self._lock = threading.Lock()

    # -- behaviour ---------------------------------------------------------------
    def script(self, *replies: Reply) -> RecordingWebhook:
        """Queue replies for the next requests (in order); returns self for chaining."""
        with self._lock:
            self._script.extend(replies)
        return self

    def remove(self, code: str = "no_service") -> None:
        """The hook was deleted: every later request gets ``404 code``."""
        self._gone = (404, code)

    def archive(self) -> None:
        """The channel was archived: every later request gets ``410 channel_is_archived``."""
        self._gone = (410, "channel_is_archived")

    # -- what was received -------------------------------------------------------
    @property
    def delivered(self) -> list[JsonValue]:
        """Payloads that were answered 2xx (i.e. would have been posted)."""
        with self._lock:
            return [r.payload for r in self.requests if 200 <= r.status < 300]

    @property
    def attempts(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- the core: one request in, one reply out -----------------------------------
    def answer(self, raw: bytes, path: str = HOOK_PATH, content_type: str = "") -> Reply:
        """Record one request body and decide the reply (shared by both front ends)."""
        try:
            payload: JsonValue = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        with self._lock:
            reply = self._script.popleft() if self._script else self._default(payload)
            self.requests.append(
                Received(payload, raw, 0 if reply.timeout else reply.status, path, content_type)
            )
        return reply

    def _default(self, payload: JsonValue) -> Reply:
        if self._gone is not None:
            return Reply(*self._gone)
        if not isinstance(payload, dict):
            return Reply(400, "invalid_payload")
        if not payload.get("text") and not payload.get("blocks"):
            return Reply(400, "no_text")
        return Reply.ok()

    # -- the Notifier port without HTTP ---------------------------------------------
    def notifier(self) -> RecordingNotifier:
        """A :class:`~bot.notify.port.Notifier` delivering straight to this receiver."""
        return RecordingNotifier(self)

    # -- httpx.MockTransport front end -----------------------------------------------
    def handler(self, request: httpx.Request) -> httpx.Response:
        """An ``httpx.MockTransport`` handler."""
        if request.method != "POST":
            return httpx.Response(405, text="invalid_method")
        reply = self.answer(
            request.read(), request.url.path, request.headers.get("content-type", "")
        )
        if reply.timeout:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(
            reply.status,
            text=reply.body,
            headers=[("content-type", "text/html"), *reply.headers],
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def client(self) -> httpx.Client:
        """An ``httpx.Client`` whose requests all land here."""
        return httpx.Client(transport=self.transport())

    # -- loopback HTTP server front end ------------------------------------------------
    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 (a free port) in a thread; yields the webhook URL."""
        hook = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                reply = hook.answer(raw, self.path, self.headers.get("Content-Type", ""))
                if reply.timeout:
                    return  # no answer at all: the client times out or sees EOF
                body = reply.body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean; requests are recorded instead

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            host, port = server.server_address[:2]
            yield f"http://{host!s}:{port}{HOOK_PATH}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


_RETRYABLE = frozenset({408, 425, 429})


class RecordingNotifier:
    """The notifier port in memory: each ``send`` is one request to a :class:`RecordingWebhook`.

    Replies are read as the real adapter reads Slack's (``bot.adapters.slack.webhook``):
    2xx delivered; 429 (with ``Retry-After``), 408, 425, 5xx and a timeout are
    :class:`~bot.errors.NotifyRetryLater`; every other status is
    :class:`~bot.notify.port.NotifyPermanent` carrying Slack's error token as ``code``.
    """

    def __init__(self, hook: RecordingWebhook) -> None:
        self.hook = hook

    def send(self, payload: Payload) -> None:
        raw = json.dumps(payload).encode()
        reply = self.hook.answer(raw, HOOK_PATH, "application/json")
        if reply.timeout:
            raise NotifyRetryLater("webhook timed out")
        if 200 <= reply.status < 300:
            return
        code = reply.body.strip().splitlines()[0] if reply.body.strip() else ""
        code = code or f"http_{reply.status}"
        if reply.status >= 500 or reply.status in _RETRYABLE:
            wait = dict(reply.headers).get("Retry-After")
            raise NotifyRetryLater(
                f"webhook answered {reply.status} {code}",
                retry_after=float(wait) if wait is not None else None,
            )
        raise NotifyPermanent(
            f"webhook refused the message: {reply.status} {code}", status=reply.status, code=code
        )
