"""Leader election over the bot's own store: one lease row per name, compare-and-set.

When several replicas share one PostgreSQL store, exactly one of them may act (poll,
plan, execute, flush the outbox). The leader holds the ``lease`` row ``name`` until
``expires_at``; it renews well before that. Another replica can only take the row over
once it has expired, and only with one atomic UPDATE whose WHERE clause re-checks
"still mine or expired" — on PostgreSQL a concurrent UPDATE of the same row waits for
the first to commit and then re-evaluates that WHERE against the new row, on SQLite
writers are serialised by the database lock. So two replicas can never both win.

Why not a PostgreSQL advisory lock: a session-scoped advisory lock lives on one
connection, and a pooled engine hands out a different connection per session — the
lock ends up held by an idle pooled connection nobody will unlock (seed 001). A lease
row needs no dedicated connection, works on SQLite too, and expires by itself when
its holder dies.

Times come from the injected clock, so the replicas' clocks must be roughly in sync:
keep ``ttl`` much larger than any expected clock skew (NTP-synced hosts: a skew of
well under a second against a TTL of a minute).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Update, case, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from bot.clock import Clock, ensure_utc
from bot.errors import StoreError
from bot.store.db import Store
from bot.store.models import Lease

log = logging.getLogger(__name__)

DEFAULT_LEASE = "scheduler"
HOLDER_MAX = 128  # lease.holder column width


def default_holder(instance_id: str | None = None) -> str:
    """``instance_id`` when configured, else host:pid:random — unique per process."""
    if instance_id:
        return instance_id[:HOLDER_MAX]
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseElector:
    """Acquire, renew and release one named lease for one holder."""

    def __init__(
        self,
        store: Store,
        *,
        name: str = DEFAULT_LEASE,
        holder: str,
        ttl: timedelta,
        clock: Clock,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("lease ttl must be positive")
        self.store = store
        self.name = name
        self.holder = holder[:HOLDER_MAX]
        self.ttl = ttl
        self.clock = clock
        self._valid_until: datetime | None = None

    @property
    def is_leader(self) -> bool:
        """True while our last successful acquire/renew has not yet expired (local view)."""
        return self._valid_until is not None and self.clock.now() < self._valid_until

    def try_acquire(self) -> bool:
        """Become or stay the leader: renew our lease, take over an expired one, or insert
        the first one. True if we hold the lease now. Raises StoreError if the store fails.
        """
        now = self.clock.now()
        expires = now + self.ttl
        table = Lease.__table__  # type: ignore[attr-defined]
        # Compare-and-set: the WHERE is re-checked against the committed row, so of two
        # replicas racing for an expired lease only the first UPDATE matches.
        stmt = (
            update(table)
            .where(
                table.c.name == self.name,
                or_(table.c.holder == self.holder, table.c.expires_at < now),
            )
            .values(
                holder=self.holder,
                expires_at=expires,
                acquired_at=case((table.c.holder == self.holder, table.c.acquired_at), else_=now),
            )
        )
        with self.store.session() as session:
            won = session.connection().execute(stmt).rowcount == 1
        if not won:
            # Lost the insert race: maybe to another thread of this replica (the jobs
            # start together), then the row is ours and the update now matches.
            won = self._insert(now, expires) or self._update(stmt)
        self._valid_until = expires if won else None
        return won

    def _update(self, stmt: Update) -> bool:
        with self.store.session() as session:
            return bool(session.connection().execute(stmt).rowcount == 1)

    def _insert(self, now: datetime, expires: datetime) -> bool:
        try:
            with self.store.session() as session:
                session.add(
                    Lease(name=self.name, holder=self.holder, expires_at=expires, acquired_at=now)
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False  # the row exists: someone else holds it (or just inserted it)
            raise
        log.info("lease %s acquired by %s", self.name, self.holder)
        return True

    def renew(self) -> bool:
        """Extend our lease by ``ttl``; False if it is no longer ours (taken over)."""
        now = self.clock.now()
        expires = now + self.ttl
        table = Lease.__table__  # type: ignore[attr-defined]
        stmt = (
            update(table)
            .where(table.c.name == self.name, table.c.holder == self.holder)
            .values(expires_at=expires)
        )
        with self.store.session() as session:
            ok = session.connection().execute(stmt).rowcount == 1
        self._valid_until = expires if ok else None
        return ok

    def release(self) -> bool:
        """Give the lease up so another replica can take over at once; True if we held it."""
        self._valid_until = None
        stmt = delete(Lease).where(col(Lease.name) == self.name, col(Lease.holder) == self.holder)
        with self.store.session() as session:
            released = session.connection().execute(stmt).rowcount == 1
        if released:
            log.info("lease %s released by %s", self.name, self.holder)
        return released

    def current(self) -> tuple[str, datetime] | None:
        """(holder, expires_at) of the unexpired lease, or None when nobody holds it."""
        with self.store.session() as session:
            row = session.get(Lease, self.name)
            if row is None or row.expires_at is None:
                return None
            expires = ensure_utc(row.expires_at)
            return (row.holder, expires) if expires > self.clock.now() else None
