"""What the leader does with a batch of webhook deliveries.

The same pieces as the poll step (:func:`bot.pipeline.cycle.poll_step`), for the issues the
deliveries name instead of a whole poll: fetch them from the API (the delivery says
*which* issue; the API says what it looks like now, so a stale or replayed body cannot
make the bot act on an old picture), track, triage, handle regressions, match, plan
and execute per mode. The poller stays the safety net for anything a delivery misses.

Per resource and action:

* ``issue.created``, ``event_alert.triggered``: fetch → track → triage → match → plan.
* ``issue.unresolved``: after the bot resolved the issue, a regression (escalated, the
  next remediation needs approval); otherwise the issue is fetched and tracked again.
* ``issue.resolved``: by a person (or by Sentry itself) the watch stops: the issue is
  resolved in our store too. The echo of the bot's own resolve is ignored: the issue
  is already resolved by the bot, or the actor is an application other than Sentry
  (the integration's own token).
* ``issue.assigned`` / ``issue.archived``: a note on the issue's timeline.
* ``installation.*``: acknowledged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import col, select

from bot.errors import BotError, SentryNotFound
from bot.pipeline.cycle import handle_regressions, match_and_plan
from bot.pipeline.cycle_report import CycleReport
from bot.pipeline.inbox import Claimed
from bot.pipeline.parts import CycleParts
from bot.pipeline.track import note, record_transition, track
from bot.pipeline.triage import group_incidents, triage_issues
from bot.sentry.models import SentryIssue
from bot.store.models import DeliveryStatus, LifecycleState, TrackedIssue

log = logging.getLogger(__name__)

_GROUPING = threading.Lock()
_FETCHING = {("issue", "created"), ("event_alert", "triggered"), ("issue", "unresolved")}


@dataclass
class Outcome:
    """What became of one delivery."""

    delivery: Claimed
    status: DeliveryStatus
    result: str
    retry: bool = False


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)
    cycle: CycleReport = field(default_factory=CycleReport)


def process_batch(parts: CycleParts, batch: Sequence[Claimed]) -> BatchReport:
    """Process ``batch``; never raises for one delivery's failure (see the outcomes)."""
    report = BatchReport()
    fetch: list[Claimed] = []
    for d in batch:
        try:
            outcome = _status_change(parts, d)
        except BotError as exc:
            outcome = Outcome(d, DeliveryStatus.PENDING, f"{type(exc).__name__}: {exc}", True)
        if outcome is None:
            fetch.append(d)
        else:
            report.outcomes.append(outcome)
    if fetch:
        report.outcomes += _fetch_and_plan(parts, fetch, report.cycle)
    return report


def _row(parts: CycleParts, issue_id: str | None) -> TrackedIssue | None:
    if issue_id is None:
        return None
    with parts.store.session() as session:
        return session.get(TrackedIssue, issue_id)


def _is_echo(d: Claimed, row: TrackedIssue | None) -> bool:
    if row is not None and row.state == LifecycleState.RESOLVED.value and row.resolved_by_bot:
        return True
    # actor {"type": "application", "id": <app uuid>}: a change made through an
    # integration's token, i.e. ours; Sentry's own actions say id "sentry".
    return d.actor_type == "application" and d.actor_id not in (None, "sentry")


def _actor_name(d: Claimed) -> str:
    actor = d.payload.get("actor")
    name = actor.get("name") if isinstance(actor, dict) else None
    return str(name)[:100] if name else (d.actor_type or "someone")


def _status_change(parts: CycleParts, d: Claimed) -> Outcome | None:
    """Handle what needs no fetch; None when the delivery needs fetch → track → plan."""
    if d.resource == "installation":
        return Outcome(d, DeliveryStatus.IGNORED, f"installation {d.action} acknowledged")
    if (d.resource, d.action) in _FETCHING and d.action != "unresolved":
        return None
    row = _row(parts, d.issue_id)
    now = parts.clock.now()
    if d.action == "unresolved":
        if row is not None and row.state == LifecycleState.RESOLVED.value and row.resolved_by_bot:
            regressed = handle_regressions(parts.store, parts.clock, [row.id], parts.emit)
            return Outcome(
                d, DeliveryStatus.DONE, f"regression after the bot's resolve: {regressed}"
            )
        return None
    if row is None:
        return Outcome(d, DeliveryStatus.IGNORED, f"issue {d.issue_id} is not tracked")
    if d.action == "resolved":
        if _is_echo(d, row):
            return Outcome(d, DeliveryStatus.IGNORED, "echo of the bot's own change")
        if row.state == LifecycleState.RESOLVED.value:
            return Outcome(d, DeliveryStatus.IGNORED, "already resolved")
        with parts.store.session() as session:
            fresh = session.get(TrackedIssue, row.id)
            assert fresh is not None
            record_transition(
                session,
                fresh,
                LifecycleState.RESOLVED,
                f"resolved in Sentry by {_actor_name(d)}: the bot stops watching",
                now,
            )
            fresh.status = "resolved"
            fresh.resolved_at = now
            fresh.resolved_by_bot = False
            fresh.quiet_since = None
        return Outcome(d, DeliveryStatus.DONE, f"resolved by {_actor_name(d)}: watch stopped")
    # assigned / archived: the timeline says so; nothing else changes.
    with parts.store.session() as session:
        fresh = session.get(TrackedIssue, row.id)
        assert fresh is not None
        note(session, fresh, f"{d.action} in Sentry by {_actor_name(d)}", now)
    return Outcome(d, DeliveryStatus.DONE, f"{d.action}: noted")


