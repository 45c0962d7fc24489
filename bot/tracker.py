"""Tracker: turn polled Sentry issues into tracked-issue rows and say what changed.

Tracking is idempotent: the same issue snapshot twice is a no-op. What the rest of
the cycle needs to know comes back in :class:`TrackResult`: which issues are new,
which changed (new events), and which came back after the bot resolved them
(regressions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from bot.clock import Clock, ensure_utc
from bot.sentry.models import SentryIssue
from bot.store.models import LifecycleState, TrackedIssue, Transition

_MAX_TEXT = 8_192


@dataclass
class TrackResult:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def seen(self) -> int:
        return len(self.new) + len(self.changed) + self.unchanged

    def merge(self, other: TrackResult) -> None:
        self.new += other.new
        self.changed += other.changed
        self.regressed += other.regressed
        self.unchanged += other.unchanged


def record_transition(
    session: Session, row: TrackedIssue, to_state: LifecycleState, reason: str, now: datetime
) -> None:
    """Move ``row`` to ``to_state`` and journal the transition with its reason."""
    if row.state == to_state.value:
        return
    session.add(
        Transition(
            issue_id=row.id,
            from_state=row.state,
            to_state=to_state.value,
            reason=reason[:2000],
            at=now,
        )
    )
    row.state = to_state.value
    row.updated_at = now


def _fields(issue: SentryIssue) -> dict[str, Any]:
    """The tracked-issue columns that mirror Sentry's view of the issue."""
    return {
        "short_id": issue.short_id,
        "title": issue.title[:_MAX_TEXT],
        "culprit": (issue.culprit or "")[:_MAX_TEXT] or None,
        "message": issue.message[:_MAX_TEXT],
        "permalink": issue.permalink[:2048],
        "project": issue.project.slug,
        "environment": issue.environment,
        "level": issue.level,
        "status": issue.status,
        "substatus": issue.substatus,
        "count": issue.count,
        "user_count": issue.user_count,
        "first_seen": issue.first_seen,
        "last_seen": issue.last_seen,
        "raw": issue.model_dump(mode="json", by_alias=True),
    }


def _apply(row: TrackedIssue, issue: SentryIssue) -> None:
    for key, value in _fields(issue).items():
        setattr(row, key, value)


# Every column, so a column added later without a value here fails loudly on insert.
_COLUMNS = tuple(TrackedIssue.__table__.columns.keys())  # type: ignore[attr-defined]
_NEW_ROW_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(_COLUMNS),
    "triage": {},
    "state": LifecycleState.NEW.value,
    "resolved_by_bot": False,
    "requires_approval": False,
}


def _new_row(issue: SentryIssue, now: datetime) -> dict[str, Any]:
    return {
        **_NEW_ROW_DEFAULTS,
        **_fields(issue),
        "id": issue.id,
        "created_at": now,
        "updated_at": now,
    }


def _moved(row: TrackedIssue, issue: SentryIssue) -> bool:
    old_seen = ensure_utc(row.last_seen) if row.last_seen else None
    return (
        row.count != issue.count
        or old_seen != issue.last_seen
        or row.status != issue.status
        or row.user_count != issue.user_count
        or row.title != issue.title[:_MAX_TEXT]
        or (issue.latest_event is not None and row.raw.get("latestEvent") is None)
    )


def track(session: Session, issues: Iterable[SentryIssue], clock: Clock) -> TrackResult:
    """Upsert ``issues`` into the store; return what is new, changed or regressed."""
    result = TrackResult()
    batch: list[SentryIssue] = []
    for issue in issues:
        batch.append(issue)
        if len(batch) >= 500:
            result.merge(_track_batch(session, batch, clock))
            batch = []
    if batch:
        result.merge(_track_batch(session, batch, clock))
    return result


def _track_batch(session: Session, issues: list[SentryIssue], clock: Clock) -> TrackResult:
    result = TrackResult()
    now = clock.now()
    ids = [i.id for i in issues]
    existing = {
        row.id: row
        for row in session.exec(select(TrackedIssue).where(col(TrackedIssue.id).in_(ids)))
    }
    # New issues are bulk-inserted through Core: building ORM objects for thousands of
    # first-seen issues cost several times the HTTP time (bench/poll.py).
    inserts: dict[str, dict[str, Any]] = {}
    transitions: list[dict[str, Any]] = []
    for issue in issues:
        row = existing.get(issue.id)
        if row is None:
            if issue.id in inserts:  # listed twice in one poll: keep the later snapshot
                inserts[issue.id] = _new_row(issue, now)
                result.unchanged += 1
                continue
            inserts[issue.id] = _new_row(issue, now)
            transitions.append(
                {
                    "issue_id": issue.id,
                    "from_state": None,
                    "to_state": LifecycleState.NEW.value,
                    "reason": f"first polled ({issue.count} events, {issue.user_count} users)",
                    "at": now,
                }
            )
            result.new.append(issue.id)
            continue
        if not _moved(row, issue):
            result.unchanged += 1
            continue
        old_seen = ensure_utc(row.last_seen) if row.last_seen else None
        new_event = issue.last_seen is not None and (old_seen is None or issue.last_seen > old_seen)
        _apply(row, issue)
        row.updated_at = now
        result.changed.append(issue.id)
        if (
            new_event
            and row.resolved_by_bot
            and row.state == LifecycleState.RESOLVED.value
            and row.resolved_at is not None
            and issue.last_seen is not None
            and issue.last_seen > ensure_utc(row.resolved_at)
        ):
            result.regressed.append(issue.id)
    session.flush()
    if inserts:
        session.execute(insert(TrackedIssue.__table__), list(inserts.values()))  # type: ignore[attr-defined]
        session.execute(insert(Transition.__table__), transitions)  # type: ignore[attr-defined]
    return result
