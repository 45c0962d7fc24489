"""One cycle: poll → track → (triage) → match → plan/execute/verify → lifecycle → outbox.

``run_cycle`` is what ``sentry-bot cycle`` and every scheduler tick call. Each step is
its own function so the scheduler can run them at different intervals. A failure of
one issue's remediation never stops the cycle for the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlmodel import col, select

from bot.app import App
from bot.engine.executor import Executor, PlanOutcome
from bot.errors import BotError
from bot.playbooks.matcher import Matcher
from bot.poller import PollResult, poll_and_track
from bot.sentry.models import SentryEvent, SentryIssue
from bot.store.models import LifecycleState, TrackedIssue
from bot.tracker import record_transition
from bot.triage_step import escalate_overdue, group_incidents, triage_issues

log = logging.getLogger(__name__)

MAX_EVENT_FETCHES = 100
_SKIP_STATES = {LifecycleState.RESOLVED.value}


@dataclass
class CycleReport:
    poll: PollResult | None = None
    plans: list[PlanOutcome] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    recovered_runs: list[str] = field(default_factory=list)
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
            "expired_approvals": self.expired_approvals,
            "errors": self.errors,
            **self.extra,
        }

    def render(self, *, verbose: bool = False) -> str:
        d = self.as_dict()
        lines = [
            f"polled {d['polled']} issues: {d['new']} new, {d['changed']} changed, "
            f"{d['unchanged']} unchanged"
        ]
        for p in self.plans:
            head = f"- {p.short_id}: playbook {p.playbook_id} [{p.mode}] → {p.status}"
            if p.rows_affected is not None:
                head += f", {p.rows_affected} rows changed"
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
            lines.append(f"no playbook (triage, notify, watch): {', '.join(self.unmatched)}")
        if self.regressed:
            lines.append(f"regressed after resolve (escalated): {', '.join(self.regressed)}")
        if self.recovered_runs:
            lines.append(f"interrupted runs verified: {', '.join(self.recovered_runs)}")
        lines += [str(value) for value in self.extra.values()]
        for err in self.errors:
            lines.append(f"error: {err}")
        return "\n".join(lines)


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
    """Match each issue, then plan (and per mode execute) the winning playbook."""
    fetches = 0
    for issue_id in issue_ids:
        with app.store.session() as session:
            row = session.get(TrackedIssue, issue_id)
            if row is None or row.state in _SKIP_STATES:
                continue
            if row.state == LifecycleState.ESCALATED.value and not row.requires_approval:
                continue  # a human owns it now
            issue = _issue_from_row(row)
        event: SentryEvent | None = issue.latest_event
        result = matcher.match(issue, event)
        if (
            result is None
            and event is None
            and source is not None
            and fetches < MAX_EVENT_FETCHES
            and matcher.wants_event(issue)
        ):
            fetch = getattr(source, "latest_event", None)
            if fetch is not None:
                fetches += 1
                try:
                    event = fetch(issue.id)
                except BotError as exc:
                    report.errors.append(f"{issue.short_id}: latest event: {exc}")
                result = matcher.match(issue, event) if event is not None else None
        if result is None:
            report.unmatched.append(issue.short_id)
            _no_playbook(app, issue_id, emit)
            continue
        try:
            report.plans.append(executor.plan(issue_id, result, shadow_only=shadow_only))
        except BotError as exc:
            log.warning("planning %s failed: %s", issue.short_id, exc)
            report.errors.append(f"{issue.short_id}: {exc}")


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
        from bot.steps import fixlinks_step, lifecycle_step, outbox_step

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
    from bot.wiring import build_executor, load_matcher

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
    tracked = report.poll.tracked
    candidates = tracked.new + tracked.changed
    with app.store.session() as session:
        triage_issues(
            session,
            candidates,
            app.triage_config(),
            app.clock,
            regressed=frozenset(tracked.regressed),
        )
        group_incidents(session, app.clock, changed=candidates)
    report.regressed = handle_regressions(app, tracked.regressed, emit)
    with app.store.session() as session:
        # Issues waiting on a playbook that was unavailable last time get another chance.
        pending = session.exec(
            select(TrackedIssue.id).where(col(TrackedIssue.state) == LifecycleState.MATCHED.value)
        ).all()
    seen = set(candidates)
    candidates += [i for i in pending if i not in seen]
    match_and_plan(
        app,
        executor,
        matcher,
        candidates,
        report,
        shadow_only=shadow_only,
        source=source,
        emit=emit,
    )
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
