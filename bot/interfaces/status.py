"""``sentry-bot status``: what the store knows, as data and as a human table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from bot.errors import BotError, ConfigError
from bot.pipeline.guards import PAUSE_KEY
from bot.store.models import (
    FixLink,
    OutboxMessage,
    OutboxStatus,
    QuarantinedIssue,
    RemediationRun,
    Setting,
    TrackedIssue,
    Transition,
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def parse_cursor(cursor: str | None) -> int:
    """The position a ``--cursor`` value stands for (as printed in ``next_cursor``)."""
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit() or len(cursor) > 12:
        raise ConfigError(f"--cursor {cursor[:40]!r}: expected a next_cursor value from status")
    return int(cursor)


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
    session: Session,
    *,
    team: str | None = None,
    severity: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    runs_limit: int | None = None,
) -> dict[str, Any]:
    """Tracked issues (optionally by team/severity), state counts, runs, dead letters and
    the pause switch.

    Complete unless ``limit`` is given: then one page of issues, newest first, with
    ``total`` and ``next_cursor`` (pass it back as ``cursor``; None on the last page).
    ``runs_limit`` keeps only the newest runs (``runs_total`` says how many there are).
    """
    offset = parse_cursor(cursor)
    query = select(TrackedIssue)
    count_query = select(func.count()).select_from(TrackedIssue)
    if team:
        query = query.where(TrackedIssue.team == team)
        count_query = count_query.where(TrackedIssue.team == team)
    if severity:
        query = query.where(TrackedIssue.severity == severity)
        count_query = count_query.where(TrackedIssue.severity == severity)
    total = int(session.exec(count_query).one())
    query = query.order_by(col(TrackedIssue.last_seen).desc().nulls_last(), col(TrackedIssue.id))
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = session.exec(query).all()
    end = offset + len(rows)
    next_cursor = str(end) if limit is not None and end < total else None
    states = dict(
        session.exec(select(TrackedIssue.state, func.count()).group_by(TrackedIssue.state)).all()
    )
    runs_total = int(session.exec(select(func.count()).select_from(RemediationRun)).one())
    runs_query = select(RemediationRun).order_by(
        col(RemediationRun.created_at).desc(), col(RemediationRun.id)
    )
    if runs_limit is not None:
        runs_query = runs_query.limit(runs_limit)
    runs = session.exec(runs_query).all()
    outbox = dict(
        session.exec(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        ).all()
    )
    dead = session.exec(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.DEAD.value)
        .order_by(col(OutboxMessage.id).desc())
    ).all()
    quarantined = session.exec(
        select(QuarantinedIssue).order_by(col(QuarantinedIssue.last_seen_at).desc()).limit(20)
    ).all()
    pause = session.get(Setting, PAUSE_KEY)
    return {
        "paused": (
            {"reason": pause.value, "since": _iso(pause.updated_at)}
            if pause is not None and pause.value
            else None
        ),
        "total": total,
        "cursor": str(offset) if offset else None,
        "next_cursor": next_cursor,
        "quarantined": [
            {
                "key": q.key,
                "issue": q.issue_id,
                "short_id": q.short_id,
                "reason": q.reason,
                "times": q.times,
                "last_seen_at": _iso(q.last_seen_at),
            }
            for q in quarantined
        ],
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
        "runs_total": runs_total,
        "runs": [
            {
                "id": r.id,
                "playbook": r.playbook_id,
                "issue": r.issue_id,
                "mode": r.mode,
                "status": r.status,
                "rows": r.rows_affected,
                "would_change": len((r.preview or {}).get("rows") or []),
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
                "would_change": len((r.preview or {}).get("rows") or []),
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


def _render_quarantine(data: dict[str, Any]) -> list[str]:
    return [
        f"  QUARANTINED {q['short_id'] or q['issue'] or q['key'][:19]} "
        f"(seen {q['times']}x, last {(q['last_seen_at'] or '-')[:16]}): {_cut(q['reason'], 120)}"
        for q in data.get("quarantined", [])
    ]


def render_overview(data: dict[str, Any], *, command: str = "sentry-bot status") -> str:
    """The overview as tables; says when the pause is on and when a list is cut."""
    out: list[str] = []
    if data.get("paused"):
        p = data["paused"]
        out.append(
            f"PAUSED since {(p['since'] or '-')[:16]}: {p['reason']} "
            "(nothing executes; `sentry-bot resume` lifts it)\n"
        )
    if not data["issues"]:
        out.append(
            "no tracked issues yet (run `sentry-bot cycle`)"
            if not data.get("total")
            else f"no issues on this page (total {data['total']})"
        )
        out += _render_quarantine(data)
        return "\n".join(out)
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
    out.append(
        _table(
            ["ISSUE", "STATE", "SEV", "CATEGORY", "TEAM", "EVENTS", "USERS", "LAST SEEN", "TITLE"],
            rows,
        )
    )
    total = data.get("total", len(rows))
    if len(rows) < total:
        first = int(data.get("cursor") or 0) + 1
        more = (
            f"; next page: {command} --limit {len(rows)} --cursor {data['next_cursor']}"
            if data.get("next_cursor")
            else ""
        )
        out.append(
            f"(issues {first} to {first + len(rows) - 1} of {total}, newest first{more}; "
            "all of them: --json)"
        )
    out.append("\nstates: " + ", ".join(f"{k}={v}" for k, v in sorted(data["states"].items())))
    if data["runs"]:
        runs_total = data.get("runs_total", len(data["runs"]))
        cut = (
            f" ({len(data['runs'])} newest of {runs_total})"
            if runs_total > len(data["runs"])
            else ""
        )
        out.append(f"\nrecent runs{cut}:")
        out.append(
            _table(
                ["RUN", "PLAYBOOK", "MODE", "STATUS", "ROWS"],
                [
                    [r["id"][:8], r["playbook"], r["mode"], r["status"], _rows_cell(r)]
                    for r in data["runs"]
                ],
            )
        )
    out.append(
        "\noutbox: " + (", ".join(f"{k}={v}" for k, v in sorted(data["outbox"].items())) or "empty")
    )
    for d in data["dead_letters"][:20]:
        out.append(
            f"  DEAD #{d['id']} {d['channel']}/{d['kind']} issue={d['issue']} "
            f"after {d['attempts']} attempts: {_cut(d['error'], 100)}"
        )
    if len(data["dead_letters"]) > 20:
        out.append(f"  … {len(data['dead_letters']) - 20} more dead letters (--json lists all)")
    if data.get("quarantined"):
        out.append("\nquarantined (malformed in Sentry's answer; not tracked):")
        out += _render_quarantine(data)
    return "\n".join(out)


# Runs that changed nothing (yet): their figure is the preview's, not "0 rows".
_NOT_EXECUTED = {"shadow", "awaiting_approval", "approved", "expired", "blocked"}


def _rows_cell(run: dict[str, Any]) -> str:
    """Rows changed; for a run that did not execute, what its preview would change."""
    if (run.get("mode") == "shadow" or run.get("status") in _NOT_EXECUTED) and run.get(
        "would_change"
    ) is not None:
        return f"would change {run['would_change']}"
    return str(run.get("rows") or 0)


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
                + (
                    _rows_cell(r).replace("would change ", "would_change=")
                    if _rows_cell(r).startswith("would")
                    else f"rows={r['rows'] or 0}"
                )
                + (f" error={_cut(r['error'], 80)}" if r["error"] else "")
            )
    if data["fix_links"]:
        out.append("\nfix links:")
        for f in data["fix_links"]:
            out.append(f"  {f['repo']} {f['kind']} {f['ref']} {f['url']}")
    return "\n".join(out)


__all__ = ["find_issue", "issue_timeline", "overview", "render_overview", "render_timeline"]
