"""The per-cycle queries rewritten as indexed SQL (issue #12) give exactly what the
row-by-row Python they replaced gave, on SQLite and PostgreSQL (the ``store`` fixture).

Each test builds a seeded, varied store, computes the answer the old way (the previous
implementation, kept here as the reference: load whole rows, decide in Python) and
compares it with the new query's answer.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from bot.clock import FakeClock, ensure_utc
from bot.pipeline.guards import check_guards
from bot.pipeline.journal import EXECUTED, count_runs
from bot.pipeline.lifecycle import WATCHED_STATES, QuietChecker
from bot.pipeline.lifecycle_report import QuietReport
from bot.pipeline.triage import escalate_overdue, group_incidents
from bot.playbooks.models import Playbook
from bot.store.db import Store
from bot.store.models import FixLink, RemediationRun, RunStatus, TrackedIssue
from bot.testing import FakeSentry

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATES = ["new", "matched", "watching", "remediated", "resolved", "escalated", "failed"]
PLAYBOOK_HOURS = {"fast": 2.0, "slow": 72.0, None: 48.0, "gone": 48.0}


def _maybe(rng: random.Random, value: Any, p: float = 0.8) -> Any:
    return value if rng.random() < p else None


def _issue(rng: random.Random, n: int) -> TrackedIssue:
    last = _maybe(rng, NOW - timedelta(hours=rng.uniform(0, 100)))
    return TrackedIssue(
        id=f"{1000 + n}",
        short_id=f"APP-{n}",
        title=f"boom {n}",
        state=rng.choice(STATES),
        playbook_id=rng.choice(list(PLAYBOOK_HOURS)),
        last_seen=last,
        quiet_since=_maybe(rng, NOW - timedelta(hours=rng.uniform(0, 100)), 0.7),
        count=rng.randint(1, 9),
        response_due_at=_maybe(rng, NOW - timedelta(hours=rng.uniform(-5, 100))),
        escalated_at=_maybe(rng, NOW - timedelta(hours=3), 0.2),
        severity=rng.choice(["low", "high", None]),
        created_at=_maybe(rng, NOW - timedelta(hours=rng.uniform(0, 120)), 0.9) or NOW,
        updated_at=NOW,
    )


def _seed(store: Store, seed: int, n: int = 160) -> None:
    rng = random.Random(seed)
    with store.session() as session:
        for i in range(n):
            session.add(_issue(rng, i))
        for i in range(n // 3):
            issue = f"{1000 + rng.randrange(n)}"
            if rng.random() < 0.5:
                session.add(
                    FixLink(issue_id=issue, repo="acme/api", kind="pr", ref=str(i), found_at=NOW)
                )
            session.add(
                RemediationRun(
                    id=f"run-{i}",
                    idempotency_key=f"key-{i}",
                    playbook_id=rng.choice(["fast", "slow"]),
                    issue_id=issue,
                    action="notify_only",
                    mode="auto",
                    status=rng.choice([s.value for s in RunStatus]),
                    started_at=_maybe(rng, NOW - timedelta(minutes=rng.uniform(0, 3000))),
                    created_at=NOW - timedelta(days=3),
                )
            )


# --- quiet hours: which watched issues are due -------------------------------------


def _due_the_old_way(session: Session, now: datetime) -> tuple[list[str], int, int]:
    rows = session.exec(
        select(TrackedIssue).where(col(TrackedIssue.state).in_(WATCHED_STATES))
    ).all()
    due: list[tuple[datetime, str]] = []
    restarted = 0
    for row in rows:
        hours = PLAYBOOK_HOURS[row.playbook_id]
        last_seen = ensure_utc(row.last_seen) if row.last_seen else None
        since = ensure_utc(row.quiet_since) if row.quiet_since else None
        if since is None:
            since = last_seen or now
        elif last_seen is not None and last_seen > since:
            since = last_seen
            restarted += 1
        if since <= now - timedelta(hours=hours):
            due.append((since, row.id))
    return [i for _, i in sorted(due)], len(rows), restarted


def test_due_for_resolve_matches_the_row_by_row_check(store: Store) -> None:
    for seed in (1, 2, 3):
        with store.session() as session:
            for table in (TrackedIssue, FixLink, RemediationRun):
                session.exec(table.__table__.delete())  # type: ignore[attr-defined]
        _seed(store, seed)
        with Session(store.engine) as session:
            expected, watched, restarted = _due_the_old_way(session, NOW)
        clock = FakeClock(NOW)
        checker = QuietChecker(
            store,
            FakeSentry(clock=clock),  # type: ignore[arg-type]
            clock,
            quiet_hours_for=lambda pb: PLAYBOOK_HOURS.get(pb, 0.0),
        )
        report = QuietReport()
        due = checker._due_from_store(NOW, report)
        assert [w.id for w in due] == expected
        assert (report.watched, report.restarted) == (watched, restarted)
        assert expected  # the seed exercises the interesting cases
        with Session(store.engine) as session:
            by_id = {r.id: r for r in session.exec(select(TrackedIssue)).all()}
        for w in due:
            row = by_id[w.id]
            assert w.quiet_since == ensure_utc(row.quiet_since)  # restarted clocks stored
            assert w.count == row.count and w.playbook_id == row.playbook_id


# --- overdue escalation ----------------------------------------------------------------


def _overdue_the_old_way(session: Session, now: datetime) -> set[str]:
    rows = session.exec(
        select(TrackedIssue).where(
            col(TrackedIssue.response_due_at) < now,
            col(TrackedIssue.escalated_at).is_(None),
            col(TrackedIssue.state).not_in(["resolved", "escalated"]),
        )
    ).all()
    out = set()
    for row in rows:
        due = ensure_utc(row.response_due_at) if row.response_due_at else None
        if due is None or row.last_seen is None or ensure_utc(row.last_seen) <= due:
            continue
        if row.created_at is not None and due <= ensure_utc(row.created_at):
            continue
        progressed = (
            session.exec(
                select(RemediationRun.id).where(
                    RemediationRun.issue_id == row.id,
                    col(RemediationRun.status).in_(["succeeded", "noop"]),
                )
            ).first()
            or session.exec(select(FixLink.id).where(FixLink.issue_id == row.id)).first()
        )
        if not progressed:
            out.add(row.short_id)
    return out


def test_overdue_matches_the_row_by_row_check(store: Store) -> None:
    _seed(store, 7, n=240)
    with Session(store.engine) as session:
        expected = _overdue_the_old_way(session, NOW)
    events: list[str] = []
    with store.session() as session:
        got = escalate_overdue(
            session, FakeClock(NOW), lambda _s, kind, row, *_: events.append(row.short_id)
        )
    assert expected and set(got) == expected and set(events) == expected
    with store.session() as session:
        assert escalate_overdue(session, FakeClock(NOW), lambda *_: None) == []  # once


# --- guards: counts in SQL -----------------------------------------------------------


def test_run_counts_match_counting_loaded_rows(store: Store) -> None:
    _seed(store, 11, n=60)
    rng = random.Random(5)
    with Session(store.engine) as session:
        runs = session.exec(select(RemediationRun)).all()
        for _ in range(40):
            issue = f"{1000 + rng.randrange(60)}"
            playbook = rng.choice(["fast", "slow"])
            debt, cool = (
                timedelta(hours=rng.choice([1, 24])),
                timedelta(minutes=rng.choice([0, 30, 600])),
            )
            since, after = NOW - max(debt, cool), NOW - debt
            counts = count_runs(
                session,
                playbook_id=playbook,
                issue_id=issue,
                since=since,
                after=after,
                hour_since=NOW - timedelta(hours=1),
            )
            executed = [
                r
                for r in runs
                if r.playbook_id == playbook and r.status in EXECUTED and r.started_at is not None
            ]
            mine = [
                ensure_utc(r.started_at)
                for r in executed
                if r.issue_id == issue and r.started_at is not None
            ]
            mine = [at for at in mine if at >= since]
            assert counts.issue_runs_after == len([at for at in mine if at > after])
            assert counts.issue_last_start == (max(mine) if mine else None)
            hourly = [
                r
                for r in executed
                if r.started_at is not None and ensure_utc(r.started_at) >= NOW - timedelta(hours=1)
            ]
            assert counts.playbook_runs == len(hourly)


def test_guards_refuse_on_counts(store: Store) -> None:
    playbook = Playbook.model_validate(
        {
            "id": "fast",
            "priority": 10,
            "match": {"title": "boom"},
            "action": {"type": "notify_only"},
            "guards": {"mode": "auto", "cooldown_minutes": 30, "max_runs_per_hour": 2},
        }
    )
    with store.session() as session:
        issue = TrackedIssue(id="1", short_id="A-1", title="boom", created_at=NOW, updated_at=NOW)
        session.add(issue)
        assert check_guards(session, playbook, issue, NOW).allowed

        def run(n: int, issue_id: str, minutes_ago: float) -> None:
            session.add(
                RemediationRun(
                    id=f"r{n}",
                    idempotency_key=f"k{n}",
                    playbook_id="fast",
                    issue_id=issue_id,
                    action="notify_only",
                    mode="auto",
                    status="succeeded",
                    started_at=NOW - timedelta(minutes=minutes_ago),
                    created_at=NOW,
                )
            )
            session.flush()

        run(1, "1", 10)
        assert "cooldown" in check_guards(session, playbook, issue, NOW).reason
        run(2, "2", 20)
        decision = check_guards(session, playbook, issue, NOW + timedelta(minutes=25))
        assert "rate cap: 2 runs" in decision.reason
        run(3, "1", 300)
        run(4, "1", 600)
        decision = check_guards(session, playbook, issue, NOW + timedelta(hours=2))
        assert decision.escalate and "remediated 3 times" in decision.reason


# --- incident grouping: only what changed ---------------------------------------------


def _raw(issue_id: str, project: str, culprit: str, first: datetime) -> dict[str, Any]:
    raw = dict(FakeSentry(clock=FakeClock(NOW)).add_issue(project=project, title="Error: x"))
    stamp = first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raw.update(
        id=issue_id,
        shortId=f"{project.upper()}-{issue_id}",
        culprit=culprit,
        firstSeen=stamp,
        lastSeen=stamp,
    )
    raw["project"] = {**raw["project"], "slug": project, "name": project}
    return raw


def _grouped(store: Store, changed: list[str] | None) -> dict[str, str | None]:
    with Session(store.engine) as session:
        group_incidents(session, FakeClock(NOW), changed=changed)
        session.flush()
        out = {r.id: r.incident_id for r in session.exec(select(TrackedIssue)).all()}
        session.rollback()
    return out


def test_grouping_the_changed_issues_gives_the_full_scan_answer(store: Store) -> None:
    rng = random.Random(3)
    with store.session() as session:
        for n in range(80):
            project = rng.choice(["api", "web"])
            culprit = f"app.h{rng.randrange(6)} in run"
            first = NOW - timedelta(minutes=rng.uniform(0, 600)) - timedelta(days=n // 40 * 8)
            issue_id = str(2000 + n)
            session.add(
                TrackedIssue(
                    id=issue_id,
                    short_id=f"X-{n}",
                    title="Error: x",
                    project=project,
                    culprit=culprit,
                    first_seen=first,
                    raw=_raw(issue_id, project, culprit, first),
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    with Session(store.engine) as session:
        api = session.exec(select(TrackedIssue.id).where(TrackedIssue.project == "api")).all()
    full = _grouped(store, None)
    only_api = _grouped(store, list(api)[:3])
    assert any(full.values())
    assert {i: full[i] for i in api} == {i: only_api[i] for i in api}
    assert not any(v for i, v in only_api.items() if i not in api)  # web untouched
    assert _grouped(store, []) == {i: None for i in full}  # nothing changed, nothing read
