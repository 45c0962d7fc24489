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
from typing import Protocol

from sqlalchemy import Table, insert
from sqlmodel import Session, col, select

from bot.clock import Clock, ensure_utc
from bot.sentry.models import SentryIssue
from bot.store.bulk import insert_many
from bot.store.models import LifecycleState, TrackedIssue, Transition

_MAX_TEXT = 8_192


@dataclass
class TrackResult:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    unchanged: int = 0
    # The snapshot written as ``raw`` for each new or changed issue (the later one when
    # an issue was listed twice), so later steps need not parse ``raw`` back.
    stored: dict[str, SentryIssue] = field(default_factory=dict, repr=False, compare=False)

    @property
    def seen(self) -> int:
        return len(self.new) + len(self.changed) + self.unchanged

    def merge(self, other: TrackResult) -> None:
        self.new += other.new
        self.changed += other.changed
        self.regressed += other.regressed
        self.unchanged += other.unchanged
        self.stored.update(other.stored)


def _journal(
    session: Session, row: TrackedIssue, to_state: str, reason: str, now: datetime
) -> None:
    session.add(
        Transition(
            issue_id=row.id, from_state=row.state, to_state=to_state, reason=reason[:2000], at=now
        )
    )
    row.state = to_state
    row.updated_at = now


def record_transition(
    session: Session, row: TrackedIssue, to_state: LifecycleState, reason: str, now: datetime
) -> None:
    """Move ``row`` to ``to_state`` and journal the transition with its reason."""
    if row.state != to_state.value:
        _journal(session, row, to_state.value, reason, now)


class TransitionRecorder(Protocol):
    """Something that records a transition like :func:`record_transition`."""

    def __call__(
        self,
        session: Session,
        row: TrackedIssue,
        to_state: LifecycleState,
        reason: str,
        now: datetime,
        /,
    ) -> None: ...


