"""Incremental polling with a ``lastSeen`` watermark.

A steady-state cycle asks Sentry only for issues whose ``lastSeen`` is at or after
``watermark - overlap``. The watermark is the newest ``lastSeen`` *Sentry* reported
(never our own clock, so clock skew between us and Sentry cannot open a gap), the
``>=`` keeps ties, and the overlap re-reads a window in case an event was ingested
late with an older timestamp. Re-read issues that did not change are no-ops in the
tracker, so overlap costs a little bandwidth and never a duplicate action.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session

from bot.clock import Clock, ensure_utc
from bot.pipeline.sources import IssueSource
from bot.pipeline.track import TrackResult, track
from bot.sentry.models import QuarantinedItem, SentryIssue
from bot.store.db import Store
from bot.store.models import PollWatermark, QuarantinedIssue


@dataclass
class PollResult:
    source: str
    since: datetime | None
    watermark: datetime | None
    tracked: TrackResult
    quarantined: list[str] = field(default_factory=list)


def get_watermark(session: Session, source: str) -> datetime | None:
    row = session.get(PollWatermark, source)
    return ensure_utc(row.last_seen) if row and row.last_seen else None


def set_watermark(session: Session, source: str, value: datetime, now: datetime) -> None:
    row = session.get(PollWatermark, source)
    if row is None:
        session.add(PollWatermark(source=source, last_seen=value, updated_at=now))
        return
    current = ensure_utc(row.last_seen) if row.last_seen else None
    if current is None or value > current:  # a watermark only moves forward
        row.last_seen = value
    row.updated_at = now


def poll_and_track(
    store: Store, source: IssueSource, clock: Clock, *, overlap: timedelta = timedelta(minutes=10)
) -> PollResult:
    """Poll ``source`` for what changed since the last cycle and track it.

    The watermark is committed only after every page was read and tracked, so a cycle
    that dies mid-way re-reads from the old watermark next time (nothing is missed).
    """
    with store.session() as session:
        mark = get_watermark(session, source.name)
    since = mark - overlap if mark is not None else None
    newest: list[datetime] = []

    def seen(issues: Iterator[SentryIssue]) -> Iterator[SentryIssue]:
        for issue in issues:
            if issue.last_seen is not None and (not newest or issue.last_seen > newest[0]):
                newest[:] = [issue.last_seen]
            yield issue

    with store.session() as session:
        result = track(session, seen(source.poll(since)), clock)
        quarantined = source.take_quarantined()
        for item in quarantined:
            # A malformed issue is set aside (status lists it), never a reason to stop:
            # the rest is tracked and the watermark moves past it.
            if item.last_seen is not None and (not newest or item.last_seen > newest[0]):
                newest[:] = [item.last_seen]
        keys = record_quarantined(session, source.name, quarantined, clock.now())
        new_mark = newest[0] if newest else mark
        if new_mark is not None:
            set_watermark(session, source.name, new_mark, clock.now())
    return PollResult(
        source=source.name, since=since, watermark=new_mark, tracked=result, quarantined=keys
    )


def record_quarantined(
    session: Session, source: str, items: list[QuarantinedItem], now: datetime
) -> list[str]:
    """Upsert quarantined items (one row per Sentry id, else per content); their keys."""
    keys: list[str] = []
    for item in items:
        key = item.issue_id or "sha256:" + hashlib.sha256(item.raw_escaped.encode()).hexdigest()
        key = key[:64]
        row = session.get(QuarantinedIssue, key)
        if row is None:
            row = QuarantinedIssue(
                key=key,
                source=source[:256],
                issue_id=item.issue_id,
                short_id=item.short_id,
                reason=item.reason,
                raw_escaped=item.raw_escaped,
                first_seen_at=now,
                last_seen_at=now,
            )
            session.add(row)
        else:
            row.reason, row.raw_escaped = item.reason, item.raw_escaped
            row.times += 1
            row.last_seen_at = now
        keys.append(key)
    return keys
