"""``sentry-bot status``: what the store knows, as data and as a human table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from bot.errors import BotError
from bot.store.models import (
    FixLink,
    OutboxMessage,
    OutboxStatus,
    RemediationRun,
    TrackedIssue,
    Transition,
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def find_issue(session: Session, key: str) -> TrackedIssue:
    """An issue by Sentry id or short id (case-insensitive)."""
    row = session.get(TrackedIssue, key)
    if row is None:
        row = session.exec(
            select(TrackedIssue).where(func.upper(TrackedIssue.short_id) == key.upper())
        ).first()
    if row is None:
        raise BotError(f"no tracked issue {key!r}")
    return row


def overview(
    session: Session, *, team: str | None = None, severity: str | None = None, limit: int = 200
) -> dict[str, Any]:
    """Tracked issues (optionally by team/severity), state counts, runs and dead letters."""
    query = select(TrackedIssue)
    if team:
        query = query.where(TrackedIssue.team == team)
    if severity:
        query = query.where(TrackedIssue.severity == severity)
    rows = session.exec(
        query.order_by(col(TrackedIssue.last_seen).desc().nulls_last()).limit(limit)
    ).all()
    states = dict(
        session.exec(select(TrackedIssue.state, func.count()).group_by(TrackedIssue.state)).all()
    )
    runs = session.exec(
        select(RemediationRun).order_by(col(RemediationRun.created_at).desc()).limit(20)
    ).all()
    outbox = dict(
        session.exec(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        ).all()
    )
    dead = session.exec(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.DEAD.value)
        .order_by(col(OutboxMessage.id).desc())
        .limit(20)
    ).all()
    return {
        "issues": [
            {
                "id": r.id,
                "short_id": r.short_id,
                "title": r.title[:200],
                "state": r.state,
                "level": r.level,
                "count": r.count,
                "users": r.user_count,
                "last_seen": _iso(r.last_seen),
                "severity": r.severity,
                "category": r.category,
                "team": r.team,
                "due": _iso(r.response_due_at),
                "playbook": r.playbook_id,
                "incident": r.incident_id,
            }
            for r in rows
        ],
        "states": states,
        "runs": [
            {
                "id": r.id,
                "playbook": r.playbook_id,
                "issue": r.issue_id,
                "mode": r.mode,
                "status": r.status,
                "rows": r.rows_affected,
                "created_at": _iso(r.created_at),
                "error": r.error,
            }
            for r in runs
        ],
        "outbox": outbox,
        "dead_letters": [
            {
                "id": m.id,
                "channel": m.channel,
                "kind": m.kind,
                "issue": m.issue_id,
                "attempts": m.attempts,
                "error": m.last_error,
            }
            for m in dead
        ],
    }


def issue_timeline(session: Session, key: str) -> dict[str, Any]:
    """One issue: its fields, every lifecycle transition, its runs and fix links."""
    row = find_issue(session, key)
    transitions = session.exec(
        select(Transition)
        .where(Transition.issue_id == row.id)
        .order_by(col(Transition.at), col(Transition.id))
    ).all()
    runs = session.exec(
        select(RemediationRun)
        .where(RemediationRun.issue_id == row.id)
        .order_by(col(RemediationRun.created_at))
    ).all()
    links = session.exec(select(FixLink).where(FixLink.issue_id == row.id)).all()
    return {
        "id": row.id,
        "short_id": row.short_id,
        "title": row.title,
        "state": row.state,
        "severity": row.severity,
        "category": row.category,
        "team": row.team,
        "due": _iso(row.response_due_at),
        "last_seen": _iso(row.last_seen),
        "quiet_since": _iso(row.quiet_since),
        "resolved_at": _iso(row.resolved_at),
        "triage": row.triage,
        "timeline": [
            {"at": _iso(t.at), "from": t.from_state, "to": t.to_state, "reason": t.reason}
            for t in transitions
        ],
        "runs": [
            {
                "id": r.id,
                "playbook": r.playbook_id,
                "mode": r.mode,
                "status": r.status,
                "rows": r.rows_affected,
                "error": r.error,
                "verify": r.verify,
                "created_at": _iso(r.created_at),
            }
            for r in runs
        ],
        "fix_links": [
            {"repo": f.repo, "kind": f.kind, "ref": f.ref, "url": f.url, "comment_id": f.comment_id}
            for f in links
        ],
    }


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _cut(text: str | None, n: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def render_overview(data: dict[str, Any]) -> str:
    if not data["issues"]:
        return "no tracked issues yet (run `sentry-bot cycle`)"
    rows = [
        [
            i["short_id"],
            i["state"],
            i["severity"] or "-",
            i["category"] or "-",
            i["team"] or "-",
            str(i["count"]),
            str(i["users"]),
            (i["last_seen"] or "-")[:16],
            _cut(i["title"], 48),
        ]
        for i in data["issues"]
    ]
    out = [
        _table(
            ["ISSUE", "STATE", "SEV", "CATEGORY", "TEAM", "EVENTS", "USERS", "LAST SEEN", "TITLE"],
            rows,
        )
    ]
    out.append("\nstates: " + ", ".join(f"{k}={v}" for k, v in sorted(data["states"].items())))
    if data["runs"]:
        out.append("\nrecent runs:")
        out.append(
            _table(
                ["RUN", "PLAYBOOK", "MODE", "STATUS", "ROWS"],
                [
                    [r["id"][:8], r["playbook"], r["mode"], r["status"], str(r["rows"] or 0)]
                    for r in data["runs"]
                ],
            )
        )
    out.append(
        "\noutbox: " + (", ".join(f"{k}={v}" for k, v in sorted(data["outbox"].items())) or "empty")
    )
    for d in data["dead_letters"]:
        out.append(
            f"  DEAD #{d['id']} {d['channel']}/{d['kind']} issue={d['issue']} "
            f"after {d['attempts']} attempts: {_cut(d['error'], 100)}"
        )
    return "\n".join(out)


def render_timeline(data: dict[str, Any]) -> str:
    out = [
        f"{data['short_id']} ({data['id']}): {_cut(data['title'], 100)}",
        f"state: {data['state']}  severity: {data['severity'] or '-'}  "
        f"team: {data['team'] or '-'}  due: {data['due'] or '-'}",
        f"last seen: {data['last_seen'] or '-'}  quiet since: {data['quiet_since'] or '-'}  "
        f"resolved: {data['resolved_at'] or '-'}",
        "",
        "timeline:",
    ]
    for t in data["timeline"]:
        out.append(f"  {t['at'][:19]}  {t['from'] or '∅':>12} → {t['to']:<12} {t['reason']}")
    if data["runs"]:
        out.append("\nruns:")
        for r in data["runs"]:
            out.append(
                f"  {r['id'][:8]} {r['playbook']} mode={r['mode']} status={r['status']} "
                f"rows={r['rows'] or 0}" + (f" error={_cut(r['error'], 80)}" if r["error"] else "")
            )
    if data["fix_links"]:
        out.append("\nfix links:")
        for f in data["fix_links"]:
            out.append(f"  {f['repo']} {f['kind']} {f['ref']} {f['url']}")
    return "\n".join(out)


__all__ = ["find_issue", "issue_timeline", "overview", "render_overview", "render_timeline"]