class TransitionBatch:
    """:func:`record_transition` for many issues in one transaction: each move is applied
    to its row at once (so the next move of the same issue starts from it), and the
    timeline rows go in with ONE executemany INSERT at :meth:`flush`, in order. A storm
    (:mod:`bot.pipeline.storm`) records thousands of moves this way."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def __call__(
        self,
        session: Session,
        row: TrackedIssue,
        to_state: LifecycleState,
        reason: str,
        now: datetime,
        /,
    ) -> None:
        if row.state == to_state.value:
            return
        self.rows.append(
            {
                "issue_id": row.id,
                "from_state": row.state,
                "to_state": to_state.value,
                "reason": reason[:2000],
                "at": now,
            }
        )
        row.state = to_state.value
        row.updated_at = now

    def flush(self, session: Session) -> None:
        """Insert the recorded timeline rows (in the caller's transaction)."""
        if self.rows:
            session.execute(insert(Transition), self.rows)
            self.rows = []


def note(session: Session, row: TrackedIssue, reason: str, now: datetime) -> None:
    """Journal ``reason`` on the issue's timeline without changing its state."""
    _journal(session, row, row.state, reason, now)


# The columns that mirror Sentry's view of an issue, in the order _mirror() returns them.
_MIRRORED = (
    "short_id",
    "title",
    "culprit",
    "message",
    "permalink",
    "project",
    "environment",
    "level",
    "status",
    "substatus",
    "count",
    "user_count",
    "first_seen",
    "last_seen",
)


def _mirror(issue: SentryIssue) -> tuple[object, ...]:
    return (
        issue.short_id,
        issue.title[:_MAX_TEXT],
        (issue.culprit or "")[:_MAX_TEXT] or None,
        issue.message[:_MAX_TEXT],
        issue.permalink[:2048],
        issue.project.slug,
        issue.environment,
        issue.level,
        issue.status,
        issue.substatus,
        issue.count,
        issue.user_count,
        issue.first_seen,
        issue.last_seen,
    )


def _fields(issue: SentryIssue) -> dict[str, object]:
    """The tracked-issue columns that mirror Sentry's view of the issue."""
    fields = dict(zip(_MIRRORED, _mirror(issue), strict=True))
    fields["raw"] = issue.model_dump(mode="json", by_alias=True)
    return fields


def _apply(row: TrackedIssue, issue: SentryIssue) -> None:
    for key, value in _fields(issue).items():
        setattr(row, key, value)


# First-seen rows get every column of the table: the mirrored ones and ``raw`` from the
# issue, the rest the same value for the whole batch. Taking the column list from the
# table means a column added later without a value here is inserted as NULL and a NOT
# NULL one fails loudly.
_TRACKED: Table = TrackedIssue.__table__  # type: ignore[attr-defined]
_TRANSITIONS: Table = Transition.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(_TRACKED.columns.keys())
_NEW_VARYING = ("id", *_MIRRORED, "raw")  # per issue; every other column is a constant
_NEW_ROW_DEFAULTS: dict[str, object] = {
    **dict.fromkeys(c for c in _COLUMNS if c not in _NEW_VARYING),
    "triage": {},
    "state": LifecycleState.NEW.value,
    "resolved_by_bot": False,
    "requires_approval": False,
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
    """Upsert ``issues`` into the store; return what is new, changed or regressed.

    Issues are handled in batches; every write is in the session's transaction, so the
    caller's commit or rollback covers them all.
    """
    result = TrackResult()
    batch: list[SentryIssue] = []
    for issue in issues:
        batch.append(issue)
        if len(batch) >= _BATCH:
            result.merge(_track_batch(session, batch, clock))
            batch = []
    if batch:
        result.merge(_track_batch(session, batch, clock))
    return result


_BATCH = 500


def _track_batch(session: Session, issues: list[SentryIssue], clock: Clock) -> TrackResult:
    result = TrackResult()
    now = clock.now()
    ids = [i.id for i in issues]
    existing = {
        row.id: row
        for row in session.exec(select(TrackedIssue).where(col(TrackedIssue.id).in_(ids)))
    }
    inserts: dict[str, SentryIssue] = {}
    first_polled: list[tuple[str, str]] = []
    for issue in issues:
        row = existing.get(issue.id)
        if row is None:
            if issue.id in inserts:  # listed twice in one poll: keep the later snapshot
                inserts[issue.id] = issue
                result.unchanged += 1
                continue
            inserts[issue.id] = issue
            reason = f"first polled ({issue.count} events, {issue.user_count} users)"
            first_polled.append((issue.id, reason))
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
        result.stored[issue.id] = issue
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
        _insert_new(session, list(inserts.values()), first_polled, now)
        result.stored.update(inserts)
    return result


_ISSUE_SERIALIZER = SentryIssue.__pydantic_serializer__


def _insert_new(
    session: Session, issues: list[SentryIssue], first_polled: list[tuple[str, str]], now: datetime
) -> None:
    """First-seen issues and their "first polled" transitions, one bulk write per table:
    thousands of them on a first poll, so not as ORM objects.

    bench/bulk_insert.py measures both ways on both stores: on SQLite the hand multi-row
    INSERT of bot/store/bulk.py is 1.5-2.2x faster than any SQLAlchemy route tried, on
    PostgreSQL SQLAlchemy's insertmanyvalues is the faster one.
    """
    constants = {**_NEW_ROW_DEFAULTS, "created_at": now, "updated_at": now}
    journal = {"from_state": None, "to_state": LifecycleState.NEW.value, "at": now}
    if session.connection().dialect.name == "sqlite":
        # raw as JSON text serialised by pydantic in one native call: the same document
        # as _fields(issue)["raw"] without a dict that the JSON type re-dumps.
        rows = [
            (i.id, *_mirror(i), _ISSUE_SERIALIZER.to_json(i, by_alias=True).decode())
            for i in issues
        ]
        insert_many(session, _TRACKED, _NEW_VARYING, rows, constants=constants, json_text=("raw",))
        insert_many(session, _TRANSITIONS, ("issue_id", "reason"), first_polled, constants=journal)
        return
    session.execute(insert(TrackedIssue), [{**constants, "id": i.id, **_fields(i)} for i in issues])
    journal_rows = [{**journal, "issue_id": issue_id, "reason": r} for issue_id, r in first_polled]
    session.execute(insert(Transition), journal_rows)
