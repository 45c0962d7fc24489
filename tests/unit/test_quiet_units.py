"""Quiet-hours pieces: stats periods, journal notes, the report, argument checks."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlmodel import col, select

from bot.adapters.sentry.client import HttpSentryClient
from bot.clock import FakeClock
from bot.pipeline.lifecycle import QuietChecker, QuietReport, stats_period
from bot.pipeline.track import note
from bot.store.db import Store
from bot.store.models import TrackedIssue, Transition
from bot.testing import FakeSentry


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    db.upgrade()
    return db


@pytest.fixture
def client(clock: FakeClock) -> HttpSentryClient:
    fake = FakeSentry(clock=clock)
    return HttpSentryClient(
        org="acme", token="tok", clock=clock, transport=httpx.MockTransport(fake.handler)
    )


@pytest.mark.parametrize(
    ("hours", "period"), [(48, "48h"), (48.0, "48h"), (1, "1h"), (1.5, "90m"), (0.01, "1m")]
)
def test_stats_period(hours: float, period: str) -> None:
    assert stats_period(hours) == period


def test_note_journals_without_changing_state(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        row = TrackedIssue(
            id="1",
            short_id="A-1",
            title="t",
            state="watching",
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        session.add(row)
        clock.advance(hours=1)
        note(session, row, "x" * 3000, clock.now())
    with store.session() as session:
        (t,) = session.exec(select(Transition).order_by(col(Transition.id))).all()
        row = session.get(TrackedIssue, "1")
    assert (t.from_state, t.to_state, len(t.reason)) == ("watching", "watching", 2000)
    assert row is not None and row.state == "watching"


def test_nothing_watched_costs_nothing(
    store: Store, client: HttpSentryClient, clock: FakeClock
) -> None:
    report = QuietChecker(store, client, clock).check()
    assert report == QuietReport()
    assert client.request_count == 0


@pytest.mark.parametrize("batch", [0, 101])
def test_batch_is_a_sentry_page(
    store: Store, client: HttpSentryClient, clock: FakeClock, batch: int
) -> None:
    with pytest.raises(ValueError, match="batch"):
        QuietChecker(store, client, clock, batch=batch)


def test_report_render_mentions_fallback_and_stop() -> None:
    report = QuietReport(
        watched=3,
        due=2,
        resolved=1,
        resolved_plainly=1,
        requests=5,
        events_fallback="refused; fell back",
        stopped="SentryRetryLater: x",
        notes=["A-1: gone"],
    )
    text = report.render()
    assert text.splitlines()[0].startswith("quiet check: 3 watched, 2 due, 1 resolved")
    assert "5 Sentry requests" in text
    assert "events: refused; fell back" in text and "stopped early: SentryRetryLater" in text
    assert report.as_dict()["notes"] == ["A-1: gone"]
