"""One cycle: poll → track → (triage) → match → plan/execute/verify → lifecycle → outbox.

``run_cycle`` is what ``sentry-bot cycle`` and every scheduler tick call. Each step is
its own function so the scheduler can run them at different intervals. A failure of
one issue's remediation never stops the cycle for the others.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, exists, select

from bot import failpoints
from bot.errors import BotError
from bot.interfaces.app import App
from bot.pipeline.execute import Executor, PlanOutcome
from bot.pipeline.poll import PollResult, poll_and_track
from bot.pipeline.track import record_transition
from bot.pipeline.triage import escalate_overdue, group_incidents, triage_issues
from bot.playbooks.matcher import Matcher
from bot.sentry.models import SentryEvent, SentryIssue
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


@dataclass
class CycleReport:
    poll: PollResult | None = None
    plans: list[PlanOutcome] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    recovered_runs: list[str] = field(default_factory=list)
    resumed: int = 0  # issues a crash left undecided, decided again this cycle
    awaiting_event: int = 0  # issues waiting for their latest event (fetch budget)
    expired_approvals: int = 0
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        tracked = self.poll.tracked if self.poll else None
        return {
            "polled": tracked.seen if tracked else 0,
            "new": len(tracked.new) if tracked else 0,
            "changed": len(tracked.changed) if tracked else 0,
            "unchanged": tracked.unchanged if tracked else 0,
            "regressed": self.regressed,
            "watermark": self.poll.watermark.isoformat()
            if self.poll and self.poll.watermark
            else None,
            "plans": [
                {
                    "issue": p.short_id,
                    "playbook": p.playbook_id,
                    "mode": p.mode,
                    "status": p.status,
                    "run_id": p.run_id,
                    "rows_affected": p.rows_affected,
                    "would_change": p.preview.count if p.preview else None,
                    "preview": p.preview.summary if p.preview else None,
                    "note": p.note,
                    "verify": p.verify,
                    "params": p.params,
                }
                for p in self.plans
            ],
            "unmatched": self.unmatched,
            "recovered_runs": self.recovered_runs,
            "resumed": self.resumed,
            "awaiting_event": self.awaiting_event,
            "expired_approvals": self.expired_approvals,
            "errors": self.errors,
            **self.extra,
        }

    def summary_lines(self) -> list[str]:
        """Counts first: plans by outcome and by playbook, then what else happened."""
        d = self.as_dict()
        lines = [
            f"polled {d['polled']} issues: {d['new']} new, {d['changed']} changed, "
            f"{d['unchanged']} unchanged"
        ]
        if self.plans:
            outcomes = Counter(_outcome(p) for p in self.plans)
            lines.append(
                f"plans: {len(self.plans)} ("
                + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
                + ")"
            )
            by_playbook = Counter(p.playbook_id for p in self.plans)
            lines.append("by playbook:")  # one line each: never one endless line
            lines += [f"  {n:>4}  {pb}" for pb, n in sorted(by_playbook.items())]
        if self.unmatched:
            lines.append(f"no playbook (triaged, notified, watched): {len(self.unmatched)}")
        if self.regressed:
            lines.append(f"regressed after resolve (escalated): {len(self.regressed)}")
        if self.recovered_runs:
            lines.append(f"interrupted runs recovered: {len(self.recovered_runs)}")
        if self.resumed:
            lines.append(f"undecided issues resumed after an interruption: {self.resumed}")
        if self.awaiting_event:
            lines.append(
                "waiting for their latest event (fetched in later cycles, oldest first): "
                f"{self.awaiting_event}"
            )
        if self.expired_approvals:
            lines.append(f"approvals expired: {self.expired_approvals}")
        lines += [str(value) for value in self.extra.values()]
        if self.errors:
            lines.append(f"errors: {len(self.errors)}")
        return lines

    def render(self, *, verbose: bool = False) -> str:
        """The summary, then one block per plan, then bounded id lists and the errors."""
        lines = self.summary_lines()
        if self.plans:
            lines.append("")
        for p in self.plans:
            head = f"- {p.short_id}: playbook {p.playbook_id} [{p.mode}] → {p.status}"
            if p.rows_affected is not None and p.mode != "shadow":
                head += f", {p.rows_affected} rows changed"
            elif p.preview is not None:
                head += f", would change {p.preview.count}"
            lines.append(head)
            if p.params:
                lines.append("    params: " + ", ".join(f"{k}={v}" for k, v in p.params.items()))
            if p.preview is not None:
                lines.append(f"    preview: {p.preview.summary}")
                if verbose:
                    for row in p.preview.rows[:10]:
                        lines.append(f"      {row}")
                    if len(p.preview.rows) > 10:
                        lines.append(f"      … {len(p.preview.rows) - 10} more")
            if p.note:
                lines.append(f"    note: {p.note}")
            if p.verify:
                lines.append(f"    verify: {p.verify}")
        if self.unmatched:
            lines.append(f"no playbook: {_some(self.unmatched)}")
        if self.regressed:
            lines.append(f"regressed: {_some(self.regressed)}")
        if self.recovered_runs:
            lines.append(f"interrupted runs recovered: {_some(self.recovered_runs)}")
        for err in self.errors[:ERRORS_SHOWN]:
            lines.append(f"error: {err}")
        if len(self.errors) > ERRORS_SHOWN:
            lines.append(f"… {len(self.errors) - ERRORS_SHOWN} more errors (--json lists all)")
        return "\n".join(lines)


IDS_SHOWN = 10
ERRORS_SHOWN = 20


def _some(ids: list[str]) -> str:
    """At most IDS_SHOWN ids, then how many more (``--json`` lists them all)."""
    head = ", ".join(ids[:IDS_SHOWN])
    return head + (f" … and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else "")


def _outcome(plan: PlanOutcome) -> str:
    """A plan's outcome for the summary: its status, shadow previews named as such."""
    return "shadow preview" if plan.mode == "shadow" else plan.status


