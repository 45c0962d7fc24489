"""Polling end to end: FakeSentry over MockTransport → HttpSentryClient → SentryApiSource
→ poll_and_track → a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlmodel import col, func, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock, ensure_utc
from bot.errors import SentryRetryLater
from bot.pipeline.poll import PollResult, get_watermark, poll_and_track
from bot.pipeline.sources import SentryApiSource
from bot.sentry.models import SentryIssue
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue, Transition
from bot.testing.sentry import FakeSentry, Fault

TOKEN = "sntrys_poller_SECRET"
MANY = 1_234  # 13 pages of 100


class Harness:
    """The fake, the real client on a MockTransport, and faults keyed by request number."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.fake = FakeSentry(clock=clock, token=TOKEN)
        # Request number (1-based, counted over the fake's whole life) → faults to inject.
        self.faults_at: dict[int, list[Fault]] = {}
        self.client = HttpSentryClient(
            org="acme",
            token=TOKEN,
            base_url="https://sentry.example.com",
            transport=httpx.MockTransport(self._handle),
            clock=clock,
        )
        self.source = SentryApiSource(self.client)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        faults = self.faults_at.pop(len(self.fake.requests) + 1, None)
        if faults:
            self.fake.inject(*faults)
        return self.fake.handler(request)

    def fail_at(self, offset: int, *faults: Fault) -> None:
        """Inject ``faults`` starting with the ``offset``-th request from now (1-based)."""
        self.faults_at[len(self.fake.requests) + offset] = list(faults)

    def populate(self, n: int) -> list[str]:
        """``n`` issues, one per minute back from now (newest first), each with 3 events."""
        now = self.clock.now()
        ids = []
        for i in range(n):
            issue = self.fake.add_issue(
                title=f"Error: failure {i}", lastSeen=now - timedelta(minutes=i), count=3
            )
            ids.append(issue["id"])
        return ids

    def poll(self, store: Store, **kwargs: timedelta) -> tuple[PollResult, int]:
        """One poll; returns the result and the number of HTTP requests it made."""
        before = len(self.fake.requests)
        result = poll_and_track(store, self.source, self.clock, **kwargs)
        return result, len(self.fake.requests) - before


@pytest.fixture
def sentry(clock: FakeClock) -> Iterator[Harness]:
    harness = Harness(clock)
    yield harness
    harness.client.close()


def tracked_ids(store: Store) -> set[str]:
    with store.session() as session:
        return set(session.exec(select(TrackedIssue.id)).all())


def test_first_poll_ingests_every_page_and_tracks_every_issue(
    store: Store, sentry: Harness
) -> None:
    ids = sentry.populate(MANY)
    result, requests = sentry.poll(store)
    assert requests == 13
    assert sorted(result.tracked.new) == sorted(ids)
    assert result.tracked.changed == [] and result.tracked.unchanged == 0
    assert result.since is None
    assert result.watermark == sentry.clock.now()  # the newest lastSeen Sentry reported
    assert tracked_ids(store) == set(ids)
    with store.session() as session:
        assert session.exec(select(func.count()).select_from(Transition)).one() == MANY
        row = session.get(TrackedIssue, ids[5])
        assert row is not None
        assert row.state == LifecycleState.NEW.value
        assert row.count == 3
        assert row.title == "Error: failure 5"
        assert row.raw["id"] == ids[5]
        assert SentryIssue.model_validate(row.raw).id == ids[5]
        assert get_watermark(session, sentry.source.name) == sentry.clock.now()


def test_repeat_poll_without_changes_makes_at_most_two_requests_and_changes_nothing(
    store: Store, sentry: Harness
) -> None:
    sentry.populate(MANY)
    first, _ = sentry.poll(store)
    sentry.clock.advance(minutes=1)
    with store.session() as session:
        before = {r.id: (r.updated_at, r.state) for r in session.exec(select(TrackedIssue))}
    second, requests = sentry.poll(store)
    assert requests <= 2
    assert second.tracked.new == [] and second.tracked.changed == []
    assert second.tracked.regressed == []
    assert second.tracked.unchanged > 0  # the overlap window was re-read
    assert second.since == ensure_utc(first.watermark or sentry.clock.now()) - timedelta(minutes=10)
    assert second.watermark == first.watermark
    query = sentry.fake.requests[-1].params["query"][0]
    assert "lastSeen:>=" in query
    with store.session() as session:
        after = {r.id: (r.updated_at, r.state) for r in session.exec(select(TrackedIssue))}
        transitions = session.exec(select(func.count()).select_from(Transition)).one()
    assert after == before
    assert transitions == MANY


def test_a_new_event_marks_only_that_issue_changed(store: Store, sentry: Harness) -> None:
    ids = sentry.populate(300)
    sentry.poll(store)
    sentry.clock.advance(minutes=5)
    target = ids[250]  # an old issue, far outside the overlap window
    sentry.fake.add_event(target, at=sentry.clock.now())
    result, requests = sentry.poll(store)
    assert requests == 1
    assert result.tracked.changed == [target]
    assert result.tracked.new == []
    assert result.watermark == sentry.clock.now()
    with store.session() as session:
        row = session.get(TrackedIssue, target)
        assert row is not None and row.last_seen is not None
        assert ensure_utc(row.last_seen) == sentry.clock.now()
        assert row.count == 4


