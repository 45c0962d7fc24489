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
- **previewed by the execution itself, journaled before it commits**: ONE target
  transaction runs every run's statements in order under a savepoint (their first
  statements sent together); what each run's statements did is its preview. Every run
  is then journaled ``running`` (with that preview, the target transaction's id and its
  ``planned`` and ``remediating`` steps, one store transaction) and only then does the
  target COMMIT. A crash before the COMMIT leaves nothing on the target (recovery sees
  the transaction aborted and runs each run once on its own); a crash after leaves
  committed runs that recovery verifies against their journaled preview. A COMMIT that
  fails leaves the runs ``running`` for recovery to decide by the transaction's id (in
  doubt, never guessed). Only PostgreSQL targets can answer that question
  (``txid_status``): elsewhere every run goes the single-run way;
- **one refusal never fails the batch**: a run the database (or ``max_rows``) refuses
  is rolled back with the others to the savepoint and handed to the single-run planner
  (which previews, journals and refuses it as always), and the batch starts again
  without it; if the target fails before the journal commits, every issue goes to the
  single-run planner;
- **the breaker's bound**: the batch runs in chunks, each verified before the next.
  A chunk holds as many runs as failures the breaker still allows; only after a chunk
  verified clean does the next double (up to :data:`CHUNK_MAX`, which also bounds the
  rows one transaction locks). A remedy that fails from the start stops after as many
  runs as one at a time; one that starts failing mid-storm, within the chunk in flight.
  Pause and breaker are read before each chunk; a target failure ends the storm;
- **verified per run** (in one read-only transaction, the reads sent together), each
  verdict journaled, counted by the breaker and announced as for a single run. A
  playbook with ``verify.checks`` (which sample for a while) takes the single-run path.

Only actions that promise their runs may share a transaction
(:class:`~bot.actions.base.SharesTransaction`) storm; a batch smaller than
:data:`STORM_MIN` takes the single-run path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from bot import failpoints
from bot.actions.base import Outcome, SharesTransaction
from bot.actions.registry import get_action
from bot.clock import Clock
from bot.errors import BotError, RetryLater
from bot.pipeline import guards
from bot.pipeline.plan import planned_reason
from bot.pipeline.ports import (
    BatchEventSink,
    Event,
    EventSink,
    PlanOutcome,
    TargetResolver,
)
from bot.pipeline.storm_admit import StormItem, admit, chunks, issues_by_id
from bot.pipeline.storm_target import (
    IDLE_TIMEOUT,
    RELEASE,
    SAVEPOINT,
    UNDO,
    outcome_of,
    run_items,
    transaction_id,
)
from bot.pipeline.track import TransitionBatch
from bot.pipeline.verify import News, Verdict, Verifier
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import (
    LifecycleState,
    PlaybookState,
    RemediationRun,
    RunStatus,
    TrackedIssue,
)

log = logging.getLogger(__name__)

