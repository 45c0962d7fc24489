"""Post-incident report, the facts: what the store knows about an issue or incident.

``collect_report_facts(session, key)`` reads the tracked issue, transitions, remediation
runs, fix links, approvals and incident members into :class:`ReportFacts`, plain frozen
data that :func:`bot.triage.report.render_report` turns into Markdown. Nothing here
escapes text: the renderer treats every string as untrusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlmodel import Session, col, or_, select

from bot.clock import ensure_utc
from bot.json_types import JsonObject
from bot.store.models import (
    ApprovalDecision,
    FixLink,
    Incident,
    RemediationRun,
    TrackedIssue,
    Transition,
)
from bot.triage.models import TriageResult

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class IssueFacts:
    id: str
    short_id: str
    title: str
    culprit: str | None = None
    project: str = ""
    environment: str | None = None
    level: str = "error"
    permalink: str = ""
    count: int = 0
    user_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    state: str = "new"
    severity: str | None = None
    category: str | None = None
    team: str | None = None


@dataclass(frozen=True)
class TransitionFact:
    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    issue: str = ""  # short id, shown when the report covers several issues


@dataclass(frozen=True)
class RunFact:
    id: str
    playbook: str
    mode: str
    status: str
    rows: int | None
    verify: str  # one-line summary: "ok: 0 stuck tasks remain"
    started: datetime | None
    finished: datetime | None
    error: str | None = None
    issue: str = ""
    # verify.checks as journaled: {name, ok, expectation, samples: [{at, value}], error}
    checks: tuple[JsonObject, ...] = ()


@dataclass(frozen=True)
class FixFact:
    repo: str
    kind: str  # "pr" | "commit"
    ref: str
    url: str = ""
    title: str = ""
    merged: bool = False
    found_at: datetime | None = None


@dataclass(frozen=True)
class ApprovalFact:
    """One approve / deny attempt: who, when, from where, what came of it."""

    at: datetime
    run: str
    action: str
    outcome: str
    actor: str
    channel: str


@dataclass(frozen=True)
class ReportFacts:
    issue: IssueFacts
    triage: TriageResult | None = None
    transitions: tuple[TransitionFact, ...] = ()
    runs: tuple[RunFact, ...] = ()
    fixes: tuple[FixFact, ...] = ()
    resolved_at: datetime | None = None
    quiet_hours: float = 48
    incident_id: str | None = None
    incident_title: str | None = None
    members: tuple[IssueFacts, ...] = field(default_factory=tuple)  # other related issues
    approvals: tuple[ApprovalFact, ...] = ()


def verify_summary(verify: JsonObject) -> str:
    """A one-line summary of a run's stored verification dict."""
    if not verify:
        return "not verified"
    ok = verify.get("ok", verify.get("passed"))
    detail = verify.get("summary") or verify.get("detail") or ""
    head = "ok" if ok is True else "FAILED" if ok is False else "recorded"
    return f"{head}: {detail}" if detail else head


# ---------------------------------------------------------------- reading the store


def _issue_facts(row: TrackedIssue) -> IssueFacts:
    return IssueFacts(
        id=row.id,
        short_id=row.short_id,
        title=row.title,
        culprit=row.culprit,
        project=row.project,
        environment=row.environment,
        level=row.level,
        permalink=row.permalink,
        count=row.count,
        user_count=row.user_count,
        first_seen=ensure_utc(row.first_seen) if row.first_seen else None,
        last_seen=ensure_utc(row.last_seen) if row.last_seen else None,
        state=row.state,
        severity=row.severity,
        category=row.category,
        team=row.team,
    )


def _triage_of(row: TrackedIssue) -> TriageResult | None:
    if not row.triage:
        return None
    try:
        return TriageResult.model_validate(row.triage)
    except ValidationError:
        return None  # written by an older bot: fall back to the severity/category columns


