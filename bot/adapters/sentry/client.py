"""The Sentry port over HTTP (httpx), with pagination, rate limits and bounded retries.

Retry policy, in one place:

- 429, or a previous response saying ``Remaining: 0``: sleep (injected clock) until
  ``X-Sentry-Rate-Limit-Reset`` (or ``Retry-After`` when present). If that is further
  away than ``max_wait``, raise :class:`SentryRetryLater` with ``retry_after`` instead
  of blocking the cycle.
- 5xx, timeouts, transport errors, unreadable JSON: exponential backoff with jitter, at
  most ``max_attempts`` tries, then :class:`SentryRetryLater` (or
  :class:`SentryBadResponse` for JSON that never became readable).
- other 4xx: never retried. 404 is :class:`SentryNotFound`, 400 :class:`SentryBadRequest`.

The auth token is only ever placed in the ``Authorization`` header; error messages and
logs carry method, path, status and attempt, and are scrubbed of the token regardless.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from bot.clock import Clock, SystemClock
from bot.errors import (
    SentryBadRequest,
    SentryBadResponse,
    SentryDeadline,
    SentryDuplicateComment,
    SentryError,
    SentryNotFound,
    SentryRetryLater,
)
from bot.safety.redact import redact, secret_pattern
from bot.safety.text import SHORT_ID_LIMIT, bound_short_id, escaped_json, normalise_item
from bot.sentry.models import QuarantinedItem, SentryEvent, SentryIssue
from bot.sentry.port import MAX_PAGE_SIZE
from bot.sentry.ratelimit import Backoff, RateLimitInfo, retry_after_seconds

log = logging.getLogger(__name__)

Params = list[tuple[str, str]]
Parse = Callable[[httpx.Response], Any]


class HttpSentryClient:
    """:class:`~bot.sentry.port.SentryPort` for sentry.io or a self-hosted Sentry."""

    def __init__(
        self,
        *,
        org: str,
        token: str,
        base_url: str = "https://sentry.io",
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        max_attempts: int = 4,
        max_wait: float = 60.0,
        timeout: float = 30.0,
        request_deadline: float = 60.0,
        max_pages: int = 200,
        listing_deadline: float = 300.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """``request_deadline``: seconds one response may take in total (httpx's read
        timeout restarts with every chunk, so a server trickling a byte at a time would
        never trip it). ``max_pages`` / ``listing_deadline``: bounds of one paginated
        listing (a Link header that always says ``results="true"`` must not loop
        forever). ``timer``: wall-clock seconds for those deadlines."""
        if not org:
            raise ValueError("org is required")
        self._org = org
        self._token = token
        self._secret = secret_pattern([token])
        self._base = base_url.rstrip("/")
        self._http = http or httpx.Client(
            transport=transport, timeout=min(timeout, request_deadline)
        )
        self._owns_http = http is None
        self._clock: Clock = clock or SystemClock()
        self._backoff = backoff or Backoff()
        self._max_attempts = max(1, max_attempts)
        self._max_wait = max_wait
        self._rate_limit: RateLimitInfo | None = None
        self._requests = 0
        self._quarantined: list[QuarantinedItem] = []
        self._request_deadline = request_deadline
        self._max_pages = max(1, max_pages)
        self._listing_deadline = listing_deadline
        self._timer = timer
        self._listing_ends: float | None = None

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> HttpSentryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rate_limit(self) -> RateLimitInfo | None:
        """The rate-limit headers of the last response."""
        return self._rate_limit

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._requests

    # -- issues ---------------------------------------------------------------------

    def _issues_path(self, issue_id: str | None = None) -> str:
        base = f"/api/0/organizations/{self._org}/issues/"
        return f"{base}{_segment(issue_id)}/" if issue_id is not None else base

    def list_issues(
        self,
        *,
        query: str = "is:unresolved",
        projects: Sequence[str] = (),
        environments: Sequence[str] = (),
        sort: str = "date",
        stats_period: str | None = None,
        limit: int = MAX_PAGE_SIZE,
    ) -> Iterator[SentryIssue]:
        """Yield matching issues page by page (``limit`` = page size, 1..100)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be within 1..{MAX_PAGE_SIZE}, got {limit}")
        params: Params = [("query", query), ("sort", sort), ("limit", str(limit))]
        params += [("project", p) for p in projects]
        params += [("environment", e) for e in environments]
        if stats_period:
            params.append(("statsPeriod", stats_period))
        for page in self._pages("GET", self._issues_path(), params, parse=_issue_page):
            if not isinstance(page, IssuePage):  # an empty body never reached the parser
                _as_list(page, "list issues")
                continue
            self._quarantined += page.quarantined
            yield from page.issues

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Items of list-issues pages that could not be read, since the last call."""
        items, self._quarantined = self._quarantined, []
        return items

    def get_issue(self, issue_id: str) -> SentryIssue:
        """One issue, validated."""
        data = self._json("GET", self._issues_path(issue_id))
        return _issue(data, f"issue {issue_id}")

    def get_issues(self, issue_ids: Sequence[str]) -> list[SentryIssue]:
        """Re-read issues by id, 100 ids per request (repeated ``group`` parameters).

        Sentry's issue index GET selects issues with ``group=`` and then ignores the query
        ("If group ids specified, just ignore any query components"); it never reads
        ``id`` on GET, which would silently answer with the org's first page instead
        (getsentry/sentry ``organization_group_index.py``, ``request.GET.getlist("group")``).
        """
        out: list[SentryIssue] = []
        for chunk in _chunks(list(dict.fromkeys(issue_ids)), MAX_PAGE_SIZE):
            for issue_id in chunk:
                _numeric_id(issue_id)
            params: Params = [("group", i) for i in chunk]
            data = self._json("GET", self._issues_path(), params)
            asked = set(chunk)
            for item in _as_list(data, "get issues"):
                issue = _issue(item, "get issues")
                # Only what was asked: an answer that ignored the selection is not a read.
                if issue.id in asked:
                    out.append(issue)
        return out

    def update_issue(self, issue_id: str, changes: dict[str, Any]) -> SentryIssue:
        """Partial PUT; returns the whole updated issue."""
        data = self._json("PUT", self._issues_path(issue_id), body=changes)
        return _issue(data, f"issue {issue_id}")

    def bulk_update(self, issue_ids: Sequence[str], changes: dict[str, Any]) -> bool:
        """PUT ``.../issues/?id=..`` in chunks of 100; True when every chunk answered 200.

        Sentry answers 204 when *no* id matched ("If any ids are out of scope this
        operation will succeed without any data mutation", ``update_groups`` in
        getsentry/sentry ``src/sentry/api/helpers/group_index/update.py``), and a 200
        body lists only the changed fields, not which issues changed: a caller that must
        know re-reads the issues (see :class:`~bot.pipeline.lifecycle.QuietChecker`).
        """
        ids = list(dict.fromkeys(issue_ids))
        all_matched = True
        # Without ids the bulk endpoint updates every issue matching the query: never that.
        for chunk in _chunks(ids, MAX_PAGE_SIZE):
            for issue_id in chunk:
                _numeric_id(issue_id)
            params: Params = [("id", i) for i in chunk]
            response = self._send("PUT", self._issues_path(), params, changes)
            all_matched = all_matched and response.status_code != 204
        return all_matched and bool(ids)

    def add_comment(self, issue_id: str, text: str) -> None:
        """POST a note; a duplicate within the hour is SentryDuplicateComment."""
        path = f"{self._issues_path(issue_id)}comments/"
        try:
            self._send("POST", path, [], {"text": text})
        except SentryBadRequest as exc:
            if "already posted" in str(exc).lower():
                raise SentryDuplicateComment(
                    "Sentry refused a duplicate comment", issue_id=issue_id
                ) from exc
            raise

    # -- events ---------------------------------------------------------------------

    def list_events(
        self,
        issue_id: str,
        *,
        stats_period: str,
        full: bool = False,
        limit: int | None = None,
    ) -> list[SentryEvent]:
        """Events within ``stats_period``, newest first, at most ``limit``."""
        per_page = min(limit, MAX_PAGE_SIZE) if limit else MAX_PAGE_SIZE
        params: Params = [
            ("statsPeriod", stats_period),
            ("full", "true" if full else "false"),
            ("per_page", str(per_page)),
        ]
        out: list[SentryEvent] = []
        path = f"{self._issues_path(issue_id)}events/"
        for page in self._pages("GET", path, params):
            for item in _as_list(page, f"events of {issue_id}"):
                out.append(_event(item, f"events of {issue_id}"))
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def event_counts(
        self,
        issue_ids: Sequence[str],
        *,
        stats_period: str,
        environments: Sequence[str] = (),
    ) -> dict[str, int]:
        """Count events per issue on ``organizations/{org}/events/`` (errors dataset).

        One request per 100 ids (``issue.id:[1,2,3]``); issues without events in the
        window have no row and come back as 0. 400/403 propagate for the caller's fallback.
        """
        ids = list(dict.fromkeys(str(i) for i in issue_ids))
        for issue_id in ids:
            if not issue_id.isdigit():
                raise ValueError(f"not a numeric Sentry issue id: {issue_id!r}")
        counts = dict.fromkeys(ids, 0)
        path = f"/api/0/organizations/{self._org}/events/"
        for chunk in _chunks(ids, MAX_PAGE_SIZE):
            params: Params = [
                ("dataset", "errors"),
                ("field", "issue.id"),
                ("field", "count()"),
                ("query", f"issue.id:[{','.join(chunk)}]"),
                ("statsPeriod", stats_period),
                ("per_page", str(MAX_PAGE_SIZE)),
            ]
            params += [("environment", e) for e in environments]
            for page in self._pages("GET", path, params):
                for issue_id, count in _count_rows(page):
                    if issue_id in counts:
                        counts[issue_id] += count
        return counts

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """The latest event (full), or None when Sentry has none (404)."""
        try:
            data = self._json("GET", f"{self._issues_path(issue_id)}events/latest/")
        except SentryNotFound:
            return None
        return _event(data, f"latest event of {issue_id}")

    # -- transport ------------------------------------------------------------------

    def _pages(
        self, method: str, path: str, params: Params, *, parse: Parse | None = None
    ) -> Iterator[Any]:
        """Each page's JSON (or ``parse`` of it), following ``Link: rel="next"``."""
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
                response, data = self._request_json(method, path, page_params, parse=parse)
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

    def _json(self, method: str, path: str, params: Params | None = None, body: Any = None) -> Any:
        return self._request_json(method, path, params or [], body)[1]

    def _send(self, method: str, path: str, params: Params, body: Any) -> httpx.Response:
        response, _ = self._request_json(method, path, params, body, expect_json=False)
        return response

    def _request_json(
        self,
        method: str,
        path: str,
        params: Params,
        body: Any = None,
        *,
        expect_json: bool = True,
        parse: Parse | None = None,
    ) -> tuple[httpx.Response, Any]:
        """Send with retries; return the response and its parsed JSON body.

        ``parse`` (default ``response.json()``) turns the body into the caller's value; a
        JSON or Unicode decoding error from it is retried like a truncated body.
        """
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_budget(method, path)
            ctx: dict[str, Any] = {"method": method, "path": path, "attempt": attempt}
            try:
                self._requests += 1
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
            self._rate_limit = RateLimitInfo.from_headers(response.headers) or self._rate_limit
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
                return response, parse(response) if parse is not None else response.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                # Truncated bodies happen when a proxy cuts the connection: worth a retry.
                if attempt >= self._max_attempts:
                    raise SentryBadResponse(
                        f"unreadable JSON from Sentry after {attempt} attempts", **ctx
                    ) from exc
                self._retry_sleep(attempt, "unreadable JSON", ctx)

    def _send_within_deadline(
        self, method: str, path: str, params: Params, body: Any, ctx: dict[str, Any]
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
        info = self._rate_limit
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
        self._rate_limit = None

    def _wait_after_429(self, response: httpx.Response, attempt: int, ctx: dict[str, Any]) -> None:
        wait = retry_after_seconds(response.headers)
        if wait is None and self._rate_limit is not None:
            wait = self._rate_limit.seconds_until_reset(self._clock.now())
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
        self._rate_limit = None
        self._clock.sleep(wait)

    def _retry_sleep(self, attempt: int, why: str, ctx: dict[str, Any]) -> None:
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

    def _client_error(self, response: httpx.Response, ctx: dict[str, Any]) -> SentryError:
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
        data: Any = response.json()
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


def _segment(value: str) -> str:
    text = str(value)
    if not text or "/" in text or text in (".", ".."):
        raise ValueError(f"not a valid Sentry id: {value!r}")
    return text


def _numeric_id(value: str) -> str:
    """Sentry issue ids are decimal strings (they exceed 2**53: never a float)."""
    text = str(value)
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"not a numeric Sentry issue id: {value!r}")
    return text


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _as_list(data: Any, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise SentryBadResponse(f"{what}: expected a JSON list, got {type(data).__name__}")
    return data


def _count_rows(page: Any) -> Iterator[tuple[str, int]]:
    """``(issue id, count)`` from one events-table page ``{"data": [...], "meta": ...}``."""
    rows = page.get("data") if isinstance(page, dict) else None
    if not isinstance(rows, list):
        raise SentryBadResponse("event counts: expected an object with a data list")
    for row in rows:
        issue_id = row.get("issue.id") if isinstance(row, dict) else None
        count = row.get("count()") if isinstance(row, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or issue_id is None:
            raise SentryBadResponse(f"event counts: malformed row {str(row)[:200]}")
        yield str(issue_id), count


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors()[:3]
    )


_ISSUE_PAGE: TypeAdapter[list[SentryIssue]] = TypeAdapter(list[SentryIssue])
# JSON escapes of NUL or of a UTF-16 surrogate: such a page needs text normalisation.
_NEEDS_CLEANING = re.compile(rb"\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


@dataclass
class IssuePage:
    """One list-issues page: the readable issues and the quarantined items."""

    issues: list[SentryIssue]
    quarantined: list[QuarantinedItem]


def _issue_page(response: httpx.Response) -> IssuePage:
    """A list-issues page, validated; an unreadable item is quarantined, not fatal.

    Validating the bytes in one pass skips building Python objects for the ~50 fields
    of each issue the bot ignores: faster than ``json.loads`` alone (bench/poll.py).
    A page with escaped NUL/surrogates, an over-long short id or an item that does not
    validate takes the slow path: each item normalised (:mod:`bot.safety.text`) and
    validated on its own. Unreadable JSON raises JSONDecodeError (retried by the
    caller); a non-list answer is a SentryBadResponse.
    """
    content = response.content
    if not _NEEDS_CLEANING.search(content):
        try:
            issues = _ISSUE_PAGE.validate_json(content)
        except ValidationError:
            pass
        else:
            if all(len(i.short_id) <= SHORT_ID_LIMIT for i in issues):
                return IssuePage(issues, [])
    data = response.json()
    page = IssuePage([], [])
    for item in _as_list(data, "list issues"):
        try:
            page.issues.append(_issue(item, "list issues"))
        except SentryBadResponse as exc:
            page.quarantined.append(_quarantine(item, str(exc)))
    return page


def _quarantine(item: Any, reason: str) -> QuarantinedItem:
    cleaned = normalise_item(item)
    get = cleaned.get if isinstance(cleaned, dict) else (lambda _k: None)
    issue_id, short_id = get("id"), get("shortId")
    last_seen = None
    try:
        raw_seen = get("lastSeen")
        last_seen = datetime.fromisoformat(raw_seen) if isinstance(raw_seen, str) else None
        last_seen = last_seen if last_seen is None or last_seen.tzinfo else None
    except ValueError:
        last_seen = None
    log.warning("quarantined a malformed Sentry issue: %s", reason)
    return QuarantinedItem(
        issue_id=str(issue_id)[:64] if isinstance(issue_id, str | int) else None,
        short_id=bound_short_id(short_id) if isinstance(short_id, str) else None,
        reason=reason[:2000],
        raw_escaped=escaped_json(item),
        last_seen=last_seen,
    )


def _issue(data: Any, what: str) -> SentryIssue:
    try:
        return SentryIssue.model_validate(normalise_item(data))
    except ValidationError as exc:
        issue_id = data.get("id") if isinstance(data, dict) else None
        raise SentryBadResponse(
            f"{what}: malformed issue ({_field_errors(exc)})", issue_id=issue_id
        ) from exc


def _event(data: Any, what: str) -> SentryEvent:
    try:
        return SentryEvent.model_validate(normalise_item(data))
    except ValidationError as exc:
        event_id = data.get("eventID") if isinstance(data, dict) else None
        raise SentryBadResponse(
            f"{what}: malformed event ({_field_errors(exc)})", event_id=event_id
        ) from exc
