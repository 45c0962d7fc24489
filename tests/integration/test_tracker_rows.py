"""What the tracker stores for first-seen issues (the bulk path), on SQLite and PostgreSQL:
the columns, the 'new' transition, and a ``raw`` that rebuilds the very same issue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import select

from bot.clock import FakeClock
from bot.pipeline.track import track
from bot.sentry.models import SentryIssue
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue, Transition


def issue(issue_id: str, **extra: Any) -> SentryIssue:
    return SentryIssue.model_validate(
        {
            "id": issue_id,
            "shortId": f"P-{issue_id}",
            "title": "KeyError: 'é' %s ?",
            "culprit": "",
            "project": {"id": "1", "slug": "payments"},
            "count": "12",
            "userCount": 3,
            "firstSeen": "2026-03-01T00:00:00+02:00",
            "lastSeen": "2026-03-04T12:00:00.5Z",
            **extra,
        }
    )


def test_first_seen_issues_are_stored_whole(store: Store, clock: FakeClock) -> None:
    rich = issue(
        "1",
        tags={"environment": "prod"},
        latestEvent={"eventID": "e1", "entries": [{"type": "message", "data": {"x": 1}}]},
        metadata={"value": "boom", "n": [1.5, None, True]},
        statusDetails={"inRelease": "1.0"},
    )
    plain = issue("2", lastSeen=None, firstSeen=None)
    with store.session() as session:
        result = track(session, [rich, plain], clock)
    assert result.new == ["1", "2"]
    with store.session() as session:
        rows = {r.id: r for r in session.exec(select(TrackedIssue))}
        transitions = session.exec(select(Transition)).all()
    row = rows["1"]
    assert SentryIssue.model_validate(row.raw) == rich
    assert SentryIssue.model_validate(rows["2"].raw) == plain
    assert (row.short_id, row.project, row.environment, row.message) == (
        "P-1",
        "payments",
        "prod",
        "boom",
    )
    assert row.culprit is None and row.count == 12 and row.user_count == 3
    assert row.title == "KeyError: 'é' %s ?"
    assert row.first_seen == datetime(2026, 2, 28, 22, 0, tzinfo=UTC)
    assert row.last_seen == datetime(2026, 3, 4, 12, 0, 0, 500000, tzinfo=UTC)
    assert rows["2"].last_seen is None
    assert row.state == LifecycleState.NEW.value and row.triage == {}
    assert row.resolved_by_bot is False and row.requires_approval is False
    assert row.created_at == clock.now() and row.updated_at == clock.now()
    assert sorted((t.issue_id, t.from_state, t.to_state) for t in transitions) == [
        ("1", None, "new"),
        ("2", None, "new"),
    ]
    assert transitions[0].reason == "first polled (12 events, 3 users)"


def test_an_issue_listed_twice_in_one_batch_keeps_the_later_snapshot(
    store: Store, clock: FakeClock
) -> None:
    with store.session() as session:
        result = track(session, [issue("1", count="5"), issue("1", count="6")], clock)
    assert result.new == ["1"] and result.unchanged == 1
    with store.session() as session:
        row = session.get(TrackedIssue, "1")
        assert row is not None and row.count == 6
        assert len(session.exec(select(Transition)).all()) == 1


def test_batches_after_the_first_see_the_rows_written_in_the_background(
    store: Store, clock: FakeClock
) -> None:
    first = [issue(str(n)) for n in range(600)]  # two batches of the tracker
    again = [issue("3", count="13")]  # the same issue later in the same poll
    with store.session() as session:
        result = track(session, [*first, *again], clock)
    assert len(result.new) == 600 and result.changed == ["3"]
    with store.session() as session:
        row = session.get(TrackedIssue, "3")
        assert row is not None and row.count == 13
