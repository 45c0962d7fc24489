"""The remediation journal: a run is written, with a unique idempotency key, BEFORE
anything executes.

The key is derived from (playbook, issue, typed parameters, window), where the
window is the issue's own ``lastSeen`` floored to the playbook's cooldown (at least an
hour). Two replicas that saw the same Sentry data therefore compute the same key, and
the unique index lets exactly one of them insert the run: the other gets the existing
row back and does nothing. After a crash, a run left ``running`` is found by
:func:`interrupted_runs` and verified, never blindly re-executed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.actions.base import ParamValue
from bot.clock import ensure_utc
from bot.errors import StoreError
from bot.pipeline.track import record_transition
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

EXECUTED = (
    RunStatus.SUCCEEDED.value,
    RunStatus.NOOP.value,
    RunStatus.VERIFY_FAILED.value,
    RunStatus.FAILED.value,
    RunStatus.RUNNING.value,
    RunStatus.INTERRUPTED.value,
)
# A run that executed and changed what it meant to (or found nothing to change).
EXECUTED_OK = (RunStatus.SUCCEEDED.value, RunStatus.NOOP.value)


def window_start(last_seen: datetime | None, cooldown_minutes: int, now: datetime) -> datetime:
    """The idempotency window an issue snapshot falls into (from Sentry's clock)."""
    anchor = ensure_utc(last_seen) if last_seen else now
    size = max(60, cooldown_minutes) * 60
    epoch = int(anchor.timestamp())
    return datetime.fromtimestamp(epoch - epoch % size, tz=anchor.tzinfo)


def idempotency_key(
    playbook_id: str, issue_id: str, params: Mapping[str, ParamValue], window: datetime
) -> str:
    """A stable key for one remediation of one issue in one window."""
    canonical = json.dumps(
        {
            "p": playbook_id,
            "i": issue_id,
            "a": dict(sorted(params.items())),
            "w": window.isoformat(),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{playbook_id[:60]}:{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"


# Work done in the journal's own transaction once the run row is in (see journal_run).
JournalFollowUp = Callable[[Session, RemediationRun], None]


def journal_run(
    store: Store, run: RemediationRun, then: JournalFollowUp | None = None
) -> tuple[RemediationRun, bool]:
    """Insert ``run``; return (row, True) if we inserted it, (existing row, False) if the
    idempotency key was already journaled (by us earlier or by another replica).

    ``then(session, run)`` runs in the same transaction after the insert (the issue's
    ``planned`` transition and its notification): they commit together with the run, or
    not at all when the key was already journaled. Nothing happens outside the store
    between the two, so merging them opens no crash window.
    """
    run.id = run.id or str(uuid.uuid4())
    try:
        with store.session() as session:
            session.add(run)
            if then is not None:
                session.flush()  # a duplicate key fails here, before the follow-up
                then(session, run)
        return run, True
    except StoreError as exc:  # the store wraps the driver's IntegrityError
        if not isinstance(exc.__cause__, IntegrityError):
            raise
        with store.session() as session:
            existing = find_run(session, run.idempotency_key)
        if existing is None:
            # Not our key: another constraint refused the run or its follow-up.
            raise
    return existing, False


def find_run(session: Session, key: str) -> RemediationRun | None:
    """The run journaled under idempotency ``key``, if any."""
    return session.exec(select(RemediationRun).where(RemediationRun.idempotency_key == key)).first()


def claim(store: Store, run_id: str, from_status: str, to_status: str, now: datetime) -> bool:
    """Compare-and-set a run's status in one UPDATE; True if this caller won."""
    with store.session() as session:
        return claim_in(session, run_id, from_status, to_status, now)


def claim_in(
    session: Session, run_id: str, from_status: str, to_status: str, now: datetime
) -> bool:
    """:func:`claim` inside the caller's transaction (it commits with what follows)."""
    values: dict[str, object] = {"status": to_status}
    if to_status == RunStatus.RUNNING.value:
        values["started_at"] = now
    if to_status == RunStatus.APPROVED.value:
        # Set with the claim, so crash recovery never mistakes a just-approved run
        # (created long ago, waiting for a human) for one left behind.
        values["approved_at"] = now
    stmt = (
        update(RemediationRun)
        .where(col(RemediationRun.id) == run_id, col(RemediationRun.status) == from_status)
        .values(**values)
    )
    return bool(session.exec(stmt).rowcount == 1)


def reclaim_stale_running(store: Store, run_id: str, started_at: datetime) -> bool:
    """Hand a ``running`` run whose attempt never reached its target back to ``approved``.

    Compare-and-set on status AND start time: a replica that re-claimed the run
    meanwhile gave it a new ``started_at``, so this loses instead of running it twice.
    """
    stmt = (
        update(RemediationRun)
        .where(
            col(RemediationRun.id) == run_id,
            col(RemediationRun.status) == RunStatus.RUNNING.value,
            col(RemediationRun.started_at) == started_at,
        )
        .values(status=RunStatus.APPROVED.value, target_xid=None)
    )
    with store.session() as session:
        return bool(session.exec(stmt).rowcount == 1)


@dataclass(frozen=True)
class RunCounts:
    """What the guards need to know about recent executed runs, counted in SQL."""

    issue_runs_after: int  # runs of the playbook on the issue started after ``after``
    issue_last_start: datetime | None  # the latest start of those runs since ``since``
    playbook_runs: int  # runs of the playbook (any issue) started since ``hour_since``


def count_runs(
    session: Session,
    *,
    playbook_id: str,
    issue_id: str,
    since: datetime,
    after: datetime,
    hour_since: datetime,
) -> RunCounts:
    """:func:`count_runs_of` for one issue."""
    per_issue, hourly = count_runs_of(
        session,
        playbook_id=playbook_id,
        issue_ids=[issue_id],
        since=since,
        after=after,
        hour_since=hour_since,
    )
    debt, last = per_issue.get(issue_id, (0, None))
    return RunCounts(issue_runs_after=debt, issue_last_start=last, playbook_runs=hourly)


def count_runs_of(
    session: Session,
    *,
    playbook_id: str,
    issue_ids: list[str],
    since: datetime,
    after: datetime,
    hour_since: datetime,
) -> tuple[dict[str, tuple[int, datetime | None]], int]:
    """Counts for the guards, in indexed aggregate queries (one per 500 issues, one for
    the playbook); no run row is loaded.

    Per issue with runs: how many of the playbook's runs on it started strictly after
    ``after`` (the hidden-debt window) and the latest start at or after ``since``; and
    the playbook's runs (any issue) started at or after ``hour_since``. Uses
    ``ix_remediation_run_issue_started`` and ``ix_remediation_run_playbook_started``.
    """
    executed = col(RemediationRun.status).in_(EXECUTED)
    started = col(RemediationRun.started_at)
    per_issue: dict[str, tuple[int, datetime | None]] = {}
    for n in range(0, len(issue_ids), 500):
        for issue_id, debt, last in session.exec(
            select(
                RemediationRun.issue_id, func.count(case((started > after, 1))), func.max(started)
            )
            .where(
                col(RemediationRun.issue_id).in_(issue_ids[n : n + 500]),
                RemediationRun.playbook_id == playbook_id,
                executed,
                started >= since,
            )
            .group_by(RemediationRun.issue_id)
        ):
            per_issue[issue_id] = (int(debt or 0), as_utc(last))
    hourly = session.exec(
        select(func.count()).where(
            RemediationRun.playbook_id == playbook_id, executed, started >= hour_since
        )
    ).one()
    return per_issue, int(hourly or 0)


def as_utc(value: datetime | str | None) -> datetime | None:
    # max() over a SQLite text column comes back as text (no column type to decode it).
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return ensure_utc(value)


def interrupted_runs(session: Session, older_than: datetime) -> list[RemediationRun]:
    """Runs journaled as running whose process is gone (started before ``older_than``)."""
    return list(
        session.exec(
            select(RemediationRun).where(
                RemediationRun.status == RunStatus.RUNNING.value,
                col(RemediationRun.started_at) < older_than,
            )
        )
    )


def stale_cutoff(now: datetime, statement_timeout_ms: int) -> datetime:
    """A run still ``running`` this long after it started cannot be alive any more."""
    return now - timedelta(milliseconds=statement_timeout_ms) - timedelta(minutes=5)


def left_behind_runs(session: Session) -> list[RemediationRun]:
    """Runs a crash may have left half done: ``running``, or ``approved`` and unclaimed."""
    left_behind = (RunStatus.RUNNING.value, RunStatus.APPROVED.value)
    return list(
        session.exec(select(RemediationRun).where(col(RemediationRun.status).in_(left_behind)))
    )


def unverified_runs(session: Session) -> list[RemediationRun]:
    """Runs that executed (``succeeded``/``noop``) but were never verified: their issue
    is still ``remediating``."""
    return [
        r
        for r in session.exec(
            select(RemediationRun)
            .join(TrackedIssue, col(TrackedIssue.id) == col(RemediationRun.issue_id))
            .where(
                col(RemediationRun.status).in_(EXECUTED_OK),
                col(TrackedIssue.state) == LifecycleState.REMEDIATING.value,
            )
        ).all()
        if not r.verify
    ]


def transition_issue(
    store: Store, issue_id: str, state: LifecycleState, reason: str, now: datetime
) -> None:
    """Move a run's issue to ``state`` in a transaction of its own (gone: nothing)."""
    with store.session() as session:
        issue = session.get(TrackedIssue, issue_id)
        if issue is not None:
            record_transition(session, issue, state, reason, now)
