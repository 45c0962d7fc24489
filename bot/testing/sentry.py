"""An in-process Sentry that speaks the HTTP API, for tests and the offline demo.

Use it as a transport (``httpx.MockTransport(fake.handler)``) or on a loopback port
(``with fake.serve() as base_url:``). It keeps state (issues, events, comments, known
repositories and commits), follows the behaviours listed in DESIGN.md "Sentry API facts"
(Link pagination, rate-limit headers, 429 with a bare string body, partial PUT, bulk PUT,
inCommit validation, duplicate comments), records every request, and can inject faults::

    fake = FakeSentry(clock=clock, token="t0k")
    issue = fake.add_issue(title="Error: boom", level="warning")
    fake.add_event(issue["id"], at=clock.now(), message="Error: boom")
    fake.inject(Fault.SERVER_ERROR, Fault.TIMEOUT)      # the next two requests fail
    fake.events_refusal = 403     # organizations/{org}/events/ refuses (plan / scope)
"""

from __future__ import annotations

import enum
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx

from bot.clock import Clock
from bot.json_types import JsonObject, JsonValue
from bot.testing import sentry_data as data
from bot.testing.loopback import serve_handler
from bot.testing.sentry_routes import Routes
from bot.testing.sentry_search import SearchError
from bot.testing.sentry_state import IssueState


