"""Storm mode's admission: which of a batch's issues may run now (see :mod:`.storm`).

The guards of :func:`~bot.pipeline.guards.check_guards`, counted in SQL once per batch
instead of once per issue; every issue they would refuse, whose key is journaled or
whose mode is not ``auto`` goes to the single-run planner, which decides it as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from bot.actions.base import Outcome, Preview
from bot.clock import Clock
from bot.pipeline import guards
from bot.pipeline.journal import RunCounts, count_runs_of, idempotency_key, window_start
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
        per_issue, hourly = count_runs_of(
            session,
            playbook_id=pb.id,
            issue_ids=[i.issue_id for i in keyed.values()],
            **guards.run_windows(pb, now, hidden_debt_hours),
        )
        for key, item in keyed.items():
            debt, last = per_issue.get(item.issue_id, (0, None))
            # The single-run planner's own rule, counting the runs admitted before.
            counts = RunCounts(debt, last, hourly + len(admitted))
            refused = (
                key in journaled
                or not guards.run_guards(
                    pb,
                    counts,
                    now,
                    hidden_debt_runs=hidden_debt_runs,
                    hidden_debt_hours=hidden_debt_hours,
                ).allowed
            )
            if refused:  # the planner reports the no-op or the refusal, as always
                single.append((item.issue_id, item.match))
                continue
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
