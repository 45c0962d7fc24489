"""The webhook inbox in the state store: any replica records, the leader claims.

``record`` is the only thing the HTTP handler does with a verified delivery: one
INSERT, conflict on ``content_key`` ignored, so the request is acknowledged in a few
milliseconds and a redelivery is a no-op. ``claim`` hands the leader a batch of pending
deliveries under a short lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so a
replica that is still finishing a batch after losing leadership and the new leader
never take the same row); a crash mid-batch leaves the lease to expire and the
delivery is taken again — everything downstream (tracking, the journal's idempotency
key, the outbox dedupe key) is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.json_types import JsonObject
from bot.sentry.webhook_envelope import Delivery
from bot.store.db import Store
from bot.store.models import DeliveryStatus, WebhookDelivery

CLAIM_LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 5
_TABLE = WebhookDelivery.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claimed:
    """A delivery the leader is processing now."""

    id: int
    resource: str
    action: str
    issue_id: str | None
    actor_type: str | None
    actor_id: str | None
    payload: JsonObject
    attempts: int


def record(store: Store, delivery: Delivery, request_id: str | None, now: datetime) -> bool:
    """Store a verified delivery; False when the same content was already recorded."""
    values = {
        "content_key": delivery.content_key,
        "request_id": (request_id or "")[:64] or None,
        "resource": delivery.resource,
        "action": delivery.action,
        "issue_id": delivery.issue_id,
        "actor_type": delivery.actor_type,
        "actor_id": delivery.actor_id,
        "payload": delivery.payload,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "received_at": now,
    }
    dialect = postgresql if store.dialect == "postgresql" else sqlite
    stmt = (
        dialect.insert(_TABLE)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["content_key"])
        .returning(_TABLE.c.id)
    )
    with store.session() as session:
        return session.connection().execute(stmt).first() is not None


def claim(store: Store, now: datetime, *, limit: int = 50) -> list[Claimed]:
    """Take up to ``limit`` due deliveries (oldest first) under a lease of CLAIM_LEASE."""
    due = (
        select(_TABLE.c.id)
        .where(
            _TABLE.c.status == DeliveryStatus.PENDING.value,
            or_(_TABLE.c.claimed_until.is_(None), _TABLE.c.claimed_until <= now),
        )
        .order_by(_TABLE.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # One statement: atomic on SQLite too (two threads cannot both take a row between
    # a SELECT and an UPDATE), and SKIP LOCKED spreads concurrent claimers on PostgreSQL.
    stmt = (
        update(_TABLE)
        .where(_TABLE.c.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + CLAIM_LEASE, attempts=_TABLE.c.attempts + 1)
        .returning(*_TABLE.c)
    )
    with store.session() as session:
        rows = sorted(session.connection().execute(stmt).all(), key=lambda r: r.id)
    return [
        Claimed(
            id=r.id,
            resource=r.resource,
            action=r.action,
            issue_id=r.issue_id,
            actor_type=r.actor_type,
            actor_id=r.actor_id,
            payload=r.payload,
            attempts=r.attempts,
        )
        for r in rows
    ]


def finish(
    store: Store, delivery_id: int, status: DeliveryStatus, result: str, now: datetime
) -> None:
    """Record the outcome of a processed delivery."""
    with store.session() as session:
        session.connection().execute(
            update(_TABLE)
            .where(_TABLE.c.id == delivery_id)
            .values(status=status.value, result=result[:2000], processed_at=now, claimed_until=None)
        )


def retry_later(
    store: Store, claimed: Claimed, error: str, now: datetime, *, delay: timedelta
) -> bool:
    """A transient failure: due again after ``delay``; after MAX_ATTEMPTS it is failed
    (the poller still sees the issue). True when it will be retried."""
    again = claimed.attempts < MAX_ATTEMPTS
    values: dict[str, object] = {"result": error[:2000]}
    if again:
        values["claimed_until"] = now + delay
    else:
        values.update(status=DeliveryStatus.FAILED.value, processed_at=now, claimed_until=None)
    with store.session() as session:
        session.connection().execute(
            update(_TABLE).where(_TABLE.c.id == claimed.id).values(**values)
        )
    return again


def pending_count(store: Store) -> int:
    """Deliveries not yet processed (for tests and status)."""
    with store.session() as session:
        stmt = select(func.count()).where(_TABLE.c.status == DeliveryStatus.PENDING.value)
        return int(session.connection().execute(stmt).scalar_one())
