"""Quiet hours: resolve a watched issue only when two independent signals say it is quiet.

One :meth:`QuietChecker.check`, in the order that keeps Sentry requests few:

1. **Store only, no request.** Watched issues (``watching``, ``remediated``) carry the
   ``last_seen`` the poller re-reads every cycle. A ``last_seen`` newer than
   ``quiet_since`` is a new event while watching: the clock restarts (journaled as a
   note). An issue is *due* when ``quiet_since`` is older than its quiet hours.
2. **Bulk re-read** of the due issues (``get_issues``, 100 per request): fresh
   ``lastSeen``/``count`` go to the store; an issue Sentry no longer returns (deleted,
   merged, out of the token's scope) is *escalated*: the bot stops watching and a human
   is told, since nobody can see the issue through the bot any more. An issue someone
   resolved or archived in Sentry stops being watched too (see ``_first_read``).
3. **Second signal** for the issues whose fresh ``lastSeen`` still says quiet: no event
   in the window, from the organization events table (100 issues per request). If the
   plan or token refuses that endpoint, fall back to one ``list_events(limit=1)`` per
   issue and say so in the report.
4. **Compare-and-set.** Re-read the survivors right before the update; if ``lastSeen``
   or ``count`` moved since step 2, do not resolve and restart the clock.
   Every re-read selects issues with repeated ``group=`` (``get_issues``).
5. **Resolve**, grouped by (fix commit, project), because Sentry's bulk update accepts
   ``statusDetails.inCommit`` only for issues of one project; issues without a commit
   in one plain bulk update. A commit Sentry does not know (400) is resolved plainly,
   and the reason is journaled. Then a re-read **confirms**: only an issue Sentry now
   reports ``resolved`` is recorded (a bulk PUT answers 204 when nothing matched, and
   its 200 body does not say which issues changed). The store gets ``resolved``,
   ``resolved_at`` and ``resolved_by_bot`` so the tracker sees a later event as a
   regression; an unconfirmed issue stays watched, with a note, and is tried again.

Due issues are handled in chunks of ``batch`` (steps 2-5 per chunk), oldest first. When
Sentry says "retry later" the check stops cleanly: finished chunks stay resolved, and the
rest is picked up by the next check.

Step 1 (and the row helpers the steps share) is :mod:`bot.pipeline.lifecycle_due`, step 5
:mod:`bot.pipeline.lifecycle_resolve`; this module runs the check and steps 2-4.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlmodel import Session

from bot.clock import Clock
from bot.codehost.fixlinks import FixCommit
from bot.errors import RetryLater, SentryError
from bot.pipeline.execute import EventSink
from bot.pipeline.lifecycle_due import (
    WATCHED_STATES,
    Watched,
    chunks,
    due_from_store,
    iso,
    restart_clock,
    store_fresh,
)
from bot.pipeline.lifecycle_report import QuietReport
from bot.pipeline.lifecycle_resolve import QuietResolver
from bot.pipeline.track import note, record_transition
from bot.sentry.models import SentryIssue
from bot.sentry.port import MAX_PAGE_SIZE, SentryPort
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue

log = logging.getLogger(__name__)

__all__ = ["WATCHED_STATES", "QuietChecker", "QuietReport", "stats_period"]


def stats_period(hours: float) -> str:
    """Sentry's ``statsPeriod`` for ``hours`` (``48h``; fractions as whole minutes)."""
    if hours == int(hours):
        return f"{int(hours)}h"
    return f"{math.ceil(hours * 60)}m"


def _no_events(
    _session: Session,
    _kind: str,
    _row: TrackedIssue,
    _run: object,
    _playbook: object,
    _details: dict[str, object],
) -> None:
    return None


