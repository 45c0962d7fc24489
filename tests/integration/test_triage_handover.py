"""The poll hands its parsed issues to triage and grouping (issue #12) instead of them
parsing ``raw`` back: what is stored must be exactly what the parse-``raw`` path stored,
on SQLite and PostgreSQL (the ``store`` fixture), hostile issues included.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from sqlmodel import Session, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.pipeline.poll import poll_and_track
from bot.pipeline.sources import SentryApiSource
from bot.pipeline.track import track
from bot.pipeline.triage import group_incidents, triage_issues
from bot.sentry.models import SentryIssue
from bot.store.db import Store
from bot.store.models import Incident, QuarantinedIssue, TrackedIssue
from bot.testing import FakeSentry
from bot.triage import TriageConfig, triage
from bot.triage.incidents import Candidate, assign_incidents

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TITLES = [
    "Task stuck: job_id=1",
    "OperationalError: could not connect to postgres: connection refused",
    "redis timeout after 5s",
    "ValidationError: invalid email",
    "StripeError: card_declined",
    "Search failed for ' OR '1'='1 UNION SELECT password FROM users",
    "Error: tab\x00le",  # NUL: normalised, the original kept escaped
    "Error: bro\ud800ken",  # lone surrogate
    "KeyError: 'DATABASE_URL'",
    "Fehler: Zeitüberschreitung beim Warten auf die Datenbank",  # not ASCII
]


def _poll(
    store: Store, fake: FakeSentry, clock: FakeClock
) -> tuple[list[str], dict[str, SentryIssue]]:
    client = HttpSentryClient(
        org="acme", token="t", clock=clock, transport=httpx.MockTransport(fake.handler)
    )
    with client:
        result = poll_and_track(store, SentryApiSource(client), clock)
    tracked = result.tracked
    return tracked.new + tracked.changed, tracked.stored


def _fake(clock: FakeClock) -> tuple[FakeSentry, str]:
    fake = FakeSentry(clock=clock, rate_limit=10**9)
    for n, title in enumerate(TITLES * 3):
        fake.add_issue(
            project=["api", "worker"][n % 2],
            title=title,
            culprit=f"app.h{n % 4} in run",
            firstSeen=NOW - timedelta(minutes=7 * n),
            lastSeen=NOW - timedelta(seconds=n),
        )
    for n in range(25):  # one large incident: its links are written per incident
        fake.add_issue(
            project="worker",
            title=f"Task stuck: job_id={n}",
            culprit="jobs.run in work",
            firstSeen=NOW - timedelta(minutes=n),
            lastSeen=NOW - timedelta(seconds=n),
        )
    malformed = fake.add_issue(project="api", title="Error: odd")
    fake.issues[malformed["id"]].data["count"] = "many"
    return fake, malformed["id"]


def _stored(store: Store) -> tuple[dict[str, tuple[object, ...]], dict[str, tuple[object, ...]]]:
    with store.session() as session:
        issues = {
            r.id: (r.severity, r.category, r.team, r.response_due_at, r.triage, r.incident_id)
            for r in session.exec(select(TrackedIssue)).all()
        }
        incidents = {
            i.id: (i.group_key, i.title, i.severity, i.opened_at)
            for i in session.exec(select(Incident)).all()
        }
    return issues, incidents


def test_handed_over_issues_store_what_parsing_raw_stores(store: Store) -> None:
    clock = FakeClock(NOW)
    fake, malformed = _fake(clock)
    candidates, parsed = _poll(store, fake, clock)
    config = TriageConfig()

    assert len(candidates) == len(TITLES) * 3 + 25 and set(parsed) == set(candidates)
    with store.session() as session:
        rows = session.exec(select(TrackedIssue)).all()
        # The snapshot handed over is the one stored: parsing raw gives it back.
        assert {r.id: SentryIssue.model_validate(r.raw) for r in rows} == parsed
        assert [q.issue_id for q in session.exec(select(QuarantinedIssue)).all()] == [malformed]

    with store.session() as session:
        assert triage_issues(session, candidates, config, clock, parsed=parsed) == len(candidates)
        group_incidents(session, clock, changed=candidates, parsed=parsed)
    fast = _stored(store)

    # The same steps parsing raw (nothing handed over), from the same starting point.
    with store.session() as session:
        for row in session.exec(select(TrackedIssue)).all():
            row.severity = row.category = row.team = row.incident_id = None
            row.response_due_at = None
            row.triage = {}
        for incident in session.exec(select(Incident)).all():
            session.delete(incident)
    with store.session() as session:
        triage_issues(session, candidates, config, clock)
        group_incidents(session, clock, changed=candidates)
    assert _stored(store) == fast

    issues, incidents = fast
    assert len(incidents) >= 2
    with store.session() as session:
        rows = session.exec(select(TrackedIssue)).all()
        expected = assign_incidents(
            [Candidate.of(SentryIssue.model_validate(r.raw)) for r in rows]
        ).by_issue
        assert {r.id: r.incident_id for r in rows} == {r.id: expected.get(r.id) for r in rows}
        sizes = Counter(r.incident_id for r in rows if r.incident_id)
        assert max(sizes.values()) >= 25 and min(sizes.values()) < 20  # both write paths
        for row in rows:
            verdict = triage(SentryIssue.model_validate(row.raw), None, config, clock.now())
            assert row.triage == verdict.model_dump(mode="json")
            assert (row.severity, row.category) == (verdict.severity, verdict.category)
    assert {v[1] for v in issues.values()} >= {"infrastructure", "security", "user_input"}


def test_an_issue_listed_twice_hands_over_the_snapshot_stored(store: Store) -> None:
    clock = FakeClock(NOW)
    fake = FakeSentry(clock=clock)
    data = fake.add_issue(project="api", title="Error: x", culprit="first")
    first = SentryIssue.model_validate(data)
    # Listed again with the same counts: not "moved", so the first snapshot stays stored
    # even though a field the tracker does not compare differs.
    again = first.model_copy(update={"culprit": "second"})
    later = first.model_copy(update={"count": first.count + 5, "culprit": "third"})
    later_again = later.model_copy(update={"culprit": "fourth"})  # not moved from later
    with store.session() as session:
        result = track(session, [first], clock)
        assert result.stored == {first.id: first}
    with store.session() as session:
        result = track(session, [again], clock)
        assert result.stored == {} and result.changed == []
    with store.session() as session:
        result = track(session, [later, later_again], clock)
        assert result.stored == {first.id: later}
    with Session(store.engine) as session:
        row = session.get(TrackedIssue, first.id)
        assert row is not None and SentryIssue.model_validate(row.raw) == later


def test_verdicts_written_in_bulk_are_seen_by_rows_already_loaded(store: Store) -> None:
    clock = FakeClock(NOW)
    fake, _ = _fake(clock)
    candidates, parsed = _poll(store, fake, clock)
    with store.session() as session:
        loaded = session.get(TrackedIssue, candidates[0])
        assert loaded is not None and loaded.severity is None
        triage_issues(session, candidates, TriageConfig(), clock, parsed=parsed)
        assert loaded.severity is not None  # expired and read again, not stale
