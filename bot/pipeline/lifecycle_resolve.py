"""Quiet hours, step 5: resolve the confirmed-quiet issues in Sentry, confirm, record.

Issues are grouped by (fix commit, project), because Sentry's bulk update accepts
``statusDetails.inCommit`` only for issues of one project; issues without a commit go in
one plain bulk update. A commit Sentry does not know (400) is resolved plainly, and the
reason is journaled. Then a re-read **confirms**: only an issue Sentry now reports
``resolved`` is recorded (a bulk PUT answers 204 when nothing matched, and its 200 body
does not say which issues changed). The store gets ``resolved``, ``resolved_at`` and
``resolved_by_bot`` so the tracker sees a later event as a regression; an unconfirmed
issue stays watched, with a note, and is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import failpoints
from bot.clock import Clock
from bot.codehost.fixlinks import FixCommit
from bot.errors import SentryBadRequest
from bot.pipeline.execute import EventSink
from bot.pipeline.lifecycle_due import Watched, iso
from bot.pipeline.lifecycle_report import QuietReport
from bot.pipeline.track import note, record_transition
from bot.sentry.port import SentryPort
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue

log = logging.getLogger(__name__)

# What was asked of Sentry for one issue: the fix commit, or the reason it went plainly.
_Asked = tuple[Watched, FixCommit | None, str | None]


class QuietResolver:
    """Resolves issues the quiet check confirmed, and records only confirmed resolves."""

    def __init__(
        self,
        store: Store,
        sentry: SentryPort,
        clock: Clock,
        *,
        fix_commit_for: Callable[[str], FixCommit | None],
        in_commit_for: Callable[[str | None], bool],
        on_event: EventSink,
    ) -> None:
        self.store = store
        self.sentry = sentry
        self.clock = clock
        self.fix_commit_for = fix_commit_for
        self.in_commit_for = in_commit_for
        self.on_event = on_event

    def resolve(self, confirmed: list[Watched], report: QuietReport) -> None:
        """Resolve ``confirmed`` in Sentry (in commit where known), then confirm and record."""
        groups: dict[tuple[str, str, str] | None, list[Watched]] = {}
        for c in confirmed:
            fix = self.fix_commit_for(c.id) if self.in_commit_for(c.playbook_id) else None
            key = (fix.repo, fix.sha, c.project) if fix and fix.sha and fix.repo else None
            groups.setdefault(key, []).append(c)
        asked: dict[str, _Asked] = {}
        for key, group in groups.items():
            ids = [c.id for c in group]
            if key is None:
                self._resolve_in_sentry(ids, {"status": "resolved"})
                asked.update((c.id, (c, None, "no fix commit known")) for c in group)
                continue
            repo, sha, _project = key
            details = {"inCommit": {"commit": sha, "repository": repo}}
            try:
                self._resolve_in_sentry(ids, {"status": "resolved", "statusDetails": details})
            except SentryBadRequest as exc:
                plain = (
                    f"Sentry did not know commit {sha[:12]} of {repo}; resolved without inCommit"
                )
                log.warning("%s (%s)", plain, exc)
                self._resolve_in_sentry(ids, {"status": "resolved"})
                report.commit_refused += len(ids)
                asked.update((c.id, (c, None, plain)) for c in group)
                continue
            asked.update((c.id, (c, FixCommit(repo, sha), None)) for c in group)
        self._confirm_resolved(asked, report)

    def _confirm_resolved(self, asked: dict[str, _Asked], report: QuietReport) -> None:
        """Record a resolve only where a re-read shows Sentry resolved the issue.

        A bulk PUT answers 204 when no id matched and its 200 body lists changed fields,
        not issues (getsentry/sentry ``src/sentry/api/helpers/group_index/update.py``),
        so neither proves a given issue was resolved; the ``group=`` re-read does.
        """
        fresh = {i.id: i for i in self.sentry.get_issues(list(asked))}
        done: list[_Asked] = []
        now = self.clock.now()
        with self.store.session() as session:
            for issue_id, (c, fix, plain) in asked.items():
                issue = fresh.get(issue_id)
                if issue is not None and issue.status == "resolved":
                    in_commit = issue.status_details.get("inCommit")
                    if fix is not None and not in_commit:
                        fix, plain = None, "Sentry resolved it without the commit"
                    done.append((c, fix, plain))
                    continue
                row = session.get(TrackedIssue, issue_id)
                if row is None:
                    continue
                seen = issue.status if issue is not None else "not returned"
                why = (
                    f"asked Sentry to resolve, but a re-read says {seen}: not recorded as "
                    "resolved; tried again next check"
                )
                note(session, row, why, now)
                report.unconfirmed += 1
                report.notes.append(f"{row.short_id}: {why}")
        for c, fix, plain in done:
            self._record_resolved([c], fix, plain, report)

    def _resolve_in_sentry(self, ids: list[str], data: dict[str, object]) -> None:
        failpoints.hit("before-resolve")
        self.sentry.bulk_update(ids, data)
        failpoints.hit("after-resolve")

    def _record_resolved(
        self,
        group: list[Watched],
        fix: FixCommit | None,
        plain_reason: str | None,
        report: QuietReport,
    ) -> None:
        now = self.clock.now()
        with self.store.session() as session:
            for c in group:
                row = session.get(TrackedIssue, c.id)
                if row is None:
                    continue
                how = (
                    f"resolved in commit {fix.sha[:12]} of {fix.repo}"
                    if fix
                    else f"resolved plainly: {plain_reason}"
                )
                reason = (
                    f"quiet for {c.hours:g} h: lastSeen {iso(c.last_seen)}, 0 events "
                    f"in window; {how}"
                )
                # Sentry is resolved now; the store must say so whatever happened to the
                # row meanwhile, or the tracker could not see a later event as a regression.
                row.status, row.substatus = "resolved", None
                row.resolved_at, row.resolved_by_bot = now, True
                row.resolved_in_commit = fix.sha if fix else None
                record_transition(session, row, LifecycleState.RESOLVED, reason, now)
                self.on_event(
                    session,
                    "resolved",
                    row,
                    None,
                    None,
                    {"in_commit": fix.sha if fix else None, "plain_reason": plain_reason},
                )
                report.resolved += 1
                report.resolved_ids.append(c.id)
                if fix:
                    report.resolved_in_commit += 1
                else:
                    report.resolved_plainly += 1
