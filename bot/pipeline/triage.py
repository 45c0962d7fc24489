"""The cycle's triage step: triage changed issues, group related ones into incidents.

Triage is recomputed whenever an issue changes (new events, users, status); the
result, with the indicators that decided it, is stored on the tracked issue so
notifications, PR comments, ``status`` and reports all show the same verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta

from sqlalchemy import Table, Update, bindparam, or_, update
from sqlmodel import Session, col, select

from bot.clock import Clock, ensure_utc
from bot.pipeline.execute import EventSink
from bot.pipeline.track import record_transition
from bot.sentry.models import SentryIssue
from bot.store.models import FixLink, Incident, LifecycleState, RemediationRun, TrackedIssue
from bot.triage import TriageConfig, triage
from bot.triage.incidents import Candidate, assign_incidents

log = logging.getLogger(__name__)

INCIDENT_HORIZON = timedelta(days=7)
_DONE_STATES = [LifecycleState.RESOLVED.value, LifecycleState.ESCALATED.value]


def triage_issues(
    session: Session,
    issue_ids: list[str],
    config: TriageConfig,
    clock: Clock,
    *,
    regressed: frozenset[str] = frozenset(),
    parsed: Mapping[str, SentryIssue] | None = None,
) -> int:
    """Triage ``issue_ids`` and store each verdict; return how many were triaged.

    ``parsed`` maps ids to the issue exactly as stored in ``raw`` (the tracker's
    :attr:`~bot.pipeline.track.TrackResult.stored`): those are not read back and parsed
    again. Verdicts are written with one executemany UPDATE, not as ORM rows: a burst
    triages a thousand issues in one cycle.
    """
    now = clock.now()
    known = parsed or {}
    ids = list(dict.fromkeys(issue_ids))
    issues = [known[i] for i in ids if i in known]
    issues += _stored_issues(session, [i for i in ids if i not in known])
    verdicts: list[dict[str, object]] = []
    for issue in issues:
        result = triage(
            issue, None, config, now, regression=True if issue.id in regressed else None
        )
        verdicts.append(
            {
                "b_id": issue.id,
                "severity": result.severity.value,
                "category": result.category.value,
                "team": result.team,
                "response_due_at": result.response_due_at,
                "triage": result.model_dump(mode="json"),
            }
        )
    _update_rows(session, _UPDATE_BY_ID, verdicts)
    return len(verdicts)


_TRACKED: Table = TrackedIssue.__table__  # type: ignore[attr-defined]
# One row by id; the SET columns are the other keys of each parameter dict.
_UPDATE_BY_ID = update(_TRACKED).where(_TRACKED.c.id == bindparam("b_id"))


def _stored_issues(session: Session, ids: list[str]) -> list[SentryIssue]:
    """The issues ``ids`` parsed from their ``raw`` column (ids not tracked are skipped)."""
    out = []
    for start in range(0, len(ids), 500):
        rows = session.exec(
            select(TrackedIssue.raw).where(col(TrackedIssue.id).in_(ids[start : start + 500]))
        ).all()
        out += [SentryIssue.model_validate(raw) for raw in rows]
    return out


def _update_rows(session: Session, stmt: Update, params: Sequence[Mapping[str, object]]) -> None:
    """Run ``stmt`` once per params (one executemany), keeping the session consistent:
    pending ORM changes are flushed first, and loaded rows it changed are expired."""
    if not params:
        return
    session.flush()
    session.connection().execute(stmt, params)
    _expire_loaded(session, {str(p["b_id"]) for p in params})


def _expire_loaded(session: Session, ids: set[str]) -> None:
    """Tracked issues ``ids`` that the session holds are read again on next access."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, TrackedIssue) and obj.id in ids:
            session.expire(obj)