# At least this many auto runs of one playbook in one cycle storm together.
STORM_MIN = 2
# A batch restarts without each refused run; after this many, the rest go one by one.
MAX_RESTARTS = 3
# The most runs one target transaction of a storm carries (see Storm._run).
CHUNK_MAX = 200
_CLEAN = (RunStatus.SUCCEEDED.value, RunStatus.NOOP.value)
_UNREAD_RUN_COLUMNS = (
    defer(RemediationRun.preview),  # type: ignore[arg-type]
    defer(RemediationRun.before_image),  # type: ignore[arg-type]
    defer(RemediationRun.params),  # type: ignore[arg-type]
)


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
        # The runbook's own checks sample for a while per run: one run at a time.
        and not playbook.verify.checks
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
        *,
        hidden_debt_runs: int = 3,
        hidden_debt_hours: float = 24,
    ) -> None:
        self.store = store
        self.targets = targets
        self.clock = clock
        self.on_event = on_event
        self.verifier = verifier
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
        pos, size, clean = 0, 0, False
        while pos < len(items):
            allowed = self._allowance(pb)
            if allowed is None:  # paused, or the breaker opened: the rest are refused
                break
            # The breaker's bound: a chunk is as many runs as failures the breaker still
            # allows; only after a chunk verified clean does the next one double.
            size = min(2 * size, CHUNK_MAX) if clean else allowed
            chunk = items[pos : pos + size]
            pos += len(chunk)
            done, go_on = self._remedy(pb, action, chunk, result)
            clean = False
            if done:
                self._succeeded(done)
                outs = self._finish(pb, action, done)
                result.outcomes.extend(outs)
                clean = all(o.status in _CLEAN for o in outs)
            if not go_on:
                break
        result.single.extend((i.issue_id, i.match) for i in items[pos:])
        return result

    def _allowance(self, pb: Playbook) -> int | None:
        """How many runs the next chunk may hold: as many as failures the breaker still
        allows; None while the bot is paused or the playbook's breaker is open."""
        with self.store.session() as session:
            if guards.is_paused(session) or guards.breaker_open(session, pb.id, self.clock.now()):
                return None
            state = session.get(PlaybookState, pb.id)
            failures = state.consecutive_failures if state is not None else 0
        return max(1, pb.guards.breaker_failures - failures)

    # -- remedy: run, journal, commit --------------------------------------------------

    def _remedy(
        self, pb: Playbook, action: SharesTransaction, items: list[StormItem], result: StormResult
    ) -> tuple[list[StormItem], bool]:
        """Run every item's statements in ONE target transaction under a savepoint and
        journal each run (``running``, the transaction's id, what its statements did as
        its preview) in the store BEFORE the target commits. Returns the committed items,
        and whether the storm may go on (not after a target failure: the rest of the
        batch then goes to the single-run planner).

        A run the database (or ``max_rows``) refuses is rolled back with the others to
        the savepoint, handed to the single-run planner, and the batch starts again
        without it. When the target fails before the journal commits, nothing happened:
        every item goes to the single-run planner. When it fails after (the COMMIT), the
        outcome is in doubt: the runs stay ``running`` for recovery, which asks the
        target whether their transaction committed (never runs one twice)."""
        target = self.targets(pb.action.target or "")
        assert target is not None
        g = pb.guards
        settings, limits = pb.action.parsed_settings, g.limits()
        for _attempt in range(MAX_RESTARTS + 1):
            refused: StormItem | None = None
            journaled = False
            try:
                with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
                    xid = transaction_id(conn)
                    if xid is None:
                        # Recovery could not tell whether this transaction committed
                        # (no txid_status): each run goes on its own.
                        result.single.extend((i.issue_id, i.match) for i in items)
                        return [], False
                    conn.execute(IDLE_TIMEOUT, {"ms": f"{max(g.statement_timeout_ms, 30_000)}ms"})
                    conn.execute(SAVEPOINT)
                    refused = run_items(conn, action, settings, limits, items)
                    if refused is not None:
                        conn.execute(UNDO)  # this attempt leaves nothing behind
                    else:
                        conn.execute(RELEASE)
                        self._journal(pb, items, xid)
                        journaled = True
                        failpoints.hit("after-journal")
                        failpoints.hit("target-before-commit")
            except BotError as exc:
                if not journaled:
                    # Nothing committed anywhere: each issue is decided on its own.
                    result.single.extend((i.issue_id, i.match) for i in items)
                    return [], False
                log.warning("storm of %d runs (%s): commit in doubt: %s", len(items), pb.id, exc)
                result.outcomes.extend(
                    outcome_of(pb, i, RunStatus.RUNNING.value, f"in doubt: {exc}") for i in items
                )
                return [], False
            if refused is None:
                failpoints.hit("target-after-commit")
                return items, True
            result.single.append((refused.issue_id, refused.match))
            items = [i for i in items if i is not refused]
            if len(items) < STORM_MIN:
                break
        result.single.extend((i.issue_id, i.match) for i in items)
        return [], True

    def _journal(self, pb: Playbook, items: list[StormItem], xid: str | None) -> None:
        """Journal every run as ``running`` in its target transaction ``xid``, with its
        ``planned`` and ``remediating`` steps, in ONE store transaction (one executemany
        INSERT each). A key another process journaled meanwhile raises (the caller's
        target transaction rolls back; the single-run planner finds the journaled run)."""
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
                    "status": RunStatus.RUNNING.value,
                    "preview": {"summary": preview.summary, "rows": preview.rows},
                    "before_image": {},
                    "verify": {},
                    "created_at": now,
                    "started_at": now,
                    "target_xid": xid,
                }
            )
        steps = TransitionBatch()
        with self.store.session() as session:
            session.execute(insert(RemediationRun), runs)
            # Read again (not as admission left them): the state a step starts from is
            # the one in the store now.
            issues = issues_by_id(session, [i.issue_id for i in items])
            for item in items:
                steps(
                    session,
                    issues[item.issue_id],
                    LifecycleState.PLANNED,
                    planned_reason(item.run_id, "auto", item.preview),
                    now,
                )
                steps(
                    session,
                    issues[item.issue_id],
                    LifecycleState.REMEDIATING,
                    f"run {item.run_id[:8]} executing {pb.action.type} "
                    f"(storm of {len(items)}, one target transaction)",
                    now,
                )
            steps.flush(session)

    def _succeeded(self, items: list[StormItem]) -> None:
        """Journal each committed run's outcome (one executemany UPDATE by key), in its
        own store transaction right after the COMMIT, as a single run does: from here
        recovery sees the runs finished (and waits for their verification)."""
        finished = self.clock.now()
        with self.store.session() as session:
            self._outcomes(session, items, finished)
        failpoints.hit("after-succeeded")

    def _outcomes(self, session: Session, items: list[StormItem], finished: datetime) -> None:
        session.execute(
            update(RemediationRun),
            [
                {
                    "id": item.run_id,
                    "status": (RunStatus.SUCCEEDED if o.rows_affected else RunStatus.NOOP).value,
                    "rows_affected": o.rows_affected,
                    "before_image": {"rows": o.before_image, "details": o.details},
                    "finished_at": finished,
                }
                for item in items
                if (o := _outcome(item))
            ],
        )

    def _finish(
        self, pb: Playbook, action: SharesTransaction, items: list[StormItem]
    ) -> list[PlanOutcome]:
        """Verify every run (one read-only transaction) and journal each verdict."""
        if pb.verify.delay_seconds:
            self.clock.sleep(pb.verify.delay_seconds)
        failpoints.hit("before-verify")
        verdicts = self._verdicts(pb, action, items)
        outs: list[PlanOutcome] = []
        now = self.clock.now()
        with self.store.session() as session:
            issues = issues_by_id(session, [i.issue_id for i in items])
            runs = {
                r.id: r
                for ids in chunks([i.run_id for i in items])
                for r in session.exec(
                    select(RemediationRun)
                    .where(col(RemediationRun.id).in_(ids))
                    # What a verdict and its announcement never read: loaded only if read.
                    .options(*_UNREAD_RUN_COLUMNS)
                )
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

    def _verdicts(
        self, pb: Playbook, action: SharesTransaction, items: list[StormItem]
    ) -> list[Verdict]:
        if pb.verify.checks:  # the runbook's own checks: one run at a time
            return [self.verifier.judge(pb, dict(i.match.params), _outcome(i)) for i in items]
        target = self.targets(pb.action.target or "")
        assert target is not None
        g, settings = pb.guards, pb.action.parsed_settings
        try:
            with target.transaction(
                g.statement_timeout_ms, g.lock_timeout_ms, read_only=True
            ) as conn:
                found = action.verify_many(
                    conn, settings, [(dict(i.match.params), _outcome(i)) for i in items]
                )
        except RetryLater as exc:  # the target is away: no run can be verified now
            return [Verdict(False, f"verification could not run: {exc}") for _ in items]
        except BotError:
            # One failed read must not fail every run: each is verified on its own.
            return [self.verifier.judge(pb, dict(i.match.params), _outcome(i)) for i in items]
        return [Verdict(v.ok, v.summary, v.details) for v in found]


def _outcome(item: StormItem) -> Outcome:
    assert item.outcome is not None
    return item.outcome
