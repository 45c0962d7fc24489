"""Sentry requests of one quiet-hours check: 1,000 watched issues, 100 of them due.

Setup (FakeSentry behind ``httpx.MockTransport``, the real ``HttpSentryClient``, a
SQLite store in a temporary directory): 1,000 issues over 4 projects, all watched after
a remediation. 100 last had an event 49-60 h ago (due); 850 had one within the last
47 h; 50 more were remediated 60 h ago but the poller saw a new event 10 h ago (their
clock restarts from the store alone). 30 of the due issues have a fix commit, one
commit per project; the dashboard's commit is one Sentry does not know (refused with
400, then resolved plainly). The other 70 have none.

The naive way (what a per-issue implementation does): for every watched issue one
``issues/{id}/events/?statsPeriod=48h`` request to see whether it was quiet, then for
every due issue one ``GET issues/{id}/`` re-read before updating and one
``PUT issues/{id}/`` to resolve: 1,000 + 100 + 100 = 1,200 requests.

Run: ``.venv/bin/python bench/quiet.py``; the last three lines are
``quiet_check_requests: N``, ``naive_requests: M``, ``quiet_request_ratio: N/M``.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlmodel import select

from bot.clock import FakeClock, ensure_utc
from bot.codehost.fixlinks import FixCommit
from bot.lifecycle import QuietChecker
from bot.sentry.client import HttpSentryClient
from bot.store.db import Store
from bot.store.models import LifecycleState, TrackedIssue
from bot.testing import FakeSentry
from bot.tracker import record_transition, track

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
        print(f"quiet_check_requests: {report.requests}")
        print(f"naive_requests: {naive}")
        print(f"quiet_request_ratio: {report.requests}/{naive}")


if __name__ == "__main__":
    main()
