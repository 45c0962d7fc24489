"""Issue #8: no Sentry response or Link header can hold a poll forever.

Two misbehaving Sentry stand-ins on real loopback sockets:

- **trickle**: headers at once, then the JSON body one byte at a time. httpx's read
  timeout restarts with every byte, so only the client's own total deadline per
  request (``request_deadline`` / ``BOT_SENTRY_REQUEST_DEADLINE_SECONDS``) ends it;
- **endless**: every page's Link header says ``rel="next"; results="true"`` with a new
  cursor (Sentry's Link format, DESIGN.md "Sentry API facts"), forever. The page cap
  (``max_pages`` / ``BOT_POLL_MAX_PAGES``) ends it.

Either way the poll stops with one clear error, the watermark stays where it was, and
the next poll (the server well again) works. Checked on SQLite and PostgreSQL stores
and through the real ``python -m bot cycle``. No wall-clock assertion: the proof that
the client gave up is the server's own record (its write failed, or the page count).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.errors import SentryDeadline
from bot.pipeline.poll import get_watermark, poll_and_track
from bot.pipeline.sources import SentryApiSource
from bot.store.db import Store

ROOT = Path(__file__).resolve().parents[2]
SEEN = "2026-11-30T10:00:00Z"


def _issue(n: int) -> dict[str, Any]:
    return {
        "id": str(4_500_000_000 + n),
        "shortId": f"API-{n}",
        "title": f"Error: {n}",
        "count": "1",
        "userCount": 1,
        "lastSeen": SEEN,
        "firstSeen": SEEN,
        "project": {"id": "1", "slug": "api"},
    }


class Misbehaving:
    """A loopback 'Sentry' whose list-issues endpoint trickles, loops, or behaves."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.aborted = threading.Event()
        self.url = ""

    def body(self) -> bytes:
        return json.dumps([_issue(1)]).encode()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests += 1
        body = self.body()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if self.mode == "endless":
            cursor = f"0:{self.requests * 100}:0"
            handler.send_header(
                "Link",
                f'<{self.url}/?cursor=0:0:1>; rel="previous"; results="false"; cursor="0:0:1", '
                f'<{self.url}/?cursor={cursor}>; rel="next"; results="true"; cursor="{cursor}"',
            )
        handler.end_headers()
        if self.mode != "trickle":
            handler.wfile.write(body)
            return
        try:
            for byte in body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.25)
        except OSError:
            self.aborted.set()  # the client hung up before the body was complete
            return
        # Sent it all: the client waited for the whole body. A second send on a closed
        # socket is what proves it gave up; try it.
        try:
            time.sleep(0.5)
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:
            self.aborted.set()


@pytest.fixture
def server() -> Iterator[Misbehaving]:
    state = Misbehaving()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            return

    httpd = Server(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _poll(store: Store, server: Misbehaving, clock: FakeClock) -> Any:
    client = HttpSentryClient(
        org="acme",
        token="tok",
        base_url=server.url,
        clock=clock,
        request_deadline=1.5,
        max_pages=5,
        listing_deadline=60,
        max_attempts=1,
    )
    try:
        return poll_and_track(store, SentryApiSource(client), clock)
    finally:
        client.close()


def _mark(store: Store) -> datetime | None:
    with store.session() as session:
        return get_watermark(session, "sentry")


def test_a_trickling_response_ends_at_the_request_deadline(
    store: Store, server: Misbehaving, clock: FakeClock
) -> None:
    server.mode = "trickle"
    with pytest.raises(SentryDeadline, match=r"did not finish answering within 1\.5 s"):
        _poll(store, server, clock)
    assert server.aborted.wait(30)  # the client hung up mid-body
    assert _mark(store) is None  # the old watermark (none) is kept
    server.mode = "ok"
    result = _poll(store, server, clock)
    assert result.tracked.new == [_issue(1)["id"]]
    assert _mark(store) == datetime(2026, 11, 30, 10, tzinfo=UTC)


def test_an_endless_cursor_ends_at_the_page_cap(
    store: Store, server: Misbehaving, clock: FakeClock
) -> None:
    server.mode = "ok"
    _poll(store, server, clock)
    before = _mark(store)
    server.mode, server.requests = "endless", 0
    with pytest.raises(SentryDeadline, match="more than 5 pages"):
        _poll(store, server, clock)
    assert server.requests == 5
    assert _mark(store) == before
    server.mode = "ok"
    assert _poll(store, server, clock).watermark == before


def test_listing_deadline_bounds_a_poll_of_slow_pages(
    store: Store, server: Misbehaving, clock: FakeClock
) -> None:
    server.mode = "endless"
    client = HttpSentryClient(
        org="acme",
        token="tok",
        base_url=server.url,
        clock=clock,
        max_pages=10_000,
        listing_deadline=0.0,
    )
    with pytest.raises(SentryDeadline, match="longer than 0 s"), client:
        list(client.list_issues())
    assert server.requests == 0  # the deadline is checked before each page


def test_cycle_cli_prints_one_error_line_and_the_next_cycle_works(
    server: Misbehaving, tmp_path: Path
) -> None:
    (tmp_path / "playbooks").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_"))},
        "PYTHONPATH": str(ROOT),
        "SENTRY_BASE_URL": server.url,
        "SENTRY_AUTH_TOKEN": "tok",
        "SENTRY_ORG": "acme",
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
        "BOT_REPORTS_DIR": str(tmp_path / "reports"),
        "BOT_SENTRY_REQUEST_DEADLINE_SECONDS": "1.5",
        "BOT_POLL_MAX_PAGES": "4",
    }

    def cycle(mode: str) -> subprocess.CompletedProcess[str]:
        server.mode = mode
        return subprocess.run(
            [sys.executable, "-m", "bot", "cycle"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )

    for mode, expected in (("trickle", "did not finish answering"), ("endless", "more than 4")):
        bad = cycle(mode)
        assert bad.returncode == 1, bad.stderr
        assert "Traceback" not in bad.stderr
        errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], bad.stderr
    good = cycle("ok")
    assert good.returncode == 0, good.stderr
