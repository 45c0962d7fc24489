"""Approvals: one service for every place a human says yes or no to a planned run.

The CLI (``sentry-bot approve``), the Slack buttons and the web console all go through
:meth:`ApprovalService.decide`, so the rules are the same everywhere:

- only someone on the allowlist (``BOT_APPROVERS``) may decide; an empty allowlist means
  nobody (fail closed). The CLI passes no allowlist: whoever holds the store's
  credentials on the operator's machine is trusted, as before;
- the decision is a compare-and-set on the run's status (``awaiting_approval`` →
  ``approved`` / ``denied``), so two clicks, two replicas or a click racing the CLI can
  never both win: the loser is told "already handled";
- a run past its ``expires_at`` becomes ``expired`` and is never executed;
- every attempt, refused ones included, is journaled in ``approval_decision`` (who, when,
  from which channel, what happened); the decisions that change the run are also on the
  issue's timeline and in its post-incident report.

Executing an approved run is the executor's job (:meth:`Executor.execute_run`, itself a
compare-and-set ``approved`` → ``running``); :func:`approved_waiting` lists the runs a
human approved that no process has started yet, for the leader to pick up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from bot.clock import Clock, ensure_utc
from bot.pipeline.journal import claim
from bot.pipeline.track import record_transition
from bot.store.db import Store
from bot.store.models import (
    ApprovalDecision,
    LifecycleState,
    RemediationRun,
    RunStatus,
    TrackedIssue,
)

ACTOR_LIMIT = 128


class Channel(StrEnum):
    """Where a decision came from (journaled, shown in the report)."""

    SLACK = "slack"
    CONSOLE = "console"
    CLI = "cli"


class Action(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class ApprovalOutcome(StrEnum):
    APPROVED = "approved"  # the run may execute now (not executed yet)
    DENIED = "denied"
    EXPIRED = "expired"
    ALREADY_HANDLED = "already_handled"
    NOT_FOUND = "not_found"
    NOT_AN_APPROVER = "not_an_approver"


@dataclass(frozen=True)
class Approvers:
    """The allowlist of people who may approve or deny. Empty means nobody."""

    ids: frozenset[str]

    @classmethod
    def parse(cls, values: Iterable[str]) -> Approvers:
        return cls(frozenset(v.strip() for v in values if v and v.strip()))

    def allows(self, actor: str) -> bool:
        return bool(actor) and actor in self.ids


@dataclass(frozen=True)
class ApprovalResult:
    """What a decision did. ``changed`` is True only for approved / denied."""

    outcome: ApprovalOutcome
    run_id: str
    message: str
    issue_id: str | None = None
    short_id: str | None = None
    run_status: str | None = None

    @property
    def changed(self) -> bool:
        return self.outcome in (ApprovalOutcome.APPROVED, ApprovalOutcome.DENIED)


class ApprovalService:
    """Decide on runs waiting for approval, with one set of rules for every channel."""

    def __init__(self, store: Store, clock: Clock, approvers: Approvers | None) -> None:
        # ``approvers=None`` is the trusted local CLI; every remote channel passes a list.
        self.store = store
        self.clock = clock
        self.approvers = approvers

    def decide(
        self,
        run_id: str,
        action: Action,
        actor: str,
        channel: Channel,
        *,
        reply_url: str | None = None,
    ) -> ApprovalResult:
        """Approve or deny ``run_id`` as ``actor`` from ``channel``; journal the attempt.

        Never raises for a refusal: the result says what happened and why.
        """
        actor = actor.strip()[:ACTOR_LIMIT]
        now = self.clock.now()
        short = run_id[:8]
        with self.store.session() as session:
            run = session.get(RemediationRun, run_id) if run_id else None
            issue = session.get(TrackedIssue, run.issue_id) if run is not None else None
            short_id = issue.short_id if issue is not None else None
            if run is None:
                result = ApprovalResult(
                    ApprovalOutcome.NOT_FOUND, run_id[:36], f"no run {run_id[:40]!r}"
                )
            elif self.approvers is not None and not self.approvers.allows(actor):
                result = ApprovalResult(
                    ApprovalOutcome.NOT_AN_APPROVER,
                    run_id,
                    f"{actor or 'this user'} is not allowed to {action.value} runs "
                    "(not listed in BOT_APPROVERS); nothing was changed",
                    run.issue_id,
                    short_id,
                    run.status,
                )
            elif run.status != RunStatus.AWAITING_APPROVAL.value:
                result = _already_handled(run, short_id)
            elif run.expires_at is not None and ensure_utc(run.expires_at) <= now:
                result = None  # expire below, by compare-and-set
            else:
                result = None
            if result is not None:
                _journal(session, result, action, actor, channel, now, reply_url)
                return result
            assert run is not None
            expired = run.expires_at is not None and ensure_utc(run.expires_at) <= now
        if expired:
            to_status = RunStatus.EXPIRED.value
        elif action is Action.APPROVE:
            to_status = RunStatus.APPROVED.value
        else:
            to_status = RunStatus.DENIED.value
        won = claim(self.store, run_id, RunStatus.AWAITING_APPROVAL.value, to_status, now)
        with self.store.session() as session:
            row = session.get(RemediationRun, run_id)
            issue = session.get(TrackedIssue, row.issue_id) if row is not None else None
            assert row is not None
            if not won:
                result = _already_handled(row, short_id)
            elif expired:
                result = ApprovalResult(
                    ApprovalOutcome.EXPIRED,
                    run_id,
                    f"run {short} expired; it will be planned again if still needed",
                    row.issue_id,
                    short_id,
                    row.status,
                )
            else:
                row.approved_by, row.approval_channel = actor, channel.value
                if action is Action.APPROVE:
                    # approved_at is set by the claim itself (see journal.claim).
                    outcome, verb = ApprovalOutcome.APPROVED, "approved"
                else:
                    row.approved_at, row.finished_at = now, now
                    outcome, verb = ApprovalOutcome.DENIED, "denied"
                result = ApprovalResult(
                    outcome,
                    run_id,
                    f"run {short} {verb} by {actor} via {channel.value}",
                    row.issue_id,
                    short_id,
                    row.status,
                )
                if issue is not None:
                    _on_issue(session, issue, action, result.message, now)
            _journal(session, result, action, actor, channel, now, reply_url)
        return result


def _already_handled(run: RemediationRun, short_id: str | None) -> ApprovalResult:
    by = f" by {run.approved_by} via {run.approval_channel}" if run.approved_by else ""
    return ApprovalResult(
        ApprovalOutcome.ALREADY_HANDLED,
        run.id,
        f"run {run.id[:8]} is {run.status}{by}, not awaiting approval (already handled)",
        run.issue_id,
        short_id,
        run.status,
    )


def _on_issue(
    session: Session, issue: TrackedIssue, action: Action, reason: str, now: datetime
) -> None:
    if action is Action.APPROVE:
        issue.requires_approval = False
        record_transition(session, issue, LifecycleState.APPROVED, reason, now)
        return
    # Denied: nothing runs; the issue is watched for quiet hours like a shadow plan, and a
    # later window may plan (and ask) again if it keeps firing.
    record_transition(
        session,
        issue,
        LifecycleState.WATCHING,
        f"{reason}: nothing executed; watching for quiet hours",
        now,
    )
    issue.quiet_since = issue.last_seen or now


def _journal(
    session: Session,
    result: ApprovalResult,
    action: Action,
    actor: str,
    channel: Channel,
    now: datetime,
    reply_url: str | None,
) -> None:
    session.add(
        ApprovalDecision(
            run_id=result.run_id[:36],
            issue_id=result.issue_id,
            action=action.value,
            outcome=result.outcome.value,
            actor=actor or "-",
            channel=channel.value,
            detail=result.message[:1000],
            reply_url=reply_url,
            at=now,
        )
    )


def decisions(session: Session, issue_ids: Iterable[str]) -> list[ApprovalDecision]:
    """Every journaled decision on these issues' runs, oldest first."""
    ids = list(issue_ids)
    if not ids:
        return []
    return list(
        session.exec(
            select(ApprovalDecision)
            .where(col(ApprovalDecision.issue_id).in_(ids))
            .order_by(col(ApprovalDecision.at), col(ApprovalDecision.id))
        )
    )