def _issue_from_row(row: TrackedIssue) -> SentryIssue:
    return SentryIssue.model_validate(row.raw)


def handle_regressions(app: App, issue_ids: list[str], emit: Any) -> list[str]:
    """Issues that had an event after the bot resolved them: regressed → escalated."""
    now = app.clock.now()
    out = []
    with app.store.session() as session:
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
    app: App,
    executor: Executor,
    matcher: Matcher,
    issue_ids: list[str],
    report: CycleReport,
    *,
    shadow_only: bool,
    source: Any = None,
    emit: Any = None,
) -> None:
    """Match each issue, then plan (and per mode execute) the winning playbook.

    An issue that needs its latest event to match is never parked for want of fetch
    budget (``MAX_EVENT_FETCHES`` per cycle): it keeps ``awaiting_event_since`` and its
    undecided state, and later cycles fetch the waiting issues oldest first.
    """
    fetches = 0
    for issue_id in issue_ids:
        with app.store.session() as session:
            row = session.get(TrackedIssue, issue_id)
            if row is None or row.state in _SKIP_STATES:
                continue
            if row.state == LifecycleState.ESCALATED.value and not row.requires_approval:
                continue  # a human owns it now
            issue = _issue_from_row(row)
            was_waiting = row.awaiting_event_since is not None
        event: SentryEvent | None = issue.latest_event
        result = matcher.match(issue, event)
        fetch = getattr(source, "latest_event", None) if source is not None else None
        if result is None and event is None and fetch is not None and matcher.wants_event(issue):
            if fetches >= MAX_EVENT_FETCHES:
                if not was_waiting:
                    _set_awaiting(app, issue_id, waiting=True)
                continue  # decided in a later cycle, once its event is fetched
            fetches += 1
            try:
                event = fetch(issue.id)
            except BotError as exc:
                report.errors.append(f"{issue.short_id}: latest event: {exc}")
                if not was_waiting:
                    _set_awaiting(app, issue_id, waiting=True)
                continue  # try again next cycle rather than park it as "no playbook"
            result = matcher.match(issue, event) if event is not None else None
        if was_waiting:
            _set_awaiting(app, issue_id, waiting=False)
        if result is None:
            report.unmatched.append(issue.short_id)
            _no_playbook(app, issue_id, emit)
            continue
        try:
            report.plans.append(executor.plan(issue_id, result, shadow_only=shadow_only))
        except BotError as exc:
            log.warning("planning %s failed: %s", issue.short_id, exc)
            report.errors.append(f"{issue.short_id}: {exc}")


def _set_awaiting(app: App, issue_id: str, *, waiting: bool) -> None:
    """Mark (or clear) an issue as waiting for its latest event; keeps the first mark."""
    with app.store.session() as session:
        stmt = update(TrackedIssue).where(col(TrackedIssue.id) == issue_id)
        if waiting:
            stmt = stmt.where(col(TrackedIssue.awaiting_event_since).is_(None)).values(
                awaiting_event_since=app.clock.now()
            )
        else:
            stmt = stmt.values(awaiting_event_since=None)
        session.exec(stmt)