def _fetch_and_plan(parts: CycleParts, batch: list[Claimed], report: CycleReport) -> list[Outcome]:
    if parts.sentry is None:
        why = "the Sentry API is not configured (SENTRY_AUTH_TOKEN, SENTRY_ORG)"
        return [Outcome(d, DeliveryStatus.PENDING, why, True) for d in batch]
    ids = list(dict.fromkeys(d.issue_id for d in batch if d.issue_id))
    issues: list[SentryIssue] = []
    failed: dict[str, str] = {}
    for issue_id in ids:
        # The detail endpoint, one issue per request: a batch is a handful of ids.
        try:
            issues.append(parts.sentry.get_issue(issue_id))
        except SentryNotFound:
            continue  # deleted or out of scope: reported as 'not in Sentry' below
        except BotError as exc:  # rate limit, outage, malformed answer: retried later
            failed[issue_id] = f"fetch failed: {type(exc).__name__}: {exc}"
    out = [
        Outcome(d, DeliveryStatus.PENDING, failed[d.issue_id], True)
        for d in batch
        if d.issue_id in failed
    ]
    batch = [d for d in batch if d.issue_id not in failed]
    found = {i.id for i in issues}
    with parts.store.session() as session:
        tracked = track(session, issues, parts.clock)
    with parts.store.session() as session:
        # Tracked but never matched (a retry after a failure past tracking), or left
        # waiting on a playbook that was unavailable: the ones these deliveries name.
        pending = session.exec(
            select(TrackedIssue.id)
            .where(col(TrackedIssue.id).in_(ids))
            .where(
                col(TrackedIssue.state).in_(
                    [LifecycleState.NEW.value, LifecycleState.MATCHED.value]
                )
            )
        ).all()
    candidates = list(dict.fromkeys([*tracked.new, *tracked.changed, *pending]))
    with parts.store.session() as session:
        triage_issues(
            session,
            candidates,
            parts.require_triage(),
            parts.clock,
            regressed=frozenset(tracked.regressed),
        )
    try:
        # Grouping reads every recent issue; one thread at a time (it inserts incidents).
        # It is not needed to remedy: on a failure the next poll groups instead.
        with _GROUPING, parts.store.session() as session:
            group_incidents(session, parts.clock)
    except BotError as exc:
        log.warning("incident grouping after webhooks failed (the poll retries): %s", exc)
    report.regressed = handle_regressions(parts.store, parts.clock, tracked.regressed, parts.emit)
    match_and_plan(parts, candidates, report, shadow_only=False)
    plans = {p.issue_id: p for p in report.plans}
    with parts.store.session() as session:
        # Matched but not planned: planning failed (logged in the report); try again.
        stuck = set(
            session.exec(
                select(TrackedIssue.id)
                .where(col(TrackedIssue.id).in_(ids))
                .where(col(TrackedIssue.state) == LifecycleState.MATCHED.value)
            ).all()
        )
    for d in batch:
        if d.issue_id in stuck and d.issue_id not in plans:
            why = "; ".join(report.errors)[-500:] or "matched, not planned"
            out.append(Outcome(d, DeliveryStatus.PENDING, f"planning failed: {why}", True))
            continue
        if d.issue_id not in found:
            out.append(Outcome(d, DeliveryStatus.IGNORED, f"issue {d.issue_id} not in Sentry"))
            continue
        plan = plans.get(d.issue_id or "")
        if plan is not None:
            result = f"{plan.short_id}: {plan.playbook_id} [{plan.mode}] → {plan.status}"
        elif d.issue_id in candidates:
            result = "tracked, no playbook"
        else:
            result = "already known, nothing new"
        out.append(Outcome(d, DeliveryStatus.DONE, result))
    return out
