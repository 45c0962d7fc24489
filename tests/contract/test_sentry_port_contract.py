"""One contract for the Sentry port, run against every Sentry stand-in we have.

The real adapter (:class:`HttpSentryClient`) talks to each backend over HTTP, and the
same assertions hold on what the port does (as dramatiq runs one suite over every
broker, so the stub cannot drift from the real ones):

``fake``
    :class:`~bot.testing.FakeSentry` behind ``httpx.MockTransport``: stateful, the
    backend most tests use.
``fake-via-prism``
    the same fake behind ``prism proxy --errors``: every answer the fake gives in these
    tests is also validated against Sentry's published OpenAPI description.
``prism-mock``
    ``prism mock`` of that description alone, independent of our fake: requests are
    validated by Prism (a refused request is a 400), answers come from the examples
    Sentry publishes, and ``Prefer: code=NNN`` picks another documented status.

Sentry itself is not reachable from here; the description (release 0.272.0,
``../shared/sentry-api/``) is the independent stand-in. Prism is stateless, so
behaviours that need memory (a resolve visible on re-read, a refused duplicate comment,
several pages) are checked on the fake only: those tests are parametrized over the
backends that can answer them (nothing is skipped), and each says why the others are
absent and which getsentry/sentry source the fake follows there.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.errors import (
    SentryBadRequest,
    SentryBadResponse,
    SentryDuplicateComment,
    SentryError,
    SentryNotFound,
    SentryRetryLater,
)
from bot.sentry.models import SentryEvent, SentryIssue
from bot.testing import FakeSentry
from tests.contract.conftest import Prism
from tests.contract.specs import SENTRY_ABSENT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "contract-token-3f9a"
BACKENDS = ("fake", "fake-via-prism", "prism-mock")
# The issue id of the examples in Sentry's description (list, detail, bulk PUT).
EXAMPLE_ISSUE = "1"


class Condition(enum.Enum):
    """An error answer each backend can be made to give (the value: its status)."""

    UNKNOWN_ISSUE = 404
    BAD_CREDENTIALS = 401
    EVENTS_REFUSED = 403  # organizations/{org}/events/: plan or token scope
    NOTHING_MATCHED = 204  # bulk PUT whose ids match no issue


@dataclass
class Page:
    """One response the client read: its status and whether it announced a next page."""

    status: int
    more: bool


@dataclass
class Backend:
    """A Sentry stand-in, and the real client pointed at it."""

    name: str
    clock: FakeClock
    fake: FakeSentry | None
    base_url: str = "https://sentry.invalid"
    transport: httpx.BaseTransport | None = None
    pages: list[Page] = field(default_factory=list)
    _http: list[httpx.Client] = field(default_factory=list)

    def client(self, *, token: str = TOKEN, prefer_status: int | None = None) -> HttpSentryClient:
        """The real adapter; every response it reads is recorded in :attr:`pages`."""

        def record(response: httpx.Response) -> None:
            more = (response.links.get("next") or {}).get("results") == "true"
            self.pages.append(Page(response.status_code, more))

        headers = {"Prefer": f"code={prefer_status}"} if prefer_status else {}
        http = httpx.Client(
            transport=self.transport, headers=headers, event_hooks={"response": [record]}
        )
        self._http.append(http)
        return HttpSentryClient(
            org="acme",
            token=token,
            base_url=self.base_url,
            http=http,
            clock=self.clock,
            max_attempts=1,
        )

    def issue_ids(self) -> list[str]:
        """Issues the backend knows, each with one event in the last 48 hours.

        The fake is seeded with three; Prism knows the one of Sentry's examples.
        """
        if self.fake is None:
            return [EXAMPLE_ISSUE]
        ids = []
        for n in range(3):
            issue = self.fake.add_issue(title=f"Error: boom {n}", project="api")
            self.fake.add_event(issue["id"], at=self.clock.now() - timedelta(hours=n))
            ids.append(str(issue["id"]))
        return ids

    def arrange(self, condition: Condition) -> tuple[HttpSentryClient, str]:
        """A client and an issue id for which the backend answers ``condition``.

        Prism is told with ``Prefer: code=NNN`` (it answers the documented response);
        the fake is brought into the state that makes Sentry answer so.
        """
        if self.fake is None:
            return self.client(prefer_status=condition.value), EXAMPLE_ISSUE
        issue_id = self.issue_ids()[0]
        if condition is Condition.UNKNOWN_ISSUE or condition is Condition.NOTHING_MATCHED:
            return self.client(), "987654321"
        if condition is Condition.BAD_CREDENTIALS:
            return self.client(token="not-the-token"), issue_id
        self.fake.events_refusal = 403
        return self.client(), issue_id

    def need_state(self) -> FakeSentry:
        """The fake (tests that need memory are parametrized over stateful backends only)."""
        assert self.fake is not None, "a stateful test was given a stateless backend"
        return self.fake

    def close(self) -> None:
        for http in self._http:
            http.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Backend]:
    name = request.param
    if name == "prism-mock":
        mock: Prism = request.getfixturevalue("sentry_prism_mock")
        chosen = Backend(name, clock, None, base_url=mock.url)
        yield chosen
        chosen.close()
        return
    fake = FakeSentry(clock=clock, token=TOKEN)
    if name == "fake":
        chosen = Backend(name, clock, fake, transport=httpx.MockTransport(fake.handler))
        yield chosen
        chosen.close()
        return
    proxy: Prism = request.getfixturevalue("sentry_prism")
    proxy.upstream.respond = fake.respond_for_server
    proxy.mark()
    chosen = Backend(name, clock, fake, base_url=proxy.url)
    try:
        yield chosen
        # Each request of the test and each answer of the fake matched the description.
        assert proxy.violations() == []
    finally:
        chosen.close()
        proxy.upstream.respond = None


# -- reads ----------------------------------------------------------------------------


def test_list_issues_parses_every_issue_once(backend: Backend) -> None:
    ids = backend.issue_ids()
    client = backend.client()
    listed = list(client.list_issues(query="is:unresolved", limit=100))
    assert all(isinstance(issue, SentryIssue) for issue in listed)
    assert len({i.id for i in listed}) == len(listed)
    assert set(ids) <= {i.id for i in listed}
    assert client.take_quarantined() == []


def test_pagination_follows_the_announced_pages_and_stops(backend: Backend) -> None:
    """As many requests as pages announced (``Link: rel="next"; results="true"``) + 1.

    Prism's answers carry no Link header (the description declares none), so there it
    is one page; the fake announces two for three issues at ``limit=2``.
    """
    ids = backend.issue_ids()
    client = backend.client()
    listed = [i.id for i in client.list_issues(limit=2)]
    assert [p.more for p in backend.pages] == [True] * (len(backend.pages) - 1) + [False]
    assert client.request_count == len(backend.pages)
    assert len(set(listed)) == len(listed)
    if backend.fake is not None:
        assert len(backend.pages) == 2 and sorted(listed) == sorted(ids)


def test_get_issue_and_get_issues_parse(backend: Backend) -> None:
    ids = backend.issue_ids()
    client = backend.client()
    assert client.get_issue(ids[0]).id == ids[0]
    again = client.get_issues(ids)
    assert {i.id for i in again} <= set(ids)  # only what was asked, never a stray page
    assert ids[0] in {i.id for i in again}


def test_events_parse(backend: Backend) -> None:
    ids = backend.issue_ids()
    client = backend.client()
    events = client.list_events(ids[0], stats_period="48h", full=True)
    assert events and all(isinstance(e, SentryEvent) and e.id for e in events)
    latest = client.latest_event(ids[0])
    assert isinstance(latest, SentryEvent) and latest.id


# The events table answers on the stateful backends only: the description's one example
# of organizations/{org}/events/ is a transactions query whose rows have no ``issue.id``
# (the row schema is free-form), so a count per issue cannot come from Prism's mock. The
# fake follows getsentry/sentry src/sentry/api/endpoints/organization_events.py
# (dataset=errors, field=issue.id, field=count()).
@pytest.mark.parametrize("backend", ["fake", "fake-via-prism"], indirect=True)
def test_event_counts_count_per_issue(backend: Backend) -> None:
    ids = backend.issue_ids()
    assert backend.client().event_counts(ids, stats_period="48h") == dict.fromkeys(ids, 1)


@pytest.mark.parametrize("backend", ["prism-mock"], indirect=True)
def test_event_counts_refuse_rows_without_an_issue(backend: Backend) -> None:
    """Prism accepts the request (else a 400: SentryBadRequest), and answers with its
    transactions example; rows without ``issue.id`` are refused loudly, never counted 0."""
    ids = backend.issue_ids()
    with pytest.raises(SentryBadResponse, match="malformed row"):
        backend.client().event_counts(ids, stats_period="48h")


# -- writes ---------------------------------------------------------------------------


def test_resolve_requests_are_accepted(backend: Backend) -> None:
    """The bodies the bot sends to resolve pass the backend's request validation."""
    ids = backend.issue_ids()
    if backend.fake is not None:
        backend.fake.add_commit("acme/api", "a" * 40)
    client = backend.client()
    details = {"inCommit": {"commit": "a" * 40, "repository": "acme/api"}}
    assert client.bulk_update(ids[:1], {"status": "resolved", "statusDetails": details})
    assert client.bulk_update(ids[:1], {"status": "resolved"})
    try:
        updated = client.update_issue(ids[-1], {"status": "resolved"})
    except SentryBadResponse:
        # The issue PUT has no example in the description: Prism invents its answer from
        # the schema ("string" for the numeric-string ``count``). The request passed.
        assert backend.fake is None
    else:
        assert updated.id == ids[-1] and updated.status == "resolved"