def reply_urls(session: Session, run_id: str) -> list[str]:
    """The Slack response URLs of the decisions that changed ``run_id`` (newest first)."""
    rows = session.exec(
        select(ApprovalDecision.reply_url)
        .where(
            ApprovalDecision.run_id == run_id,
            col(ApprovalDecision.outcome).in_(
                (ApprovalOutcome.APPROVED.value, ApprovalOutcome.DENIED.value)
            ),
            col(ApprovalDecision.reply_url).is_not(None),
        )
        .order_by(col(ApprovalDecision.id).desc())
    ).all()
    return [r for r in rows if r]


def approved_waiting(session: Session) -> list[str]:
    """Runs a human approved that no process has claimed yet (oldest first)."""
    return list(
        session.exec(
            select(RemediationRun.id)
            .where(
                RemediationRun.status == RunStatus.APPROVED.value,
                col(RemediationRun.approval_channel).is_not(None),
            )
            .order_by(col(RemediationRun.approved_at))
        )
    )


def expire_approvals(store: Store, now: datetime) -> int:
    """Mark approval requests past their TTL as expired; return how many.

    The issue leaves ``planned`` for ``watching`` (its quiet clock runs): a new event
    starts a new idempotency window and plans it again, while an issue left
    ``planned`` would be re-matched every cycle into the same expired run.
    """
    count = 0
    with store.session() as session:
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
