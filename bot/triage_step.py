"""The cycle's triage step: triage changed issues, group related ones into incidents.

Triage is recomputed whenever an issue changes (new events, users, status); the
result, with the indicators that decided it, is stored on the tracked issue so
notifications, PR comments, ``status`` and reports all show the same verdict.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session, col, select

from bot.clock import Clock
from bot.sentry.models import SentryIssue
from bot.store.models import Incident, TrackedIssue
from bot.triage import TriageConfig, triage
from bot.triage.incidents import Candidate, assign_incidents

log = logging.getLogger(__name__)

INCIDENT_HORIZON = timedelta(days=7)


def triage_issues(
    session: Session,
    issue_ids: list[str],
    config: TriageConfig,
    clock: Clock,
    *,
    regressed: frozenset[str] = frozenset(),
) -> int:
    """Triage ``issue_ids`` and store each verdict; return how many were triaged."""
    now = clock.now()
    done = 0
    for start in range(0, len(issue_ids), 500):
        chunk = issue_ids[start : start + 500]
        rows = session.exec(select(TrackedIssue).where(col(TrackedIssue.id).in_(chunk))).all()
        for row in rows:
            issue = SentryIssue.model_validate(row.raw)
            result = triage(
                issue, None, config, now, regression=True if row.id in regressed else None
            )
            row.severity = result.severity.value
            row.category = result.category.value
            row.team = result.team
            row.response_due_at = result.response_due_at
            row.triage = result.model_dump(mode="json")
            done += 1
    return done


def group_incidents(session: Session, clock: Clock) -> int:
    """Group recent related issues into incidents; return how many issues joined one."""
    since = clock.now() - INCIDENT_HORIZON
    rows = session.exec(select(TrackedIssue).where(col(TrackedIssue.first_seen) >= since)).all()
    if len(rows) < 2:
        return 0
    candidates = []
    for row in rows:
        issue = SentryIssue.model_validate(row.raw)
        candidates.append(Candidate.of(issue, issue.latest_event, None))
    existing = {r.id: r.incident_id for r in rows if r.incident_id}
    plan = assign_incidents(candidates, existing)
    by_id = {r.id: r for r in rows}
    severities = {r.id: r.severity for r in rows}
    for inc in plan.incidents:
        incident = session.get(Incident, inc.id)
        worst = _worst([severities.get(m) for m in inc.members])
        if incident is None:
            session.add(
                Incident(
                    id=inc.id,
                    group_key=inc.group_key[:512],
                    title=inc.title,
                    severity=worst,
                    opened_at=inc.opened_at or clock.now(),
                )
            )
        else:
            incident.severity = worst
    for issue_id in plan.newly_assigned:
        if issue_id in by_id:
            by_id[issue_id].incident_id = plan.by_issue[issue_id]
    return len(plan.newly_assigned)


_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}


def _worst(values: list[str | None]) -> str | None:
    known = [v for v in values if v]
    return max(known, key=lambda v: _RANK.get(v, 0)) if known else None
