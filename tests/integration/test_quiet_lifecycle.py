"""Quiet hours end to end: store (SQLite and real PostgreSQL) + HttpSentryClient + FakeSentry.

Each test drives the FakeClock through the timeline DESIGN.md describes (resolve after
48 quiet hours by two signals, restart on a new event, compare-and-set, inCommit with a
plain fallback) and checks both sides: what Sentry (the fake) now says, and what the
store journaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock, ensure_utc
from bot.codehost.fixlinks import FixCommit
from bot.pipeline.lifecycle import QuietChecker
from bot.pipeline.track import record_transition, track
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, TrackedIssue, Transition
from bot.testing import FakeSentry

REPO = "acme/api"
SHA = "4f2b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b"


@dataclass
class Events:
    """A recording event sink with the executor's signature."""

    seen: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(
        self,
        session: Session,
        kind: str,
        issue: TrackedIssue,
        run: RemediationRun | None,
        playbook: Any,
        extra: dict[str, Any],
    ) -> None:
        assert session.get(TrackedIssue, issue.id) is not None  # inside the transaction
        self.seen.append((kind, issue.id, dict(extra)))


@dataclass
class World:
    store: Store
    fake: FakeSentry
    clock: FakeClock
    events: Events = field(default_factory=Events)
    fixes: dict[str, FixCommit] = field(default_factory=dict)
    hooks: list[Callable[[httpx.Request], None]] = field(default_factory=list)
    client: HttpSentryClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.make_client()

    def make_client(self, **kwargs: Any) -> HttpSentryClient:
        transport = httpx.MockTransport(self.handler)
        return HttpSentryClient(
            org="acme", token="tok", clock=self.clock, transport=transport, **kwargs
        )

    def handler(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.handler(request)
        for hook in self.hooks:  # after the answer: "something happened right after"
            hook(request)
        return response

    def checker(self, **kwargs: Any) -> QuietChecker:
        kwargs.setdefault("fix_commit_for", self.fixes.get)
        return QuietChecker(self.store, self.client, self.clock, on_event=self.events, **kwargs)

    def new_issue(self, *, project: str = "backend", at_hours_ago: float = 0) -> str:
        issue = self.fake.add_issue(project=project)
        self.fake.add_event(issue["id"], at=self.clock.now() - timedelta(hours=at_hours_ago))
        return str(issue["id"])

    def poll(self, ids: list[str]) -> list[str]:
        """What the poller does each cycle: re-read and track; returns regressed ids."""
        with self.store.session() as session:
            return track(session, self.client.get_issues(ids), self.clock).regressed

    def watch(self, ids: list[str], playbook_id: str = "pb") -> None:
        """Track and move to watching exactly as the executor does after a verified run."""
        self.poll(ids)
        now = self.clock.now()
        with self.store.session() as session:
            for issue_id in ids:
                row = session.get(TrackedIssue, issue_id)
                assert row is not None
                row.playbook_id = playbook_id
                record_transition(session, row, LifecycleState.REMEDIATED, "verified", now)
                record_transition(session, row, LifecycleState.WATCHING, "watching", now)
                row.quiet_since = ensure_utc(row.last_seen) if row.last_seen else now

    def row(self, issue_id: str) -> TrackedIssue:
        with self.store.session() as session:
            row = session.get(TrackedIssue, issue_id)
            assert row is not None
            return row

    def timeline(self, issue_id: str) -> list[Transition]:
        with self.store.session() as session:
            return list(
                session.exec(
                    select(Transition)
                    .where(Transition.issue_id == issue_id)
                    .order_by(col(Transition.id))
                ).all()
            )


@pytest.fixture
def world(store: Store, clock: FakeClock) -> World:
    return World(store, FakeSentry(clock=clock, token="tok"), clock)


def test_resolved_after_48_quiet_hours_in_the_fix_commit(world: World) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id])
    world.fake.add_commit(REPO, SHA)
    world.fixes[issue_id] = FixCommit(REPO, SHA)
    checker = world.checker()

    world.clock.advance(hours=47)
    early = checker.check()
    assert (early.watched, early.due, early.resolved, early.requests) == (1, 0, 0, 0)
    assert world.fake.issues[issue_id].data["status"] == "unresolved"

    world.clock.advance(hours=2)
    report = checker.check()
    assert (report.due, report.resolved, report.resolved_in_commit) == (1, 1, 1)
    sentry_issue = world.fake.issues[issue_id].data
    assert sentry_issue["status"] == "resolved"
    assert sentry_issue["statusDetails"] == {"inCommit": SHA}
    row = world.row(issue_id)
    assert row.state == LifecycleState.RESOLVED.value
    assert row.resolved_by_bot is True
    assert row.resolved_at is not None and ensure_utc(row.resolved_at) == world.clock.now()
    last = world.timeline(issue_id)[-1]
    assert last.to_state == "resolved"
    assert "quiet for 48 h" in last.reason and "0 events in window" in last.reason
    assert f"resolved in commit {SHA[:12]} of {REPO}" in last.reason
    assert world.events.seen == [("resolved", issue_id, {"in_commit": SHA, "plain_reason": None})]
    # get_issues, event counts, compare-and-set re-read, one bulk PUT, confirming re-read
    assert report.requests == 5