# Prism keeps no state, so a resolve is not remembered there; the fake follows
# update_groups in getsentry/sentry src/sentry/api/helpers/group_index/update.py.
@pytest.mark.parametrize("backend", ["fake", "fake-via-prism"], indirect=True)
def test_a_resolve_is_visible_on_reread(backend: Backend) -> None:
    backend.need_state()
    ids = backend.issue_ids()
    client = backend.client()
    client.bulk_update(ids[:2], {"status": "resolved"})
    assert {i.id: i.status for i in client.get_issues(ids)} == {
        ids[0]: "resolved",
        ids[1]: "resolved",
        ids[2]: "unresolved",
    }


# Not through the proxy: prism proxy answers an invalid request itself (422), never
# forwarding it to the fake.
@pytest.mark.parametrize("backend", ["fake", "prism-mock"], indirect=True)
def test_an_invalid_status_is_a_bad_request(backend: Backend) -> None:
    ids = backend.issue_ids()
    client = backend.client()
    with pytest.raises(SentryBadRequest):
        client.update_issue(ids[0], {"status": "sleeping"})
    with pytest.raises(SentryBadRequest):
        client.bulk_update(ids[:1], {"status": "sleeping"})


# The fake only: the comments route is absent from Sentry's description (Prism answers
# 404 for it); see SENTRY_ABSENT for the getsentry/sentry source the fake follows.
@pytest.mark.parametrize("backend", ["fake"], indirect=True)
def test_a_duplicate_comment_is_refused(backend: Backend) -> None:
    assert any(path.endswith("/comments/") for path, _ in SENTRY_ABSENT)
    ids = backend.issue_ids()
    client = backend.client()
    client.add_comment(ids[0], "fixed by the bot")
    with pytest.raises(SentryDuplicateComment):
        client.add_comment(ids[0], "fixed by the bot")


