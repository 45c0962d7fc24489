"""The cycle's side steps: fix-link scan, PR comments, and the outbox flush.

Each returns a one-line summary (for ``cycle`` output and the scheduler's logs) and
never raises for a transient failure of its external system: "try again later"
ends the step early, keeping what was done.
"""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from bot.codehost.fixlinks import (
    PrCommentFacts,
    best_fix_commit,
    render_pr_comment,
    scan_fix_links,
    sync_pr_comments,
)
from bot.errors import RetryLater
from bot.pipeline.flags import FlagReverter, RevertReport
from bot.pipeline.lifecycle import QuietChecker
from bot.pipeline.outbox import OutboxFlusher
from bot.pipeline.parts import CycleParts, DeliveryParts
from bot.store.models import FixLink, LifecycleState, RemediationRun, TrackedIssue

log = logging.getLogger(__name__)

# Issues worth a fix-link search: the bot is involved or watching them.
_LINKABLE = [
    LifecycleState.MATCHED,
    LifecycleState.PLANNED,
    LifecycleState.REMEDIATED,
    LifecycleState.WATCHING,
    LifecycleState.ESCALATED,
    LifecycleState.FAILED,
    LifecycleState.REGRESSED,
    LifecycleState.RESOLVED,
]
SCAN_BATCH = 10  # issues per step: 2 searches each per repo, GitHub allows 30/min


def pr_comment_facts(session: Session, issue: TrackedIssue) -> PrCommentFacts:
    runs = session.exec(
        select(RemediationRun).where(
            RemediationRun.issue_id == issue.id,
            col(RemediationRun.status).in_(["succeeded", "noop", "interrupted"]),
        )
    ).all()
    # ``requires_approval`` is set only by a regression and cleared when a human approves
    # the next run; in between the issue moves on (escalated → matched → planned in the
    # same cycle), and the PR must keep saying "regressed" through all of those states.
    regressed = issue.state == LifecycleState.REGRESSED.value or issue.requires_approval
    return PrCommentFacts(
        short_id=issue.short_id,
        title=issue.title,
        permalink=issue.permalink,
        state=issue.state,
        playbook_id=issue.playbook_id,
        runs=len(runs),
        rows_changed=sum(r.rows_affected or 0 for r in runs),
        last_seen=issue.last_seen,
        quiet_since=issue.quiet_since,
        resolved_at=issue.resolved_at if issue.state == LifecycleState.RESOLVED.value else None,
        resolved_in_commit=issue.resolved_in_commit,
        regressed_at=issue.escalated_at if regressed else None,
        severity=issue.severity,
        category=issue.category,
        team=issue.team,
        response_due_at=issue.response_due_at,
    )


def fixlinks_step(parts: DeliveryParts) -> str:
    """Search GitHub for fixes of recent issues, then keep each PR's bot comment current."""
    codehost, store = parts.codehost, parts.store
    if codehost is None:
        return "fix links: GITHUB_TOKEN/GITHUB_REPOS not set, skipped"
    with store.session() as session:
        linked = select(FixLink.issue_id).where(FixLink.merged == True)  # noqa: E712
        issues = session.exec(
            select(TrackedIssue)
            .where(col(TrackedIssue.state).in_([s.value for s in _LINKABLE]))
            .where(col(TrackedIssue.id).not_in(linked))
            .order_by(col(TrackedIssue.updated_at).desc())
            .limit(SCAN_BATCH)
        ).all()
    found, commented, note = 0, 0, ""
    unavailable: list[str] = []
    try:
        found = len(
            scan_fix_links(
                store,
                codehost,
                list(parts.repos),
                list(issues),
                parts.clock,
                unavailable=unavailable,
            )
        )
        with store.session() as session:
            with_links = session.exec(
                select(TrackedIssue).where(
                    col(TrackedIssue.id).in_(select(FixLink.issue_id).where(FixLink.kind == "pr"))
                )
            ).all()
            bodies = [(i, render_pr_comment(pr_comment_facts(session, i))) for i in with_links]
        for issue, body in bodies:
            commented += sync_pr_comments(store, codehost, issue, body)
    except RetryLater as exc:
        note = f"; GitHub asked to retry later ({exc.retry_after or '?'} s)"
    if unavailable:
        note += f"; not searchable by this token (422), skipped: {', '.join(unavailable)}"
    return f"fix links: {found} new, {commented} PR comments written{note}"


def outbox_step(parts: DeliveryParts) -> str:
    """Deliver due notifications (Slack webhook, Sentry notes) with retries and backoff."""
    if not parts.senders:
        return "outbox: no channel configured"
    report = OutboxFlusher(parts.store, parts.senders, parts.clock).flush(limit=200)
    return f"outbox: {report.sent} sent, {report.retried} to retry, {report.dead} dead"


def lifecycle_step(parts: CycleParts) -> str:
    """Resolve watched issues after their quiet hours (see :mod:`bot.pipeline.lifecycle`)."""
    playbooks, store = parts.playbooks, parts.store
    if parts.replay:
        flags = revert_flags(parts)
        return f"lifecycle: replay source, no Sentry to resolve in; {flags.summary()}"
    sentry = parts.require_sentry()
    default = parts.quiet_hours

    def quiet_hours_for(playbook_id: str | None) -> float:
        pb = playbooks.get(playbook_id or "")
        return float(pb.resolve.quiet_hours) if pb else default

    def in_commit_for(playbook_id: str | None) -> bool:
        pb = playbooks.get(playbook_id or "")
        return pb.resolve.in_commit if pb else True

    checker = QuietChecker(
        store,
        sentry,
        parts.clock,
        default_quiet_hours=default,
        quiet_hours_for=quiet_hours_for,
        fix_commit_for=lambda issue_id: best_fix_commit(store, issue_id),
        in_commit_for=in_commit_for,
        on_event=parts.emit,
    )
    report = checker.check()
    # After resolving: a set_flag mitigation whose issue just resolved goes back now.
    flags = revert_flags(parts)
    return (
        f"lifecycle: {report.watched} watched, {report.due} due, {report.resolved} resolved "
        f"({report.resolved_in_commit} in commit), {report.restarted} quiet clocks restarted, "
        f"{report.requests} Sentry requests"
        + (f"; stopped: {report.stopped}" if report.stopped else "")
        + f"; {flags.summary()}"
    )


def revert_flags(parts: CycleParts) -> RevertReport:
    """Revert the set_flag mitigations that are due (see :mod:`bot.pipeline.flags`)."""
    return FlagReverter(parts.store, parts.playbooks, parts.targets, parts.clock).sweep()
