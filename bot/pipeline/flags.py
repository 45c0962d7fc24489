"""Put back what ``set_flag`` set: when the incident ends, after a deadline, or on demand.

A temporary mitigation (seed 000 BEE-7G: throttle page discovery while BEE-42 is active)
is only safe to automate if it is undone reliably. For every ``set_flag`` run that may
have changed the value (succeeded, verify_failed, or interrupted by a crash), the revert
is due at the first of:

- the run's issue is resolved (``revert_when: issue``), or every issue of its incident is
  (``revert_when: incident``);
- ``revert_after_minutes`` have passed since the run;
- an operator runs ``sentry-bot revert RUN_ID``.

The revert is journaled before it touches the target (a ``flag_revert`` row, one per
run), then runs ONE compare-and-set ``UPDATE``: the old value goes back only while the
row still holds the value the bot set. A row someone changed meanwhile is left alone and
the journal says so. After a crash anywhere in between (failpoints ``flag-revert-journaled`` and
``flag-revert-committed``), the next sweep finds the
unfinished row and runs the same compare-and-set again: a revert that had committed now
finds the old value already back, so the value is restored exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import col, select

from bot import failpoints
from bot.actions.set_flag import SetFlagSettings, read_value, write_sql
from bot.actions.target import TargetDatabase
from bot.clock import Clock, ensure_utc
from bot.errors import BotError, RunNotFound
from bot.pipeline.track import note
from bot.playbooks.models import Guards, Playbook
from bot.store.db import Store
from bot.store.models import FlagRevert, LifecycleState, RemediationRun, RunStatus, TrackedIssue

log = logging.getLogger(__name__)

# A run in one of these may have written the value (an interrupted run: perhaps).
MAY_HAVE_SET = (
    RunStatus.SUCCEEDED.value,
    RunStatus.VERIFY_FAILED.value,
    RunStatus.INTERRUPTED.value,
)
Failpoint = Callable[[str], None]


@dataclass
class RevertReport:
    """What one sweep did."""

    pending: int = 0
    reverted: int = 0
    already_back: int = 0
    left_changed: int = 0
    failed: int = 0
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"flags: {self.pending} set, {self.reverted} reverted, {self.already_back} already"
            f" back, {self.left_changed} left (changed by someone else), {self.failed} failed"
        )


@dataclass(frozen=True)
class _Intent:
    """What the run set: the value to restore and the value that must still be there."""

    before: str | None
    value: str | None
    type_name: str


def _intent(run: RemediationRun) -> _Intent | None:
    """From the run's before-image, or, for a run a crash interrupted before it could
    record one, from its journaled preview (written before the run executed)."""
    details = (run.before_image or {}).get("details") or {}
    if "type" in details and not details.get("unchanged"):
        return _Intent(details.get("before"), details.get("value"), str(details["type"]))
    rows = [r for r in (run.preview or {}).get("rows", []) if isinstance(r, dict)]
    if rows and "type" in rows[0]:
        return _Intent(rows[0].get("before"), rows[0].get("value"), str(rows[0]["type"]))
    return None


class FlagReverter:
    """Finds due ``set_flag`` runs and reverts each once (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        playbooks: Mapping[str, Playbook],
        targets: Callable[[str], TargetDatabase | None],
        clock: Clock,
        *,
        failpoint: Failpoint = failpoints.hit,
    ) -> None:
        self.store = store
        self.playbooks = playbooks
        self.targets = targets
        self.clock = clock
        self.failpoint = failpoint
        self.last_detail = ""  # what the last revert() found, for the CLI

    def open_runs(self) -> list[RemediationRun]:
        """``set_flag`` runs that may have set a value and have no finished revert."""
        with self.store.session() as session:
            done = select(FlagRevert.run_id).where(col(FlagRevert.finished_at).is_not(None))
            return list(
                session.exec(
                    select(RemediationRun).where(
                        RemediationRun.action == "set_flag",
                        col(RemediationRun.status).in_(MAY_HAVE_SET),
                        col(RemediationRun.id).not_in(done),
                    )
                ).all()
            )

    def sweep(self) -> RevertReport:
        """Revert every open run whose time has come; a failure leaves it for next time."""
        report = RevertReport()
        for run in self.open_runs():
            reason = self.due(run)
            report.pending += 1
            if reason is None:
                continue
            self._count(report, self.revert(run.id, reason))
        return report

    def due(self, run: RemediationRun) -> str | None:
        """Why ``run``'s value should go back now, or None while it should stay."""
        pb = self.playbooks.get(run.playbook_id)
        settings = pb.action.parsed_settings if pb is not None else None
        after = settings.revert_after_minutes if isinstance(settings, SetFlagSettings) else 240
        since = run.finished_at or run.started_at or run.created_at
        if since is not None and self.clock.now() >= ensure_utc(since) + timedelta(minutes=after):
            return f"revert_after_minutes ({after}) elapsed"
        with self.store.session() as session:
            issue = session.get(TrackedIssue, run.issue_id)
            if issue is None:
                return "its issue is no longer tracked"
            if issue.state == LifecycleState.RESOLVED.value:
                return f"issue {issue.short_id} resolved"
            when = settings.revert_when if isinstance(settings, SetFlagSettings) else "issue"
            if when == "incident" and issue.incident_id:
                open_members = session.exec(
                    select(TrackedIssue.id).where(
                        TrackedIssue.incident_id == issue.incident_id,
                        TrackedIssue.state != LifecycleState.RESOLVED.value,
                    )
                ).first()
                if open_members is None:
                    return f"incident {issue.incident_id} resolved"
        return None

    def revert(self, run_id: str, reason: str) -> str:
        """Revert one run now (idempotent): journal the intent, compare-and-set, record.
        Returns the outcome (``reverted``, ``already_back``, ``changed_by_someone_else``,
        ``failed`` or ``done`` when an earlier revert already finished)."""
        now = self.clock.now()
        with self.store.session() as session:
            run = session.get(RemediationRun, run_id)
            if run is None or run.action != "set_flag":
                raise RunNotFound(f"no set_flag run {run_id!r}")
            journal = session.get(FlagRevert, run_id)
            if journal is not None and journal.finished_at is not None:
                self.last_detail = f"already {journal.outcome}: {journal.detail or ''}"
                return "done"
            retry = journal is not None
            if journal is None:
                session.add(FlagRevert(run_id=run_id, reason=reason[:500], started_at=now))
            else:
                journal.attempts += 1  # an earlier attempt died or failed: same CAS again
            intent = _intent(run)
            playbook_id, target_name = run.playbook_id, run.target or ""
        self.failpoint("flag-revert-journaled")
        pb = self.playbooks.get(playbook_id)
        target = self.targets(target_name)
        if intent is None:
            return self._finish(run_id, "already_back", "the run set nothing", reason)
        settings = pb.action.parsed_settings if pb is not None else None
        if target is None or not isinstance(settings, SetFlagSettings):
            why = "playbook not loaded" if pb is None else f"target {target_name!r} missing"
            return self._finish(run_id, "failed", f"cannot revert yet: {why}", reason, final=False)
        s = settings
        g = pb.guards if pb is not None else Guards()
        try:
            with target.transaction(g.statement_timeout_ms, g.lock_timeout_ms) as conn:
                back = conn.fetch_all(
                    write_sql(s, intent.type_name, only_if_text=True),
                    {"key": str(s.key), "new_text": intent.before, "old_text": intent.value},
                )
                current = back[0]["value"] if back else read_value(conn, s, lock=False)
        except BotError as exc:
            return self._finish(run_id, "failed", f"revert failed: {exc}", reason, final=False)
        self.failpoint("flag-revert-committed")
        label = f"{s.table}.{s.value_column} ({s.key_column} = {s.key!r})"
        if back:
            detail = f"{label}: {intent.value} -> {current} ({reason})"
            return self._finish(run_id, "reverted", detail, reason)
        if current == intent.before:
            if retry:  # the attempt that died had committed: this is its revert, confirmed
                detail = f"{label}: {intent.value} -> {current}, confirmed after a retry"
                return self._finish(run_id, "reverted", detail, reason)
            return self._finish(run_id, "already_back", f"{label} is {current} again", reason)
        detail = (
            f"{label} is now {current}, not the {intent.value} the bot set: someone changed"
            f" it; left as is (would have restored {intent.before})"
        )
        return self._finish(run_id, "changed_by_someone_else", detail, reason)

    def _finish(
        self, run_id: str, outcome: str, detail: str, reason: str, *, final: bool = True
    ) -> str:
        now = self.clock.now()
        self.last_detail = detail
        with self.store.session() as session:
            journal = session.get(FlagRevert, run_id)
            run = session.get(RemediationRun, run_id)
            if journal is not None:
                journal.detail = detail[:2000]
                if final:
                    journal.finished_at, journal.outcome = now, outcome
            issue = session.get(TrackedIssue, run.issue_id) if run is not None else None
            if issue is not None:
                verb = {"reverted": "flag reverted", "failed": "flag revert failed"}.get(
                    outcome, "flag revert"
                )
                note(session, issue, f"{verb}: {detail}", now)
        log.info("set_flag run %s: %s (%s)", run_id[:8], outcome, detail)
        return outcome

    @staticmethod
    def _count(report: RevertReport, outcome: str) -> None:
        if outcome == "reverted":
            report.reverted += 1
        elif outcome == "already_back":
            report.already_back += 1
        elif outcome == "changed_by_someone_else":
            report.left_changed += 1
        elif outcome == "failed":
            report.failed += 1
