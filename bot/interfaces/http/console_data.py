"""Store reads behind the console pages (plain data for the templates; no SQL in views)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, func, select

from bot.pipeline.approvals import decisions
from bot.pipeline.guards import PAUSE_KEY, is_paused
from bot.pipeline.outbox import dead_letters
from bot.store.models import (
    ApprovalDecision,
    FixLink,
    OutboxMessage,
    RemediationRun,
    RunStatus,
    Setting,
    TrackedIssue,
    Transition,
)
from bot.triage.report import collect_report_facts, render_report

FILTERS = ("state", "team", "severity", "playbook")
LIST_LIMIT = 500
PREVIEW_ROWS = 20


@dataclass
class IssueList:
    issues: list[TrackedIssue]
    options: dict[str, list[str]]
    chosen: dict[str, str]
    total: int


def _distinct(session: Session, column: Mapped[str | None]) -> list[str]:
    rows = session.exec(select(column).where(column.is_not(None)).distinct()).all()
    return sorted(str(r) for r in rows if r)


def list_issues(session: Session, chosen: dict[str, str]) -> IssueList:
    """Tracked issues, most recent first, narrowed by the chosen filters (exact match)."""
    columns = {
        "state": col(TrackedIssue.state),
        "team": col(TrackedIssue.team),
        "severity": col(TrackedIssue.severity),
        "playbook": col(TrackedIssue.playbook_id),
    }
    query = select(TrackedIssue)
    count = select(func.count()).select_from(TrackedIssue)
    for name, value in chosen.items():
        if value and name in columns:
            query = query.where(columns[name] == value)
            count = count.where(columns[name] == value)
    rows = session.exec(
        query.order_by(col(TrackedIssue.last_seen).desc().nulls_last(), col(TrackedIssue.id)).limit(
            LIST_LIMIT
        )
    ).all()
    return IssueList(
        issues=list(rows),
        options={name: _distinct(session, column) for name, column in columns.items()},
        chosen=chosen,
        total=int(session.exec(count).one()),
    )


@dataclass
class IssueDetail:
    issue: TrackedIssue
    transitions: list[Transition]
    runs: list[RemediationRun]
    fixes: list[FixLink]
    decisions: list[ApprovalDecision]
    indicators: list[dict[str, object]]
    report: str
    triage: dict[str, object] = field(default_factory=dict)


def find_issue(session: Session, key: str) -> TrackedIssue | None:
    """By Sentry id or short id (case-insensitive)."""
    row = session.get(TrackedIssue, key)
    if row is None:
        row = session.exec(
            select(TrackedIssue).where(func.upper(TrackedIssue.short_id) == key.upper()[:128])
        ).first()
    return row


def issue_detail(session: Session, key: str, *, quiet_hours: float) -> IssueDetail | None:
    """Everything the issue page shows; None if the issue is not tracked."""
    row = find_issue(session, key)
    if row is None:
        return None
    transitions = session.exec(
        select(Transition)
        .where(Transition.issue_id == row.id)
        .order_by(col(Transition.at), col(Transition.id))
    ).all()
    runs = session.exec(
        select(RemediationRun)
        .where(RemediationRun.issue_id == row.id)
        .order_by(col(RemediationRun.created_at).desc(), col(RemediationRun.id))
    ).all()
    fixes = session.exec(select(FixLink).where(FixLink.issue_id == row.id)).all()
    facts = collect_report_facts(session, row.id, quiet_hours=quiet_hours)
    triage = dict(row.triage or {})
    raw_indicators = triage.get("indicators") or []
    indicators = [i for i in raw_indicators if isinstance(i, dict)]
    return IssueDetail(
        issue=row,
        transitions=list(transitions),
        runs=list(runs),
        fixes=list(fixes),
        decisions=decisions(session, [row.id]),
        indicators=indicators,
        report=render_report(facts) if facts is not None else "",
        triage={k: v for k, v in triage.items() if k != "indicators" and not isinstance(v, dict)},
    )


@dataclass
class Pending:
    run: RemediationRun
    issue: TrackedIssue | None


def pending_approvals(session: Session) -> list[Pending]:
    """Runs waiting for a human, oldest first, with their issue."""
    runs = session.exec(
        select(RemediationRun)
        .where(RemediationRun.status == RunStatus.AWAITING_APPROVAL.value)
        .order_by(col(RemediationRun.created_at), col(RemediationRun.id))
        .limit(200)
    ).all()
    return [Pending(r, session.get(TrackedIssue, r.issue_id)) for r in runs]


def pause_state(session: Session) -> tuple[str | None, Setting | None]:
    """(reason if paused, the setting row for its timestamp)."""
    return is_paused(session), session.get(Setting, PAUSE_KEY)


def outbox_dead(session: Session) -> list[OutboxMessage]:
    return dead_letters(session, limit=200)
