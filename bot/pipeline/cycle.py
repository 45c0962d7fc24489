"""One cycle: poll → track → (triage) → match → plan/execute/verify → lifecycle → outbox.

``run_cycle`` is what ``sentry-bot cycle`` and every scheduler tick call. Each step is
its own function so the scheduler can run them at different intervals. A failure of
one issue's remediation never stops the cycle for the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy import func, update
from sqlmodel import col, exists, select

from bot import failpoints
from bot.clock import Clock
from bot.errors import BotError
from bot.pipeline.cycle_report import CycleReport
from bot.pipeline.parts import CycleParts
from bot.pipeline.poll import poll_and_track
from bot.pipeline.ports import EventSink
from bot.pipeline.steps import fixlinks_step, lifecycle_step, outbox_step
from bot.pipeline.storm import STORM_MIN, storms
from bot.pipeline.track import record_transition
from bot.pipeline.triage import escalate_overdue, group_incidents, triage_issues
from bot.playbooks.matcher import MatchResult
from bot.sentry.models import SentryEvent, SentryIssue
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, RunStatus, TrackedIssue

log = logging.getLogger(__name__)

MAX_EVENT_FETCHES = 100
_SKIP_STATES = {LifecycleState.RESOLVED.value}
# States an issue only passes through while the bot decides or acts: one found there at
# the start of a cycle without a live run was left by a crash (or a missing target) and
# is decided again. ``planned`` with a run awaiting approval is waiting for a human.
_UNDECIDED = (LifecycleState.NEW.value, LifecycleState.MATCHED.value, LifecycleState.PLANNED.value)
_LIVE_RUNS = (
    RunStatus.AWAITING_APPROVAL.value,
    RunStatus.APPROVED.value,
    RunStatus.RUNNING.value,
)


def handle_regressions(
    store: Store, clock: Clock, issue_ids: list[str], emit: EventSink
) -> list[str]:
    """Issues that had an event after the bot resolved them: regressed → escalated."""
    now = clock.now()
    out = []
    with store.session() as session:
        for issue_id in issue_ids:
            row = session.get(TrackedIssue, issue_id)
            if row is None:
                continue
            record_transition(
                session,
                row,
                LifecycleState.REGRESSED,
                f"new event at {row.last_seen} after the bot resolved it",
                now,
            )
            record_transition(
                session,
                row,
                LifecycleState.ESCALATED,
                "regression: the next remediation needs approval",
                now,
            )
            row.requires_approval = True
            row.resolved_by_bot = False
            row.escalated_at = now
            row.quiet_since = None
            emit(session, "regressed", row, None, None, {})
            out.append(row.short_id)
    return out


def match_and_plan(
    parts: CycleParts,
    issue_ids: list[str],
    report: CycleReport,
    *,
    shadow_only: bool,
    parsed: Mapping[str, SentryIssue] | None = None,
) -> None:
    """Match each issue, then plan (and per mode execute) the winning playbook.

    ``parsed`` maps ids to the issue exactly as stored in ``raw`` (the tracker's
    :attr:`~bot.pipeline.track.TrackResult.stored`): those are not parsed again.
    An issue that needs its latest event to match is never parked for want of fetch
    budget (``MAX_EVENT_FETCHES`` per cycle): it keeps ``awaiting_event_since`` and its
    undecided state, and later cycles fetch the waiting issues oldest first.
    """
    fetches = 0
    store, matcher = parts.store, parts.matcher
    matched: list[tuple[str, str, MatchResult]] = []
    loaded = _decidable(store, issue_ids, parsed or {})
    for issue_id in issue_ids:
        found = loaded.pop(issue_id, None)  # once, even when listed twice
        if found is None:
            continue
        issue, was_waiting = found
        event: SentryEvent | None = issue.latest_event
        result = matcher.match(issue, event)
        if result is None and event is None and matcher.wants_event(issue):
            if fetches >= MAX_EVENT_FETCHES:
                if not was_waiting:
                    _set_awaiting(parts, issue_id, waiting=True)
                continue  # decided in a later cycle, once its event is fetched
            fetches += 1
            try:
                event = parts.source.latest_event(issue.id)
            except BotError as exc:
                report.errors.append(f"{issue.short_id}: latest event: {exc}")
                if not was_waiting:
                    _set_awaiting(parts, issue_id, waiting=True)
                continue  # try again next cycle rather than park it as "no playbook"
            result = matcher.match(issue, event) if event is not None else None
        if was_waiting:
            _set_awaiting(parts, issue_id, waiting=False)
        if result is None:
            report.unmatched.append(issue.short_id)
            _no_playbook(parts, issue_id)
            continue
        matched.append((issue_id, issue.short_id, result))
    plan_matches(parts, matched, report, shadow_only=shadow_only)


def _decidable(
    store: Store, issue_ids: list[str], parsed: Mapping[str, SentryIssue]
) -> dict[str, tuple[SentryIssue, bool]]:
    """The issues among ``issue_ids`` the bot may decide (not resolved, not owned by a
    human), each with whether it waits for its event; ``raw`` is read and parsed only
    for the ones ``parsed`` lacks."""
    found: dict[str, tuple[SentryIssue, bool]] = {}
    for start in range(0, len(issue_ids), 500):
        chunk = issue_ids[start : start + 500]
        with store.session() as session:
            rows = session.exec(
                select(
                    TrackedIssue.id,
                    TrackedIssue.state,
                    TrackedIssue.requires_approval,
                    TrackedIssue.awaiting_event_since,
                ).where(col(TrackedIssue.id).in_(chunk))
            ).all()
            decidable = {
                issue_id: waiting is not None
                for issue_id, state, needs_approval, waiting in rows
                if state not in _SKIP_STATES
                # an escalated issue is a human's now, unless its next run needs approval
                and (state != LifecycleState.ESCALATED.value or needs_approval)
            }
            missing = [i for i in decidable if i not in parsed]
            raws = (
                session.exec(
                    select(TrackedIssue.id, TrackedIssue.raw).where(
                        col(TrackedIssue.id).in_(missing)
                    )
                ).all()
                if missing
                else []
            )
        issues = {i: parsed[i] for i in decidable if i in parsed}
        issues.update((i, SentryIssue.model_validate(raw)) for i, raw in raws)
        found.update((i, (issues[i], waiting)) for i, waiting in decidable.items())
    return found


def plan_matches(
    parts: CycleParts,
    matched: list[tuple[str, str, MatchResult]],
    report: CycleReport,
    *,
    shadow_only: bool,
) -> None:
    """Plan every match, in order. The ``auto`` matches of one playbook whose action may
    share a transaction are remedied together (storm mode, :mod:`bot.pipeline.storm`);
    what the storm hands back, and everything else, is planned one issue at a time."""
    single = matched
    if not shadow_only:
        groups: dict[str, list[tuple[str, str, MatchResult]]] = {}
        for m in matched:
            groups.setdefault(m[2].playbook.id, []).append(m)
        back: set[str] = set()
        for group in groups.values():
            pb = group[0][2].playbook
            if len(group) < STORM_MIN or not storms(pb):
                back.update(m[0] for m in group)
                continue
            try:
                stormed = parts.executor.storm(pb, [(m[0], m[2]) for m in group])
            except BotError as exc:
                # What the batch journaled is finished by recovery in the next cycle.
                log.warning("storm of %d issues (%s) failed: %s", len(group), pb.id, exc)
                report.errors.append(f"storm of {len(group)} issues ({pb.id}): {exc}")
                continue
            report.plans.extend(stormed.outcomes)
            back.update(issue_id for issue_id, _ in stormed.single)
        single = [m for m in matched if m[0] in back]
    for issue_id, short_id, result in single:
        try:
            report.plans.append(parts.executor.plan(issue_id, result, shadow_only=shadow_only))
        except BotError as exc:
            log.warning("planning %s failed: %s", short_id, exc)
            report.errors.append(f"{short_id}: {exc}")


def _set_awaiting(parts: CycleParts, issue_id: str, *, waiting: bool) -> None:
    """Mark (or clear) an issue as waiting for its latest event; keeps the first mark."""
    with parts.store.session() as session:
        stmt = update(TrackedIssue).where(col(TrackedIssue.id) == issue_id)
        if waiting:
            stmt = stmt.where(col(TrackedIssue.awaiting_event_since).is_(None)).values(
                awaiting_event_since=parts.clock.now()
            )
        else:
            stmt = stmt.values(awaiting_event_since=None)
        session.exec(stmt)


def undecided_issues(store: Store) -> list[str]:
    """Issues to decide again: waiting for their event (oldest first), then issues left
    ``new``/``matched``/``planned`` with no live run (a crash between two steps, a
    target that was missing), oldest first."""
    live = exists().where(
        col(RemediationRun.issue_id) == col(TrackedIssue.id),
        col(RemediationRun.status).in_(_LIVE_RUNS),
    )
    with store.session() as session:
        waiting = session.exec(
            select(TrackedIssue.id)
            .where(col(TrackedIssue.awaiting_event_since).is_not(None))
            .where(col(TrackedIssue.state).not_in(list(_SKIP_STATES)))
            .order_by(col(TrackedIssue.awaiting_event_since), col(TrackedIssue.id))
        ).all()
        stranded = session.exec(
            select(TrackedIssue.id)
            .where(col(TrackedIssue.state).in_(_UNDECIDED))
            .where(col(TrackedIssue.awaiting_event_since).is_(None))
            .where(~live)
            .order_by(col(TrackedIssue.created_at), col(TrackedIssue.id))
        ).all()
    return list(waiting) + list(stranded)


def _count_awaiting(store: Store) -> int:
    with store.session() as session:
        return int(
            session.exec(
                select(func.count())
                .select_from(TrackedIssue)
                .where(col(TrackedIssue.awaiting_event_since).is_not(None))
            ).one()
        )


def _no_playbook(parts: CycleParts, issue_id: str) -> None:
    now = parts.clock.now()
    with parts.store.session() as session:
        row = session.get(TrackedIssue, issue_id)
        if row is not None and row.state == LifecycleState.NEW.value:
            record_transition(
                session,
                row,
                LifecycleState.WATCHING,
                "no playbook matched: triage, notify, watch for quiet hours",
                now,
            )
            row.quiet_since = row.last_seen or now
            parts.emit(session, "triaged", row, None, None, {})


def run_cycle(
    parts: CycleParts, *, shadow_only: bool = False, side_steps: bool = True
) -> CycleReport:
    """One full pass. Never raises for a single issue's failure; see ``report.errors``.

    ``side_steps`` adds the lifecycle check, the fix-link scan and the outbox flush
    (the scheduler runs those on their own intervals instead).
    """
    report = poll_step(parts, shadow_only=shadow_only)
    if side_steps:
        side: list[tuple[str, Callable[[], str]]] = [
            ("lifecycle", lambda: lifecycle_step(parts)),
            ("fix links", lambda: fixlinks_step(parts.delivery)),
            ("outbox", lambda: outbox_step(parts.delivery)),
        ]
        for name, step in side:
            try:
                report.extra[name] = step()
            except BotError as exc:
                log.warning("%s step failed: %s", name, exc)
                report.errors.append(f"{name}: {exc}")
    return report


def poll_step(parts: CycleParts, *, shadow_only: bool = False) -> CycleReport:
    """Poll, track, triage, handle regressions, match and plan (execute per mode)."""
    store, clock, executor = parts.store, parts.clock, parts.executor
    report = CycleReport()
    report.errors += [f"playbook not loaded: {e}" for e in parts.playbook_errors]
    # Runs a human approved (Slack, console) on a replica that does not lead: the
    # leader executes them here, before crash recovery could take them for left behind.
    report.plans.extend(executor.execute_approved())
    report.recovered_runs = executor.recover_interrupted()
    report.expired_approvals = executor.expire_approvals()
    report.poll = poll_and_track(store, parts.source, clock, overlap=parts.poll_overlap)
    failpoints.hit("after-track")
    tracked = report.poll.tracked
    candidates = tracked.new + tracked.changed
    # Issues a crash (or a fetch budget) left without a decision: decided again now,
    # the ones waiting longest first (they take the event-fetch budget first).
    leftover = undecided_issues(store)
    fresh = set(candidates)
    report.resumed = sum(1 for i in leftover if i not in fresh)
    with store.session() as session:
        untriaged = session.exec(
            select(TrackedIssue.id)
            .where(col(TrackedIssue.id).in_(leftover))
            .where(col(TrackedIssue.severity).is_(None))
        ).all()
        triage_issues(
            session,
            candidates + list(untriaged),
            parts.require_triage(),
            clock,
            regressed=frozenset(tracked.regressed),
            parsed=tracked.stored,  # the poll's issues, not parsed again from raw
        )
        group_incidents(session, clock, changed=candidates, parsed=tracked.stored)
    report.regressed = handle_regressions(store, clock, tracked.regressed, parts.emit)
    waiting = set(leftover)
    match_and_plan(
        parts,
        leftover + [i for i in candidates if i not in waiting],
        report,
        shadow_only=shadow_only,
        parsed=tracked.stored,
    )
    report.awaiting_event = _count_awaiting(store)
    with store.session() as session:
        overdue = escalate_overdue(session, clock, parts.emit)
    if overdue:
        report.extra["overdue"] = f"escalated past their response deadline: {', '.join(overdue)}"
    return report
