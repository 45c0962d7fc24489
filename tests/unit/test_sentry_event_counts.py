"""``event_counts``: the batched events signal, client against FakeSentry's events table."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.errors import SentryBadRequest, SentryBadResponse, SentryError
from bot.testing import FakeSentry

EVENTS = "https://us.sentry.io/api/0/organizations/acme/events/"


@pytest.fixture
def fake(clock: FakeClock) -> FakeSentry:
    return FakeSentry(clock=clock)


@pytest.fixture
def client(fake: FakeSentry, clock: FakeClock) -> HttpSentryClient:
    return HttpSentryClient(
        org="acme", token="t", clock=clock, transport=httpx.MockTransport(fake.handler)
    )


def test_counts_only_events_inside_the_window(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    busy, old, silent = (fake.add_issue()["id"] for _ in range(3))
    for hours in (1, 5, 47):
        fake.add_event(busy, at=clock.now() - timedelta(hours=hours))
    fake.add_event(busy, at=clock.now() - timedelta(hours=49))
    fake.add_event(old, at=clock.now() - timedelta(hours=72))
    counts = client.event_counts([busy, old, silent], stats_period="48h")
    assert counts == {busy: 3, old: 0, silent: 0}
    assert client.event_counts([busy, old], stats_period="3d") == {busy: 4, old: 1}


def test_request_shape(fake: FakeSentry, client: HttpSentryClient) -> None:
    ids = [fake.add_issue()["id"] for _ in range(2)]
    client.event_counts(ids, stats_period="48h", environments=["production"])
    (call,) = fake.calls("GET", "/organizations/acme/events/")
    assert call.params["dataset"] == ["errors"]
    assert call.params["field"] == ["issue.id", "count()"]
    assert call.params["query"] == [f"issue.id:[{ids[0]},{ids[1]}]"]
    assert call.params["statsPeriod"] == ["48h"]
    assert call.params["per_page"] == ["100"]
    assert call.params["environment"] == ["production"]


def test_one_request_per_hundred_ids(
    fake: FakeSentry, client: HttpSentryClient, clock: FakeClock
) -> None:
    ids = [fake.add_issue()["id"] for _ in range(250)]
    fake.add_event(ids[-1], at=clock.now())
    counts = client.event_counts(ids + ids[:5], stats_period="48h")  # duplicates asked once
    assert len(counts) == 250 and counts[ids[-1]] == 1 and sum(counts.values()) == 1
    assert client.request_count == 3


def test_environment_filter(fake: FakeSentry, client: HttpSentryClient, clock: FakeClock) -> None:
    issue = fake.add_issue()["id"]
    fake.add_event(issue, at=clock.now(), environment="staging")
    assert client.event_counts([issue], stats_period="1h", environments=["production"]) == {
        issue: 0
    }
    assert client.event_counts([issue], stats_period="1h") == {issue: 1}


@pytest.mark.parametrize(
    ("status", "error"), [(403, SentryError), (400, SentryBadRequest)], ids=["403", "400"]
)
def test_refusal_raises_for_the_callers_fallback(
    fake: FakeSentry, client: HttpSentryClient, status: int, error: type[SentryError]
) -> None:
    fake.events_refusal = status
    with pytest.raises(error) as info:
        client.event_counts([fake.add_issue()["id"]], stats_period="48h")
    assert info.value.context["status"] == status
    assert client.request_count == 1  # 4xx is never retried


def test_no_ids_no_request(client: HttpSentryClient) -> None:
    assert client.event_counts([], stats_period="48h") == {}
    assert client.request_count == 0


def test_non_numeric_id_is_refused_before_sending(client: HttpSentryClient) -> None:
    with pytest.raises(ValueError, match="numeric"):
        client.event_counts(["1] OR issue.id:[2"], stats_period="48h")
    assert client.request_count == 0


@pytest.mark.parametrize(
    "body",
    [[{"issue.id": 1, "count()": 2}], {"data": [{"issue.id": 1, "count()": "2"}]}, {"meta": {}}],
    ids=["bare-list", "string-count", "no-data"],
)
def test_malformed_answer_is_bad_response(clock: FakeClock, body: object) -> None:
    client = HttpSentryClient(
        org="acme",
        token="t",
        clock=clock,
        transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=body)),
    )
    with pytest.raises(SentryBadResponse):
        client.event_counts(["1"], stats_period="48h")


def test_fake_table_shape_and_strictness(fake: FakeSentry, clock: FakeClock) -> None:
    http = httpx.Client(transport=httpx.MockTransport(fake.handler))
    a, b = fake.add_issue()["id"], fake.add_issue()["id"]
    fake.add_event(a, at=clock.now())
    fake.add_event(b, at=clock.now())
    fake.add_event(b, at=clock.now())
    base = [("dataset", "errors"), ("statsPeriod", "24h")]
    rows = http.get(
        EVENTS, params=[*base, ("field", "issue.id"), ("field", "count()"), ("query", "")]
    ).json()
    assert rows["data"] == [{"issue.id": int(b), "count()": 2}, {"issue.id": int(a), "count()": 1}]
    assert rows["meta"]["fields"] == {"issue.id": "integer", "count()": "integer"}
    total = http.get(EVENTS, params=[*base, ("field", "count()"), ("query", f"issue.id:{a}")])
    assert total.json()["data"] == [{"count()": 1}]
    for bad in (
        [("field", "count()")],  # no dataset
        [*base, ("field", "title"), ("field", "count()")],
        [*base, ("field", "count()"), ("query", "level:error")],
        [*base, ("field", "count()"), ("sort", "-issue.id")],
        [*base, ("field", "count()"), ("per_page", "101")],
    ):
        assert http.get(EVENTS, params=bad).status_code == 400, bad


def test_fake_bulk_in_commit_refuses_several_projects(fake: FakeSentry, clock: FakeClock) -> None:
    http = httpx.Client(transport=httpx.MockTransport(fake.handler))
    fake.add_commit("acme/api", "abc123")
    ids = [fake.add_issue(project="backend")["id"], fake.add_issue(project="frontend")["id"]]
    body = {
        "status": "resolved",
        "statusDetails": {"inCommit": {"commit": "abc123", "repository": "acme/api"}},
    }
    issues = "https://us.sentry.io/api/0/organizations/acme/issues/"
    mixed = http.put(issues, params=[("id", i) for i in ids], json=body)
    assert mixed.status_code == 400 and "multiple projects" in mixed.json()["detail"]
    assert all(fake.issues[i].data["status"] == "unresolved" for i in ids)
    assert http.put(issues, params=[("id", ids[0])], json=body).status_code == 200
    assert fake.issues[ids[0]].data["statusDetails"] == {"inCommit": "abc123"}