# -- errors: the same status maps to the same exception everywhere ---------------------


def test_an_unknown_issue_is_not_found(backend: Backend) -> None:
    client, issue_id = backend.arrange(Condition.UNKNOWN_ISSUE)
    with pytest.raises(SentryNotFound):
        client.get_issue(issue_id)
    assert client.latest_event(issue_id) is None


def test_bad_credentials_are_a_plain_sentry_error_not_retried(backend: Backend) -> None:
    client, issue_id = backend.arrange(Condition.BAD_CREDENTIALS)
    with pytest.raises(SentryError) as caught:
        client.get_issue(issue_id)
    assert type(caught.value) is SentryError  # not NotFound, BadRequest or RetryLater
    assert not isinstance(caught.value, SentryRetryLater)
    assert client.request_count == 1
    assert TOKEN not in str(caught.value)


def test_a_refused_events_table_is_a_sentry_error_for_the_fallback(backend: Backend) -> None:
    client, issue_id = backend.arrange(Condition.EVENTS_REFUSED)
    with pytest.raises(SentryError) as caught:
        client.event_counts([issue_id], stats_period="48h")
    assert type(caught.value) is SentryError
    assert backend.pages[-1].status == 403


def test_a_bulk_update_matching_nothing_is_false(backend: Backend) -> None:
    client, issue_id = backend.arrange(Condition.NOTHING_MATCHED)
    assert client.bulk_update([issue_id], {"status": "resolved"}) is False
    assert backend.pages[-1].status == 204
