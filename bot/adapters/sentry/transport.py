"""Sending one request to Sentry: retries, rate limits, deadlines, pagination, errors.

Retry policy, in one place:

- 429, or a previous response saying ``Remaining: 0``: sleep (injected clock) until
  ``X-Sentry-Rate-Limit-Reset`` (or ``Retry-After`` when present). If that is further
  away than ``max_wait``, raise :class:`SentryRetryLater` with ``retry_after`` instead
  of blocking the cycle.
- 5xx, timeouts, transport errors, unreadable JSON: exponential backoff with jitter, at
  most ``max_attempts`` tries, then :class:`SentryRetryLater` (or
  :class:`SentryBadResponse` for JSON that never became readable).
- other 4xx: never retried. 404 is :class:`SentryNotFound`, 400 :class:`SentryBadRequest`,
  401/403 and the rest a plain :class:`SentryError`.

The auth token is only ever placed in the ``Authorization`` header; error messages and
logs carry method, path, status and attempt, and are scrubbed of the token regardless.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypedDict, TypeVar

import httpx

from bot.clock import Clock, SystemClock
from bot.errors import (
    SentryBadRequest,
    SentryBadResponse,
    SentryDeadline,
    SentryError,
    SentryNotFound,
    SentryRetryLater,
)
from bot.json_types import JsonValue
from bot.safety.redact import redact, secret_pattern
from bot.sentry.ratelimit import Backoff, RateLimitInfo, retry_after_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = list[tuple[str, str]]


class _Context(TypedDict, total=False):
    """What an error or log line says about the request (never the token)."""

    method: str
    path: str
    attempt: int
    status: int


def read_json(response: httpx.Response) -> JsonValue:
    """The default body parser: the response's JSON, not validated yet."""
    return response.json()


@dataclass(frozen=True)
class Limits:
    """Bounds of the transport.

    ``request_deadline``: seconds one response may take in total (httpx's read timeout
    restarts with every chunk, so a server trickling a byte at a time would never trip
    it). ``max_pages`` / ``listing_deadline``: bounds of one paginated listing (a Link
    header that always says ``results="true"`` must not loop forever).
    """

    max_attempts: int = 4
    max_wait: float = 60.0
    request_deadline: float = 60.0
    max_pages: int = 200
    listing_deadline: float = 300.0


