"""No silent parking (issue #9, point 2): a burst of issues that need their latest event.

A cycle fetches at most ``MAX_EVENT_FETCHES`` (100) latest events. Before, the other
matching issues of a burst went to ``watching`` as "no playbook" and were never tried
again (300 at once: 100 planned, 200 parked). Now they wait, marked in the store, and
later cycles fetch them oldest first; the cycle report says how many wait.

FakeSentry is reached through the real ``HttpSentryClient``; the list endpoint never
carries ``latestEvent`` (as in Sentry), so every issue needs one events request.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlmodel import col, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import build_cycle
from bot.pipeline.cycle import MAX_EVENT_FETCHES, poll_step
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import LifecycleState, RemediationRun, TrackedIssue
from bot.testing.sentry import FakeSentry

TOKEN = "sntrys_backlog_" + "b" * 24
BURST = 300

PLAYBOOK = {
    "id": "requeue-stuck",
    "priority": 10,
    "match": {"title": r"^Found \d+ stuck tasks"},
    "extract": {
        "job_id": {"from": "event", "regex": r"job_id=(?P<job_id>[0-9a-f-]{36})", "type": "uuid"}
    },
    "action": {
        "type": "requeue_stuck_tasks",
        "target": "jobs_db",
        "settings": {
            "table": "tasks",
            "mode": "lease_timeout",
            "lease_column": "updated_at",
            "timeout_seconds": 600,
            "scope": {"job_id": "job_id"},
        },
    },
    "guards": {"mode": "shadow"},  # no target needed: the plan is journaled, then watched
}


@pytest.fixture
def app(store: Store, clock: FakeClock, tmp_path: Path) -> Iterator[tuple[App, FakeSentry]]:
    fake = FakeSentry(clock=clock, token=TOKEN, org="acme")
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "requeue.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    settings = load_settings(
        environ={
            "SENTRY_ORG": "acme",
            "SENTRY_AUTH_TOKEN": TOKEN,
            "BOT_DATABASE_URL": store.engine.url.render_as_string(hide_password=False),
            "BOT_PLAYBOOKS_DIR": str(playbooks),
        }
    )
    bot = App(settings=settings, store=store, clock=clock)
    bot._sentry = HttpSentryClient(
        org="acme", token=TOKEN, clock=clock, transport=httpx.MockTransport(fake.handler)
    )
    yield bot, fake


def burst(fake: FakeSentry, clock: FakeClock, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        issue = fake.add_issue(title="Found 3 stuck tasks across 1 jobs", level="error")
        fake.add_event(str(issue["id"]), at=clock.now(), message=f"job_id={uuid.uuid4()} stuck")
        ids.append(str(issue["id"]))
    return ids


def event_fetches(fake: FakeSentry) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/events/latest/"))


def planned(app: App) -> set[str]:
    with app.store.session() as session:
        return set(session.exec(select(RemediationRun.issue_id)).all())


def waiting(app: App) -> set[str]:
    with app.store.session() as session:
        return set(
            session.exec(
                select(TrackedIssue.id).where(col(TrackedIssue.awaiting_event_since).is_not(None))
            ).all()
        )


@pytest.mark.timeout(900)  # five cycles over 350 issues: guards a hang on a shared machine
def test_a_burst_of_issues_needing_their_event_is_planned_over_cycles_never_parked(
    app: tuple[App, FakeSentry], clock: FakeClock
) -> None:
    bot, fake = app
    first_wave = burst(fake, clock, BURST)

    report = poll_step(build_cycle(bot))
    assert report.errors == []
    assert event_fetches(fake) == MAX_EVENT_FETCHES
    assert len(planned(bot)) == MAX_EVENT_FETCHES
    assert report.unmatched == []  # nothing parked as "no playbook"
    assert report.awaiting_event == BURST - MAX_EVENT_FETCHES
    assert "waiting for their latest event" in report.render()
    assert f"{BURST - MAX_EVENT_FETCHES}" in report.render()
    left = waiting(bot)
    assert len(left) == BURST - MAX_EVENT_FETCHES
    with bot.store.session() as session:
        states = set(
            session.exec(select(TrackedIssue.state).where(col(TrackedIssue.id).in_(left))).all()
        )
    assert states == {LifecycleState.NEW.value}  # undecided, not watching

    # Fairness: a new burst arrives; the issues waiting longest are fetched first.
    clock.advance(minutes=1)
    second_wave = burst(fake, clock, 50)
    before = planned(bot)
    report = poll_step(build_cycle(bot))
    assert report.errors == [] and report.unmatched == []
    newly = planned(bot) - before
    assert len(newly) == MAX_EVENT_FETCHES and newly <= left
    assert report.awaiting_event == BURST - 2 * MAX_EVENT_FETCHES + 50

    cycles = 2
    while waiting(bot) and cycles < 10:
        clock.advance(minutes=1)
        report = poll_step(build_cycle(bot))
        assert report.errors == [] and report.unmatched == []
        cycles += 1
    assert planned(bot) == set(first_wave) | set(second_wave)
    assert waiting(bot) == set() and report.awaiting_event == 0
    assert cycles == 4  # 350 issues, 100 events a cycle
    assert event_fetches(fake) == BURST + 50  # each event fetched once
    with bot.store.session() as session:
        assert set(session.exec(select(TrackedIssue.state)).all()) == {
            LifecycleState.WATCHING.value  # shadow mode: planned, then watched
        }
