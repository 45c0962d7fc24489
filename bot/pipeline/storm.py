"""Storm mode: the issues one ``auto`` playbook matched in one cycle, remedied together.

An incident storm (a worker pool dies, a thousand tasks are left running, a thousand
Sentry issues arrive in one poll) would otherwise cost a thousand plans, a thousand
previews, a thousand target transactions and a thousand verifications, one after the
other. Here the batch keeps every per-run promise and shares the transactions:

- **decided per issue, refused by the planner**: an issue whose mode is not ``auto`` (a
  regression needs approval), whose key is journaled, or that a guard would refuse
  (hidden debt, cooldown, the rate cap counted with the batch's own runs) is handed back
  to :meth:`~bot.pipeline.plan.Planner.plan`, which decides it exactly as it always
  does; so is the whole batch while the bot is paused or the breaker is open;
- **previewed on the batch's exact statements**: one target transaction holds one
  savepoint, runs every run's statements in order and rolls them all back, so each
  preview says what that run does after the runs before it, as the batch will execute.
  A run the database (or ``max_rows``) refuses is handed back to the planner (which
  journals its refusal as usual) and the preview starts again without it;
- **journaled before it runs**: every run and its ``planned`` step commit in one store
  transaction, then the claim (``approved`` → ``running``, compare-and-set) and the
  issues' ``remediating`` step in another, before the target transaction begins;
- **executed in ONE target transaction**, its id journaled on every run first (crash
  recovery asks PostgreSQL whether it committed, as for a single run); if any run
  fails, the transaction rolls back, nothing changed, and each run is executed again on
  its own (:meth:`~bot.pipeline.execute.Execution.execute_run`), so one bad run fails
  alone;
- **verified per run** (in one read-only transaction), each verdict journaled, counted by
  the breaker and announced as for a single run.

Only actions that promise their runs may share a transaction
(:class:`~bot.actions.base.SharesTransaction`) storm; a batch smaller than
:data:`STORM_MIN` takes the single-run path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from bot import failpoints
from bot.actions.base import Action, Outcome, SharesTransaction
from bot.actions.registry import get_action
from bot.clock import Clock
from bot.errors import BotError, RemediationError, RetryLater
from bot.pipeline import guards
from bot.pipeline.plan import planned_reason
from bot.pipeline.ports import (
    BatchEventSink,
    Event,
    EventSink,
    PlanOutcome,
    RunExecutor,
    TargetResolver,
)
from bot.pipeline.storm_admit import StormItem, admit, chunks, issues_by_id
from bot.pipeline.track import TransitionBatch
from bot.pipeline.verify import News, Verdict, Verifier
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

# At least this many auto runs of one playbook in one cycle storm together.
STORM_MIN = 2
# A preview restarts without each refused run; after this many, the rest go one by one.
MAX_PREVIEW_RESTARTS = 3
_SAVEPOINT = "SAVEPOINT bot_storm"
_UNDO = "ROLLBACK TO SAVEPOINT bot_storm"


@dataclass
class StormResult:
    """The batch's outcomes, and the issues handed back to the single-run planner."""

    outcomes: list[PlanOutcome] = field(default_factory=list)
    single: list[tuple[str, MatchResult]] = field(default_factory=list)


def storms(playbook: Playbook) -> bool:
    """May ``playbook``'s runs share a target transaction (storm mode)?"""
    action = get_action(playbook.action.type)
    return (
        playbook.guards.mode == "auto"
        and action.needs_target
        and isinstance(action, SharesTransaction)
    )


