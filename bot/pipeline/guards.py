"""Guardrails checked before a remediation may execute.

In order: the global pause, the playbook's circuit breaker, hidden debt (the issue
was remediated too often lately: escalate instead of masking the bug), the
per-issue cooldown and the per-playbook runs-per-hour cap. Each refusal says why.
The mode itself is decided here too: a regressed issue's next remediation needs
approval whatever the playbook says.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from bot.clock import ensure_utc
from bot.errors import StoreError
from bot.pipeline.journal import RunCounts, count_runs
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import PlaybookState, Setting, TrackedIssue

PAUSE_KEY = "paused"
log = logging.getLogger(__name__)


class RunWindows(TypedDict):
    """Where :func:`~bot.pipeline.journal.count_runs` counts, for the guards."""

    since: datetime
    after: datetime
    hour_since: datetime


@dataclass(frozen=True)
class GuardDecision:
    allowed: bool
    reason: str = ""
    escalate: bool = False  # hidden debt: tell humans instead of running again


def is_paused(session: Session) -> str | None:
    """The pause reason when the operator paused the bot, else None."""
    row = session.get(Setting, PAUSE_KEY)
    return row.value if row is not None and row.value else None


def set_paused(session: Session, reason: str | None, now: datetime) -> None:
    row = session.get(Setting, PAUSE_KEY)
    if row is None:
        row = Setting(key=PAUSE_KEY, value="", updated_at=now)
    row.value = reason or ""
    row.updated_at = now
    session.add(row)


def effective_mode(playbook: Playbook, issue: TrackedIssue, *, shadow_only: bool) -> str:
    """shadow when forced, approval after a regression, else the playbook's mode."""
    if shadow_only or playbook.guards.mode == "shadow":
        return "shadow"
    if issue.requires_approval:
        return "approval"
    return playbook.guards.mode


_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


@contextmanager
def plan_lock(store: Store, playbook_id: str) -> Iterator[None]:
    """Serialise the planning of one playbook's runs: across processes sharing a
    PostgreSQL store (two replicas), and across the threads of one process (the
    poller beside the webhook workers) on any store.

    Without it, two planners of the same playbook at once could each preview (run the
    real statements, holding their row locks, then roll back) while the other executes,
    and the execution would skip those rows as if a live worker held them: a run
    journaled ``noop`` while the rows stay stuck. Held from the idempotency check to the
    verdict, the loser then finds the run journaled. On PostgreSQL a session advisory
    lock on a connection of its own (released at the end, or by the server when the
    process dies); elsewhere a lock of this process."""
    with _LOCAL_LOCKS_GUARD:
        local = _LOCAL_LOCKS.setdefault(playbook_id, threading.Lock())
    with local:
        if store.engine.dialect.name != "postgresql":
            yield
            return
        with _advisory(store, f"sentry-bot:plan:{playbook_id}"):
            yield


@contextmanager
def _advisory(store: Store, name: str) -> Iterator[None]:
    key = {"key": name}
    try:
        conn = store.engine.connect()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot take the planning lock {name}: {exc}") from exc
    try:
        conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), key)
        conn.commit()
    except BaseException as exc:
        # The lock may be held by now: a session lock survives the pool's reset, so the
        # connection must not go back to the pool. Closing its session releases it.
        conn.invalidate()
        conn.close()
        if isinstance(exc, SQLAlchemyError):
            raise StoreError(f"cannot take the planning lock {name}: {exc}") from exc
        raise
    try:
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), key)
            conn.commit()
        except SQLAlchemyError as exc:
            # The lock dies with the session: closing the connection releases it.
            log.warning("could not release the planning lock %s: %s", name, exc)
            conn.invalidate()
        finally:
            conn.close()


def breaker_open(session: Session, playbook_id: str, now: datetime) -> datetime | None:
    row = session.get(PlaybookState, playbook_id)
    if row is None or row.breaker_open_until is None:
        return None
    until = ensure_utc(row.breaker_open_until)
    return until if until > now else None


