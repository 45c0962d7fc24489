"""Every HttpSentryClient method through Prism, validated against Sentry's OpenAPI file.

The proxy (tests/contract/conftest.py) checks each request the client sends and each
response FakeSentry gives against ``../shared/sentry-api/openapi-derefed.json`` (cut to
the operations in :data:`tests.contract.specs.SENTRY_OPERATIONS`, with the 45 ``null``
enum entries that make Prism skip body validation removed). Any violation fails.

Operations the client uses that the description lacks are listed in
:data:`tests.contract.specs.SENTRY_ABSENT` with the reason, and checked directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.errors import SentryBadRequest, SentryRetryLater
from bot.testing import FakeSentry
from tests.contract.conftest import Prism
from tests.contract.specs import SENTRY_ABSENT, SENTRY_OPERATIONS, sentry_subset

# Session fixtures start Prism (and load a 13 MB description) inside the first test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass
class Proxied:
    prism: Prism
    fake: FakeSentry
    client: HttpSentryClient
    clock: FakeClock

    def violations(self) -> list[str]:
        return self.prism.violations()

    def reported_locations(self) -> list[list[str]]:
        """Ask Prism the list-issues question directly; where its problem body points."""
        answer = httpx.get(
            f"{self.prism.url}/api/0/organizations/acme/issues/",
            headers={"Authorization": "Bearer tok"},
            timeout=60,
        )
        assert answer.status_code == 500, answer.text
        problem = answer.json()
        assert problem["type"].endswith("#VIOLATIONS")
        return [[str(p) for p in v["location"]] for v in problem["validation"]]


@pytest.fixture
def proxied(sentry_prism: Prism, clock: FakeClock) -> Iterator[Proxied]:
    fake = FakeSentry(clock=clock, token="tok")
    sentry_prism.upstream.respond = fake.respond_for_server
    sentry_prism.mark()
    client = HttpSentryClient(
        org="acme", token="tok", base_url=sentry_prism.url, clock=clock, max_attempts=1
    )
    try:
        yield Proxied(sentry_prism, fake, client, clock)
    finally:
        client.close()
        sentry_prism.upstream.respond = None


def test_every_client_method_passes_the_contract(proxied: Proxied) -> None:
    fake, client, clock = proxied.fake, proxied.client, proxied.clock
    ids = []
    for n in range(3):
        issue = fake.add_issue(title=f"Error: boom {n}", project="api")
        fake.add_event(issue["id"], at=clock.now() - timedelta(hours=n), message="boom")
        ids.append(str(issue["id"]))
    fake.add_commit("acme/api", "a" * 40)

    listed = list(client.list_issues(query="is:unresolved", projects=["1"], limit=2))
    assert sorted(i.id for i in listed) == sorted(ids)  # two pages, Link cursors
    assert client.get_issue(ids[0]).id == ids[0]
    assert sorted(i.id for i in client.get_issues(ids)) == sorted(ids)  # group=
    events = client.list_events(ids[0], stats_period="48h", full=True)
    assert len(events) == 1
    assert client.latest_event(ids[0]) is not None
    counts = client.event_counts(ids, stats_period="48h")
    assert counts == {ids[0]: 1, ids[1]: 1, ids[2]: 1}
    assert client.update_issue(ids[0], {"status": "resolved"}).status == "resolved"
    details = {"inCommit": {"commit": "a" * 40, "repository": "acme/api"}}
    assert client.bulk_update(ids[1:2], {"status": "resolved", "statusDetails": details})
    assert client.bulk_update(["987654321"], {"status": "resolved"}) is False  # 204
    with pytest.raises(SentryBadRequest):  # an unknown commit: 400, per the spec
        client.bulk_update(
            ids[2:],
            {
                "status": "resolved",
                "statusDetails": {"inCommit": {"commit": "b" * 40, "repository": "acme/api"}},
            },
        )

    assert proxied.violations() == []
    sent = {(r.method, r.path) for r in fake.requests}
    assert len(sent) >= 7


def test_positive_control_a_wrong_typed_count_is_reported(proxied: Proxied) -> None:
    """Validation is really on: ``count`` is a string in Sentry's schema, 7 is not."""
    issue = proxied.fake.add_issue()
    proxied.fake.issues[issue["id"]].data["count"] = 7
    with pytest.raises(SentryRetryLater):  # Prism answered 500 instead of the fake
        list(proxied.client.list_issues())
    assert proxied.violations()
    assert ["response", "body", "0", "count"] in proxied.reported_locations()


def test_positive_control_a_bad_substatus_is_reported(proxied: Proxied) -> None:
    """Only visible because the subset removed ``null`` from the ``substatus`` enum."""
    issue = proxied.fake.add_issue()
    proxied.fake.issues[issue["id"]].data["substatus"] = "sleeping"
    with pytest.raises(SentryRetryLater):
        list(proxied.client.list_issues())
    assert ["response", "body", "0", "substatus"] in proxied.reported_locations()


def test_absent_operations_are_listed_with_a_reason() -> None:
    spec, _ = sentry_subset()
    for path, method in SENTRY_ABSENT:
        assert path not in spec["paths"] or method not in spec["paths"][path]
        assert (path, method) not in SENTRY_OPERATIONS
    assert all("getsentry/sentry" in why for why in SENTRY_ABSENT.values())
