"""list_issues validates each page straight from the body bytes; anything unusual takes
the slow path, which keeps the client's documented behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.adapters.sentry.responses import ISSUE_PAGE
from bot.clock import FakeClock
from bot.errors import SentryBadResponse
from bot.sentry.models import SentryIssue
from bot.sentry.ratelimit import Backoff
from bot.testing import FakeSentry, Fault

TOKEN = "sntrys_page_SECRET"


def make_client(
    clock: FakeClock, handler: Callable[[httpx.Request], httpx.Response]
) -> HttpSentryClient:
    return HttpSentryClient(
        org="acme",
        token=TOKEN,
        base_url="https://us.sentry.io",
        transport=httpx.MockTransport(handler),
        clock=clock,
        backoff=Backoff(base=0.5, random=lambda: 0.5),
    )


def issue_json(issue_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": issue_id,
        "shortId": f"P-{issue_id}",
        "title": "TypeError: \u00e9 <b>",
        "project": {"id": "1", "slug": "p"},
        "count": "12",
        "userCount": 3,
        "lastSeen": "2026-03-04T12:00:00.5Z",
        "firstSeen": "2026-03-01T00:00:00+02:00",
        "unknownField": {"deep": [1, 2, {"x": None}]},
        **extra,
    }


def test_page_issues_equal_per_item_validation(clock: FakeClock) -> None:
    items = [
        issue_json("1"),
        issue_json(
            "2",
            tags=[{"key": "environment", "topValues": [{"value": "prod", "count": 9}]}],
            latestEvent={"eventID": "e1", "tags": [{"key": "environment", "value": "prod"}]},
            metadata={"value": "boom", "nested": {"a": [1.5, True]}},
            statusDetails={"inRelease": "1.0"},
        ),
    ]
    client = make_client(clock, lambda _r: httpx.Response(200, json=items))
    issues = list(client.list_issues())
    assert issues == [SentryIssue.model_validate(item) for item in items]
    # ...and it is the one-pass validation that produced them, not the slow path.
    assert ISSUE_PAGE.validate_json(json.dumps(items)) == issues
    assert issues[0].count == 12 and issues[1].environment == "prod"
    assert issues[1].message == "boom"


def test_a_malformed_issue_in_a_page_is_quarantined_with_field_and_issue(
    clock: FakeClock,
) -> None:
    """Issue #8: one malformed issue no longer aborts the poll; it is set aside."""
    items = [issue_json("1"), issue_json("2", count="lots"), issue_json("3")]
    client = make_client(clock, lambda _r: httpx.Response(200, json=items))
    assert [i.id for i in client.list_issues()] == ["1", "3"]
    [item] = client.take_quarantined()
    assert item.issue_id == "2"
    assert "list issues: malformed issue" in item.reason and "count" in item.reason


def test_a_page_that_is_not_a_list_is_a_bad_response(clock: FakeClock) -> None:
    client = make_client(clock, lambda _r: httpx.Response(200, json={"detail": "nope"}))
    with pytest.raises(SentryBadResponse, match="expected a JSON list, got dict"):
        list(client.list_issues())
    empty = make_client(clock, lambda _r: httpx.Response(200, content=b""))
    with pytest.raises(SentryBadResponse, match="expected a JSON list, got NoneType"):
        list(empty.list_issues())


def test_a_truncated_page_is_retried_not_fatal(clock: FakeClock) -> None:
    fake = FakeSentry(clock=clock, token=TOKEN)
    for n in range(3):
        fake.add_issue(title=f"Error: {n}")
    fake.inject(Fault.TRUNCATED_JSON)
    client = make_client(clock, fake.handler)
    assert len(list(client.list_issues())) == 3
    assert client.request_count == 2
    assert clock.sleeps == [0.5]


def test_a_page_truncated_every_time_is_unreadable_json(clock: FakeClock) -> None:
    body = json.dumps([issue_json("1")]).encode()[:-5]
    client = make_client(clock, lambda _r: httpx.Response(200, content=body))
    with pytest.raises(SentryBadResponse, match="unreadable JSON"):
        list(client.list_issues())
    assert client.request_count == 4
