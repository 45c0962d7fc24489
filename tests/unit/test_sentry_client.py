"""HttpSentryClient against FakeSentry (MockTransport) and hand-built responses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from itertools import islice

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
from bot.sentry.ratelimit import Backoff
from bot.testing import FakeSentry, Fault

TOKEN = "sntrys_SECRET_token_value_123"
ISSUES = "/api/0/organizations/acme/issues/"


@pytest.fixture
def fake(clock: FakeClock) -> FakeSentry:
    return FakeSentry(clock=clock, token=TOKEN)


def make_client(
    clock: FakeClock,
    handler: Callable[[httpx.Request], httpx.Response],
    **kwargs: object,
) -> HttpSentryClient:
    return HttpSentryClient(
        org="acme",
        token=TOKEN,
        base_url="https://us.sentry.io",
        transport=httpx.MockTransport(handler),
        clock=clock,
        backoff=Backoff(base=0.5, random=lambda: 0.5),  # jitter factor exactly 1.0
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(clock: FakeClock, fake: FakeSentry) -> HttpSentryClient:
    return make_client(clock, fake.handler)


def test_pagination_follows_link_cursors_across_many_pages(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    for i in range(1234):
        issue = fake.add_issue(title=f"Error: boom {i}")
        fake.add_event(issue["id"], at=clock.now() - timedelta(seconds=i))
    issues = list(client.list_issues(limit=100))
    assert len(issues) == 1234
    assert len({i.id for i in issues}) == 1234
    assert [i.last_seen for i in issues] == sorted((i.last_seen for i in issues), reverse=True)
    assert client.request_count == 13
    cursors = [r.params.get("cursor") for r in fake.calls("GET", ISSUES)]
    assert cursors[:3] == [None, ["0:100:0"], ["0:200:0"]]


def test_list_issues_is_lazy(fake: FakeSentry, client: HttpSentryClient) -> None:
    for i in range(250):
        fake.add_issue(title=f"Error: {i}")
    first = list(islice(client.list_issues(limit=100), 150))
    assert len(first) == 150
    assert client.request_count == 2


def test_list_issues_sends_filters(fake: FakeSentry, client: HttpSentryClient) -> None:
    list(client.list_issues(projects=["1"], environments=["production"], stats_period="14d"))
    params = fake.requests[-1].params
    assert params["project"] == ["1"]
    assert params["environment"] == ["production"]
    assert params["statsPeriod"] == ["14d"]
    assert params["query"] == ["is:unresolved"]
    assert params["sort"] == ["date"]


def test_limit_above_100_is_refused_locally(client: HttpSentryClient) -> None:
    with pytest.raises(ValueError):
        list(client.list_issues(limit=101))


def test_429_without_retry_after_sleeps_until_reset(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, token=TOKEN, rate_limit=2, rate_window=60)
    issue = fake.add_issue()
    client = make_client(clock, fake.handler)
    client.get_issue(issue["id"])
    client.get_issue(issue["id"])  # budget spent: Remaining 0 -> pre-emptive wait
    start = clock.now().timestamp()
    reset = start - start % 60 + 60
    assert client.rate_limit is not None and client.rate_limit.remaining == 0
    client.get_issue(issue["id"])
    assert clock.sleeps == [reset - start]
    assert client.request_count == 3  # no 429 was needed


def test_429_without_retry_after_waits_for_reset_header(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, token=TOKEN)
    issue = fake.add_issue()
    fake.inject(Fault.RATE_LIMITED)
    client = make_client(clock, fake.handler)
    start = clock.now().timestamp()
    assert client.get_issue(issue["id"]).id == issue["id"]
    reset = start - start % 60 + 60
    assert clock.sleeps == [reset - start]
    assert client.request_count == 2


def test_429_body_is_a_bare_string_and_retry_after_wins(clock: FakeClock) -> None:
    responses = [
        httpx.Response(
            429,
            json="You are attempting to use this endpoint too frequently. Limit is 40 requests",
            headers={"Retry-After": "7", "X-Sentry-Rate-Limit-Reset": "9999999999"},
        ),
        httpx.Response(200, json=[]),
    ]
    client = make_client(clock, lambda _r: responses.pop(0))
    assert list(client.list_issues()) == []
    assert clock.sleeps == [7.0]


def test_429_reset_beyond_max_wait_raises_retry_later(clock: FakeClock) -> None:
    reset = clock.now().timestamp() + 600
    client = make_client(
        clock,
        lambda _r: httpx.Response(
            429,
            json="You are attempting to use this endpoint too frequently.",
            headers={"X-Sentry-Rate-Limit-Remaining": "0", "X-Sentry-Rate-Limit-Reset": str(reset)},
        ),
        max_wait=60.0,
    )
    with pytest.raises(SentryRetryLater) as info:
        client.get_issue("1")
    assert info.value.retry_after == pytest.approx(600)
    assert clock.sleeps == []
    assert client.request_count == 1


def test_exhausted_budget_far_from_reset_raises_without_sending(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, token=TOKEN, rate_limit=1, rate_window=3600)
    issue = fake.add_issue()
    client = make_client(clock, fake.handler, max_wait=60.0)
    client.get_issue(issue["id"])
    with pytest.raises(SentryRetryLater) as info:
        client.get_issue(issue["id"])
    assert info.value.retry_after is not None and info.value.retry_after > 60
    assert len(fake.requests) == 1


@pytest.mark.parametrize("fault", [Fault.SERVER_ERROR, Fault.TIMEOUT, Fault.TRUNCATED_JSON])
def test_transient_fault_then_success(
    fault: Fault, fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    issue = fake.add_issue(title="Error: flaky")
    fake.inject(fault)
    assert client.get_issue(issue["id"]).title == "Error: flaky"
    assert client.request_count == 2
    assert clock.sleeps == [0.5]


def test_backoff_grows_exponentially(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    issue = fake.add_issue()
    fake.inject(Fault.SERVER_ERROR, Fault.TIMEOUT, Fault.TRUNCATED_JSON)
    client.get_issue(issue["id"])
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_retries_exhausted_raise_retry_later_with_context(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    fake.inject(*[Fault.SERVER_ERROR] * 4)
    with pytest.raises(SentryRetryLater) as info:
        client.get_issue("4500000001")
    assert info.value.context["status"] == 502
    assert info.value.context["attempt"] == 4
    assert info.value.context["method"] == "GET"
    assert client.request_count == 4


def test_truncated_json_every_time_is_bad_response(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    issue = fake.add_issue()
    fake.inject(*[Fault.TRUNCATED_JSON] * 4)
    with pytest.raises(SentryBadResponse, match="unreadable JSON"):
        client.get_issue(issue["id"])


def test_timeouts_exhausted_raise_retry_later(fake: FakeSentry, client: HttpSentryClient) -> None:
    fake.inject(*[Fault.TIMEOUT] * 4)
    with pytest.raises(SentryRetryLater) as info:
        client.get_issue("1")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_404_is_not_retried(fake: FakeSentry, client: HttpSentryClient) -> None:
    with pytest.raises(SentryNotFound):
        client.get_issue("999")
    assert client.request_count == 1
    assert len(fake.requests) == 1


def test_401_is_not_retried_and_token_is_not_in_the_message(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, token="another-token")
    client = make_client(clock, fake.handler)
    with pytest.raises(SentryError) as info:
        client.get_issue("1")
    assert client.request_count == 1
    assert TOKEN not in str(info.value)


def test_token_never_in_errors_or_logs(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        # A hostile or buggy proxy echoing the Authorization header back.
        auth = request.headers["authorization"]
        return httpx.Response(503 if "boom" in request.url.path else 400, json={"detail": auth})

    client = make_client(clock, echo)
    caplog.set_level(logging.DEBUG)
    errors: list[Exception] = []
    for issue_id in ("boom", "1"):
        with pytest.raises(SentryError) as info:
            client.get_issue(issue_id)
        errors.append(info.value)
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error.context)
    assert TOKEN not in caplog.text
    assert "retrying" in caplog.text


def test_malformed_issue_names_the_field(clock: FakeClock) -> None:
    bad = {"id": "42", "shortId": "X-1", "title": "t", "project": {"id": "1", "slug": "p"}}
    bad["count"] = "lots"
    client = make_client(clock, lambda _r: httpx.Response(200, json=bad))
    with pytest.raises(SentryBadResponse, match="count") as info:
        client.get_issue("42")
    assert info.value.context["issue_id"] == "42"


def test_get_issues_selects_with_repeated_group_in_chunks_of_100(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    # getsentry/sentry organization_group_index.py: GET reads request.GET.getlist("group")
    # and ignores the query; it never reads ``id`` (only PUT/DELETE do).
    ids = [fake.add_issue()["id"] for _ in range(150)]
    client.update_issue(ids[0], {"status": "resolved"})
    got = client.get_issues([*ids, "999999"])
    assert {i.id for i in got} == set(ids)  # resolved one included, unknown absent
    calls = fake.calls("GET", ISSUES)
    assert [len(c.params["group"]) for c in calls] == [100, 51]
    assert all("id" not in c.params and "query" not in c.params for c in calls)


def test_update_issue_is_partial_and_returns_whole_issue(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    issue = fake.add_issue(title="Error: keep me", level="warning")
    updated = client.update_issue(issue["id"], {"status": "resolved"})
    assert updated.status == "resolved"
    assert updated.title == "Error: keep me" and updated.level == "warning"
    assert fake.requests[-1].json == {"status": "resolved"}


def test_in_commit_unknown_is_bad_request_known_is_accepted(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    issue = fake.add_issue()
    change = {
        "status": "resolved",
        "statusDetails": {"inCommit": {"commit": "abc123", "repository": "acme/api"}},
    }
    with pytest.raises(SentryBadRequest, match="repository"):
        client.update_issue(issue["id"], change)
    assert fake.issues[issue["id"]].data["status"] == "unresolved"
    fake.add_commit("acme/api", "abc123")
    assert client.update_issue(issue["id"], change).status_details == {"inCommit": "abc123"}


def test_bulk_update_sends_ids_and_accepts_200_and_204(
    fake: FakeSentry, client: HttpSentryClient
) -> None:
    ids = [fake.add_issue()["id"] for _ in range(3)]
    client.bulk_update(ids[:2], {"status": "resolved"})
    assert [fake.issues[i].data["status"] for i in ids] == ["resolved", "resolved", "unresolved"]
    client.bulk_update(["999"], {"status": "resolved"})  # fake answers 204
    before = len(fake.requests)
    client.bulk_update([], {"status": "resolved"})
    assert len(fake.requests) == before  # no ids: no request, never "all issues"
    assert fake.issues[ids[2]].data["status"] == "unresolved"


def test_duplicate_comment_within_an_hour(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    issue = fake.add_issue()
    client.add_comment(issue["id"], "Remediated by requeue_stuck_tasks")
    with pytest.raises(SentryDuplicateComment):
        client.add_comment(issue["id"], "Remediated by requeue_stuck_tasks")
    clock.advance(hours=1, seconds=1)
    client.add_comment(issue["id"], "Remediated by requeue_stuck_tasks")
    assert fake.comments(issue["id"]) == ["Remediated by requeue_stuck_tasks"] * 2


def test_events_window_and_latest(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    issue = fake.add_issue(title="Error: x")
    fake.add_event(issue["id"], at=clock.now() - timedelta(hours=50), message="Error: old")
    assert client.list_events(issue["id"], stats_period="48h") == []
    fake.add_event(issue["id"], at=clock.now() - timedelta(hours=1), message="Error: new")
    events = client.list_events(issue["id"], stats_period="48h")
    assert [e.message for e in events] == ["Error: new"]
    assert len(client.list_events(issue["id"], stats_period="14d")) == 2
    latest = client.latest_event(issue["id"])
    assert latest is not None and "Error: new" in latest.text()
    assert client.latest_event(fake.add_issue()["id"]) is None


def test_events_limit_stops_early(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    issue = fake.add_issue()
    for i in range(150):
        fake.add_event(issue["id"], at=clock.now() - timedelta(minutes=i))
    assert len(client.list_events(issue["id"], stats_period="14d", limit=1)) == 1
    assert fake.requests[-1].params["per_page"] == ["1"]
    assert len(client.list_events(issue["id"], stats_period="14d")) == 150


def test_link_to_another_host_is_not_followed(clock: FakeClock) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        link = (
            '<https://evil.example/x?cursor=0:0:1>; rel="previous"; results="false"; '
            'cursor="0:0:1", <https://evil.example/x?cursor=0:1:0>; rel="next"; '
            'results="true"; cursor="0:1:0"'
        )
        return httpx.Response(200, json=[], headers={"Link": link})

    client = make_client(clock, handler)
    list(client.list_issues())
    assert seen == ["us.sentry.io", "us.sentry.io"]  # and a repeated cursor ends the loop


def test_body_is_json_string_wrapped_detail(clock: FakeClock) -> None:
    body = json.dumps({"detail": "You have already posted that comment."})
    client = make_client(clock, lambda _r: httpx.Response(400, json=body))
    with pytest.raises(SentryDuplicateComment):
        client.add_comment("1", "hi")
