"""Lifecycle events (remediated, failed, regressed …) → notification outbox rows.

The executor and the lifecycle call the sink inside their store transaction, so the
outbox row commits together with the state change it announces (transactional
outbox): a crash can never record "remediated" without its notification, or the
other way round. Each event has a dedupe key, so re-running a step never enqueues
the same message twice. Channels: ``slack`` (when a webhook is configured) and
``sentry_comment`` (a note on the Sentry issue whenever the bot acts).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, col, select

from bot.clock import Clock, ensure_utc
from bot.errors import BotError
from bot.notify.approval_message import approval_request, outcome_message
from bot.notify.messages import Link, Notification, NotificationKind, render, safe_id
from bot.notify.port import SLACK_RESPONSE_CHANNEL, Payload
from bot.pipeline.approvals import reply_urls
from bot.pipeline.outbox import OutboxRow, enqueue, enqueue_many
from bot.pipeline.ports import Event
from bot.playbooks.models import Playbook
from bot.store.models import FixLink, RemediationRun, TrackedIssue
from bot.triage.report import collect_report_facts, render_report

log = logging.getLogger(__name__)

# Events on which the bot leaves a note on the Sentry issue itself.
_SENTRY_NOTE_KINDS = {
    "remediated",
    "failed",
    "resolved",
    "regressed",
    "hidden_debt",
    "plan_awaiting_approval",
}


def _iso(value: datetime | None) -> str:
    return ensure_utc(value).isoformat() if value else "-"


def _undo_hint(run: RemediationRun | None, short_id: str) -> str | None:
    if run is None or not run.rows_affected:
        return None
    return (
        f"the before-image of {run.rows_affected} row(s) is journaled in run {run.id[:8]}: "
        f"`sentry-bot status {short_id} --json` shows the old values to restore"
    )


def episode_key(kind: str, issue: TrackedIssue, run: RemediationRun | None) -> str:
    """What makes one event distinct: its run, else the moment it is about."""
    if run is not None:
        return run.id
    if kind == "resolved":
        return _iso(issue.resolved_at)
    return _iso(issue.last_seen)


def build_notification(
    session: Session,
    kind: str,
    issue: TrackedIssue,
    run: RemediationRun | None,
    playbook: Playbook | None,
    extra: Mapping[str, object],
    report_base_url: str | None = None,
    report_path: Path | None = None,
    *,
    links: Sequence[FixLink] | None = None,
) -> Notification:
    """A :class:`Notification` for ``kind`` from what the store knows right now
    (``links``: the issue's fix links when the caller read them already)."""
    if links is None:
        links = session.exec(select(FixLink).where(FixLink.issue_id == issue.id)).all()
    facts = {k: str(v)[:300] for k, v in extra.items() if v not in (None, "", False)}
    if issue.incident_id:
        facts["incident"] = issue.incident_id
    if report_path is not None:
        facts["report"] = f"{report_path} (or `sentry-bot report {issue.short_id}`)"
    verify = extra.get("verify")
    return Notification(
        kind=NotificationKind(kind),
        issue_short_id=issue.short_id,
        title=issue.title,
        permalink=issue.permalink or None,
        detail=_text(extra.get("error")) or _text(extra.get("reason")) or issue.message or None,
        severity=issue.severity,
        owner=issue.team,
        category=issue.category,
        response_due_at=issue.response_due_at,
        playbook=playbook.id if playbook else issue.playbook_id,
        mode=run.mode if run else None,
        rows_changed=run.rows_affected if run else None,
        verify_result=str(verify) if verify else None,
        undo_hint=_undo_hint(run, issue.short_id),
        run_id=run.id if run else None,
        fix_links=tuple(
            Link(label=f"{f.repo} {'#' + f.ref if f.kind == 'pr' else f.ref[:10]}", url=f.url)
            for f in links
            if f.url
        )[:5],
        report_link=(
            f"{report_base_url.rstrip('/')}/{report_path.name}"
            if report_base_url and report_path is not None
            else None
        ),
        facts=facts,
    )


def _text(value: object) -> str | None:
    """An event detail as text (None when absent, empty or false)."""
    return str(value) if value else None


def sentry_note(n: Notification) -> str:
    """Plain text for a Sentry issue comment (Sentry renders it as Markdown)."""
    parts = [f"sentry-remediation-bot: {n.kind.value.replace('_', ' ')}"]
    if n.playbook:
        parts.append(f"playbook {n.playbook}" + (f" ({n.mode})" if n.mode else ""))
    if n.run_id:
        parts.append(f"run {n.run_id[:8]}")
    if n.rows_changed is not None:
        parts.append(f"{n.rows_changed} rows changed")
    if n.verify_result:
        parts.append(f"verify: {n.verify_result[:200]}")
    for key in ("in_commit", "plain_reason", "reason"):
        if key in n.facts:
            parts.append(f"{key.replace('_', ' ')}: {n.facts[key][:200]}")
    return "; ".join(parts)


# Events that end an approved run: the approval message is replaced with the outcome.
_RUN_OUTCOME_KINDS = {"remediated", "failed"}


def approval_payload(issue: TrackedIssue, run: RemediationRun, playbook: Playbook) -> Payload:
    """The Block Kit approval request for ``run`` (buttons approve / deny its id)."""
    rows = [r for r in run.preview.get("rows", []) if isinstance(r, dict)]
    return approval_request(
        run_id=run.id,
        short_id=issue.short_id,
        title=issue.title,
        permalink=issue.permalink or None,
        detail=issue.message,
        severity=issue.severity,
        category=issue.category,
        team=issue.team,
        playbook=playbook.id,
        action=playbook.action.type,
        target=playbook.action.target,
        summary=str(run.preview.get("summary", "")),
        rows=rows,
        max_rows=playbook.guards.max_rows,
        expires_at=run.expires_at,
    )


def outcome_update(run: RemediationRun, verify: str | None) -> Payload:
    """The approval message's replacement once ``run`` has executed."""
    who = f" (approved by {run.approved_by} via {run.approval_channel})" if run.approved_by else ""
    rows = run.rows_affected if run.rows_affected is not None else 0
    details = [f"rows changed: {rows}"]
    if verify:
        details.append(f"verification: {verify}")
    if run.error:
        details.append(f"error: {run.error[:500]}")
    return outcome_message(f"Run {run.id[:8]} {run.status}{who}", details)


def report_filename(short_id: str) -> str:
    """A safe, unique file name for an issue's report.

    A short id that is already safe is used as it is (``API-9.md``); otherwise the safe
    characters are kept and a hash of the whole id is added, so ``A/B`` and ``AB``
    (or two long ids with one prefix) never write the same file.
    """
    base = safe_id(short_id, 64).lstrip(".")
    if base != short_id or not base:
        digest = hashlib.sha256(short_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        base = f"{base[:48] or 'issue'}-{digest}"
    return f"{base}.md"


# The final word on an issue carries the post-incident report.
_REPORT_KINDS = {"resolved", "escalated", "regressed"}
# Announcements that are about the incident as a whole when issues are grouped.
_PER_INCIDENT_KINDS = {"triaged"}


@dataclass(frozen=True)
class NoticeConfig:
    """Where the event notifications go and what the reports say (from the settings)."""

    slack: bool = False  # a Slack webhook is configured
    sentry_notes: bool = True  # a note on the Sentry issue (not for a replay source)
    reports_dir: Path | None = None
    report_base_url: str | None = None
    quiet_hours: float = 48


class EventRecorder:
    """Callable event sink (:class:`~bot.pipeline.ports.EventSink`): enqueues each
    event's notifications in the caller's session."""

    def __init__(self, clock: Clock, config: NoticeConfig) -> None:
        self.clock = clock
        self.config = config
        self.events: list[tuple[str, str]] = []

    def _write_report(self, session: Session, issue: TrackedIssue) -> Path | None:
        """Write the issue's Markdown report into the reports directory; None if disabled
        or if writing fails (a report must never block a state change)."""
        directory = self.config.reports_dir
        if directory is None:
            return None
        try:
            session.flush()  # the transition being recorded belongs in the timeline
            facts = collect_report_facts(session, issue.id, quiet_hours=self.config.quiet_hours)
            if facts is None:
                return None
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / report_filename(issue.short_id)
            path.write_text(render_report(facts), encoding="utf-8")
            return path
        except (OSError, BotError) as exc:
            log.warning("could not write the report of %s: %s", issue.short_id, exc)
            return None

    def __call__(
        self,
        session: Session,
        kind: str,
        issue: TrackedIssue,
        run: RemediationRun | None,
        playbook: Playbook | None,
        extra: Mapping[str, object],
        /,
    ) -> None:
        now = self.clock.now()
        for channel, key, payload in self._messages(
            session, kind, issue, run, playbook, extra, None
        ):
            enqueue(session, channel, key, payload, issue.id, kind, now)

    def record_many(self, session: Session, events: Sequence[Event]) -> None:
        """Many events in one transaction (a storm's verdicts): the issues' fix links
        read in one query, every message in one executemany INSERT."""
        now = self.clock.now()
        links = fix_links_by_issue(session, [e[1].id for e in events])
        rows: list[OutboxRow] = []
        for kind, issue, run, playbook, extra in events:
            for channel, key, payload in self._messages(
                session, kind, issue, run, playbook, extra, links.get(issue.id, [])
            ):
                rows.append(OutboxRow(channel, key, payload, issue.id, kind))
        enqueue_many(session, rows, now)

    def _messages(
        self,
        session: Session,
        kind: str,
        issue: TrackedIssue,
        run: RemediationRun | None,
        playbook: Playbook | None,
        extra: Mapping[str, object],
        links: Sequence[FixLink] | None,
    ) -> list[tuple[str, str, Payload]]:
        """The outbox messages (channel, dedupe key, payload) announcing one event."""
        self.events.append((kind, issue.short_id))
        # One "triaged" line per new issue would flood INFO on a busy poll.
        log.log(
            logging.DEBUG if kind == "triaged" else logging.INFO,
            "event %s on %s%s",
            kind,
            issue.short_id,
            f" (run {run.id[:8]})" if run is not None else "",
        )
        report_path = self._write_report(session, issue) if kind in _REPORT_KINDS else None
        note = build_notification(
            session,
            kind,
            issue,
            run,
            playbook,
            extra,
            self.config.report_base_url,
            report_path,
            links=links,
        )
        episode = episode_key(kind, issue, run)
        subject = f"{issue.id}:{episode}"
        if kind in _PER_INCIDENT_KINDS and issue.incident_id:
            # Related issues (one incident) share one message, not one each.
            subject = f"incident:{issue.incident_id}"
        out: list[tuple[str, str, Payload]] = []
        if self.config.slack:
            payload = (
                approval_payload(issue, run, playbook)
                if kind == "plan_awaiting_approval" and run is not None and playbook is not None
                else render(note)
            )
            out.append(("slack", f"slack:{kind}:{subject}", payload))
        if run is not None and run.mode == "approval" and kind in _RUN_OUTCOME_KINDS:
            # The run was approved from a Slack button: replace that message with the
            # outcome through the click's response_url (same transaction as the outcome).
            # Only a run that waited for approval can have been clicked.
            body = outcome_update(run, note.verify_result)
            for n, url in enumerate(reply_urls(session, run.id)[:1]):
                out.append(
                    (
                        SLACK_RESPONSE_CHANNEL,
                        f"slack_response:{kind}:{run.id}:{n}",
                        {"url": url, "body": body},
                    )
                )
        if kind in _SENTRY_NOTE_KINDS and self.config.sentry_notes:
            out.append(
                (
                    "sentry_comment",
                    f"sentry:{kind}:{issue.id}:{episode}",
                    {"issue_id": issue.id, "text": sentry_note(note)},
                )
            )
        return out


def fix_links_by_issue(session: Session, issue_ids: list[str]) -> dict[str, list[FixLink]]:
    """The fix links of ``issue_ids``, by issue (one query per 500 ids)."""
    out: dict[str, list[FixLink]] = {}
    for n in range(0, len(issue_ids), 500):
        chunk = issue_ids[n : n + 500]
        for link in session.exec(select(FixLink).where(col(FixLink.issue_id).in_(chunk))):
            out.setdefault(link.issue_id, []).append(link)
    return out
