"""The Sentry port over HTTP (httpx): the issue and event operations.

Each method builds one Sentry API call (path, query parameters, body) and validates the
answer; sending, retries, rate limits, deadlines and error mapping live in
:mod:`bot.adapters.sentry.transport`, JSON-to-model parsing in
:mod:`bot.adapters.sentry.responses`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import httpx

from bot.adapters.sentry.responses import (
    as_list,
    chunks,
    count_rows,
    event,
    issue,
    issue_page,
    numeric_id,
    segment,
)
from bot.adapters.sentry.transport import Limits, Params, SentryTransport, read_json
from bot.clock import Clock
from bot.errors import SentryBadRequest, SentryDuplicateComment, SentryNotFound
from bot.sentry.models import QuarantinedItem, SentryEvent, SentryIssue
from bot.sentry.port import MAX_PAGE_SIZE
from bot.sentry.ratelimit import Backoff, RateLimitInfo


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
        self._http = http or httpx.Client(
            transport=transport, timeout=min(timeout, request_deadline)
        )
        self._owns_http = http is None
        self._transport = SentryTransport(
            base_url=base_url,
            token=token,
            http=self._http,
            clock=clock,
            backoff=backoff,
            limits=Limits(
                max_attempts=max_attempts,
                max_wait=max_wait,
                request_deadline=request_deadline,
                max_pages=max_pages,
                listing_deadline=listing_deadline,
            ),
            timer=timer,
        )
        self._quarantined: list[QuarantinedItem] = []

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
        return self._transport.rate_limit

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._transport.requests

    # -- issues ---------------------------------------------------------------------

    def _issues_path(self, issue_id: str | None = None) -> str:
        base = f"/api/0/organizations/{self._org}/issues/"
        return f"{base}{segment(issue_id)}/" if issue_id is not None else base

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
        path = self._issues_path()
        for page in self._transport.pages("GET", path, params, parse=issue_page):
            if page is None:  # an empty body never reached the parser
                as_list(page, "list issues")
                continue
            self._quarantined += page.quarantined
            yield from page.issues

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Items of list-issues pages that could not be read, since the last call."""
        items, self._quarantined = self._quarantined, []
        return items

    def get_issue(self, issue_id: str) -> SentryIssue:
        """One issue, validated."""
        data = self._transport.json("GET", self._issues_path(issue_id))
        return issue(data, f"issue {issue_id}")

    def get_issues(self, issue_ids: Sequence[str]) -> list[SentryIssue]:
        """Re-read issues by id, 100 ids per request (repeated ``group`` parameters).

        Sentry's issue index GET selects issues with ``group=`` and then ignores the query
        ("If group ids specified, just ignore any query components"); it never reads
        ``id`` on GET, which would silently answer with the org's first page instead
        (getsentry/sentry ``organization_group_index.py``, ``request.GET.getlist("group")``).
        """
        out: list[SentryIssue] = []
        for chunk in chunks(list(dict.fromkeys(issue_ids)), MAX_PAGE_SIZE):
            for issue_id in chunk:
                numeric_id(issue_id)
            params: Params = [("group", i) for i in chunk]
            data = self._transport.json("GET", self._issues_path(), params)
            asked = set(chunk)
            for item in as_list(data, "get issues"):
                found = issue(item, "get issues")
                # Only what was asked: an answer that ignored the selection is not a read.
                if found.id in asked:
                    out.append(found)
        return out

    def update_issue(self, issue_id: str, changes: Mapping[str, object]) -> SentryIssue:
        """Partial PUT; returns the whole updated issue."""
        data = self._transport.json_with_body("PUT", self._issues_path(issue_id), changes)
        return issue(data, f"issue {issue_id}")

    def bulk_update(self, issue_ids: Sequence[str], changes: Mapping[str, object]) -> bool:
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
        for chunk in chunks(ids, MAX_PAGE_SIZE):
            for issue_id in chunk:
                numeric_id(issue_id)
            params: Params = [("id", i) for i in chunk]
            response = self._transport.send("PUT", self._issues_path(), params, changes)
            all_matched = all_matched and response.status_code != 204
        return all_matched and bool(ids)

    def add_comment(self, issue_id: str, text: str) -> None:
        """POST a note; a duplicate within the hour is SentryDuplicateComment."""
        path = f"{self._issues_path(issue_id)}comments/"
        try:
            self._transport.send("POST", path, [], {"text": text})
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
        for page in self._transport.pages("GET", path, params, parse=read_json):
            for item in as_list(page, f"events of {issue_id}"):
                out.append(event(item, f"events of {issue_id}"))
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
        for chunk in chunks(ids, MAX_PAGE_SIZE):
            params: Params = [
                ("dataset", "errors"),
                ("field", "issue.id"),
                ("field", "count()"),
                ("query", f"issue.id:[{','.join(chunk)}]"),
                ("statsPeriod", stats_period),
                ("per_page", str(MAX_PAGE_SIZE)),
            ]
            params += [("environment", e) for e in environments]
            for page in self._transport.pages("GET", path, params, parse=read_json):
                for issue_id, count in count_rows(page):
                    if issue_id in counts:
                        counts[issue_id] += count
        return counts

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """The latest event (full), or None when Sentry has none (404)."""
        try:
            data = self._transport.json("GET", f"{self._issues_path(issue_id)}events/latest/")
        except SentryNotFound:
            return None
        return event(data, f"latest event of {issue_id}")
