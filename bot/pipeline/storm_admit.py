"""Storm mode's admission: which of a batch's issues may run now (see :mod:`.storm`).

The guards of :func:`~bot.pipeline.guards.check_guards`, counted in SQL once per batch
instead of once per issue; every issue they would refuse, whose key is journaled or
whose mode is not ``auto`` goes to the single-run planner, which decides it as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from bot.actions.base import Outcome, Preview
from bot.clock import Clock
from bot.pipeline import guards
from bot.pipeline.journal import EXECUTED, as_utc, idempotency_key, window_start
from bot.pipeline.track import TransitionBatch
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, TrackedIssue

CHUNK = 500  # ids per IN list


@dataclass
class StormItem:
    """One admitted issue of the batch."""

    issue_id: str
    short_id: str
    match: MatchResult
    key: str
    preview: Preview | None = None
    run_id: str = ""
    outcome: Outcome | None = None


def admit(
    store: Store,
    clock: Clock,
    pb: Playbook,
    batch: Sequence[tuple[str, MatchResult]],
    single: list[tuple[str, MatchResult]],
    *,
    hidden_debt_runs: int,
    hidden_debt_hours: float,
) -> list[StormItem]:
    """The issues the guards let run now, moved to ``matched``; the others go to the
    single-run planner, which refuses (or journals) them as it always does."""
    now = clock.now()
    g = pb.guards
    by_id = dict(batch)
    admitted: list[StormItem] = []
    with store.session() as session:
        if guards.is_paused(session) or guards.breaker_open(session, pb.id, now):
            single.extend(batch)
            return []
        rows = issues_by_id(session, list(by_id))
        keyed: dict[str, StormItem] = {}
        matched = TransitionBatch()
        for issue_id, match in batch:
            row = rows.get(issue_id)
            if row is None or guards.effective_mode(pb, row, shadow_only=False) != "auto":
                single.append((issue_id, match))
                continue
            window = window_start(row.last_seen, g.cooldown_minutes, now)
            key = idempotency_key(pb.id, issue_id, match.params, window)
            keyed[key] = StormItem(issue_id, row.short_id, match, key)
        journaled = {
            k
            for keys in chunks(list(keyed))
            for k in session.exec(
                select(RemediationRun.idempotency_key).where(
                    col(RemediationRun.idempotency_key).in_(keys)
                )
            )
        }
        counts = recent_runs(
            session, pb, hidden_debt_hours, [i.issue_id for i in keyed.values()], now
        )
        allowance = g.max_runs_per_hour - counts.pop("", (0, None))[0]
        cooldown = timedelta(minutes=g.cooldown_minutes)
        for key, item in keyed.items():
            debt, last = counts.get(item.issue_id, (0, None))
            refused = (
                key in journaled  # the planner reports the no-op
                or debt >= hidden_debt_runs
                or (cooldown and last is not None and last > now - cooldown)
                or allowance <= 0
            )
            if refused:
                single.append((item.issue_id, item.match))
                continue
            allowance -= 1
            row = rows[item.issue_id]
            row.playbook_id = pb.id
            matched(
                session,
                row,
                LifecycleState.MATCHED,
                f"matched playbook {pb.id} (priority {pb.priority})",
                now,
            )
            admitted.append(item)
        matched.flush(session)
    return admitted


def recent_runs(
    session: Session, pb: Playbook, hidden_debt_hours: float, issue_ids: list[str], now: datetime
) -> dict[str, tuple[int, datetime | None]]:
    """Per issue: runs in the hidden-debt window and the latest start in the cooldown
    window; under ``""`` the playbook's runs in the last hour (see
    :func:`~bot.pipeline.journal.count_runs`, the same counts for one issue)."""
    debt_window = timedelta(hours=hidden_debt_hours)
    since = now - max(debt_window, timedelta(minutes=pb.guards.cooldown_minutes))
    after = now - debt_window
    executed = col(RemediationRun.status).in_(EXECUTED)
    started = col(RemediationRun.started_at)
    out: dict[str, tuple[int, datetime | None]] = {}
    for ids in chunks(issue_ids):
        for issue_id, debt, last in session.exec(
            select(
                RemediationRun.issue_id,
                func.count(case((started > after, 1))),
                func.max(started),
            )
            .where(
                col(RemediationRun.issue_id).in_(ids),
                RemediationRun.playbook_id == pb.id,
                executed,
                started >= since,
            )
            .group_by(RemediationRun.issue_id)
        ):
            out[issue_id] = (int(debt or 0), as_utc(last))
    hourly = session.exec(
        select(func.count()).where(
            RemediationRun.playbook_id == pb.id, executed, started >= now - timedelta(hours=1)
        )
    ).one()
    out[""] = (int(hourly or 0), None)
    return out


def chunks(ids: list[str]) -> list[list[str]]:
    return [ids[n : n + CHUNK] for n in range(0, len(ids), CHUNK)]


def issues_by_id(session: Session, ids: list[str]) -> dict[str, TrackedIssue]:
    """The tracked issues ``ids`` in one query per 500, without their ``raw`` Sentry
    JSON (loaded only if read: a storm moves and announces issues, it never re-parses
    them)."""
    return {
        r.id: r
        for chunk in chunks(ids)
        for r in session.exec(
            select(TrackedIssue)
            .where(col(TrackedIssue.id).in_(chunk))
            .options(defer(TrackedIssue.raw))  # type: ignore[arg-type]
        )
    }