def test_a_new_event_seen_by_the_poller_restarts_the_clock(world: World) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id])
    checker = world.checker()
    world.clock.advance(hours=30)
    world.fake.add_event(issue_id, at=world.clock.now())
    world.poll([issue_id])

    world.clock.advance(hours=19)  # 49 h after the remediation, 19 h after the event
    report = checker.check()
    assert (report.restarted, report.due, report.resolved, report.requests) == (1, 0, 0, 0)
    row = world.row(issue_id)
    assert row.state == "watching"
    assert ensure_utc(row.quiet_since or world.clock.now()) == world.clock.now() - timedelta(
        hours=19
    )
    restart = world.timeline(issue_id)[-1]
    assert restart.from_state == restart.to_state == "watching"
    assert "quiet clock restarted" in restart.reason

    world.clock.advance(hours=28)  # 47 h after the event
    assert checker.check().resolved == 0
    world.clock.advance(hours=1, minutes=1)  # 48 h after the event
    assert checker.check().resolved_ids == [issue_id]
    assert world.fake.issues[issue_id].data["status"] == "resolved"


def test_an_event_the_poller_missed_is_caught_by_the_first_re_read(world: World) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id])
    world.clock.advance(hours=30)
    world.fake.add_event(issue_id, at=world.clock.now())  # no poll in between
    world.clock.advance(hours=19)
    report = world.checker().check()
    assert (report.due, report.restarted, report.resolved, report.events_checked) == (1, 1, 0, 0)
    assert report.requests == 1  # only the bulk re-read: no events request for it
    assert ensure_utc(world.row(issue_id).quiet_since or world.clock.now()) == (
        world.clock.now() - timedelta(hours=19)
    )


@pytest.mark.parametrize("old_timestamp", [False, True], ids=["newer-lastSeen", "count-only"])
def test_moved_between_check_and_re_read_is_not_resolved(world: World, old_timestamp: bool) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id])
    world.clock.advance(hours=49)

    def event_arrives(request: httpx.Request) -> None:
        if request.url.path == "/api/0/organizations/acme/events/":
            # An event lands right after the events signal said "quiet".
            at = world.clock.now() - timedelta(hours=60) if old_timestamp else world.clock.now()
            world.fake.add_event(issue_id, at=at)

    world.hooks.append(event_arrives)
    report = world.checker().check()
    assert (report.events_checked, report.skipped_moved, report.resolved) == (1, 1, 0)
    assert world.fake.calls("PUT") == []
    assert world.fake.issues[issue_id].data["status"] == "unresolved"
    row = world.row(issue_id)
    assert row.state == "watching" and row.count == 2
    # Either way the clock restarts now: the event is at most a moment old or undatable.
    assert (
        ensure_utc(row.quiet_since or world.clock.now() - timedelta(hours=1)) == world.clock.now()
    )
    assert "moved while resolving" in world.timeline(issue_id)[-1].reason


def test_unknown_commit_is_resolved_plainly_with_the_reason(world: World) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id])
    world.fixes[issue_id] = FixCommit(REPO, SHA)  # Sentry was never told about it
    world.clock.advance(hours=49)
    report = world.checker().check()
    assert (report.resolved, report.resolved_plainly, report.commit_refused) == (1, 1, 1)
    puts = world.fake.calls("PUT")
    assert [p.json.get("statusDetails") for p in puts] == [
        {"inCommit": {"commit": SHA, "repository": REPO}},
        None,
    ]
    assert world.fake.issues[issue_id].data["status"] == "resolved"
    assert world.fake.issues[issue_id].data["statusDetails"] == {}
    reason = world.timeline(issue_id)[-1].reason
    assert f"Sentry did not know commit {SHA[:12]} of {REPO}; resolved without inCommit" in reason
    kind, _, extra = world.events.seen[-1]
    assert kind == "resolved" and extra["in_commit"] is None
    assert "did not know commit" in extra["plain_reason"]


def test_in_commit_disabled_by_the_playbook_resolves_plainly(world: World) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id], playbook_id="no-commit")
    world.fake.add_commit(REPO, SHA)
    world.fixes[issue_id] = FixCommit(REPO, SHA)
    world.clock.advance(hours=49)
    report = world.checker(in_commit_for=lambda pb: pb != "no-commit").check()
    assert (report.resolved_plainly, report.commit_refused) == (1, 0)
    assert [p.json for p in world.fake.calls("PUT")] == [{"status": "resolved"}]