def undecided_issues(app: App) -> list[str]:
    """Issues to decide again: waiting for their event (oldest first), then issues left
    ``new``/``matched``/``planned`` with no live run (a crash between two steps, a
    target that was missing), oldest first."""
    live = exists().where(
        col(RemediationRun.issue_id) == col(TrackedIssue.id),
        col(RemediationRun.status).in_(_LIVE_RUNS),
    )
    with app.store.session() as session:
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


def _count_awaiting(app: App) -> int:
    from sqlalchemy import func

    with app.store.session() as session:
        return int(
            session.exec(
                select(func.count())
                .select_from(TrackedIssue)
                .where(col(TrackedIssue.awaiting_event_since).is_not(None))
            ).one()
        )


def _no_playbook(app: App, issue_id: str, emit: Any) -> None:
    now = app.clock.now()
    with app.store.session() as session:
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
            if emit is not None:
                emit(session, "triaged", row, None, None, {})


def run_cycle(app: App, *, shadow_only: bool = False, side_steps: bool = True) -> CycleReport:
    """One full pass. Never raises for a single issue's failure; see ``report.errors``.

    ``side_steps`` adds the lifecycle check, the fix-link scan and the outbox flush
    (the scheduler runs those on their own intervals instead).
    """
    report = poll_step(app, shadow_only=shadow_only)
    if side_steps:
        from bot.pipeline.steps import fixlinks_step, lifecycle_step, outbox_step

        for name, step in (
            ("lifecycle", lifecycle_step),
            ("fix links", fixlinks_step),
            ("outbox", outbox_step),
        ):
            try:
                report.extra[name] = step(app)
            except BotError as exc:
                log.warning("%s step failed: %s", name, exc)
                report.errors.append(f"{name}: {exc}")
    return report


def poll_step(app: App, *, shadow_only: bool = False) -> CycleReport:
    """Poll, track, triage, handle regressions, match and plan (execute per mode)."""
    from bot.interfaces.wiring import build_executor, load_matcher

    report = CycleReport()
    matcher, playbooks = load_matcher(app)
    report.errors += [f"playbook not loaded: {e}" for e in app.playbook_errors]
    executor, emit = build_executor(app, playbooks)
    # Runs a human approved (Slack, console) on a replica that does not lead: the
    # leader executes them here, before crash recovery could take them for left behind.
    report.plans.extend(executor.execute_approved())
    report.recovered_runs = executor.recover_interrupted()
    report.expired_approvals = executor.expire_approvals()
    source = app.source()
    report.poll = poll_and_track(
        app.store,
        source,
        app.clock,
        overlap=timedelta(seconds=app.settings.poll_overlap_seconds),
    )
    failpoints.hit("after-track")
    tracked = report.poll.tracked
    candidates = tracked.new + tracked.changed
    # Issues a crash (or a fetch budget) left without a decision: decided again now,
    # the ones waiting longest first (they take the event-fetch budget first).
    leftover = undecided_issues(app)
    fresh = set(candidates)
    report.resumed = sum(1 for i in leftover if i not in fresh)
    with app.store.session() as session:
        untriaged = session.exec(
            select(TrackedIssue.id)
            .where(col(TrackedIssue.id).in_(leftover))
            .where(col(TrackedIssue.severity).is_(None))
        ).all()
        triage_issues(
            session,
            candidates + list(untriaged),
            app.triage_config(),
            app.clock,
            regressed=frozenset(tracked.regressed),
        )
        group_incidents(session, app.clock, changed=candidates)
    report.regressed = handle_regressions(app, tracked.regressed, emit)
    match_and_plan(
        app,
        executor,
        matcher,
        leftover + [i for i in candidates if i not in set(leftover)],
        report,
        shadow_only=shadow_only,
        source=source,
        emit=emit,
    )
    report.awaiting_event = _count_awaiting(app)
    with app.store.session() as session:
        overdue = escalate_overdue(session, app.clock, emit)
    if overdue:
        report.extra["overdue"] = f"escalated past their response deadline: {', '.join(overdue)}"
    return report


def resolve_run_id(app: App, prefix: str) -> str:
    """A full run id from an id or a unique prefix of at least 6 characters."""
    from bot.store.models import RemediationRun

    if len(prefix) < 6:
        raise BotError("give at least 6 characters of the run id")
    with app.store.session() as session:
        ids = session.exec(
            select(RemediationRun.id).where(col(RemediationRun.id).startswith(prefix))
        ).all()
    if not ids:
        raise BotError(f"no run {prefix!r}")
    if len(ids) > 1:
        raise BotError(f"run id prefix {prefix!r} is ambiguous ({len(ids)} runs)")
    return ids[0]
