"""Verify a run: did the remedy take effect? Journal the verdict, escalate when not.

The action's own ``verify`` answers "did the rows I changed stop matching the problem?"
on a ``READ ONLY`` transaction; the playbook's ``verify.checks`` (see
:mod:`bot.pipeline.checks`) then ask the runbook's own questions. One failed check fails
the verification. The verdict is journaled on the run, counted by the playbook's circuit
breaker, and moves the issue: ``remediated`` → ``watching`` (its quiet clock runs) when
it held, ``failed`` → ``escalated`` (``verify_failed``, a human must look) when not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from bot import failpoints
from bot.actions.base import Outcome, ParamValue
from bot.actions.registry import get_action
from bot.clock import Clock, ensure_utc
from bot.errors import BotError
from bot.pipeline import guards
from bot.pipeline.checks import CheckRunner, run_checks
from bot.pipeline.journal import EXECUTED_OK
from bot.pipeline.ports import EventSink, PlanOutcome, TargetResolver
from bot.pipeline.track import TransitionRecorder, record_transition
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

# An event to announce: its kind and facts (see :class:`~bot.pipeline.ports.EventSink`).
News = tuple[str, dict[str, object]]


@dataclass(frozen=True)
class Verdict:
    """A verification's answer, as journaled in the run's ``verify`` column."""

    ok: bool
    summary: str
    details: dict[str, object] = field(default_factory=dict)


class Verifier:
    """The verify stage: judge a finished run, journal the verdict, move the issue."""

    def __init__(
        self, store: Store, targets: TargetResolver, clock: Clock, on_event: EventSink
    ) -> None:
        self.store = store
        self.targets = targets
        self.clock = clock
        self.on_event = on_event

    def verify(self, out: PlanOutcome, run_id: str, pb: Playbook, outcome: Outcome) -> PlanOutcome:
        """Verify ``outcome`` of run ``run_id`` and return ``out`` with the verdict
        (``status`` becomes ``verify_failed`` when the remedy did not take effect)."""
        failpoints.hit("before-verify")
        verdict = self.judge(pb, out.params, outcome)
        now = self.clock.now()
        with self.store.session() as session:
            row = session.get(RemediationRun, run_id)
            issue = session.get(TrackedIssue, out.issue_id)
            assert row is not None and issue is not None
            opened = guards.record_verification(session, pb, verdict.ok, now)
            news = self.journal_verdict(session, out, row, issue, pb, verdict, now, opened=opened)
            if news is not None:
                self.on_event(session, news[0], issue, row, pb, news[1])
        failpoints.hit("after-verify")
        return out

    def judge(self, pb: Playbook, params: dict[str, ParamValue], outcome: Outcome) -> Verdict:
        """The verdict on ``outcome``: the action's verify, then the playbook's checks."""
        verdict = self._action_verdict(pb, params, outcome)
        if pb.verify.checks:
            verdict = self._checks(pb, params, verdict)
        return verdict

    def journal_verdict(
        self,
        session: Session,
        out: PlanOutcome,
        row: RemediationRun,
        issue: TrackedIssue,
        pb: Playbook,
        verdict: Verdict,
        now: datetime,
        *,
        opened: bool,
        record: TransitionRecorder = record_transition,
    ) -> News | None:
        """Journal ``verdict`` on ``row`` in the caller's transaction (which counted it
        for the breaker: ``opened`` says this failure opened it) and move the issue
        (watching, or failed → escalated) through ``record``. Returns the event to
        announce (kind and facts; the caller tells its sink), None when it is not news.
        Sets ``out.status`` (``verify_failed``) and ``out.verify``."""
        ok, summary = verdict.ok, verdict.summary
        run_id = row.id
        row.verify = {"ok": ok, "summary": summary, "details": verdict.details}
        out.verify = summary
        if ok:
            record(
                session,
                issue,
                LifecycleState.REMEDIATED,
                f"run {run_id[:8]} changed {out.rows_affected} rows; verified: {summary}",
                now,
            )
            record(session, issue, LifecycleState.WATCHING, "watching for quiet hours", now)
            issue.quiet_since = ensure_utc(issue.last_seen) if issue.last_seen else now
            # A re-run that found nothing to change is not news for the channel; the
            # first run is (for notify_only, it is the one message saying "tracked").
            if row.rows_affected or not _ran_before(session, issue.id, run_id):
                return "remediated", {"verify": summary}
            return None
        row.status = RunStatus.VERIFY_FAILED.value
        out.status = row.status
        record(
            session,
            issue,
            LifecycleState.FAILED,
            f"run {run_id[:8]} verification failed: {summary}",
            now,
        )
        record(
            session,
            issue,
            LifecycleState.ESCALATED,
            "remedy did not take effect; a human must look",
            now,
        )
        issue.escalated_at = now
        return "failed", {"verify": summary, "breaker_opened": opened}

    def _action_verdict(
        self, pb: Playbook, params: dict[str, ParamValue], outcome: Outcome
    ) -> Verdict:
        """The action's built-in verify, read-only on the target; an error is a failed
        verification ("could not run"), never an exception."""
        action = get_action(pb.action.type)
        g = pb.guards
        try:
            target = self.targets(pb.action.target or "") if action.needs_target else None
            if target is None:
                result = action.verify(None, pb.action.parsed_settings, params, outcome)
            else:
                with target.transaction(
                    g.statement_timeout_ms, g.lock_timeout_ms, read_only=True
                ) as conn:
                    result = action.verify(conn, pb.action.parsed_settings, params, outcome)
        except BotError as exc:
            return Verdict(False, f"verification could not run: {exc}")
        return Verdict(result.ok, result.summary, result.details)

    def _checks(self, pb: Playbook, params: Mapping[str, ParamValue], verdict: Verdict) -> Verdict:
        """Run the playbook's ``verify.checks`` (all of them, every sample journaled); any
        failed check fails the verification, and the summary carries the observed values."""
        target = self.targets(pb.action.target or "")
        if target is None:
            return Verdict(
                False, f"{verdict.summary}; checks could not run: no target", verdict.details
            )
        g = pb.guards
        runner = CheckRunner(target, self.clock, g.statement_timeout_ms, g.lock_timeout_ms)
        results = run_checks(runner, pb.verify.checks, params)
        details = {**verdict.details, "checks": [r.to_json() for r in results]}
        failed = [r for r in results if not r.ok]
        if failed:
            summary = "; ".join(r.summary for r in failed) + f" (remedy: {verdict.summary})"
            return Verdict(False, summary, details)
        return Verdict(verdict.ok, f"{verdict.summary}; {len(results)} checks ok", details)


def _ran_before(session: Session, issue_id: str, run_id: str) -> bool:
    """Did another run of the issue execute successfully before ``run_id``?"""
    earlier = session.exec(
        select(RemediationRun.id).where(
            RemediationRun.issue_id == issue_id,
            RemediationRun.id != run_id,
            col(RemediationRun.status).in_(EXECUTED_OK),
        )
    ).first()
    return earlier is not None
