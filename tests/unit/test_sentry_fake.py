"""FakeSentry behaves like the real API on the points the bot relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.errors import SentryRetryLater
from bot.sentry.ratelimit import Backoff
from bot.testing import FakeSentry, Fault

ISSUES = "https://us.sentry.io/api/0/organizations/acme/issues/"


@pytest.fixture
def fake(clock: FakeClock) -> FakeSentry:
    return FakeSentry(clock=clock)


@pytest.fixture
def http(fake: FakeSentry) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(fake.handler))


def test_list_shape_count_string_user_count_int(
    fake: FakeSentry, http: httpx.Client, clock: FakeClock
) -> None:
    issue = fake.add_issue()
    fake.add_event(issue["id"], user="a")
    fake.add_event(issue["id"], user="b")
    fake.add_event(issue["id"], user="a")
    body = http.get(ISSUES).json()
    assert body[0]["count"] == "3"
    assert body[0]["userCount"] == 2
    assert set(body[0]) >= {"derivedData", "lifetime", "inbox", "numComments", "issueCategory"}


def test_link_header_has_both_rels_and_results_flags(fake: FakeSentry, http: httpx.Client) -> None:
    for _ in range(3):
        fake.add_issue()
    first = http.get(ISSUES, params={"limit": 2})
    assert first.links["previous"]["results"] == "false"
    assert first.links["next"]["results"] == "true"
    assert first.links["next"]["cursor"] == "0:2:0"
    last = http.get(ISSUES, params={"limit": 2, "cursor": "0:2:0"})
    assert len(last.json()) == 1
    assert last.links["previous"]["results"] == "true"
    assert last.links["next"]["results"] == "false"


def test_limit_above_100_is_400(http: httpx.Client) -> None:
    response = http.get(ISSUES, params={"limit": 101})
    assert response.status_code == 400
    assert "Cannot exceed 100" in response.json()["detail"]


def test_default_query_is_unresolved_and_empty_query_is_all(
    fake: FakeSentry, http: httpx.Client
) -> None:
    fake.add_issue()
    fake.add_issue(status="resolved")
    assert len(http.get(ISSUES).json()) == 1
    assert len(http.get(ISSUES, params={"query": ""}).json()) == 2


def test_rate_limit_headers_and_429_with_bare_string(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, rate_limit=2, rate_window=60)
    http = httpx.Client(transport=httpx.MockTransport(fake.handler))
    ok = http.get(ISSUES)
    assert ok.headers["X-Sentry-Rate-Limit-Limit"] == "2"
    assert ok.headers["X-Sentry-Rate-Limit-Remaining"] == "1"
    assert int(ok.headers["X-Sentry-Rate-Limit-Reset"]) > clock.now().timestamp()
    assert "X-Sentry-Rate-Limit-ConcurrentLimit" in ok.headers
    http.get(ISSUES)
    limited = http.get(ISSUES)
    assert limited.status_code == 429
    assert isinstance(limited.json(), str)
    assert "too frequently" in limited.json()
    assert "Retry-After" not in limited.headers
    clock.advance(seconds=60)
    assert http.get(ISSUES).status_code == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("lastSeen:>=2026-03-01T11:55:00", {"tie", "after"}),
        ("lastSeen:>=2026-03-01T11:55:00Z", {"tie", "after"}),
        ("lastSeen:>2026-03-01T11:55:00", {"after"}),
        ("lastSeen:<2026-03-01T11:55:00+00:00", {"before"}),
        ("lastSeen:>=2026-03-01T12:55:00+01:00", {"tie", "after"}),
        ("lastSeen:-1h", {"tie", "after", "before"}),
        ("level:warning", {"after"}),
        ("boom", {"before"}),
    ],
)
def test_search_filters(
    fake: FakeSentry, http: httpx.Client, query: str, expected: set[str]
) -> None:
    at = datetime(2026, 3, 1, 11, 55, tzinfo=UTC)
    for name, when, level in (
        ("tie", at, "error"),
        ("after", at + timedelta(seconds=1), "warning"),
        ("before", at - timedelta(seconds=1), "error"),
    ):
        title = "Error: boom" if name == "before" else f"Error: {name}"
        issue = fake.add_issue(title=title, level=level, culprit=name)
        fake.add_event(issue["id"], at=when)
    body = http.get(ISSUES, params={"query": query}).json()
    assert {i["culprit"] for i in body} == expected


def test_unsupported_search_key_is_400(http: httpx.Client) -> None:
    response = http.get(ISSUES, params={"query": "assigned:me"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("sort", "first"), [("date", "b"), ("new", "a"), ("freq", "b"), ("user", "a")]
)
def test_sorts(
    fake: FakeSentry, http: httpx.Client, clock: FakeClock, sort: str, first: str
) -> None:
    a = fake.add_issue(culprit="a")
    b = fake.add_issue(culprit="b")
    fake.add_event(a["id"], at=clock.now() - timedelta(hours=2), user="u1")
    fake.add_event(a["id"], at=clock.now() - timedelta(hours=2), user="u2")
    fake.add_event(b["id"], at=clock.now() - timedelta(hours=3), user="u1")
    fake.add_event(b["id"], at=clock.now() - timedelta(hours=1), user="u1")
    fake.add_event(b["id"], at=clock.now() - timedelta(hours=1), user="u1")
    body = http.get(ISSUES, params={"sort": sort}).json()
    assert body[0]["culprit"] == first


def test_project_and_environment_filters(fake: FakeSentry, http: httpx.Client) -> None:
    fake.add_issue(project="frontend", culprit="fe", environment="staging")
    fake.add_issue(project="backend", culprit="be", environment="production")
    by_slug = http.get(ISSUES, params={"project": "frontend"}).json()
    by_id = http.get(ISSUES, params={"project": fake.project("backend")["id"]}).json()
    by_env = http.get(ISSUES, params={"environment": "staging"}).json()
    assert [i["culprit"] for i in by_slug] == ["fe"]
    assert [i["culprit"] for i in by_id] == ["be"]
    assert [i["culprit"] for i in by_env] == ["fe"]


def test_event_on_resolved_issue_regresses_it(fake: FakeSentry, clock: FakeClock) -> None:
    issue = fake.add_issue(status="resolved")
    fake.add_event(issue["id"], at=clock.now())
    assert fake.issues[issue["id"]].data["status"] == "unresolved"
    assert fake.issues[issue["id"]].data["substatus"] == "regressed"


def test_first_event_sets_first_and_last_seen(fake: FakeSentry, clock: FakeClock) -> None:
    issue = fake.add_issue()
    when = clock.now() - timedelta(days=3)
    fake.add_event(issue["id"], at=when)
    state = fake.issues[issue["id"]].data
    assert state["firstSeen"] == state["lastSeen"] == "2026-02-26T12:00:00Z"


def test_events_full_flag_controls_entries(
    fake: FakeSentry, http: httpx.Client, clock: FakeClock
) -> None:
    issue = fake.add_issue()
    fake.add_event(issue["id"], at=clock.now())
    url = f"{ISSUES}{issue['id']}/events/"
    assert "entries" not in http.get(url, params={"statsPeriod": "24h"}).json()[0]
    assert "entries" in http.get(url, params={"statsPeriod": "24h", "full": "true"}).json()[0]


def test_loopback_server_with_real_httpx_client(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, token="loop-token")
    issue = fake.add_issue(title="Error: over the wire")
    fake.add_event(issue["id"], at=clock.now())
    with fake.serve() as base_url:
        client = HttpSentryClient(
            org="acme", token="loop-token", base_url=base_url, clock=clock, timeout=5.0
        )
        with client:
            issues = list(client.list_issues())
            client.add_comment(issue["id"], "hello")
    assert [i.title for i in issues] == ["Error: over the wire"]
    assert fake.comments(issue["id"]) == ["hello"]
    assert fake.requests[0].path == "/api/0/organizations/acme/issues/"


def test_loopback_server_timeout_fault_is_a_real_timeout(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, server_timeout_seconds=0.5)
    issue = fake.add_issue()
    fake.inject(Fault.TIMEOUT, Fault.TIMEOUT)
    with fake.serve() as base_url:
        client = HttpSentryClient(
            org="acme",
            token="t",
            base_url=base_url,
            clock=clock,
            timeout=0.1,
            max_attempts=2,
            backoff=Backoff(random=lambda: 0.5),
        )
        with client, pytest.raises(SentryRetryLater) as info:
            client.get_issue(issue["id"])
    assert isinstance(info.value.__cause__, httpx.TimeoutException)
