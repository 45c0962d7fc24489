"""An issue past its response deadline with no progress escalates, once, with a reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.clock import FakeClock
from bot.pipeline.triage import escalate_overdue
from bot.store.db import Store
from bot.store.models import FixLink, RemediationRun, TrackedIssue


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, _session: Any, kind: str, issue: Any, *rest: Any) -> None:
        self.events.append((kind, issue.short_id, rest[-1]))


def add_issue(store: Store, clock: FakeClock, sid: str, *, due_in: timedelta, **kw: Any) -> None:
    now = clock.now()
    with store.session() as session:
        session.add(
            TrackedIssue(
                id=sid,
                short_id=sid,
                title=f"boom {sid}",
                created_at=now,
                updated_at=now,
                state=kw.pop("state", "watching"),
                severity="critical",
                response_due_at=now + due_in,
                last_seen=kw.pop("last_seen", now),
                **kw,
            )
        )


def test_overdue_issues_without_progress_escalate_once(store: Store, clock: FakeClock) -> None:
    minutes = timedelta(minutes=15)
    for sid in ("STILL-FIRING", "HAS-FIX", "WAS-REMEDIATED", "WENT-QUIET", "NOT-DUE"):
        add_issue(store, clock, sid, due_in=minutes if sid != "NOT-DUE" else timedelta(days=1))
    add_issue(store, clock, "OLD-BACKLOG", due_in=-timedelta(days=3))
    t0 = clock.now()
    with store.session() as session:
        session.add(FixLink(issue_id="HAS-FIX", repo="acme/api", kind="pr", ref="7", found_at=t0))
        session.add(
            RemediationRun(
                id="r1",
                idempotency_key="k1",
                playbook_id="p",
                issue_id="WAS-REMEDIATED",
                action="requeue_stuck_tasks",
                mode="auto",
                status="succeeded",
                created_at=t0,
            )
        )
    clock.advance(minutes=30)
    with store.session() as session:  # events after the deadline, except WENT-QUIET
        for row in session.exec(TrackedIssue.__table__.select()).all():  # type: ignore[attr-defined]
            if row.id != "WENT-QUIET":
                issue = session.get(TrackedIssue, row.id)
                assert issue is not None
                issue.last_seen = clock.now()

    sink = Sink()
    with store.session() as session:
        escalated = escalate_overdue(session, clock, sink)
    assert escalated == ["STILL-FIRING"]
    assert [(k, s) for k, s, _ in sink.events] == [("escalated", "STILL-FIRING")]
    assert "response deadline" in sink.events[0][2]["reason"]
    with store.session() as session:
        row = session.get(TrackedIssue, "STILL-FIRING")
        assert row is not None and row.state == "escalated" and row.escalated_at is not None

    clock.advance(hours=1)
    with store.session() as session:
        assert escalate_overdue(session, clock, sink) == []  # once
