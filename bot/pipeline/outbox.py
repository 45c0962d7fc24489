"""The outbox: notifications are rows first, network calls later.

``enqueue`` writes a message in the caller's transaction, so a state change and the
notice about it commit (or roll back) together; the unique ``dedupe_key`` makes a
second enqueue of the same notice a no-op. :class:`OutboxFlusher` delivers due rows
through one sender per channel and records the outcome.

Row states::

    pending ──claim──► sending ──ok──────────────► sent
       ▲                  │ RetryLater / unknown error, attempts left
       └──────────────────┤ (next_attempt_at = now + max(Retry-After, backoff))
                          │ permanent error, or attempts exhausted
                          └───────────────────────► dead   (``dead_letters``)

Delivery is **at-least-once**. A claim is committed (``sending``, ``attempts + 1``,
``next_attempt_at = now + lease``) *before* the network call, and the result is
recorded in a second transaction *after* it. If the process dies between the
receiver accepting the message and that second commit, the row stays ``sending``;
once its lease (default 5 minutes) has passed it is due again and is sent a second
time. That window - one in-flight message per crash - is the only way a message is
delivered twice; a message is never silently lost while attempts remain.

On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so concurrent flushers
(replicas) claim disjoint rows without waiting on each other. On SQLite the claim
is a single ``UPDATE … RETURNING``, which SQLite runs under its one write lock.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from bot import failpoints
from bot.clock import Clock, ensure_utc
from bot.errors import StoreError
from bot.notify.port import Payload, Sender, is_permanent
from bot.store.db import Store
from bot.store.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)

_T = OutboxMessage.__table__  # type: ignore[attr-defined]
MAX_RETRY_AFTER_S = 24 * 3600.0
_LAST_ERROR_LIMIT = 1000


def enqueue(
    session: Session,
    channel: str,
    dedupe_key: str,
    payload: Payload,
    issue_id: str | None,
    kind: str,
    now: datetime,
) -> bool:
    """Add a message in ``session``'s transaction; True if added, False if the key exists.

    The payload must be JSON-serialisable (checked here, so a bad payload fails at the
    call site, not later in the flusher). ``INSERT … ON CONFLICT (dedupe_key) DO
    NOTHING`` on both SQLite and PostgreSQL: no IntegrityError, so the caller's
    transaction is never poisoned by a duplicate (PostgreSQL aborts a transaction
    on any error) and no SAVEPOINT is needed.
    """
    values = _values(OutboxRow(channel, dedupe_key, payload, issue_id, kind), ensure_utc(now))
    stmt = _insert(session).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    # RETURNING rather than rowcount: through SQLAlchemy + psycopg it reads -1 here.
    return session.execute(stmt.returning(_T.c.id)).first() is not None


class OutboxRow(NamedTuple):
    """One message for :func:`enqueue_many`."""

    channel: str
    dedupe_key: str
    payload: Payload
    issue_id: str | None
    kind: str


def enqueue_many(session: Session, rows: Sequence[OutboxRow], now: datetime) -> None:
    """:func:`enqueue` for many messages: one executemany ``INSERT … ON CONFLICT
    (dedupe_key) DO NOTHING`` (a key already there, or twice in ``rows``, is kept once)."""
    if rows:
        at = ensure_utc(now)
        stmt = _insert(session).on_conflict_do_nothing(index_elements=["dedupe_key"])
        session.execute(stmt, [_values(row, at) for row in rows])


def _values(row: OutboxRow, at: datetime) -> dict[str, object]:
    """One message's row. The payload must be JSON-serialisable: checked here, so a bad
    payload fails at the call site, not later in the flusher."""
    json.dumps(row.payload)
    return {
        "channel": row.channel,
        "dedupe_key": row.dedupe_key,
        "issue_id": row.issue_id,
        "kind": row.kind,
        "payload": row.payload,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }


def _insert(session: Session) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT for the outbox (both have ``ON CONFLICT DO NOTHING``)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(_T)
    if dialect == "sqlite":
        return sqlite.insert(_T)
    raise StoreError(f"outbox: unsupported database dialect {dialect!r}")


def dead_letters(session: Session, limit: int = 100) -> list[OutboxMessage]:
    """Messages that will not be retried (newest first), for ``sentry-bot status``."""
    stmt = (
        select(OutboxMessage)
        .where(col(OutboxMessage.status) == OutboxStatus.DEAD.value)
        .order_by(col(OutboxMessage.id).desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def status_counts(session: Session) -> dict[str, int]:
    """Number of outbox rows per status (every status present, zero when none)."""
    counts = {status.value: 0 for status in OutboxStatus}
    for status, count in session.execute(select(_T.c.status, func.count()).group_by(_T.c.status)):
        counts[str(status)] = int(count)
    return counts


def requeue_dead(session: Session, ids: Sequence[int], now: datetime) -> int:
    """Give dead messages a fresh set of attempts (operator action); returns rows changed."""
    stmt = (
        update(_T)
        .where(_T.c.id.in_(list(ids)), _T.c.status == OutboxStatus.DEAD.value)
        .values(status=OutboxStatus.PENDING.value, attempts=0, next_attempt_at=ensure_utc(now))
    )
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FlushReport:
    """What one ``flush`` did. ``released`` rows were claimed but handed back unsent."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0


@dataclass(frozen=True)
class _Claimed:
    id: int
    channel: str
    payload: Payload
    attempts: int