def _ensure_state_row(session: Session, playbook_id: str, now: datetime) -> None:
    """Create the playbook's state row if it is missing, without failing when another
    transaction creates it at the same moment (the first two runs of a new playbook)."""
    values = {"playbook_id": playbook_id, "consecutive_failures": 0, "updated_at": now}
    if session.get_bind().dialect.name == "postgresql":
        pg = pg_insert(PlaybookState).values(values)
        session.execute(pg.on_conflict_do_nothing(index_elements=["playbook_id"]))
    else:
        lite = sqlite_insert(PlaybookState).values(values)
        session.execute(lite.on_conflict_do_nothing(index_elements=["playbook_id"]))


def record_verification(session: Session, playbook: Playbook, ok: bool, now: datetime) -> bool:
    """Count a verification; return True if this failure opened the breaker."""
    return record_verifications(session, playbook, [ok], now)[0]


def record_verifications(
    session: Session, playbook: Playbook, oks: list[bool], now: datetime
) -> list[bool]:
    """Count verifications in order (a storm's, see :mod:`bot.pipeline.storm`); for
    each, True if that failure opened the breaker."""
    _ensure_state_row(session, playbook.id, now)
    # Locked to the end of the transaction: two verifications of one playbook at once
    # (two replicas, webhook workers) must not lose each other's count.
    row = session.get(PlaybookState, playbook.id, with_for_update=True)
    assert row is not None
    opened: list[bool] = []
    for ok in oks:
        opens = False
        if ok:
            row.consecutive_failures = 0
        else:
            row.consecutive_failures += 1
            if row.consecutive_failures >= playbook.guards.breaker_failures:
                row.breaker_open_until = now + timedelta(
                    minutes=playbook.guards.breaker_cooldown_minutes
                )
                row.consecutive_failures = 0
                opens = True
        opened.append(opens)
    row.updated_at = now
    session.add(row)
    return opened


def check_guards(
    session: Session,
    playbook: Playbook,
    issue: TrackedIssue,
    now: datetime,
    *,
    hidden_debt_runs: int = 3,
    hidden_debt_hours: float = 24,
) -> GuardDecision:
    """May ``playbook`` execute against ``issue`` now? (Shadow previews skip this.)"""
    paused = is_paused(session)
    if paused:
        return GuardDecision(False, f"bot is paused: {paused}")
    until = breaker_open(session, playbook.id, now)
    if until is not None:
        return GuardDecision(
            False, f"circuit breaker open for {playbook.id} until {until.isoformat()}"
        )
    counts = count_runs(
        session,
        playbook_id=playbook.id,
        issue_id=issue.id,
        **run_windows(playbook, now, hidden_debt_hours),
    )
    return run_guards(
        playbook,
        counts,
        now,
        hidden_debt_runs=hidden_debt_runs,
        hidden_debt_hours=hidden_debt_hours,
    )


def run_windows(playbook: Playbook, now: datetime, hidden_debt_hours: float) -> RunWindows:
    """The windows :func:`run_guards` counts runs in (see :func:`count_runs`)."""
    debt_window = timedelta(hours=hidden_debt_hours)
    cooldown = timedelta(minutes=playbook.guards.cooldown_minutes)
    return {
        "since": now - max(debt_window, cooldown),
        "after": now - debt_window,
        "hour_since": now - timedelta(hours=1),
    }


def run_guards(
    playbook: Playbook,
    counts: RunCounts,
    now: datetime,
    *,
    hidden_debt_runs: int,
    hidden_debt_hours: float,
) -> GuardDecision:
    """The guards that count runs, in order: hidden debt, cooldown, the rate cap."""
    if counts.issue_runs_after >= hidden_debt_runs:
        return GuardDecision(
            False,
            f"hidden debt: remediated {counts.issue_runs_after} times in "
            f"{hidden_debt_hours:g} h; the root cause needs a fix",
            escalate=True,
        )
    cooldown = timedelta(minutes=playbook.guards.cooldown_minutes)
    last = counts.issue_last_start
    if cooldown and last is not None and last > now - cooldown:
        return GuardDecision(
            False, f"cooldown: ran within the last {playbook.guards.cooldown_minutes} min"
        )
    if counts.playbook_runs >= playbook.guards.max_runs_per_hour:
        return GuardDecision(
            False,
            f"rate cap: {counts.playbook_runs} runs in the last hour "
            f"(max_runs_per_hour={playbook.guards.max_runs_per_hour})",
        )
    return GuardDecision(True)
