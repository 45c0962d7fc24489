"""Quiet hours, step 1: which watched issues are due, from the store alone (no request).

Watched issues (``watching``, ``remediated``) carry the ``last_seen`` the poller re-reads
every cycle. A ``last_seen`` newer than ``quiet_since`` is a new event while watching: the
clock restarts (journaled as a note). An issue is *due* when ``quiet_since`` is older than
its playbook's quiet hours. Also the small row helpers the later steps share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from bot.clock import ensure_utc
from bot.pipeline.lifecycle_report import QuietReport
from bot.pipeline.track import note
from bot.sentry.models import SentryIssue
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue

WATCHED_STATES = (LifecycleState.WATCHING.value, LifecycleState.REMEDIATED.value)


@dataclass(frozen=True)
class Watched:
    """A due issue as the check carries it between steps (never its ``raw`` JSON)."""

    id: str
    playbook_id: str | None
    hours: float
    quiet_since: datetime
    last_seen: datetime | None = None
    count: int = 0
    project: str = ""


def iso(value: datetime | None) -> str:
    """A timestamp for a journal line (``never`` for none)."""
    return ensure_utc(value).isoformat() if value else "never"


def due_from_store(
    store: Store, now: datetime, report: QuietReport, hours_for: Callable[[str | None], float]
) -> list[Watched]:
    """Restart clocks the poller's last_seen says moved; return the due issues, oldest first.

    Indexed SQL over narrow columns (``ix_tracked_issue_watch``): only the rows
    whose clock must start or restart are loaded whole (those are changes); the due
    ones come back as (id, playbook, quiet_since, last_seen, count) per distinct
    playbook (each has its own quiet hours, ``hours_for``), never with their ``raw`` JSON.
    """
    watched = col(TrackedIssue.state).in_(WATCHED_STATES)
    quiet_since, last_seen_col = col(TrackedIssue.quiet_since), col(TrackedIssue.last_seen)
    due: list[Watched] = []
    with store.session() as session:
        report.watched = session.exec(
            select(func.count()).select_from(TrackedIssue).where(watched)
        ).one()
        # Ids first, from the small partial index ix_tracked_issue_moved (its WHERE is
        # this OR term, written the same way), then only those rows whole.
        moved_ids = session.exec(
            select(TrackedIssue.id).where(
                watched, or_(quiet_since.is_(None), last_seen_col > quiet_since)
            )
        ).all()
        moved = (
            session.exec(select(TrackedIssue).where(col(TrackedIssue.id).in_(moved_ids))).all()
            if moved_ids
            else []
        )
        for row in moved:
            last_seen = ensure_utc(row.last_seen) if row.last_seen else None
            since = ensure_utc(row.quiet_since) if row.quiet_since else None
            if since is None:
                row.quiet_since = last_seen or now
                note(session, row, f"quiet clock started at {iso(row.quiet_since)}", now)
            elif last_seen is not None and last_seen > since:
                restart_clock(session, row, last_seen, now, report)
        session.flush()
        playbooks = session.exec(select(TrackedIssue.playbook_id).where(watched).distinct()).all()
        for playbook_id in playbooks:
            hours = hours_for(playbook_id)
            same_playbook = (
                col(TrackedIssue.playbook_id).is_(None)
                if playbook_id is None
                else col(TrackedIssue.playbook_id) == playbook_id
            )
            rows = session.exec(
                select(
                    TrackedIssue.id,
                    TrackedIssue.quiet_since,
                    TrackedIssue.last_seen,
                    TrackedIssue.count,
                ).where(
                    watched,
                    same_playbook,
                    quiet_since <= now - timedelta(hours=hours),
                )
            ).all()
            for issue_id, since, seen, count in rows:
                assert since is not None  # quiet_since <= cutoff excludes NULL
                due.append(
                    Watched(
                        issue_id,
                        playbook_id,
                        hours,
                        ensure_utc(since),
                        ensure_utc(seen) if seen else None,
                        count,
                    )
                )
    due.sort(key=lambda w: (w.quiet_since, w.id))
    return due


def restart_clock(
    session: Session, row: TrackedIssue, event_at: datetime, now: datetime, report: QuietReport
) -> datetime:
    """A new event while watching: the quiet clock starts again at it (journaled)."""
    row.quiet_since = event_at
    note(session, row, f"new event at {iso(event_at)} while watching: quiet clock restarted", now)
    report.restarted += 1
    return event_at


def store_fresh(row: TrackedIssue, issue: SentryIssue, now: datetime) -> None:
    """Copy Sentry's fresh counters and status onto the row."""
    row.last_seen = issue.last_seen
    row.count = issue.count
    row.user_count = issue.user_count
    row.status, row.substatus = issue.status, issue.substatus
    row.updated_at = now


def chunks(items: Sequence[Watched], size: int) -> Iterator[list[Watched]]:
    """``items`` in lists of at most ``size``, in order."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