def group_incidents(
    session: Session,
    clock: Clock,
    changed: Collection[str] | None = None,
    *,
    parsed: Mapping[str, SentryIssue] | None = None,
) -> int:
    """Group recent related issues into incidents; return how many issues joined one.

    ``changed`` names the issues that are new or changed this cycle (None: consider
    every recent issue, as a first run or a test does). Relatedness depends only on an
    issue's own data (keys, firstSeen), so with nothing changed no grouping can change
    and nothing is read; otherwise only the recent issues of the changed issues'
    projects are read (every group key starts with the project).
    """
    if changed is not None and not changed:
        return 0
    since = clock.now() - INCIDENT_HORIZON
    # Narrow columns: only issues not handed over in ``parsed`` are read whole.
    query = select(TrackedIssue.id, TrackedIssue.incident_id, TrackedIssue.severity).where(
        col(TrackedIssue.first_seen) >= since
    )
    if changed is not None:
        projects: set[str] = set()
        ids = list(changed)
        for start in range(0, len(ids), 500):
            projects.update(
                session.exec(
                    select(TrackedIssue.project)
                    .where(col(TrackedIssue.id).in_(ids[start : start + 500]))
                    .distinct()
                ).all()
            )
        query = query.where(col(TrackedIssue.project).in_(sorted(projects)))
    rows = session.exec(query).all()
    if len(rows) < 2:
        return 0
    known = parsed or {}
    issues = [known[r[0]] for r in rows if r[0] in known]
    issues += _stored_issues(session, [r[0] for r in rows if r[0] not in known])
    candidates = [Candidate.of(issue, issue.latest_event, None) for issue in issues]
    existing = {r[0]: r[1] for r in rows if r[1]}
    plan = assign_incidents(candidates, existing)
    severities = {r[0]: r[2] for r in rows}
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
    # Members of one incident share the value: a large incident (a burst's thousand
    # issues often make one) is one UPDATE per 500 ids, the rest one executemany by id.
    members: dict[str, list[str]] = {}
    for issue_id in sorted(plan.newly_assigned):
        if issue_id in severities:
            members.setdefault(plan.by_issue[issue_id], []).append(issue_id)
    singles = [
        {"b_id": i, "incident_id": inc}
        for inc, ids in members.items()
        if len(ids) < _BY_INCIDENT
        for i in ids
    ]
    _update_rows(session, _UPDATE_BY_ID, singles)
    for incident_id, ids in members.items():
        if len(ids) < _BY_INCIDENT:
            continue
        session.flush()
        for start in range(0, len(ids), 500):
            session.connection().execute(
                update(_TRACKED)
                .where(_TRACKED.c.id.in_(ids[start : start + 500]))
                .values(incident_id=incident_id)
            )
        _expire_loaded(session, set(ids))
    return len(plan.newly_assigned)


_BY_INCIDENT = 20  # members from which an incident's links are one UPDATE ... IN

_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}


def _worst(values: list[str | None]) -> str | None:
    known = [v for v in values if v]
    return max(known, key=lambda v: _RANK.get(v, 0)) if known else None


def escalate_overdue(session: Session, clock: Clock, emit: EventSink) -> list[str]:
    """Escalate issues past their response deadline with no progress; return short ids.

    Only deadlines that pass while the bot tracks the issue count. No progress means:
    still firing after the deadline (an event after it), nothing
    remediated successfully, no fix linked, and not escalated already. Each issue is
    escalated once (``escalated_at``), with an ``escalated`` notification to its team.
    """
    now = clock.now()
    due_at = col(TrackedIssue.response_due_at)
    progressed_run = select(RemediationRun.id).where(
        RemediationRun.issue_id == TrackedIssue.id,
        col(RemediationRun.status).in_(["succeeded", "noop"]),
    )
    linked = select(FixLink.id).where(FixLink.issue_id == TrackedIssue.id)
    # Every condition in SQL over narrow columns (partial ix_tracked_issue_firing_overdue):
    # only issues to escalate now are loaded whole.
    ids = session.exec(
        select(TrackedIssue.id).where(
            due_at < now,
            col(TrackedIssue.escalated_at).is_(None),
            col(TrackedIssue.last_seen) > due_at,  # still firing after the deadline
            # A deadline that had passed before the bot ever saw the issue (first
            # deployment, an old backlog) is not news: escalating all of it is noise.
            or_(col(TrackedIssue.created_at).is_(None), due_at > col(TrackedIssue.created_at)),
            col(TrackedIssue.state).not_in(_DONE_STATES),
            ~progressed_run.exists(),
            ~linked.exists(),
        )
    ).all()
    rows = (
        session.exec(select(TrackedIssue).where(col(TrackedIssue.id).in_(sorted(ids)))).all()
        if ids
        else []
    )
    out = []
    for row in rows:
        due = ensure_utc(row.response_due_at) if row.response_due_at else None
        if due is None or row.last_seen is None or ensure_utc(row.last_seen) <= due:
            continue  # defensive: SQL said otherwise a moment ago
        reason = (
            f"{row.severity or 'unknown'} severity response deadline {due.isoformat()} "
            f"passed with no remediation and no fix linked; still firing"
        )
        record_transition(session, row, LifecycleState.ESCALATED, reason, now)
        row.escalated_at = now
        emit(session, "escalated", row, None, None, {"reason": reason})
        out.append(row.short_id)
    return out
