"""Plan and execute remediations: journal first, one transaction, verify after.

``plan`` turns a match into a journaled run according to the mode: ``shadow`` records
the preview only, ``approval`` waits for ``sentry-bot approve RUN_ID`` (and expires),
``auto`` executes at once within the guardrails. ``execute_run`` claims the run with a
compare-and-set (``approved`` → ``running``), so two schedulers or two ``approve``
commands can never both execute it. A run found ``running`` after a crash is verified
against its journaled preview and marked ``interrupted``, never re-executed blindly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from bot import failpoints
from bot.actions.base import BatchedAction, Outcome, Preview
from bot.actions.registry import get_action
from bot.actions.target import TargetConnection, TargetDatabase
from bot.clock import Clock, ensure_utc
from bot.errors import BotError, RemediationError, RetryLater
from bot.pipeline import guards as guard_mod
from bot.pipeline.approvals import (
    Action,
    ApprovalOutcome,
    ApprovalService,
    Channel,
    approved_waiting,
)
from bot.pipeline.checks import CheckRunner, run_checks
from bot.pipeline.journal import (
    claim,
    find_run,
    idempotency_key,
    journal_run,
    reclaim_stale_running,
    stale_cutoff,
    window_start,
)
from bot.pipeline.track import record_transition
from bot.playbooks.matcher import MatchResult
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

log = logging.getLogger(__name__)

EXECUTED_OK = (RunStatus.SUCCEEDED.value, RunStatus.NOOP.value)
TargetResolver = Callable[[str], TargetDatabase | None]
# (session, kind, issue, run, playbook, extra): called inside the store transaction that
# records the state change, so a notification commits together with what it announces.
EventSink = Callable[
    [Session, str, TrackedIssue, RemediationRun | None, Playbook | None, dict[str, Any]], None
]


@dataclass
class PlanOutcome:
    """What happened to one matched issue in this cycle (for the cycle report)."""

    issue_id: str
    short_id: str
    playbook_id: str
    mode: str
    status: str
    run_id: str | None = None
    preview: Preview | None = None
    rows_affected: int | None = None
    verify: str | None = None
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def _no_events(*_args: Any) -> None:
    return None


class Executor:
    """Runs the plan → journal → execute → verify pipeline for one store."""

    def __init__(
        self,
        store: Store,
        playbooks: Mapping[str, Playbook],
        targets: TargetResolver,
        clock: Clock,
        *,
        on_event: EventSink = _no_events,
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

    # --- planning -------------------------------------------------------------------

    def preview(self, playbook: Playbook, params: Mapping[str, Any]) -> tuple[Preview | None, str]:
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
        pb = match.playbook
        now = self.clock.now()
        with self.store.session() as session:
            issue = session.get(TrackedIssue, issue_id)
            if issue is None:
                raise BotError(f"issue {issue_id} is not tracked")
            mode = guard_mod.effective_mode(pb, issue, shadow_only=shadow_only)
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
                guard_mod.check_guards(
                    session,
                    pb,
                    issue,
                    now,
                    hidden_debt_runs=self.hidden_debt_runs,
                    hidden_debt_hours=self.hidden_debt_hours,
                )
                if mode != "shadow"
                else guard_mod.GuardDecision(True)
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
        status = {
            "shadow": RunStatus.SHADOW,
            "approval": RunStatus.AWAITING_APPROVAL,
            "auto": RunStatus.APPROVED,
        }[mode].value
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
        run, inserted = journal_run(self.store, run)
        out.run_id = run.id
        if not inserted:
            out.status, out.note = run.status, "already journaled for this window (no-op)"
            return out
        failpoints.hit("after-journal")
        with self.store.session() as session:
            issue = session.get(TrackedIssue, issue_id)
            assert issue is not None
            reason = f"run {run.id[:8]} journaled in {mode} mode"
            if preview is not None:
                reason += f": {preview.summary}"
            record_transition(session, issue, LifecycleState.PLANNED, reason, now)
            if mode == "approval":
                self.on_event(session, "plan_awaiting_approval", issue, run, pb, {})
            if mode == "shadow":
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
        out.status = status
        if mode == "auto":
            done = self.execute_run(run.id)
            done.preview = preview  # the cycle report shows what was intended, too
            return done
        return out

    # --- execution ------------------------------------------------------------------

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
        now = self.clock.now()
        with self.store.session() as session:
            run = session.get(RemediationRun, run_id)
            if run is None:
                raise BotError(f"no run {run_id!r}")
            issue_short = session.get(TrackedIssue, run.issue_id)
        pb = self.playbooks.get(run.playbook_id)
        out = PlanOutcome(
            run.issue_id,
            issue_short.short_id if issue_short else run.issue_id,
            run.playbook_id,
            run.mode,
            run.status,
            run_id=run.id,
            params=dict(run.params),
        )
        if pb is None:
            out.note = f"playbook {run.playbook_id} is no longer loaded"
            return out
        if not claim(self.store, run_id, RunStatus.APPROVED.value, RunStatus.RUNNING.value, now):
            out.note = "another worker claimed this run (no-op)"
            return out
        self._transition(
            run.issue_id, LifecycleState.REMEDIATING, f"run {run_id[:8]} executing {pb.action.type}"
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
            row = session.get(RemediationRun, run_id)
            assert row is not None
            row.status, row.rows_affected = status.value, outcome.rows_affected
            row.before_image = {"rows": outcome.before_image, "details": outcome.details}
            row.finished_at = self.clock.now()
        failpoints.hit("after-succeeded")
        out.status, out.rows_affected = status.value, outcome.rows_affected
        if pb.verify.delay_seconds:
            # Give the system a moment to settle (e.g. a terminated backend to exit, a
            # worker to pick a requeued task) before checking the remedy took effect.
            self.clock.sleep(pb.verify.delay_seconds)
        return self._verify(out, run_id, pb, outcome)

    def _verify(self, out: PlanOutcome, run_id: str, pb: Playbook, outcome: Outcome) -> PlanOutcome:
        action = get_action(pb.action.type)
        g = pb.guards
        failpoints.hit("before-verify")
        try:
            target = self.targets(pb.action.target or "") if action.needs_target else None
            if target is None:
                result = action.verify(None, pb.action.parsed_settings, out.params, outcome)
            else:
                with target.transaction(
                    g.statement_timeout_ms, g.lock_timeout_ms, read_only=True
                ) as conn:
                    result = action.verify(conn, pb.action.parsed_settings, out.params, outcome)
            ok, summary, details = result.ok, result.summary, result.details
        except BotError as exc:
            ok, summary, details = False, f"verification could not run: {exc}", {}
        if pb.verify.checks:
            ok, summary, details = self._checks(pb, out.params, ok, summary, details)
        now = self.clock.now()
        with self.store.session() as session:
            row = session.get(RemediationRun, run_id)
            issue = session.get(TrackedIssue, out.issue_id)
            assert row is not None and issue is not None
            row.verify = {"ok": ok, "summary": summary, "details": details}
            opened = guard_mod.record_verification(session, pb, ok, now)
            if ok:
                record_transition(
                    session,
                    issue,
                    LifecycleState.REMEDIATED,
                    f"run {run_id[:8]} changed {out.rows_affected} rows; verified: {summary}",
                    now,
                )
                record_transition(
                    session, issue, LifecycleState.WATCHING, "watching for quiet hours", now
                )
                issue.quiet_since = ensure_utc(issue.last_seen) if issue.last_seen else now
                # A re-run that found nothing to change is not news for the channel; the
                # first run is (for notify_only, it is the one message saying "tracked").
                earlier = session.exec(
                    select(RemediationRun.id).where(
                        RemediationRun.issue_id == issue.id,
                        RemediationRun.id != run_id,
                        col(RemediationRun.status).in_(EXECUTED_OK),
                    )
                ).first()
                if row.rows_affected or earlier is None:
                    self.on_event(session, "remediated", issue, row, pb, {"verify": summary})
            else:
                row.status = RunStatus.VERIFY_FAILED.value
                out.status = row.status
                record_transition(
                    session,
                    issue,
                    LifecycleState.FAILED,
                    f"run {run_id[:8]} verification failed: {summary}",
                    now,
                )
                record_transition(
                    session,
                    issue,
                    LifecycleState.ESCALATED,
                    "remedy did not take effect; a human must look",
                    now,
                )
                issue.escalated_at = now
                self.on_event(
                    session, "failed", issue, row, pb, {"verify": summary, "breaker_opened": opened}
                )
        failpoints.hit("after-verify")
        out.verify = summary
        return out

    def _checks(
        self,
        pb: Playbook,
        params: Mapping[str, Any],
        ok: bool,
        summary: str,
        details: dict[str, Any],
    ) -> tuple[bool, str, dict[str, Any]]:
        """Run the playbook's ``verify.checks`` (all of them, every sample journaled); any
        failed check fails the verification, and the summary carries the observed values."""
        target = self.targets(pb.action.target or "")
        if target is None:
            return False, f"{summary}; checks could not run: no target", details
        g = pb.guards
        runner = CheckRunner(target, self.clock, g.statement_timeout_ms, g.lock_timeout_ms)
        results = run_checks(runner, pb.verify.checks, params)
        details = {**details, "checks": [r.to_json() for r in results]}
        failed = [r for r in results if not r.ok]
        if failed:
            return False, "; ".join(r.summary for r in failed) + f" (remedy: {summary})", details
        return ok, f"{summary}; {len(results)} checks ok", details

    def _failed(self, out: PlanOutcome, run_id: str, pb: Playbook, error: str) -> PlanOutcome:
        now = self.clock.now()
        with self.store.session() as session:
            row = session.get(RemediationRun, run_id)
            issue = session.get(TrackedIssue, out.issue_id)
            assert row is not None and issue is not None
            row.status, row.error, row.finished_at = RunStatus.FAILED.value, error[:4000], now
            row.rows_affected = 0
            opened = guard_mod.record_verification(session, pb, False, now)
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
        recovery can ask the target whether the run committed (see ``_target_verdict``)."""
        if conn.dialect.name != "postgresql":
            return
        rows = conn.fetch_all("SELECT txid_current()::text AS xid")
        with self.store.session() as session:
            row = session.get(RemediationRun, run_id)
            if row is not None:
                row.target_xid = str(rows[0]["xid"])

    def _transition(self, issue_id: str, state: LifecycleState, reason: str) -> None:
        with self.store.session() as session:
            issue = session.get(TrackedIssue, issue_id)
            if issue is not None:
                record_transition(session, issue, state, reason, self.clock.now())

    # --- housekeeping ---------------------------------------------------------------

    def expire_approvals(self) -> int:
        """Mark approval requests past their TTL as expired.

        The issue leaves ``planned`` for ``watching`` (its quiet clock runs): a new event
        starts a new idempotency window and plans it again, while an issue left
        ``planned`` would be re-matched every cycle into the same expired run.
        """
        now = self.clock.now()
        count = 0
        with self.store.session() as session:
            rows = session.exec(
                select(RemediationRun).where(
                    RemediationRun.status == RunStatus.AWAITING_APPROVAL.value,
                    col(RemediationRun.expires_at) <= now,
                )
            ).all()
            for row in rows:
                row.status = RunStatus.EXPIRED.value
                count += 1
                issue = session.get(TrackedIssue, row.issue_id)
                if issue is not None and issue.state == LifecycleState.PLANNED.value:
                    record_transition(
                        session,
                        issue,
                        LifecycleState.WATCHING,
                        f"approval of run {row.id[:8]} expired: nothing executed; watching "
                        "(a new event plans it again)",
                        now,
                    )
                    issue.quiet_since = issue.last_seen or now
        return count

    def recover_interrupted(self) -> list[str]:
        """Finish what a crash left half done; return the ids of the runs it touched.

        Every non-terminal run older than its statement timeout plus a margin (so a live
        executor in another process is never disturbed) is brought to a terminal state:

        - ``approved``, never claimed: nothing ran; it is executed now (the claim is a
          compare-and-set, so two recovering replicas cannot both run it);
        - ``running`` on PostgreSQL: the target is asked whether the journaled target
          transaction committed (``txid_status``). Committed: marked ``interrupted`` and
          verified against its journaled preview. Rolled back, or never started: handed
          back to ``approved`` (compare-and-set on its start time) and executed again;
        - ``running`` elsewhere (no transaction id to ask about): ``interrupted`` and
          verified against the journaled preview, never re-executed blindly;
        - ``succeeded``/``noop`` but never verified (the issue still ``remediating``):
          verified now, and announced with the verification like any run.
        """
        now = self.clock.now()
        recovered: list[str] = []
        left_behind = (RunStatus.RUNNING.value, RunStatus.APPROVED.value)
        with self.store.session() as session:
            rows = list(
                session.exec(
                    select(RemediationRun).where(col(RemediationRun.status).in_(left_behind))
                ).all()
            )
            unverified = [
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
            for r in rows + unverified:
                session.expunge(r)
        for row in sorted(rows + unverified, key=lambda r: (r.created_at is None, r.created_at)):
            pb = self.playbooks.get(row.playbook_id)
            timeout = pb.guards.statement_timeout_ms if pb else 60_000
            if row.status in EXECUTED_OK:
                since = row.finished_at
                timeout += 1000 * (pb.verify.delay_seconds if pb else 0)
            elif row.status == RunStatus.RUNNING.value:
                since = row.started_at
            else:
                since = row.approved_at or row.created_at
            if since is None or ensure_utc(since) > stale_cutoff(now, timeout):
                continue  # may still be executing (or waiting to verify) in another process
            if pb is None:
                continue  # its playbook is not loaded: leave it for when it is
            try:
                if self._recover_one(row, pb, now):
                    recovered.append(row.id)
            except BotError as exc:
                log.warning("recovering run %s failed: %s", row.id[:8], exc)
        return recovered

    def _recover_one(self, row: RemediationRun, pb: Playbook, now: datetime) -> bool:
        if row.status == RunStatus.APPROVED.value:
            self.execute_run(row.id)  # claims approved -> running itself
            return True
        if row.status in EXECUTED_OK:
            out = self._outcome_of(row, pb)
            self._verify(out, row.id, pb, _executed_outcome(row))
            return True
        verdict = self._target_verdict(row, pb)
        if verdict == "in progress":
            return False  # its transaction is still open on the target: not ours yet
        if verdict == "not committed":
            # Nothing of it reached the target: run it again, exactly once (the CAS on
            # its start time loses to any replica that re-claimed it meanwhile).
            if row.started_at is None or not reclaim_stale_running(
                self.store, row.id, row.started_at
            ):
                return False
            self._transition(
                row.issue_id,
                LifecycleState.REMEDIATING,
                f"run {row.id[:8]} was interrupted before its target transaction committed; "
                "executing it again",
            )
            self.execute_run(row.id)
            return True
        if not claim(self.store, row.id, row.status, RunStatus.INTERRUPTED.value, now):
            return False
        out = self._outcome_of(row, pb)
        out.rows_affected = len(_journaled_outcome(pb, row).before_image)
        committed = verdict == "committed"
        self._verify(out, row.id, pb, _journaled_outcome(pb, row))
        with self.store.session() as session:
            again = session.get(RemediationRun, row.id)
            if again is not None:
                again.status = RunStatus.INTERRUPTED.value
                if committed:
                    again.rows_affected = out.rows_affected
                again.error = (
                    "process died while running"
                    + ("; its target transaction committed" if committed else "")
                    + f"; outcome verified against the journaled preview: {out.verify}"
                )
        return True

    def _outcome_of(self, row: RemediationRun, pb: Playbook) -> PlanOutcome:
        with self.store.session() as session:
            issue = session.get(TrackedIssue, row.issue_id)
            short = issue.short_id if issue is not None else row.issue_id
        return PlanOutcome(
            row.issue_id,
            short,
            pb.id,
            row.mode,
            row.status,
            run_id=row.id,
            params=dict(row.params),
            rows_affected=row.rows_affected,
        )

    def _target_verdict(self, row: RemediationRun, pb: Playbook) -> str:
        """Did the interrupted run's target transaction commit?

        ``committed`` / ``not committed`` / ``in progress`` when the target can tell
        (PostgreSQL, ``txid_status`` of the journaled transaction id; no id journaled
        means the action never started), ``unknown`` otherwise.
        """
        action = get_action(pb.action.type)
        if isinstance(action, BatchedAction):
            return "unknown"  # many short transactions, no single id to ask about
        target = self.targets(pb.action.target or "") if action.needs_target else None
        if target is None:
            return "unknown"
        g = pb.guards
        with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms, read_only=True) as conn:
            if conn.dialect.name != "postgresql":
                return "unknown"
            if row.target_xid is None:
                return "not committed"
            found = conn.fetch_all(
                "SELECT txid_status(%(xid)s::bigint) AS status", {"xid": row.target_xid}
            )
        status = found[0]["status"] if found else None
        if status == "committed":
            return "committed"
        if status == "aborted":
            return "not committed"
        if status == "in progress":
            return "in progress"
        return "unknown"  # too old for the commit log: verify, never re-run


def _executed_outcome(run: RemediationRun) -> Outcome:
    """A finished run's outcome as journaled when it was marked succeeded/noop."""
    image = run.before_image or {}
    rows = image.get("rows") or []
    details = image.get("details") or {}
    return Outcome(
        rows_affected=run.rows_affected or 0,
        before_image=list(rows) if isinstance(rows, list) else [],
        details=dict(details) if isinstance(details, dict) else {},
    )


def _journaled_outcome(pb: Playbook, run: RemediationRun) -> Outcome:
    """What an interrupted run intended (its journaled preview) in the shape the action's
    ``verify`` reads: the row ids (``ids``) or backend pids (``pids``) it meant to change.
    Without them every verify would answer "nothing was changed" and pass vacuously."""
    rows = [r for r in run.preview.get("rows", []) if isinstance(r, dict)]
    id_column = str(getattr(pb.action.parsed_settings, "id_column", "id"))
    ids = [r.get(id_column, r.get("id")) for r in rows]
    return Outcome(
        rows_affected=len(rows),
        before_image=rows,
        details={
            "ids": [i for i in ids if i is not None],
            "pids": [r["pid"] for r in rows if "pid" in r],
        },
    )