class Storm:
    """Plans, executes and verifies a batch of one playbook's matches (see module doc)."""

    def __init__(
        self,
        store: Store,
        targets: TargetResolver,
        clock: Clock,
        on_event: EventSink,
        verifier: Verifier,
        execute_run: RunExecutor,
        *,
        hidden_debt_runs: int = 3,
        hidden_debt_hours: float = 24,
    ) -> None:
        self.store = store
        self.targets = targets
        self.clock = clock
        self.on_event = on_event
        self.verifier = verifier
        self.execute_run = execute_run
        self.hidden_debt_runs = hidden_debt_runs
        self.hidden_debt_hours = hidden_debt_hours

    def run(self, pb: Playbook, batch: Sequence[tuple[str, MatchResult]]) -> StormResult:
        """Remedy ``batch`` (issues matched to ``pb``) together; return the outcomes and
        the issues the caller must plan one by one."""
        with guards.plan_lock(self.store, pb.id):
            return self._run(pb, batch)

    def _run(self, pb: Playbook, batch: Sequence[tuple[str, MatchResult]]) -> StormResult:
        result = StormResult()
        target = self.targets(pb.action.target or "")
        action = get_action(pb.action.type)
        if target is None or not isinstance(action, SharesTransaction) or not storms(pb):
            result.single.extend(batch)
            return result
        items = admit(
            self.store,
            self.clock,
            pb,
            batch,
            result.single,
            hidden_debt_runs=self.hidden_debt_runs,
            hidden_debt_hours=self.hidden_debt_hours,
        )
        if len(items) < STORM_MIN:
            result.single.extend((i.issue_id, i.match) for i in items)
            return result
        failpoints.hit("after-match")
        items = self._preview(pb, action, items, result)
        if not items:
            return result
        if not self._journal(pb, items, result):
            return result
        failpoints.hit("after-journal")
        claimed, started = self._claim(pb, items)
        won = {i.run_id for i in claimed}
        result.outcomes.extend(
            PlanOutcome(
                i.issue_id,
                i.short_id,
                pb.id,
                "auto",
                RunStatus.APPROVED.value,
                run_id=i.run_id,
                preview=i.preview,
                note="another worker claimed this run (no-op)",
                params=dict(i.match.params),
            )
            for i in items
            if i.run_id not in won
        )
        items = claimed
        if not items:
            return result
        outcomes = self._execute(pb, action, items)
        if outcomes is None:
            # The batch rolled back: nothing changed. Each run executes on its own now.
            self._release(items, started)
            result.outcomes.extend(self.execute_run(i.run_id) for i in items)
            return result
        result.outcomes.extend(self._finish(pb, action, items))
        return result

    # -- preview -----------------------------------------------------------------------

    def _preview(
        self, pb: Playbook, action: SharesTransaction, items: list[StormItem], result: StormResult
    ) -> list[StormItem]:
        """Preview the batch on its own statements (one savepoint, rolled back). A run
        the database refuses goes to the single-run planner and the preview restarts."""
        target = self.targets(pb.action.target or "")
        assert target is not None
        g = pb.guards
        settings, limits = pb.action.parsed_settings, g.limits()
        for _attempt in range(MAX_PREVIEW_RESTARTS + 1):
            refused: StormItem | None = None
            try:
                with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
                    conn.execute(_SAVEPOINT)
                    for item in items:
                        try:
                            item.preview = action.preview_in(
                                conn, settings, dict(item.match.params), limits
                            )
                        except BotError:
                            refused = item
                            break
                    conn.execute(_UNDO)
            except BotError:
                # The target itself failed: every run goes one by one (the planner
                # reports why, and the issues stay matched for the next cycle).
                result.single.extend((i.issue_id, i.match) for i in items)
                return []
            if refused is None:
                return items
            result.single.append((refused.issue_id, refused.match))
            items = [i for i in items if i is not refused]
        result.single.extend((i.issue_id, i.match) for i in items)
        return []

    # -- journal, claim ----------------------------------------------------------------

    def _journal(self, pb: Playbook, items: list[StormItem], result: StormResult) -> bool:
        """Journal every run (``approved``) with its ``planned`` step in ONE store
        transaction (one executemany INSERT each). A key another replica journaled
        meanwhile refuses the insert: then every issue goes to the single-run planner
        (which finds the journaled ones)."""
        now = self.clock.now()
        runs: list[dict[str, object]] = []
        for item in items:
            preview = item.preview
            assert preview is not None
            item.run_id = str(uuid.uuid4())
            runs.append(
                {
                    "id": item.run_id,
                    "idempotency_key": item.key,
                    "playbook_id": pb.id,
                    "issue_id": item.issue_id,
                    "action": pb.action.type,
                    "target": pb.action.target,
                    "params": dict(item.match.params),
                    "mode": "auto",
                    "status": RunStatus.APPROVED.value,
                    "preview": {"summary": preview.summary, "rows": preview.rows},
                    "before_image": {},
                    "verify": {},
                    "created_at": now,
                }
            )
        planned = TransitionBatch()
        try:
            with self.store.session() as session:
                session.execute(insert(RemediationRun), runs)
                issues = self._attached(session, items)
                for item in items:
                    planned(
                        session,
                        issues[item.issue_id],
                        LifecycleState.PLANNED,
                        planned_reason(item.run_id, "auto", item.preview),
                        now,
                    )
                planned.flush(session)
        except BotError:
            result.single.extend((i.issue_id, i.match) for i in items)
            return False
        return True

    def _attached(self, session: Session, items: list[StormItem]) -> dict[str, TrackedIssue]:
        """The items' issue rows as admission loaded them, attached to ``session``
        (no read: only the steps recorded on them are written back)."""
        for item in items:
            session.add(item.issue)
        return {i.issue_id: i.issue for i in items}

    def _issues(self, session: Session, ids: list[str]) -> dict[str, TrackedIssue]:
        return issues_by_id(session, ids)

    def _claim(self, pb: Playbook, items: list[StormItem]) -> tuple[list[StormItem], datetime]:
        """Claim every run (``approved`` → ``running``, compare-and-set) and move the
        issues to ``remediating``, in one store transaction before the target's. Returns
        the runs this process won (another replica's recovery may have taken one)."""
        now = self.clock.now()
        won: set[str] = set()
        with self.store.session() as session:
            for ids in chunks([i.run_id for i in items]):
                won.update(
                    session.execute(
                        update(RemediationRun)
                        .where(
                            col(RemediationRun.id).in_(ids),
                            col(RemediationRun.status) == RunStatus.APPROVED.value,
                        )
                        .values(status=RunStatus.RUNNING.value, started_at=now)
                        .returning(col(RemediationRun.id))
                    ).scalars()
                )
            claimed = [i for i in items if i.run_id in won]
            issues = self._attached(session, claimed)
            moves = TransitionBatch()
            for item in claimed:
                moves(
                    session,
                    issues[item.issue_id],
                    LifecycleState.REMEDIATING,
                    f"run {item.run_id[:8]} executing {pb.action.type} (storm of {len(items)})",
                    now,
                )
            moves.flush(session)
        return claimed, now

    def _release(self, items: list[StormItem], started: datetime) -> None:
        """Hand the claimed runs back to ``approved`` (their transaction rolled back)."""
        with self.store.session() as session:
            for ids in chunks([i.run_id for i in items]):
                session.exec(
                    update(RemediationRun)
                    .where(
                        col(RemediationRun.id).in_(ids),
                        col(RemediationRun.status) == RunStatus.RUNNING.value,
                        col(RemediationRun.started_at) == started,
                    )
                    .values(status=RunStatus.APPROVED.value, target_xid=None)
                )

    # -- execute, verify ---------------------------------------------------------------

    def _execute(
        self, pb: Playbook, action: Action, items: list[StormItem]
    ) -> list[Outcome] | None:
        """Every run's statements in ONE target transaction (its id journaled on every
        run first); None when any run failed and the transaction rolled back."""
        target = self.targets(pb.action.target or "")
        assert target is not None
        g = pb.guards
        settings, limits = pb.action.parsed_settings, g.limits()
        outcomes: list[Outcome] = []
        try:
            with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
                if conn.dialect.name == "postgresql":
                    xid = conn.fetch_all("SELECT txid_current()::text AS xid")[0]["xid"]
                    with self.store.session() as session:
                        for ids in chunks([i.run_id for i in items]):
                            session.exec(
                                update(RemediationRun)
                                .where(col(RemediationRun.id).in_(ids))
                                .values(target_xid=str(xid))
                            )
                for item in items:
                    outcomes.append(action.execute(conn, settings, dict(item.match.params), limits))
                failpoints.hit("target-before-commit")
            failpoints.hit("target-after-commit")
        except (RemediationError, RetryLater):
            return None
        finished = self.clock.now()
        with self.store.session() as session:
            # One executemany UPDATE by primary key (SQLAlchemy's ORM bulk update).
            session.execute(
                update(RemediationRun),
                [
                    {
                        "id": item.run_id,
                        "status": (
                            RunStatus.SUCCEEDED if o.rows_affected else RunStatus.NOOP
                        ).value,
                        "rows_affected": o.rows_affected,
                        "before_image": {"rows": o.before_image, "details": o.details},
                        "finished_at": finished,
                    }
                    for item, o in zip(items, outcomes, strict=True)
                ],
            )
        failpoints.hit("after-succeeded")
        for item, o in zip(items, outcomes, strict=True):
            item.outcome = o
        return outcomes

    def _finish(self, pb: Playbook, action: Action, items: list[StormItem]) -> list[PlanOutcome]:
        """Verify every run (one read-only transaction) and journal each verdict."""
        if pb.verify.delay_seconds:
            self.clock.sleep(pb.verify.delay_seconds)
        failpoints.hit("before-verify")
        verdicts = self._verdicts(pb, action, items)
        outs: list[PlanOutcome] = []
        now = self.clock.now()
        with self.store.session() as session:
            issues = self._issues(session, [i.issue_id for i in items])
            runs = {
                r.id: r
                for ids in chunks([i.run_id for i in items])
                for r in session.exec(select(RemediationRun).where(col(RemediationRun.id).in_(ids)))
            }
            opened = guards.record_verifications(session, pb, [v.ok for v in verdicts], now)
            moves = TransitionBatch()
            news: list[tuple[TrackedIssue, RemediationRun, News]] = []
            for item, verdict, opens in zip(items, verdicts, opened, strict=True):
                outcome = item.outcome
                assert outcome is not None
                row = runs[item.run_id]
                out = PlanOutcome(
                    item.issue_id,
                    item.short_id,
                    pb.id,
                    "auto",
                    row.status,
                    run_id=item.run_id,
                    preview=item.preview,
                    rows_affected=outcome.rows_affected,
                    params=dict(item.match.params),
                )
                issue = issues[item.issue_id]
                said = self.verifier.journal_verdict(
                    session, out, row, issue, pb, verdict, now, opened=opens, record=moves
                )
                if said is not None:
                    news.append((issue, row, said))
                outs.append(out)
            moves.flush(session)
            # Announced once the timeline holds every verdict (a report reads it).
            events: list[Event] = [(k, i, r, pb, facts) for i, r, (k, facts) in news]
            if isinstance(self.on_event, BatchEventSink):
                self.on_event.record_many(session, events)
            else:
                for kind, about, run, _, facts in events:
                    self.on_event(session, kind, about, run, pb, facts)
        failpoints.hit("after-verify")
        return outs

    def _verdicts(self, pb: Playbook, action: Action, items: list[StormItem]) -> list[Verdict]:
        if pb.verify.checks:  # the runbook's own checks: one run at a time
            return [self.verifier.judge(pb, dict(i.match.params), _outcome(i)) for i in items]
        target = self.targets(pb.action.target or "")
        assert target is not None
        g, settings = pb.guards, pb.action.parsed_settings
        try:
            with target.transaction(
                g.statement_timeout_ms, g.lock_timeout_ms, read_only=True
            ) as conn:
                found = [
                    action.verify(conn, settings, dict(i.match.params), _outcome(i)) for i in items
                ]
        except BotError as exc:
            return [Verdict(False, f"verification could not run: {exc}") for _ in items]
        return [Verdict(v.ok, v.summary, v.details) for v in found]


def _outcome(item: StormItem) -> Outcome:
    assert item.outcome is not None
    return item.outcome