class QuietChecker:
    """Resolves watched issues after their quiet hours, with few Sentry requests."""

    def __init__(
        self,
        store: Store,
        sentry: SentryPort,
        clock: Clock,
        *,
        default_quiet_hours: float = 48,
        quiet_hours_for: Callable[[str | None], float] | None = None,
        fix_commit_for: Callable[[str], FixCommit | None] | None = None,
        in_commit_for: Callable[[str | None], bool] | None = None,
        on_event: EventSink = _no_events,
        batch: int = MAX_PAGE_SIZE,
    ) -> None:
        if not 1 <= batch <= MAX_PAGE_SIZE:
            raise ValueError(f"batch must be within 1..{MAX_PAGE_SIZE}, got {batch}")
        if default_quiet_hours <= 0:
            raise ValueError("default_quiet_hours must be positive")
        self.store = store
        self.sentry = sentry
        self.clock = clock
        self.default_quiet_hours = default_quiet_hours
        self.quiet_hours_for = quiet_hours_for
        self.fix_commit_for = fix_commit_for or (lambda _issue_id: None)
        self.in_commit_for = in_commit_for or (lambda _playbook_id: True)
        self.on_event = on_event
        self.batch = batch
        self._resolver = QuietResolver(
            store,
            sentry,
            clock,
            fix_commit_for=self.fix_commit_for,
            in_commit_for=self.in_commit_for,
            on_event=on_event,
        )
        self._events_refused: str | None = None

    # --- the check ------------------------------------------------------------------

    def check(self) -> QuietReport:
        """One pass over the watched issues; never raises for "retry later".

        Resolves (in Sentry, then in the store) every due issue that both signals say
        is quiet and that did not move between the two reads; see the module docstring.
        ``report.stopped`` says why a check ended early; what was done stays done.
        """
        report = QuietReport()
        before = self.sentry.request_count
        self._events_refused = None
        try:
            due = self._due_from_store(self.clock.now(), report)
            report.due = len(due)
            for chunk in chunks(due, self.batch):
                self._check_chunk(chunk, report)
        except RetryLater as exc:
            report.stopped = f"{type(exc).__name__}: {exc}"
            report.retry_after = exc.retry_after
            log.warning("quiet check stopped early, the rest waits for the next check: %s", exc)
        finally:
            report.requests = self.sentry.request_count - before
        return report

    def _hours(self, playbook_id: str | None, cache: dict[str | None, float]) -> float:
        if playbook_id not in cache:
            hours = self.quiet_hours_for(playbook_id) if self.quiet_hours_for else 0
            cache[playbook_id] = hours if hours and hours > 0 else self.default_quiet_hours
        return cache[playbook_id]

    def _due_from_store(self, now: datetime, report: QuietReport) -> list[Watched]:
        """Step 1, store only: restart moved clocks, return the due issues (oldest first)."""
        cache: dict[str | None, float] = {}
        return due_from_store(self.store, now, report, lambda pb: self._hours(pb, cache))

    def _check_chunk(self, chunk: list[Watched], report: QuietReport) -> None:
        fresh = {i.id: i for i in self.sentry.get_issues([w.id for w in chunk])}
        report.rechecked += len(chunk)
        candidates = self._first_read(chunk, fresh, report)
        quiet = self._without_events(candidates, report) if candidates else []
        confirmed = self._compare_and_set(quiet, report) if quiet else []
        if confirmed:
            self._resolver.resolve(confirmed, report)

    # --- step 2: the first re-read ----------------------------------------------------

    def _first_read(
        self, chunk: list[Watched], fresh: dict[str, SentryIssue], report: QuietReport
    ) -> list[Watched]:
        now = self.clock.now()
        out: list[Watched] = []
        with self.store.session() as session:
            for w in chunk:
                row = session.get(TrackedIssue, w.id)
                if row is None or row.state not in WATCHED_STATES:
                    continue  # moved on in the store since step 1
                issue = fresh.get(w.id)
                if issue is None:
                    self._stop_watching(session, row, now, report, gone=True)
                    continue
                store_fresh(row, issue, now)
                if issue.status == "resolved":
                    # Maybe our own update whose store write was lost in a crash, maybe a
                    # person: either way watch for regressions as after a bot resolve.
                    row.resolved_at, row.resolved_by_bot = now, True
                    record_transition(
                        session,
                        row,
                        LifecycleState.RESOLVED,
                        "already resolved in Sentry; watching for regressions",
                        now,
                    )
                    # Announced like a resolve of ours: it may be one whose store write
                    # a crash lost (failpoint after-resolve), and the channel must hear.
                    plain = "resolved in Sentry before the bot recorded it"
                    self.on_event(
                        session,
                        "resolved",
                        row,
                        None,
                        None,
                        {"in_commit": None, "plain_reason": plain},
                    )
                    report.stopped_watching += 1
                    continue
                if issue.status != "unresolved":
                    self._stop_watching(session, row, now, report, gone=False, status=issue.status)
                    continue
                since = w.quiet_since
                if issue.last_seen is not None and issue.last_seen > since:
                    since = restart_clock(session, row, issue.last_seen, now, report)
                if since > now - timedelta(hours=w.hours):
                    continue
                out.append(
                    replace(
                        w,
                        quiet_since=since,
                        last_seen=issue.last_seen,
                        count=issue.count,
                        project=issue.project.id,
                    )
                )
        return out

    def _stop_watching(
        self,
        session: Session,
        row: TrackedIssue,
        now: datetime,
        report: QuietReport,
        *,
        gone: bool,
        status: str = "",
    ) -> None:
        if gone:
            reason = (
                "Sentry no longer returns this issue (deleted, merged or out of the "
                "token's scope): stopped watching; a human should confirm"
            )
        else:
            reason = (
                f"Sentry says the issue is {status} (changed outside the bot): "
                "stopped watching; a human owns it now"
            )
        record_transition(session, row, LifecycleState.ESCALATED, reason, now)
        row.escalated_at = now
        row.quiet_since = None
        report.stopped_watching += 1
        report.notes.append(f"{row.short_id}: {reason}")
        if gone:
            self.on_event(session, "escalated", row, None, None, {"reason": reason})

    # --- step 3: the events signal ----------------------------------------------------

    def _without_events(self, candidates: list[Watched], report: QuietReport) -> list[Watched]:
        by_hours: dict[float, list[Watched]] = {}
        for c in candidates:
            by_hours.setdefault(c.hours, []).append(c)
        out: list[Watched] = []
        for hours, group in by_hours.items():
            counts = self._event_counts([c.id for c in group], stats_period(hours), report)
            for c in group:
                report.events_checked += 1
                if counts.get(c.id, 0):
                    # lastSeen says quiet but the events endpoint disagrees: trust the
                    # louder signal and ask again next check.
                    report.not_quiet_by_events += 1
                    continue
                out.append(c)
        return out

    def _event_counts(self, ids: list[str], period: str, report: QuietReport) -> dict[str, int]:
        if self._events_refused is None:
            try:
                return self.sentry.event_counts(ids, stats_period=period)
            except RetryLater:
                raise
            except SentryError as exc:
                self._events_refused = f"organization events endpoint refused ({exc})"
                report.events_fallback = (
                    f"{self._events_refused}; fell back to one events request per issue"
                )
                log.warning("%s", report.events_fallback)
        return {i: len(self.sentry.list_events(i, stats_period=period, limit=1)) for i in ids}

    # --- step 4: compare-and-set ------------------------------------------------------

    def _compare_and_set(self, quiet: list[Watched], report: QuietReport) -> list[Watched]:
        # Between the first read and the update an event may have arrived; resolving on
        # the stale read would hide it, so only unchanged issues go on.
        again = {i.id: i for i in self.sentry.get_issues([q.id for q in quiet])}
        now = self.clock.now()
        confirmed: list[Watched] = []
        with self.store.session() as session:
            for q in quiet:
                issue = again.get(q.id)
                row = session.get(TrackedIssue, q.id)
                if row is None or row.state not in WATCHED_STATES:
                    continue
                if (
                    issue is not None
                    and issue.status == "unresolved"
                    and issue.last_seen == q.last_seen
                    and issue.count == q.count
                ):
                    confirmed.append(q)
                    continue
                report.skipped_moved += 1
                if issue is not None:
                    store_fresh(row, issue, now)
                moved_seen = issue.last_seen if issue is not None else None
                # A count that grew without a newer lastSeen still means an event we
                # cannot date: restart from now, the cautious choice.
                since = moved_seen if moved_seen and moved_seen > q.quiet_since else now
                row.quiet_since = since
                note(
                    session,
                    row,
                    f"moved while resolving (lastSeen {iso(moved_seen)}, "
                    f"count {issue.count if issue else '?'}): not resolved; "
                    f"quiet clock restarted at {iso(since)}",
                    now,
                )
        return confirmed