def test_commit_resolves_are_grouped_per_project(world: World) -> None:
    ids = [
        world.new_issue(project="backend"),
        world.new_issue(project="backend"),
        world.new_issue(project="frontend"),
        world.new_issue(project="frontend"),
    ]
    world.watch(ids)
    world.fake.add_commit(REPO, SHA)
    for issue_id in ids[:3]:
        world.fixes[issue_id] = FixCommit(REPO, SHA)
    world.clock.advance(hours=49)
    report = world.checker().check()
    assert (report.resolved, report.resolved_in_commit, report.resolved_plainly) == (4, 3, 1)
    puts = world.fake.calls("PUT")
    assert sorted(len(p.params["id"]) for p in puts) == [1, 1, 2]  # backend, frontend, plain
    for issue_id in ids[:3]:
        assert world.fake.issues[issue_id].data["statusDetails"] == {"inCommit": SHA}


def test_quiet_hours_per_playbook(world: World) -> None:
    short, long = world.new_issue(), world.new_issue()
    world.watch([short], playbook_id="fast")
    world.watch([long], playbook_id="slow")
    world.clock.advance(hours=25)
    hours = {"fast": 24.0, "slow": 48.0}
    report = world.checker(quiet_hours_for=lambda pb: hours[pb or ""]).check()
    assert report.resolved_ids == [short]
    events_call = world.fake.calls("GET", "/organizations/acme/events/")[0]
    assert events_call.params["statsPeriod"] == ["24h"]
    assert "quiet for 24 h" in world.timeline(short)[-1].reason


@pytest.mark.parametrize("refusal", [None, 403, 400])
def test_events_signal_blocks_resolve_and_falls_back_when_refused(
    world: World, refusal: int | None
) -> None:
    ids = [world.new_issue() for _ in range(3)]
    world.watch(ids)
    world.clock.advance(hours=40)
    # Sentry's lastSeen lags behind an event (ingestion delay): only the events
    # endpoint knows about it.
    lagging = world.fake.issues[ids[0]].data
    stale_last_seen = lagging["lastSeen"]
    world.fake.add_event(ids[0], at=world.clock.now())
    lagging["lastSeen"], lagging["count"] = stale_last_seen, "1"
    world.fake.events_refusal = refusal
    world.clock.advance(hours=9)
    report = world.checker().check()
    assert report.not_quiet_by_events == 1
    assert sorted(report.resolved_ids) == sorted(ids[1:])
    assert world.fake.issues[ids[0]].data["status"] == "unresolved"
    per_issue = [c for c in world.fake.calls("GET") if c.path.endswith(f"/issues/{ids[0]}/events/")]
    if refusal is None:
        assert report.events_fallback is None and per_issue == []
        assert report.requests == 5
    else:
        assert report.events_fallback and "fell back" in report.events_fallback
        assert len(per_issue) == 1 and per_issue[0].params["statsPeriod"] == ["48h"]
        # read, refused, 3 per-issue, CAS, PUT, confirming re-read
        assert report.requests == 1 + 1 + 3 + 1 + 1 + 1


def test_issue_gone_from_sentry_is_escalated(world: World) -> None:
    gone, kept = world.new_issue(), world.new_issue()
    world.watch([gone, kept])
    del world.fake.issues[gone]
    world.clock.advance(hours=49)
    report = world.checker().check()
    assert (report.stopped_watching, report.resolved_ids) == (1, [kept])
    row = world.row(gone)
    assert row.state == "escalated" and row.quiet_since is None
    assert "no longer returns" in world.timeline(gone)[-1].reason
    assert ("escalated", gone) in [(k, i) for k, i, _ in world.events.seen]


def test_resolve_sets_what_the_tracker_needs_to_see_a_regression(world: World) -> None:
    issue_id = world.new_issue()
    world.watch([issue_id])
    world.clock.advance(hours=49)
    assert world.checker().check().resolved == 1
    world.clock.advance(hours=5)
    assert world.poll([issue_id]) == []  # nothing new: no regression
    world.fake.add_event(issue_id, at=world.clock.now())
    assert world.poll([issue_id]) == [issue_id]


def test_rate_limit_stops_the_check_and_keeps_what_was_done(world: World) -> None:
    older, newer = world.new_issue(at_hours_ago=1), world.new_issue()
    world.watch([older, newer])
    world.client = world.make_client(max_wait=1)
    world.clock.advance(hours=50)
    world.fake.rate_limit = 5  # one chunk (5 requests) fits in the window, not two
    report = world.checker(batch=1).check()
    assert report.stopped and "rate-limit" in report.stopped
    assert report.retry_after is not None and report.retry_after > 1
    assert report.resolved_ids == [older]  # oldest first
    assert world.row(older).state == "resolved"
    assert world.row(newer).state == "watching"
    assert world.fake.issues[newer].data["status"] == "unresolved"