class Fault(enum.Enum):
    """A failure the fake produces instead of (or on top of) the normal answer."""

    SERVER_ERROR = "server_error"  # 502 with an HTML body, as from a load balancer
    TIMEOUT = "timeout"  # transport: httpx.ReadTimeout; server: answer too late
    TRUNCATED_JSON = "truncated_json"  # the normal 200, body cut in half
    RATE_LIMITED = "rate_limited"  # a 429 regardless of the budget


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (the Authorization header is not kept)."""

    method: str
    path: str
    params: dict[str, list[str]]
    json: JsonValue


class FakeSentry:
    """A stateful fake of Sentry's organization issue endpoints and events table."""

    def __init__(
        self,
        *,
        clock: Clock,
        org: str = "acme",
        token: str | None = None,
        rate_limit: int = 1000,
        rate_window: int = 60,
        send_retry_after: bool = False,
        server_timeout_seconds: float = 1.0,
    ) -> None:
        self.clock = clock
        self.org = org
        self.token = token
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.send_retry_after = send_retry_after
        self.server_timeout_seconds = server_timeout_seconds
        self.issues: dict[str, IssueState] = {}
        self.projects: dict[str, JsonObject] = {}
        self.repositories: dict[str, set[str]] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        # 403 or 400: the organization events endpoint refuses (plan or token scope).
        self.events_refusal: int | None = None
        self._window_start = -1
        self._used = 0
        self._next_id = 4_500_000_001
        self._lock = threading.RLock()
        self._routes = Routes(self)

    # -- test helpers ---------------------------------------------------------------

    def project(self, slug: str, *, platform: str | None = "python") -> JsonObject:
        """The project with this slug, created on first use with a stable numeric id."""
        if slug not in self.projects:
            pid = str(1 + len(self.projects))
            self.projects[slug] = {"id": pid, "name": slug, "slug": slug, "platform": platform}
        return self.projects[slug]

    def add_issue(
        self,
        *,
        project: str = "backend",
        environment: str | None = "production",
        **overrides: JsonValue,
    ) -> JsonObject:
        """Create an unresolved issue (realistic defaults; ``overrides`` win) and return it.

        Datetime overrides (``lastSeen=...``) are converted to Sentry's ISO format.
        """
        with self._lock:
            number = self._next_id
            self._next_id += 1
            issue_id = str(overrides.pop("id", number))
            prefix = project.upper().replace("_", "-")
            short_id = overrides.pop("shortId", f"{prefix}-{_base36(number - 4_500_000_000)}")
            proj = overrides.pop("project_json", None) or self.project(project)
            clean = {k: data.iso(v) if isinstance(v, datetime) else v for k, v in overrides.items()}
            issue = data.base_issue(
                issue_id=issue_id,
                short_id=short_id,
                org=self.org,
                now=self.clock.now(),
                project=proj,
                overrides=clean,
            )
            state = IssueState(data=issue)
            if environment:
                state.environments.add(environment)
            self.issues[issue_id] = state
            return issue

    def add_event(
        self,
        issue_id: str,
        *,
        at: datetime | None = None,
        message: str | None = None,
        environment: str = "production",
        user: str | None = "user-1",
        tags: dict[str, str] | None = None,
        entries: list[JsonObject] | None = None,
        release: str | None = None,
    ) -> JsonObject:
        """Record an event; bumps count, userCount, first/lastSeen like Sentry does.

        An event on a resolved issue reopens it as ``regressed``, as Sentry does.
        """
        with self._lock:
            state = self.issues[issue_id]
            when = at or self.clock.now()
            event = data.new_event(
                issue=state.data,
                at=when,
                message=message,
                environment=environment,
                user={"id": user, "email": None, "username": None, "ip_address": None}
                if user
                else None,
                tags=tags,
                entries=entries,
                release=release,
            )
            state.events.append(event)
            state.environments.add(environment)
            issue = state.data
            first_event = int(issue["count"]) == 0
            issue["count"] = str(int(issue["count"]) + 1)
            if user:
                state.users.add(user)
                issue["userCount"] = max(issue["userCount"], len(state.users))
            stamp = data.iso(when)
            if first_event or when > _parse(issue["lastSeen"]):
                issue["lastSeen"] = stamp
            if first_event or when < _parse(issue["firstSeen"]):
                issue["firstSeen"] = stamp
            if issue["status"] == "resolved":
                issue.update(status="unresolved", substatus="regressed", statusDetails={})
            return event

    def add_commit(self, repository: str, commit: str) -> None:
        """Make Sentry know ``commit`` in ``repository`` (so ``inCommit`` accepts it)."""
        self.repositories.setdefault(repository, set()).add(commit)

    def comments(self, issue_id: str) -> list[str]:
        """Texts of the comments posted on an issue, oldest first."""
        return [text for text, _ in self.issues[issue_id].comments]

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each of the next requests consumes one, in order."""
        self.faults.extend(faults)

    def calls(self, method: str | None = None, path_suffix: str = "") -> list[RecordedRequest]:
        """Recorded requests, optionally filtered by method and path ending."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.endswith(path_suffix)
        ]

    # -- HTTP -----------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        """The ``httpx.MockTransport`` entry point."""
        return self.respond(request, on_timeout=_raise_timeout)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the fake on 127.0.0.1 (random port) in a thread; yields the base URL."""
        with serve_handler(self.respond_for_server) as base_url:
            yield base_url

    def respond_for_server(
        self, request: httpx.Request, sleep: Callable[[float], None]
    ) -> httpx.Response:
        """The loopback server's entry point: a timeout fault answers too late."""
        return self.respond(request, on_timeout=lambda _r: sleep(self.server_timeout_seconds))

    def respond(
        self, request: httpx.Request, *, on_timeout: Callable[[httpx.Request], None]
    ) -> httpx.Response:
        """Answer one request like Sentry would (faults and rate limits first)."""
        with self._lock:
            self._record(request)
            fault = self.faults.popleft() if self.faults else None
        if fault is Fault.TIMEOUT:
            on_timeout(request)
        with self._lock:
            if self.token is not None and request.headers.get("authorization") != (
                f"Bearer {self.token}"
            ):
                return self._finish(401, {"detail": "Invalid token"})
            if fault is Fault.SERVER_ERROR:
                return self._finish(502, None, html="<html><h1>502 Bad Gateway</h1></html>")
            if fault is Fault.RATE_LIMITED or not self._take_budget():
                return self._too_many()
            try:
                status, body, headers = self._routes.dispatch(request)
            except SearchError as exc:
                status, body, headers = 400, {"detail": str(exc)}, {}
            response = self._finish(status, body, headers=headers)
            if fault is Fault.TRUNCATED_JSON and response.content:
                cut = response.content[: len(response.content) // 2]
                return httpx.Response(status, headers=_strip_length(response.headers), content=cut)
            return response

    def _record(self, request: httpx.Request) -> None:
        params: dict[str, list[str]] = {}
        for key, value in request.url.params.multi_items():
            params.setdefault(key, []).append(value)
        body: JsonValue = None
        content = request.read()
        if content:
            try:
                body = json.loads(content)
            except json.JSONDecodeError:
                body = content.decode("utf-8", "replace")
        self.requests.append(RecordedRequest(request.method, request.url.path, params, body))

    def _window(self) -> int:
        now = int(self.clock.now().timestamp())
        start = now - now % self.rate_window
        if start != self._window_start:
            self._window_start, self._used = start, 0
        return start

    def _take_budget(self) -> bool:
        self._window()
        if self._used >= self.rate_limit:
            return False
        self._used += 1
        return True

    def _rate_headers(self) -> dict[str, str]:
        start = self._window()
        return {
            "X-Sentry-Rate-Limit-Limit": str(self.rate_limit),
            "X-Sentry-Rate-Limit-Remaining": str(max(0, self.rate_limit - self._used)),
            "X-Sentry-Rate-Limit-Reset": str(start + self.rate_window),
            "X-Sentry-Rate-Limit-ConcurrentLimit": "25",
            "X-Sentry-Rate-Limit-ConcurrentRemaining": "24",
        }

    def _too_many(self) -> httpx.Response:
        headers: dict[str, str] = {}
        if self.send_retry_after:
            reset = self._window() + self.rate_window
            headers["Retry-After"] = str(max(1, reset - int(self.clock.now().timestamp())))
        message = (
            "You are attempting to use this endpoint too frequently. Limit is "
            f"{self.rate_limit} requests in {self.rate_window} seconds"
        )
        return self._finish(429, message, headers=headers)

    def _finish(
        self,
        status: int,
        body: JsonValue,
        *,
        headers: dict[str, str] | None = None,
        html: str | None = None,
    ) -> httpx.Response:
        all_headers = {**self._rate_headers(), **(headers or {})}
        if html is not None:
            all_headers["Content-Type"] = "text/html"
            return httpx.Response(status, headers=all_headers, text=html)
        if status == 204:
            return httpx.Response(204, headers=all_headers)
        # ASCII-escaped JSON, as Sentry's renderer writes it: hostile text (a lone
        # surrogate, a NUL) travels as \ud800 / \u0000 escapes instead of failing here.
        all_headers["Content-Type"] = "application/json"
        return httpx.Response(status, headers=all_headers, content=json.dumps(body).encode())


def _raise_timeout(request: httpx.Request) -> None:
    raise httpx.ReadTimeout("fake Sentry: read timed out", request=request)


def _strip_length(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "content-length"}


def _parse(stamp: str) -> datetime:
    parsed = data.parse_iso(stamp)
    if parsed is None:
        raise ValueError(f"bad timestamp in fake state: {stamp!r}")
    return parsed


def _base36(number: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        number, rem = divmod(number, 36)
        out = digits[rem] + out
        if not number:
            return out
