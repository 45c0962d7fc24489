"""Execute an approved run exactly once, in one target transaction; and the façade.

The remediation stages, in the order of the flow (match → plan → execute → verify):

- :mod:`bot.pipeline.plan`: guards, idempotency, the shadow/approval/auto decision, the
  preview, and the run journaled before anything executes;
- this module's :class:`Execution`: claims the run with a compare-and-set (``approved``
  → ``running``), so two schedulers or two ``approve`` commands can never both execute
  it, runs the action in ONE target transaction (its transaction id journaled first on
  PostgreSQL), journals the outcome, then hands it to verification;
- :mod:`bot.pipeline.verify`: the action's verify and the playbook's checks, the verdict
  journaled, the issue watched or escalated;
- :mod:`bot.pipeline.recover`: a run found ``running`` after a crash is verified against
  its journaled preview and marked ``interrupted``, never re-executed blindly.

:class:`Executor` composes them for the cycle, the CLI and the approval channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import update
from sqlmodel import col

from bot import failpoints
from bot.actions.base import BatchedAction, ParamValue, Preview
from bot.actions.registry import get_action
from bot.actions.target import TargetConnection
from bot.clock import Clock
from bot.errors import BotError, RemediationError, RetryLater, RunNotFound
from bot.pipeline import guards
from bot.pipeline.approvals import (
    Action,
    ApprovalOutcome,
    ApprovalService,
    Channel,
    approved_waiting,
    expire_approvals,
)
from bot.pipeline.journal import claim_in
from bot.pipeline.plan import Planner
from bot.pipeline.ports import (
    EventSink,
    PlanOutcome,
    RunVerifier,
    TargetResolver,
    no_events,
)
from bot.pipeline.recover import Recovery
from bot.pipeline.storm import Storm, StormResult
from bot.pipeline.track import record_transition
from bot.pipeline.verify import Verifier
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

__all__ = ["EventSink", "Execution", "Executor", "PlanOutcome", "TargetResolver"]


class Execution:
    """The execute stage: one approved run, claimed once, run in one transaction."""

    def __init__(
        self,
        store: Store,
        playbooks: Mapping[str, Playbook],
        targets: TargetResolver,
        clock: Clock,
        on_event: EventSink,
        verifier: RunVerifier,
    ) -> None:
        self.store = store
        self.playbooks = playbooks
        self.targets = targets
        self.clock = clock
        self.on_event = on_event
        self.verifier = verifier

    def execute_run(self, run_id: str) -> PlanOutcome:
        """Execute an approved run exactly once (compare-and-set claim), then verify."""
        now = self.clock.now()
        # One store transaction reads the run, claims it (compare-and-set) and moves its
        # issue to ``remediating``: nothing happens outside the store between the three,
        # so merging them opens no crash window, and the claim still commits before the
        # target transaction begins.
        with self.store.session() as session:
            run = session.get(RemediationRun, run_id)
            if run is None:
                raise RunNotFound(f"no run {run_id!r}")
            issue = session.get(TrackedIssue, run.issue_id)
            pb = self.playbooks.get(run.playbook_id)
            out = PlanOutcome(
                run.issue_id,
                issue.short_id if issue else run.issue_id,
                run.playbook_id,
                run.mode,
                run.status,
                run_id=run.id,
                params=dict(run.params),
            )
            if pb is None:
                out.note = f"playbook {run.playbook_id} is no longer loaded"
                return out
            if not claim_in(
                session, run_id, RunStatus.APPROVED.value, RunStatus.RUNNING.value, now
            ):
                out.note = "another worker claimed this run (no-op)"
                return out
            if issue is not None:
                record_transition(
                    session,
                    issue,
                    LifecycleState.REMEDIATING,
                    f"run {run_id[:8]} executing {pb.action.type}",
                    now,
                )
        action = get_action(pb.action.type)
        g = pb.guards
        try:
            target = self.targets(pb.action.target or "") if action.needs_target else None
            if action.needs_target and target is None:
                raise RemediationError(f"target {pb.action.target!r} is not configured")
            if target is None:
                outcome = action.execute(
                    None, pb.action.parsed_settings, dict(run.params), g.limits()
                )
            elif isinstance(action, BatchedAction):
                outcome = action.execute_batches(
                    target, pb.action.parsed_settings, dict(run.params), g.limits(), self.clock
                )
            else:
                with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
                    self._journal_xid(run_id, conn)
                    outcome = action.execute(
                        conn, pb.action.parsed_settings, dict(run.params), g.limits()
                    )
                    failpoints.hit("target-before-commit")
                failpoints.hit("target-after-commit")
        except (RemediationError, RetryLater) as exc:
            return self._failed(out, run_id, pb, f"{type(exc).__name__}: {exc}")
        status = RunStatus.SUCCEEDED if outcome.rows_affected else RunStatus.NOOP
        with self.store.session() as session:
            # One UPDATE by key (no load of the row: this is once per remediation).
            session.exec(
                update(RemediationRun)
                .where(col(RemediationRun.id) == run_id)
                .values(
                    status=status.value,
                    rows_affected=outcome.rows_affected,
                    before_image={"rows": outcome.before_image, "details": outcome.details},
                    finished_at=self.clock.now(),
                )
            )
        failpoints.hit("after-succeeded")
        out.status, out.rows_affected = status.value, outcome.rows_affected
        if pb.verify.delay_seconds:
            # Give the system a moment to settle (e.g. a terminated backend to exit, a
            # worker to pick a requeued task) before checking the remedy took effect.
            self.clock.sleep(pb.verify.delay_seconds)
        return self.verifier.verify(out, run_id, pb, outcome)

    def _failed(self, out: PlanOutcome, run_id: str, pb: Playbook, error: str) -> PlanOutcome:
        """The action raised: its transaction rolled back, so nothing changed. Journal
        the failure, charge the breaker and escalate the issue."""
        now = self.clock.now()
        with self.store.session() as session:
            row = session.get(RemediationRun, run_id)
            issue = session.get(TrackedIssue, out.issue_id)
            assert row is not None and issue is not None
            row.status, row.error, row.finished_at = RunStatus.FAILED.value, error[:4000], now
            row.rows_affected = 0
            opened = guards.record_verification(session, pb, False, now)
            record_transition(
                session,
                issue,
                LifecycleState.FAILED,
                f"run {run_id[:8]} rolled back: {error[:300]}",
                now,
            )
            record_transition(
                session,
                issue,
                LifecycleState.ESCALATED,
                "remediation failed; nothing was changed",
                now,
            )
            issue.escalated_at = now
            self.on_event(
                session, "failed", issue, row, pb, {"error": error, "breaker_opened": opened}
            )
        out.status, out.note, out.rows_affected = RunStatus.FAILED.value, error, 0
        return out

    def _journal_xid(self, run_id: str, conn: TargetConnection) -> None:
        """On PostgreSQL, journal the target transaction's id before the action runs, so
        recovery can ask the target whether the run committed (see
        :meth:`~bot.pipeline.recover.Recovery._target_verdict`)."""
        if conn.dialect.name != "postgresql":
            return
        rows = conn.fetch_all("SELECT txid_current()::text AS xid")
        with self.store.session() as session:
            session.exec(
                update(RemediationRun)
                .where(col(RemediationRun.id) == run_id)
                .values(target_xid=str(rows[0]["xid"]))
            )


class Executor:
    """Runs the plan → journal → execute → verify pipeline for one store.

    A façade over the stages, each built once here with the same collaborators. Runs
    reach execution through :meth:`execute_run`, also from planning (``auto`` mode) and
    recovery, so a subclass that wraps it sees every execution.
    """

    def __init__(
        self,
        store: Store,
        playbooks: Mapping[str, Playbook],
        targets: TargetResolver,
        clock: Clock,
        *,
        on_event: EventSink = no_events,
        hidden_debt_runs: int = 3,
        hidden_debt_hours: float = 24,
    ) -> None:
        self.store = store
        self.playbooks = playbooks
        self.targets = targets
        self.clock = clock
        self.on_event = on_event
        self.hidden_debt_runs = hidden_debt_runs
        self.hidden_debt_hours = hidden_debt_hours
        verifier = Verifier(store, targets, clock, on_event)
        self._execution = Execution(store, playbooks, targets, clock, on_event, verifier)
        self._planner = Planner(
            store,
            targets,
            clock,
            on_event,
            self.execute_run,
            hidden_debt_runs=hidden_debt_runs,
            hidden_debt_hours=hidden_debt_hours,
        )
        self._recovery = Recovery(store, playbooks, targets, clock, self.execute_run, verifier)
        self._storm = Storm(
            store,
            targets,
            clock,
            on_event,
            verifier,
            hidden_debt_runs=hidden_debt_runs,
            hidden_debt_hours=hidden_debt_hours,
        )

    def preview(
        self, playbook: Playbook, params: Mapping[str, ParamValue]
    ) -> tuple[Preview | None, str]:
        """A read-only preview, or (None, why not) when the target is missing/unreachable."""
        return self._planner.preview(playbook, params)

    def plan(self, issue_id: str, match: MatchResult, *, shadow_only: bool = False) -> PlanOutcome:
        """Journal a run for ``match`` on the tracked issue and act per its mode."""
        return self._planner.plan(issue_id, match, shadow_only=shadow_only)

    def storm(self, playbook: Playbook, batch: Sequence[tuple[str, MatchResult]]) -> StormResult:
        """Remedy the issues ``playbook`` matched in one cycle together (storm mode, see
        :mod:`bot.pipeline.storm`); the result names the issues to :meth:`plan` singly."""
        return self._storm.run(playbook, batch)

    def approve(self, run_id: str, approver: str, *, channel: Channel = Channel.CLI) -> PlanOutcome:
        """Approve a waiting run (not expired) as the trusted local operator, and execute
        it now. Remote channels (Slack, console) decide through :class:`ApprovalService`
        with the ``BOT_APPROVERS`` allowlist, then call :meth:`execute_run`."""
        result = ApprovalService(self.store, self.clock, None).decide(
            run_id, Action.APPROVE, approver, channel
        )
        if result.outcome is not ApprovalOutcome.APPROVED:
            raise BotError(result.message)
        return self.execute_run(run_id)

    def execute_approved(self) -> list[PlanOutcome]:
        """Execute every run a human approved that no process has started yet (the
        leader's job when the approval arrived at a replica that does not lead)."""
        with self.store.session() as session:
            waiting = approved_waiting(session)
        return [self.execute_run(run_id) for run_id in waiting]

    def execute_run(self, run_id: str) -> PlanOutcome:
        """Execute an approved run exactly once (compare-and-set claim), then verify."""
        return self._execution.execute_run(run_id)

    def expire_approvals(self) -> int:
        """Mark approval requests past their TTL as expired (see
        :func:`~bot.pipeline.approvals.expire_approvals`)."""
        return expire_approvals(self.store, self.clock.now())

    def recover_interrupted(self) -> list[str]:
        """Finish what a crash left half done; return the ids of the runs it touched
        (see :mod:`bot.pipeline.recover`)."""
        return self._recovery.recover_interrupted()
