"""Plan a remediation: guards, one run per idempotency window, journal before acting.

``plan`` turns a match into a journaled run according to the mode: ``shadow`` records
the preview only, ``approval`` waits for a human (and expires, see
:func:`~bot.pipeline.approvals.expire_approvals`), ``auto`` hands the run to the
execution stage at once. Before that:

- the idempotency key (playbook, issue, parameters, time window) makes re-planning the
  same match a no-op, so an overlapping poll or a count bump never runs twice;
- the guardrails (:mod:`bot.pipeline.guards`) may refuse (paused, breaker open, cooldown,
  rate cap) or escalate (hidden debt) instead;
- the preview runs on the target first: the journal records what a run intends before
  it executes, so a run without a preview is never journaled (except in shadow mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlmodel import Session

from bot import failpoints
from bot.actions.base import ParamValue, Preview
from bot.actions.registry import get_action
from bot.clock import Clock
from bot.errors import BotError
from bot.pipeline import guards
from bot.pipeline.journal import find_run, idempotency_key, journal_run, window_start
from bot.pipeline.ports import EventSink, PlanOutcome, RunExecutor, TargetResolver
from bot.pipeline.track import record_transition
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

_STATUS_BY_MODE = {
    "shadow": RunStatus.SHADOW,
    "approval": RunStatus.AWAITING_APPROVAL,
    "auto": RunStatus.APPROVED,
}


class Planner:
    """The plan stage: decide, preview and journal a run for one matched issue."""

    def __init__(
        self,
        store: Store,
        targets: TargetResolver,
        clock: Clock,
        on_event: EventSink,
        execute_run: RunExecutor,
        *,
        hidden_debt_runs: int = 3,
        hidden_debt_hours: float = 24,
    ) -> None:
        self.store = store
        self.targets = targets
        self.clock = clock
        self.on_event = on_event
        self.execute_run = execute_run
        self.hidden_debt_runs = hidden_debt_runs
        self.hidden_debt_hours = hidden_debt_hours

    def preview(
        self, playbook: Playbook, params: Mapping[str, ParamValue]
    ) -> tuple[Preview | None, str]:
        """A read-only preview, or (None, why not) when the target is missing/unreachable."""
        action = get_action(playbook.action.type)
        if not action.needs_target:
            return action.preview(
                None, playbook.action.parsed_settings, dict(params), playbook.guards.limits()
            ), ""
        target = self.targets(playbook.action.target or "")
        if target is None:
            env = f"BOT_TARGET_{(playbook.action.target or '').upper()}_URL"
            return None, f"needs target {playbook.action.target!r}: set {env}"
        g = playbook.guards
        # An action whose preview runs its real statement (and rolls it back itself)
        # needs a read-write transaction; every other preview runs read-only.
        read_only = not getattr(action, "preview_executes", False)
        try:
            with target.transaction(
                g.statement_timeout_ms, g.lock_timeout_ms, read_only=read_only
            ) as conn:
                return action.preview(
                    conn, playbook.action.parsed_settings, dict(params), g.limits()
                ), ""
        except BotError as exc:
            return None, f"preview failed: {exc}"

    def plan(self, issue_id: str, match: MatchResult, *, shadow_only: bool = False) -> PlanOutcome:
        """Journal a run for ``match`` on the tracked issue and act per its mode."""
        with guards.plan_lock(self.store, match.playbook.id):
            return self._plan(issue_id, match, shadow_only=shadow_only)

    def _plan(self, issue_id: str, match: MatchResult, *, shadow_only: bool) -> PlanOutcome:
        pb = match.playbook
        now = self.clock.now()
        with self.store.session() as session:
            issue = session.get(TrackedIssue, issue_id)
            if issue is None:
                raise BotError(f"issue {issue_id} is not tracked")
            mode = guards.effective_mode(pb, issue, shadow_only=shadow_only)
            out = PlanOutcome(issue.id, issue.short_id, pb.id, mode, "", params=dict(match.params))
            key_window = window_start(issue.last_seen, pb.guards.cooldown_minutes, now)
            key = idempotency_key(pb.id, issue_id, match.params, key_window)
            existing = find_run(session, key)
            if existing is not None:
                # Re-planning a journaled match (overlap re-read, a count bump in the same
                # window) must not move the issue: a watching issue would leave watching.
                out.run_id, out.status = existing.id, existing.status
                out.note = "already journaled for this window (no-op)"
                return out
            decision = (
                guards.check_guards(
                    session,
                    pb,
                    issue,
                    now,
                    hidden_debt_runs=self.hidden_debt_runs,
                    hidden_debt_hours=self.hidden_debt_hours,
                )
                if mode != "shadow"
                else guards.GuardDecision(True)
            )
            if not decision.allowed:
                out.status, out.note = RunStatus.BLOCKED.value, decision.reason
            if decision.escalate and issue.state == LifecycleState.ESCALATED.value:
                return out  # hidden debt already escalated: no new transition or message
            if (
                not decision.allowed
                and not decision.escalate
                and issue.state == LifecycleState.WATCHING.value
            ):
                # A remediated issue still firing inside its cooldown/cap stays on the
                # quiet clock; the refusal is in the cycle report, not the timeline.
                return out
            issue.playbook_id = pb.id
            record_transition(
                session,
                issue,
                LifecycleState.MATCHED,
                f"matched playbook {pb.id} (priority {pb.priority})",
                now,
            )
            if not decision.allowed:
                if decision.escalate:
                    record_transition(
                        session, issue, LifecycleState.ESCALATED, decision.reason, now
                    )
                    issue.escalated_at = now
                    self.on_event(
                        session, "hidden_debt", issue, None, pb, {"reason": decision.reason}
                    )
                return out
        failpoints.hit("after-match")
        preview, note = self.preview(pb, match.params)
        out.preview, out.note = preview, note
        if preview is None and mode != "shadow":
            # No preview, no run: the journal must record what a run intends before it
            # executes, and a missing/unreachable target is a configuration problem to
            # retry (the issue stays matched), not a failure to escalate or charge the
            # breaker with.
            out.status = RunStatus.BLOCKED.value
            return out
        status = _STATUS_BY_MODE[mode].value
        run = RemediationRun(
            id="",
            idempotency_key=key,
            playbook_id=pb.id,
            issue_id=issue_id,
            action=pb.action.type,
            target=pb.action.target,
            params=dict(match.params),
            mode=mode,
            status=status,
            preview={
                "summary": preview.summary if preview else note,
                "rows": preview.rows if preview else [],
            },
            created_at=now,
            expires_at=(
                now + timedelta(minutes=pb.guards.approval_ttl_minutes)
                if mode == "approval"
                else None
            ),
        )
        run, inserted = journal_run(
            self.store,
            run,
            lambda session, row: self.record_planned(session, row, pb, preview, now),
        )
        out.run_id = run.id
        if not inserted:
            out.status, out.note = run.status, "already journaled for this window (no-op)"
            return out
        failpoints.hit("after-journal")
        out.status = status
        if mode == "auto":
            done = self.execute_run(run.id)
            done.preview = preview  # the cycle report shows what was intended, too
            return done
        return out

    def record_planned(
        self,
        session: Session,
        run: RemediationRun,
        pb: Playbook,
        preview: Preview | None,
        now: datetime,
    ) -> None:
        """The issue's ``planned`` step, committed in the transaction that journals
        ``run`` (see :func:`~bot.pipeline.journal.journal_run`)."""
        issue = session.get(TrackedIssue, run.issue_id)
        assert issue is not None
        reason = planned_reason(run.id, run.mode, preview)
        record_transition(session, issue, LifecycleState.PLANNED, reason, now)
        if run.mode == "approval":
            self.on_event(session, "plan_awaiting_approval", issue, run, pb, {})
        if run.mode == "shadow":
            # Shadow logs the plan only; the issue is still tracked, its fix linked,
            # and it resolves after its quiet hours like any watched issue.
            record_transition(
                session,
                issue,
                LifecycleState.WATCHING,
                "shadow mode: nothing executed; watching for quiet hours",
                now,
            )
            issue.quiet_since = issue.last_seen or now


def planned_reason(run_id: str, mode: str, preview: Preview | None) -> str:
    """The timeline's words for an issue's ``planned`` step."""
    reason = f"run {run_id[:8]} journaled in {mode} mode"
    return reason + f": {preview.summary}" if preview is not None else reason