def _find(session: Session, key: str) -> tuple[list[TrackedIssue], Incident | None]:
    row = session.get(TrackedIssue, key)
    if row is None:
        row = session.exec(
            select(TrackedIssue).where(col(TrackedIssue.short_id) == key.upper())
        ).first()
    incident = session.get(Incident, key) if row is None else None
    if row is not None and row.incident_id:
        incident = session.get(Incident, row.incident_id)
    if incident is None:
        return ([row] if row else []), None
    members = list(
        session.exec(select(TrackedIssue).where(col(TrackedIssue.incident_id) == incident.id)).all()
    )
    if row is not None and row not in members:
        members.append(row)
    return members, incident


def collect_report_facts(
    session: Session, key: str, *, quiet_hours: float = 48
) -> ReportFacts | None:
    """Everything the report needs for an issue id, short id or incident id; None if unknown.

    For an incident (or an issue in one) the main issue is the one requested, else the
    most severe member; the timeline and runs cover every member.
    """
    members, incident = _find(session, key)
    if not members:
        return None
    rank = {"critical": 3, "high": 2, "medium": 1, "low": 0}
    requested = [m for m in members if key in (m.id, m.short_id, m.short_id.lower())]
    main = (
        requested[0]
        if requested
        else max(members, key=lambda m: (rank.get(m.severity or "", -1), m.user_count, m.id))
    )
    ids = [m.id for m in members]
    short = {m.id: m.short_id for m in members}
    transitions = session.exec(
        select(Transition).where(or_(*(col(Transition.issue_id) == i for i in ids)))
    ).all()
    runs = session.exec(select(RemediationRun).where(col(RemediationRun.issue_id).in_(ids))).all()
    fixes = session.exec(select(FixLink).where(col(FixLink.issue_id).in_(ids))).all()
    approvals = session.exec(
        select(ApprovalDecision)
        .where(col(ApprovalDecision.issue_id).in_(ids))
        .order_by(col(ApprovalDecision.at), col(ApprovalDecision.id))
    ).all()
    return ReportFacts(
        issue=_issue_facts(main),
        triage=_triage_of(main),
        transitions=tuple(
            sorted(
                (
                    TransitionFact(
                        at=ensure_utc(t.at) if t.at else _EPOCH,
                        from_state=t.from_state,
                        to_state=t.to_state,
                        reason=t.reason,
                        issue=short[t.issue_id],
                    )
                    for t in transitions
                ),
                key=lambda t: (t.at, t.issue),
            )
        ),
        runs=tuple(
            RunFact(
                id=r.id,
                playbook=r.playbook_id,
                mode=r.mode,
                status=r.status,
                rows=r.rows_affected,
                verify=verify_summary(r.verify),
                started=ensure_utc(r.started_at) if r.started_at else None,
                finished=ensure_utc(r.finished_at) if r.finished_at else None,
                error=r.error,
                issue=short[r.issue_id],
                checks=tuple(
                    c
                    for c in ((r.verify or {}).get("details") or {}).get("checks", [])
                    if isinstance(c, dict)
                ),
            )
            for r in sorted(
                runs, key=lambda r: (ensure_utc(r.created_at) if r.created_at else _EPOCH, r.id)
            )
        ),
        fixes=tuple(
            FixFact(
                repo=x.repo,
                kind=x.kind,
                ref=x.ref,
                url=x.url,
                title=x.title,
                merged=x.merged,
                found_at=ensure_utc(x.found_at) if x.found_at else None,
            )
            for x in sorted(
                fixes, key=lambda x: (ensure_utc(x.found_at) if x.found_at else _EPOCH, x.id or 0)
            )
        ),
        resolved_at=ensure_utc(main.resolved_at) if main.resolved_at else None,
        quiet_hours=quiet_hours,
        incident_id=incident.id if incident else None,
        incident_title=incident.title if incident else None,
        members=tuple(
            _issue_facts(m) for m in sorted(members, key=lambda m: m.id) if m is not main
        ),
        approvals=tuple(
            ApprovalFact(
                at=ensure_utc(a.at) if a.at else _EPOCH,
                run=a.run_id,
                action=a.action,
                outcome=a.outcome,
                actor=a.actor,
                channel=a.channel,
            )
            for a in approvals
        ),
    )
