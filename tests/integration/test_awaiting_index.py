"""The issues waiting for their latest event are found through a partial index
(migration 0018), on SQLite and PostgreSQL: a cycle that changes nothing must not scan
every tracked issue to count or pick them (issue #12, ``bench/steady.py``: before the
index these two queries were half the SQL time of a 10,000-issue cycle).

The plan is asked of each database for the very statements the cycle sends (captured
from the engine), and the answers are checked against the rows themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from bot.pipeline.cycle import _count_awaiting, undecided_issues
from bot.store.db import Store
from bot.store.models import TrackedIssue

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INDEX = "ix_tracked_issue_awaiting_event"


def _issue(n: int, *, state: str, waiting_since: datetime | None) -> TrackedIssue:
    return TrackedIssue(
        id=str(5000 + n),
        short_id=f"API-{n}",
        title=f"issue {n}",
        project="api",
        state=state,
        awaiting_event_since=waiting_since,
        first_seen=NOW - timedelta(days=3),
        last_seen=NOW - timedelta(hours=1),
        created_at=NOW - timedelta(days=3),
        updated_at=NOW - timedelta(days=3),
        raw={"id": str(5000 + n)},
    )


def test_waiting_issues_are_counted_and_picked_through_the_partial_index(store: Store) -> None:
    waiting = {7: 30, 11: 5, 19: 50, 23: 5}  # issue n -> minutes waiting
    with store.session() as session:
        for n in range(3000):
            minutes = waiting.get(n)
            since = NOW - timedelta(minutes=minutes) if minutes is not None else None
            session.add(_issue(n, state="watching", waiting_since=since))
        # Waiting but resolved since: counted as waiting, never decided again.
        session.add(_issue(3001, state="resolved", waiting_since=NOW - timedelta(hours=2)))
        session.commit()

    sent: list[tuple[str, object]] = []

    def capture(_c: Connection, _cur: object, stmt: str, params: object, *_: object) -> None:
        if "awaiting_event_since IS NOT NULL" in stmt:
            sent.append((stmt, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        picked = undecided_issues(store)
        count = _count_awaiting(store)
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)

    # Oldest wait first, ties by id; the resolved one is not decided again.
    assert picked == ["5019", "5007", "5011", "5023"]
    assert count == 5
    assert len(sent) == 2

    with store.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.execute(text("ANALYZE tracked_issue"))
        for stmt, params in sent:
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cur = raw.cursor()
            cur.execute(explain + stmt, params)  # type: ignore[arg-type]
            plan = " ".join(str(cell) for row in cur.fetchall() for cell in row)
            assert INDEX in plan, (stmt, plan)
