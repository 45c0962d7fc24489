"""Sentry requests of one quiet-hours check: 1,000 watched issues, 100 of them due.

Setup (FakeSentry behind ``httpx.MockTransport``, the real ``HttpSentryClient``, a
SQLite store in a temporary directory): 1,000 issues over 4 projects, all watched after
a remediation. 100 last had an event 49-60 h ago (due); 850 had one within the last
47 h; 50 more were remediated 60 h ago but the poller saw a new event 10 h ago (their
clock restarts from the store alone). 30 of the due issues have a fix commit, one
commit per project; the dashboard's commit is one Sentry does not know (refused with
400, then resolved plainly). The other 70 have none.

The baseline is the best direct way, run for real against a second, identical world
and counted: the due issues from the store's own ``lastSeen`` (no request), ONE bulk
re-read of them (``GET …/issues/?group=…``, 100 per request), and ONE bulk resolve of
those still quiet (``PUT …/issues/?id=…``, 100 per request). It skips what the bot must
do on top (DESIGN.md's **must** points): the events signal, the compare-and-set re-read
right before the update, and ``inCommit`` per (commit, project) with the plain retry
after Sentry refuses an unknown commit. (The earlier baseline, 1,200 requests for a
per-issue loop, was computed, not measured.)

Run: ``.venv/bin/python bench/quiet.py``; the last three lines are
``quiet_check_requests: N``, ``direct_requests: M`` and ``quiet_request_ratio`` (N/M
as a number).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlmodel import col, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock, ensure_utc
from bot.codehost.fixlinks import FixCommit
from bot.pipeline.lifecycle import QuietChecker
from bot.pipeline.track import record_transition, track
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue
from bot.testing import FakeSentry

WATCHED = 1_000
DUE = 100
RESTARTED = 50
WITH_COMMIT = 30
PROJECTS = ["api", "worker", "billing", "dashboard"]


def build(tmp: Path) -> tuple[QuietChecker, FakeSentry, HttpSentryClient, set[str]]:
    """The world described in the module docstring; returns the checker and due ids."""
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    fake = FakeSentry(clock=clock, rate_limit=1_000_000)
    client = HttpSentryClient(
        org="acme", token="bench-token", clock=clock, transport=httpx.MockTransport(fake.handler)
    )
    store = Store(f"sqlite:///{tmp / 'bot.db'}")
    store.upgrade()
    now = clock.now()
    due: set[str] = set()
    restarted: dict[str, datetime] = {}
    fixes: dict[str, FixCommit] = {}
    commits = {project: digit * 40 for project, digit in zip(PROJECTS[:3], "abc", strict=False)}
    for project, sha in commits.items():
        fake.add_commit(f"acme/{project}", sha)
    ids: list[str] = []
    for n in range(WATCHED):
        project = PROJECTS[n % len(PROJECTS)]
        issue_id = str(fake.add_issue(project=project, title=f"Error: bench {n}")["id"])
        ids.append(issue_id)
        if n < DUE:
            at = now - timedelta(hours=49 + n % 12)
            due.add(issue_id)
            if n < WITH_COMMIT:
                # Commit k fixes issues of project k only (WITH_COMMIT < len(PROJECTS) * 10).
                fixes[issue_id] = FixCommit(f"acme/{project}", commits.get(project, "d" * 40))
        elif n < DUE + RESTARTED:
            at = now - timedelta(hours=10)
            restarted[issue_id] = now - timedelta(hours=60)
        else:
            at = now - timedelta(hours=n % 47)
        fake.add_event(issue_id, at=at)
    with store.session() as session:
        track(session, client.get_issues(ids), clock)
        for row in session.exec(select(TrackedIssue)).all():
            record_transition(session, row, LifecycleState.WATCHING, "bench: watching", now)
            row.playbook_id = "bench"
            seen = ensure_utc(row.last_seen) if row.last_seen else now
            row.quiet_since = restarted.get(row.id, seen)
    checker = QuietChecker(store, client, clock, fix_commit_for=fixes.get)
    return checker, fake, client, due


def direct(tmp: Path) -> tuple[int, set[str]]:
    """The direct way on a fresh copy of the world: (requests made, ids resolved)."""
    checker, fake, client, _due = build(tmp)
    fake.requests.clear()
    store, now = checker.store, checker.clock.now()
    cutoff = now - timedelta(hours=48)
    with store.session() as session:
        due = list(
            session.exec(
                select(TrackedIssue.id).where(
                    TrackedIssue.state == LifecycleState.WATCHING.value,
                    col(TrackedIssue.quiet_since) <= cutoff,
                )
            ).all()
        )
    before = client.request_count
    quiet: list[str] = []
    for start in range(0, len(due), 100):
        for issue in client.get_issues(due[start : start + 100]):
            if issue.status == "unresolved" and issue.last_seen and issue.last_seen <= cutoff:
                quiet.append(issue.id)
    for start in range(0, len(quiet), 100):
        client.bulk_update(quiet[start : start + 100], {"status": "resolved"})
    return client.request_count - before, set(quiet)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        checker, fake, _client, due = build(Path(tmp))
        fake.requests.clear()
        report = checker.check()
        naive = WATCHED + DUE + DUE
        for line in report.render().splitlines():
            print(line)
        by_kind: dict[str, int] = {}
        for call in fake.requests:
            kind = f"{call.method} {'events' if call.path.endswith('/events/') else 'issues'}"
            by_kind[kind] = by_kind.get(kind, 0) + 1
        for kind, n in sorted(by_kind.items()):
            print(f"requests {kind}: {n}")
        print(f"watched: {report.watched}")
        print(f"due: {report.due}")
        print(f"resolved: {report.resolved} (in commit {report.resolved_in_commit})")
        print(f"restarted_from_store: {report.restarted}")
        assert set(report.resolved_ids) == due, "every due issue should resolve"
    with tempfile.TemporaryDirectory() as tmp2:
        direct_requests, direct_resolved = direct(Path(tmp2))
    assert direct_resolved == due, "the direct way must resolve the same issues"
    print(f"(a per-issue loop, computed not measured: {naive} requests)")
    print(f"quiet_check_requests: {report.requests}")
    print(f"direct_requests: {direct_requests}")
    print(f"quiet_request_ratio: {report.requests / direct_requests:.2f}")


if __name__ == "__main__":
    main()