class OutboxFlusher:
    """Delivers due outbox rows through ``senders[channel]`` and records the outcome."""

    def __init__(
        self,
        store: Store,
        senders: Mapping[str, Sender],
        clock: Clock,
        max_attempts: int = 8,
        base_backoff_s: float = 30.0,
        *,
        max_backoff_s: float = 3600.0,
        lease_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or lease_s <= 0:
            raise ValueError("max_attempts must be >= 1 and lease_s > 0")
        self.store = store
        self.senders = dict(senders)
        self.clock = clock
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.lease_s = lease_s
        self._rng = rng or random.Random()

    def backoff(self, attempts: int) -> float:
        """Seconds before retry number ``attempts + 1``: exponential, capped, 50-100% jitter."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2 ** max(0, attempts - 1))
        return float(ceiling * self._rng.uniform(0.5, 1.0))

    def flush(self, limit: int = 50) -> FlushReport:
        """Send up to ``limit`` due messages; each outcome is committed right after its send.

        Channels without a sender are left alone (another process may serve them).
        KeyboardInterrupt/SystemExit propagate and leave the in-flight row ``sending``
        (redelivered after the lease: the at-least-once window).
        """
        if not self.senders:
            return FlushReport()
        claimed_at = self.clock.monotonic()
        rows = self._claim(limit)
        sent = retried = dead = 0
        for index, row in enumerate(rows):
            # Never start a send the lease may not cover: another replica would
            # reclaim the row mid-send and deliver it twice.
            if self.clock.monotonic() - claimed_at > self.lease_s / 2:
                return FlushReport(sent, retried, dead, self._release(rows[index:]))
            if row.attempts > self.max_attempts:
                self._finish_dead(row, "attempts exhausted (redelivered after lease expiry)")
                dead += 1
                continue
            outcome = self._deliver(row)
            sent += outcome == OutboxStatus.SENT
            retried += outcome == OutboxStatus.PENDING
            dead += outcome == OutboxStatus.DEAD
        return FlushReport(sent, retried, dead)

    def _claim(self, limit: int) -> list[_Claimed]:
        now = ensure_utc(self.clock.now())
        lease_until = now + timedelta(seconds=self.lease_s)
        # ``sending`` rows are due again once their lease (stored in next_attempt_at)
        # has expired: that is how a crash mid-send is recovered.
        due = (
            select(_T.c.id)
            .where(
                _T.c.status.in_([OutboxStatus.PENDING.value, OutboxStatus.SENDING.value]),
                _T.c.next_attempt_at <= now,
                _T.c.channel.in_(sorted(self.senders)),
            )
            .order_by(_T.c.next_attempt_at, _T.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
            # A plain ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` may be re-run
            # by PostgreSQL per outer row and claim more than ``n`` rows; a
            # materialised CTE is evaluated exactly once.
            .prefix_with("MATERIALIZED")
        )
        stmt = (
            update(_T)
            .where(
                _T.c.id.in_(select(due.c.id)),
                _T.c.status.in_([OutboxStatus.PENDING.value, OutboxStatus.SENDING.value]),
                _T.c.next_attempt_at <= now,
            )
            .values(
                status=OutboxStatus.SENDING.value,
                attempts=_T.c.attempts + 1,
                next_attempt_at=lease_until,
            )
            .returning(_T.c.id, _T.c.channel, _T.c.payload, _T.c.attempts)
        )
        with self.store.session() as session:
            result = session.execute(stmt).all()
        claimed = [_Claimed(r.id, r.channel, dict(r.payload), r.attempts) for r in result]
        return sorted(claimed, key=lambda c: c.id)

    def _deliver(self, row: _Claimed) -> OutboxStatus:
        try:
            failpoints.hit("before-send")
            self.senders[row.channel](row.payload)
            failpoints.hit("after-send")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:_LAST_ERROR_LIMIT]
            if is_permanent(exc):
                self._finish_dead(row, error)
                return OutboxStatus.DEAD
            if row.attempts >= self.max_attempts:
                self._finish_dead(row, f"attempts exhausted; last error: {error}")
                return OutboxStatus.DEAD
            retry_after = min(float(getattr(exc, "retry_after", None) or 0), MAX_RETRY_AFTER_S)
            delay = max(retry_after, self.backoff(row.attempts))
            self._update(
                row,
                status=OutboxStatus.PENDING.value,
                next_attempt_at=ensure_utc(self.clock.now()) + timedelta(seconds=delay),
                last_error=error,
            )
            log.warning("outbox message %s will be retried in %.0fs: %s", row.id, delay, error)
            return OutboxStatus.PENDING
        self._update(
            row,
            status=OutboxStatus.SENT.value,
            sent_at=ensure_utc(self.clock.now()),
            last_error=None,
        )
        return OutboxStatus.SENT

    def _finish_dead(self, row: _Claimed, error: str) -> None:
        log.error("outbox message %s is dead: %s", row.id, error)
        self._update(row, status=OutboxStatus.DEAD.value, last_error=error)

    def _update(self, row: _Claimed, **values: object) -> None:
        # Only while the row is still ours: if our lease expired and another
        # flusher reclaimed it (attempts moved on), its outcome wins.
        stmt = (
            update(_T)
            .where(
                _T.c.id == row.id,
                _T.c.status == OutboxStatus.SENDING.value,
                _T.c.attempts == row.attempts,
            )
            .values(**values)
        )
        with self.store.session() as session:
            session.execute(stmt)

    def _release(self, rows: Sequence[_Claimed]) -> int:
        """Hand unsent claimed rows back as due now, with their attempt undone."""
        now = ensure_utc(self.clock.now())
        released = 0
        with self.store.session() as session:
            for row in rows:
                stmt = (
                    update(_T)
                    .where(
                        _T.c.id == row.id,
                        _T.c.status == OutboxStatus.SENDING.value,
                        _T.c.attempts == row.attempts,
                    )
                    .values(
                        status=OutboxStatus.PENDING.value,
                        attempts=row.attempts - 1,
                        next_attempt_at=now,
                    )
                )
                released += int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
        return released
