"""Issue #8 done-when: resolve after 48 quiet hours against Sentry's real selection rules.

FakeSentry follows getsentry/sentry on the points this depends on:

- ``GET /organizations/{org}/issues/`` selects with repeated ``group=`` and then ignores
  the query; ``id`` is not read on GET (``organization_group_index.py``,
  ``request.GET.getlist("group")``: "If group ids specified, just ignore any query
  components"), so an ``id=`` re-read would get the org's first page instead;
- bulk ``PUT …/issues/?id=`` answers 204 and changes nothing when no id matched
  (``src/sentry/api/helpers/group_index/update.py``, ``update_groups``: "If any ids are
  out of scope this operation will succeed without any data mutation").

Every test runs on SQLite and on a real PostgreSQL store (the ``store`` fixture).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.store.db import Store
from bot.testing import FakeSentry
from tests.integration.test_quiet_lifecycle import World


def _client(world: World, handler: Callable[[httpx.Request], httpx.Response]) -> HttpSentryClient:
    transport = httpx.MockTransport(handler)
    return HttpSentryClient(org="acme", token="tok", clock=world.clock, transport=transport)


@pytest.fixture
def busy(store: Store, clock: FakeClock) -> World:
    return World(store, FakeSentry(clock=clock, token="tok", rate_limit=100_000), clock)


def test_busy_org_quiet_49h_resolved_47h_not(busy: World) -> None:
    quiet = [busy.new_issue(at_hours_ago=0) for _ in range(3)]
    almost = busy.new_issue(at_hours_ago=0)
    busy.watch([*quiet, almost])
    busy.clock.advance(hours=2)
    busy.fake.add_event(almost, at=busy.clock.now())  # the 47 h one: its clock restarts
    busy.poll([almost])
    # Hundreds of newer, active issues: the org's first page holds none of ours.
    for n in range(250):
        busy.new_issue(project=("api", "web")[n % 2], at_hours_ago=0)
    busy.clock.advance(hours=47)
    for n in range(0, 250, 50):  # still busy right now
        busy.fake.add_event(str(4_500_000_005 + n), at=busy.clock.now())

    report = busy.checker().check()

    assert sorted(report.resolved_ids) == sorted(quiet)  # 3 of 3 at 49 h
    assert report.stopped_watching == 0  # nobody dropped as "gone"
    assert busy.fake.issues[almost].data["status"] == "unresolved"
    assert busy.row(almost).state == "watching"
    for issue_id in quiet:
        assert busy.fake.issues[issue_id].data["status"] == "resolved"
        assert busy.row(issue_id).state == "resolved"
    reads = [c for c in busy.fake.calls("GET") if c.path.endswith("/issues/")]
    assert reads and all("id" not in c.params and c.params["group"] for c in reads)
    busy.clock.advance(hours=2)  # now the 47 h one is 49 h quiet as well
    assert busy.checker().check().resolved_ids == [almost]


def test_fake_ignores_id_on_get_like_sentry(busy: World) -> None:
    ids = [busy.new_issue() for _ in range(120)]
    answer = busy.fake.handler(
        httpx.Request(
            "GET",
            "https://sentry.test/api/0/organizations/acme/issues/",
            params=[("id", ids[0]), ("query", "")],
            headers={"Authorization": "Bearer tok"},
        )
    )
    got = [i["id"] for i in answer.json()]
    assert len(got) == 100  # the org's first page: ``id`` selected nothing
    assert 'rel="next"; results="true"' in answer.headers["Link"]
    by_group = busy.fake.handler(
        httpx.Request(
            "GET",
            "https://sentry.test/api/0/organizations/acme/issues/",
            params=[("group", ids[0]), ("group", ids[1]), ("query", "is:resolved")],
            headers={"Authorization": "Bearer tok"},
        )
    )
    assert sorted(i["id"] for i in by_group.json()) == sorted(ids[:2])  # query ignored


def test_a_204_bulk_put_is_never_recorded_as_resolved(busy: World) -> None:
    """Sentry matched nothing (answered 204): the store must not say "resolved"."""
    issue_id = busy.new_issue()
    busy.watch([issue_id])
    busy.clock.advance(hours=49)

    def out_of_scope(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/issues/"):
            # As update_groups does for ids out of scope: 204, no mutation.
            return httpx.Response(204)
        return busy.fake.handler(request)

    busy.client = _client(busy, out_of_scope)
    report = busy.checker().check()

    assert report.resolved == 0 and report.unconfirmed == 1
    assert busy.fake.issues[issue_id].data["status"] == "unresolved"
    row = busy.row(issue_id)
    assert row.state == "watching" and row.resolved_at is None
    assert "not recorded as resolved" in busy.timeline(issue_id)[-1].reason
    assert [kind for kind, _i, _x in busy.events.seen] == []  # no "resolved" notice
    # Next check, with Sentry accepting the update, resolves and records it.
    busy.client = busy.make_client()
    assert busy.checker().check().resolved_ids == [issue_id]
    assert busy.row(issue_id).state == "resolved"


def test_resolve_recorded_only_for_issues_the_reread_shows_resolved(busy: World) -> None:
    first, second = busy.new_issue(), busy.new_issue()
    busy.watch([first, second])
    busy.clock.advance(hours=49)

    def drops_second(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/issues/"):
            # Sentry changed only what it could: here, the first issue.
            keep = [(k, v) for k, v in request.url.params.multi_items() if v != second]
            url = request.url.copy_with(params=keep)
            request = httpx.Request("PUT", url, headers=request.headers, content=request.content)
        return busy.fake.handler(request)

    busy.client = _client(busy, drops_second)
    report = busy.checker().check()

    assert report.resolved_ids == [first] and report.unconfirmed == 1
    assert busy.row(first).state == "resolved"
    assert busy.row(second).state == "watching"
    assert [(k, i) for k, i, _x in busy.events.seen] == [("resolved", first)]


def test_fake_bulk_put_with_no_match_is_204_and_changes_nothing(busy: World) -> None:
    issue_id = busy.new_issue()
    before = dict(busy.fake.issues[issue_id].data)
    assert busy.client.bulk_update(["987654321"], {"status": "resolved"}) is False
    assert busy.fake.issues[issue_id].data == before
    assert busy.client.bulk_update([issue_id], {"status": "resolved"}) is True
