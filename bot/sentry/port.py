"""The Sentry port: everything the bot asks of Sentry, as a Protocol.

:class:`~bot.adapters.sentry.client.HttpSentryClient` implements it over HTTP; tests run the same
client against :class:`~bot.testing.sentry.FakeSentry` through ``httpx.MockTransport`` or a
loopback server, so the fake and the adapter cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from bot.sentry.models import QuarantinedItem, SentryEvent, SentryIssue
from bot.sentry.ratelimit import RateLimitInfo

#: Sentry refuses pages larger than this (``limit``/``per_page``).
MAX_PAGE_SIZE = 100


class SentryPort(Protocol):
    """What the bot needs from Sentry. Errors derive from :class:`bot.errors.SentryError`."""

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
        """Yield every matching issue, fetching the next page only when needed.

        ``limit`` is the page size (1..100); cap the total with ``itertools.islice``.
        """
        ...

    def get_issue(self, issue_id: str) -> SentryIssue:
        """One issue; :class:`~bot.errors.SentryNotFound` if Sentry does not know it."""
        ...

    def get_issues(self, issue_ids: Sequence[str]) -> list[SentryIssue]:
        """Re-read many issues (100 per request); ids Sentry does not return are absent.

        Only the asked issues are ever returned (Sentry selects them with ``group=``).
        """
        ...

    def list_events(
        self,
        issue_id: str,
        *,
        stats_period: str,
        full: bool = False,
        limit: int | None = None,
    ) -> list[SentryEvent]:
        """Events of an issue within ``stats_period`` (e.g. ``48h``), newest first.

        An empty list means the issue was quiet for the whole window. ``limit`` caps the
        number returned (None: all pages).
        """
        ...

    def event_counts(
        self,
        issue_ids: Sequence[str],
        *,
        stats_period: str,
        environments: Sequence[str] = (),
    ) -> dict[str, int]:
        """Events per issue within ``stats_period``, 100 issues per request.

        Every asked id is in the answer (0 when Sentry returned no row for it). Uses the
        organization events endpoint (errors dataset), which some plans or token scopes
        refuse: then :class:`~bot.errors.SentryBadRequest` (400) or
        :class:`~bot.errors.SentryError` (403) is raised and callers fall back to
        :meth:`list_events` per issue.
        """
        ...

    def latest_event(self, issue_id: str) -> SentryEvent | None:
        """The issue's most recent event with its entries, or None if it has none."""
        ...

    def update_issue(self, issue_id: str, changes: Mapping[str, object]) -> SentryIssue:
        """Partially update one issue (status, statusDetails, ...) and return it whole.

        :class:`~bot.errors.SentryBadRequest` when Sentry refuses (e.g. unknown inCommit).
        """
        ...

    def bulk_update(self, issue_ids: Sequence[str], changes: Mapping[str, object]) -> bool:
        """Apply ``changes`` to these issues; no ids means no request at all.

        Returns False when Sentry answered 204 (nothing matched) for some chunk. True is
        no proof that every issue changed: re-read to confirm before recording anything.
        """
        ...

    def add_comment(self, issue_id: str, text: str) -> None:
        """Post a note on the issue.

        :class:`~bot.errors.SentryDuplicateComment` if the same text was posted within
        the last hour (Sentry refuses it), so callers can treat it as already done.
        """
        ...

    def take_quarantined(self) -> list[QuarantinedItem]:
        """Items of list-issues pages that could not be read (malformed), since the last
        call; the rest of their pages was yielded as usual."""
        ...

    @property
    def rate_limit(self) -> RateLimitInfo | None:
        """The rate-limit headers of the last response, None before any response."""
        ...

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far, retries included (for benchmarks and tests)."""
        ...