class SentryTransport:
    """Authenticated requests to one Sentry host under the retry policy above."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        http: httpx.Client,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        limits: Limits = Limits(),
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timer``: wall-clock seconds for the deadlines (``clock`` is for sleeping)."""
        self._base = base_url.rstrip("/")
        self._token = token
        self._secret = secret_pattern([token])
        self._http = http
        self._clock: Clock = clock or SystemClock()
        self._backoff = backoff or Backoff()
        self._max_attempts = max(1, limits.max_attempts)
        self._max_wait = limits.max_wait
        self._request_deadline = limits.request_deadline
        self._max_pages = max(1, limits.max_pages)
        self._listing_deadline = limits.listing_deadline
        self._timer = timer
        self._listing_ends: float | None = None
        self.rate_limit: RateLimitInfo | None = None
        self.requests = 0

    # -- what the client calls ------------------------------------------------------

    def json(self, method: str, path: str, params: Params | None = None) -> JsonValue:
        """The JSON body of a request without a body (None for an empty answer)."""
        return self.request(method, path, params or [], parse=read_json)[1]

    def json_with_body(self, method: str, path: str, body: object) -> JsonValue:
        """The JSON answer to a request carrying the JSON ``body``."""
        return self.request(method, path, [], body, parse=read_json)[1]

    def send(self, method: str, path: str, params: Params, body: object) -> httpx.Response:
        """Send and return the response, whose body is not read as JSON."""
        response, _ = self.request(method, path, params, body, parse=read_json, expect_json=False)
        return response

    def pages(
        self, method: str, path: str, params: Params, *, parse: Callable[[httpx.Response], T]
    ) -> Iterator[T | None]:
        """Each page's ``parse``-d body (None when empty), following ``Link: rel="next"``."""
        seen: set[str] = set()
        cursor: str | None = None
        ends = self._timer() + self._listing_deadline
        pages = 0
        while True:
            if pages >= self._max_pages or self._timer() > ends:
                why = (
                    f"more than {self._max_pages} pages"
                    if pages >= self._max_pages
                    else f"longer than {self._listing_deadline:g} s"
                )
                raise SentryDeadline(
                    f"Sentry listing stopped: {why} (the Link header kept saying "
                    'results="true"); nothing from it was kept, the next cycle tries again',
                    retry_after=None,
                    method=method,
                    path=path,
                    pages=pages,
                )
            page_params = [*params, ("cursor", cursor)] if cursor else params
            self._listing_ends = ends
            try:
                response, data = self.request(method, path, page_params, parse=parse)
            finally:
                self._listing_ends = None
            pages += 1
            yield data
            nxt = response.links.get("next") or {}
            cursor = nxt.get("cursor")
            # Only the cursor is taken from the Link header, never its URL: a header
            # pointing at another host must not receive our token.
            if nxt.get("results") != "true" or not cursor or cursor in seen:
                return
            seen.add(cursor)

    def request(
        self,
        method: str,
        path: str,
        params: Params,
        body: object = None,
        *,
        parse: Callable[[httpx.Response], T],
        expect_json: bool = True,
    ) -> tuple[httpx.Response, T | None]:
        """Send with retries; return the response and ``parse`` of its body.

        A JSON or Unicode decoding error from ``parse`` is retried like a truncated
        body; an empty or 204 answer (or ``expect_json=False``) gives None.
        """
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_budget(method, path)
            ctx: _Context = {"method": method, "path": path, "attempt": attempt}
            try:
                self.requests += 1
                response = self._send_within_deadline(method, path, params, body, ctx)
            except httpx.TransportError as exc:  # timeouts, refused, reset, protocol errors
                kind = type(exc).__name__
                if attempt >= self._max_attempts:
                    raise SentryRetryLater(
                        self._scrub(f"Sentry unreachable after {attempt} attempts ({kind})"),
                        retry_after=self._backoff.delay(attempt),
                        **ctx,
                    ) from exc
                self._retry_sleep(attempt, f"transport error {kind}", ctx)
                continue
            self.rate_limit = RateLimitInfo.from_headers(response.headers) or self.rate_limit
            status = response.status_code
            ctx["status"] = status
            if status == 429:
                self._wait_after_429(response, attempt, ctx)
                continue
            if status >= 500:
                if attempt >= self._max_attempts:
                    raise SentryRetryLater(
                        f"Sentry answered {status} {attempt} times",
                        retry_after=self._backoff.delay(attempt),
                        **ctx,
                    )
                self._retry_sleep(attempt, f"HTTP {status}", ctx)
                continue
            if status >= 400:
                raise self._client_error(response, ctx)
            if not expect_json or status == 204 or not response.content:
                return response, None
            try:
                return response, parse(response)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                # Truncated bodies happen when a proxy cuts the connection: worth a retry.
                if attempt >= self._max_attempts:
                    raise SentryBadResponse(
                        f"unreadable JSON from Sentry after {attempt} attempts", **ctx
                    ) from exc
                self._retry_sleep(attempt, "unreadable JSON", ctx)

    # -- one attempt ----------------------------------------------------------------

    def _send_within_deadline(
        self, method: str, path: str, params: Params, body: object, ctx: _Context
    ) -> httpx.Response:
        """Send and read the whole body, giving up at the request (or listing) deadline.

        The body is streamed so the deadline is checked between chunks; the answer is
        returned as an already-read response (decoded, so no Content-Encoding).
        """
        request = self._http.build_request(
            method,
            self._base + path,
            params=tuple(params),
            json=body,
            headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
        )
        start = self._timer()
        limit = self._request_deadline
        if self._listing_ends is not None:
            limit = max(0.0, min(limit, self._listing_ends - start))
        response = self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if self._timer() - start > limit:
                    raise SentryDeadline(
                        f"Sentry did not finish answering within {limit:g} s "
                        "(a slow or trickling response); the next cycle tries again",
                        retry_after=None,
                        **ctx,
                    )
        finally:
            response.close()
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=b"".join(chunks), request=request
        )

    def _wait_for_budget(self, method: str, path: str) -> None:
        info = self.rate_limit
        if info is None or not info.exhausted():
            return
        wait = info.seconds_until_reset(self._clock.now())
        if not wait:
            return
        if wait > self._max_wait:
            raise SentryRetryLater(
                "Sentry rate-limit budget exhausted", retry_after=wait, method=method, path=path
            )
        log.info("sentry rate-limit budget spent; waiting %.1fs before %s %s", wait, method, path)
        self._clock.sleep(wait)
        # The window has reset; the next response will tell the new budget.
        self.rate_limit = None

    def _wait_after_429(self, response: httpx.Response, attempt: int, ctx: _Context) -> None:
        wait = retry_after_seconds(response.headers)
        if wait is None and self.rate_limit is not None:
            wait = self.rate_limit.seconds_until_reset(self._clock.now())
        if wait is None:
            wait = self._backoff.delay(attempt)
        # A reset time that has just passed still needs a moment; never spin.
        wait = max(wait, 1.0)
        if wait > self._max_wait or attempt >= self._max_attempts:
            raise SentryRetryLater("Sentry rate-limited the bot", retry_after=wait, **ctx)
        log.warning(
            "sentry rate-limited %s %s (attempt %d); waiting %.1fs",
            ctx["method"],
            ctx["path"],
            attempt,
            wait,
        )
        self.rate_limit = None
        self._clock.sleep(wait)

    def _retry_sleep(self, attempt: int, why: str, ctx: _Context) -> None:
        delay = self._backoff.delay(attempt)
        log.warning(
            "sentry %s on %s %s (attempt %d); retrying in %.2fs",
            why,
            ctx["method"],
            ctx["path"],
            attempt,
            delay,
        )
        self._clock.sleep(delay)

    # -- error mapping --------------------------------------------------------------

    def _client_error(self, response: httpx.Response, ctx: _Context) -> SentryError:
        """The exception for a 4xx answer (other than 429), its detail scrubbed."""
        detail = self._scrub(_detail(response))
        status = response.status_code
        if status == 404:
            return SentryNotFound("Sentry does not know this resource", detail=detail, **ctx)
        if status == 400:
            return SentryBadRequest(f"Sentry refused the request: {detail}", **ctx)
        if status in (401, 403):
            return SentryError("Sentry refused the credentials or scope", detail=detail, **ctx)
        return SentryError(f"Sentry answered {status}", detail=detail, **ctx)

    def _scrub(self, text: str) -> str:
        return redact(text, self._secret, "***")


def _detail(response: httpx.Response) -> str:
    """A short readable reason from an error body (JSON detail, bare string, or text)."""
    try:
        data: JsonValue = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:300]
    # Sentry sometimes double-encodes: the body is a JSON string holding a JSON object.
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return str(data)[:300]
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return str(data["detail"])[:300]
    return json.dumps(data)[:300]