def test_an_issue_whose_last_seen_ties_the_watermark_is_not_missed(
    store: Store, sentry: Harness
) -> None:
    first = sentry.fake.add_issue(title="Error: first")
    mark = sentry.clock.now().replace(microsecond=654321)
    sentry.fake.add_event(first["id"], at=mark)
    result, _ = sentry.poll(store, overlap=timedelta(0))
    assert result.watermark == mark
    # Another issue reaches Sentry with exactly the same lastSeen, after our poll.
    tie = sentry.fake.add_issue(title="Error: tie", lastSeen=mark)
    sentry.clock.advance(minutes=1)
    again, _ = sentry.poll(store, overlap=timedelta(0))
    assert again.since == mark
    assert again.tracked.new == [tie["id"]]
    assert again.tracked.unchanged == 1  # the first issue, re-read at the tie


def test_an_event_ingested_late_within_the_overlap_is_not_missed(
    store: Store, sentry: Harness
) -> None:
    sentry.populate(50)
    result, _ = sentry.poll(store)
    mark = result.watermark
    assert mark is not None
    sentry.clock.advance(minutes=2)
    # Sentry ingests an event late: its timestamp (lastSeen) is before our watermark.
    late = sentry.fake.add_issue(title="Error: late", lastSeen=mark - timedelta(minutes=4))
    old = sentry.fake.add_issue(title="Error: old", lastSeen=mark - timedelta(hours=3))
    again, requests = sentry.poll(store)
    assert requests == 1
    assert late["id"] in again.tracked.new
    assert old["id"] not in again.tracked.new  # outside the overlap: not re-read
    assert again.watermark == mark  # a late event never moves the watermark back


def test_faults_in_the_middle_of_pagination_are_survived(store: Store, sentry: Harness) -> None:
    ids = sentry.populate(MANY)
    sentry.fail_at(3, Fault.RATE_LIMITED)  # 429 with no Retry-After
    sentry.fail_at(6, Fault.SERVER_ERROR)
    sentry.fail_at(9, Fault.TIMEOUT)
    sentry.fail_at(12, Fault.TRUNCATED_JSON)
    result, requests = sentry.poll(store)
    assert requests == 13 + 4  # each fault cost exactly one retry
    assert sorted(result.tracked.new) == sorted(ids)
    assert tracked_ids(store) == set(ids)
    assert len(sentry.clock.sleeps) == 4
    assert all(0 < s <= 60 for s in sentry.clock.sleeps)  # bounded waits, on the fake clock
    cursors = [r.params.get("cursor", [""])[0] for r in sentry.fake.requests]
    assert cursors[2] == cursors[3]  # the 429'd page was asked again, not skipped


def test_a_poll_that_dies_midway_keeps_the_watermark_and_the_next_catches_up(
    store: Store, sentry: Harness
) -> None:
    ids = sentry.populate(MANY)
    first, _ = sentry.poll(store)
    sentry.clock.advance(hours=1)
    touched = ids[::8]  # 155 issues: two pages of changes
    newest = sentry.clock.now()
    for n, issue_id in enumerate(touched):
        sentry.fake.add_event(issue_id, at=newest - timedelta(seconds=n))
    sentry.fail_at(2, *[Fault.SERVER_ERROR] * 4)  # the second page never comes
    with pytest.raises(SentryRetryLater) as info:
        sentry.poll(store)
    assert TOKEN not in str(info.value)
    with store.session() as session:
        assert get_watermark(session, sentry.source.name) == first.watermark
        unchanged_rows = session.exec(
            select(func.count())
            .select_from(TrackedIssue)
            .where(TrackedIssue.count == 3)
            .where(col(TrackedIssue.id).in_(touched))
        ).one()
    assert unchanged_rows == len(touched)  # the failed poll left the store untouched
    caught_up, _ = sentry.poll(store)
    assert sorted(caught_up.tracked.changed) == sorted(touched)
    assert caught_up.watermark == newest
    with store.session() as session:
        counts = session.exec(
            select(TrackedIssue.count).where(col(TrackedIssue.id).in_(touched))
        ).all()
    assert set(counts) == {4}


def test_an_event_after_the_bot_resolved_an_issue_is_a_regression(
    store: Store, sentry: Harness
) -> None:
    ids = sentry.populate(20)
    sentry.poll(store)
    target, other = ids[3], ids[4]
    sentry.clock.advance(hours=49)
    resolved_at = sentry.clock.now()
    for issue_id in (target, other):
        sentry.fake.issues[issue_id].data.update(status="resolved", substatus=None)
    with store.session() as session:
        row = session.get(TrackedIssue, target)
        assert row is not None
        row.state = LifecycleState.RESOLVED.value
        row.resolved_by_bot = True
        row.resolved_at = resolved_at
    sentry.clock.advance(hours=2)
    for issue_id in (target, other):  # Sentry reopens both as regressed
        sentry.fake.add_event(issue_id, at=sentry.clock.now())
    result, _ = sentry.poll(store)
    assert result.tracked.regressed == [target]  # `other` was not resolved by the bot
    assert sorted(result.tracked.changed) == sorted([target, other])
