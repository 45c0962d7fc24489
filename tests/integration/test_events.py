"""Events become outbox rows: one per incident for triage, the report with the final word."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import event_recorder
from bot.settings import load_settings
from bot.store.db import Store
from bot.store.models import OutboxMessage, TrackedIssue, Transition


def make_app(tmp_path: Path, clock: FakeClock) -> App:
    settings = load_settings(
        environ={
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
            "SLACK_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/xyz",
            "SENTRY_ORG": "acme",
            "SENTRY_AUTH_TOKEN": "sntrys_token_for_events_test",
            "BOT_REPORTS_DIR": str(tmp_path / "reports"),
        }
    )
    app = App(settings=settings, store=Store(settings.database_url), clock=clock)
    app.store.upgrade()
    return app


def add(app: App, sid: str, incident: str | None) -> None:
    now = app.clock.now()
    with app.store.session() as session:
        session.add(
            TrackedIssue(
                id=sid,
                short_id=f"API-{sid}",
                title=f"<!channel> boom {sid}",
                incident_id=incident,
                created_at=now,
                updated_at=now,
                last_seen=now,
            )
        )


def slack_rows(app: App) -> list[OutboxMessage]:
    with app.store.session() as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.channel == "slack")))


def test_related_issues_share_one_triage_message(tmp_path: Path, clock: FakeClock) -> None:
    app = make_app(tmp_path, clock)
    for sid in ("1", "2", "3"):
        add(app, sid, "inc-7")
    add(app, "4", None)
    sink = event_recorder(app)
    with app.store.session() as session:
        for sid in ("1", "2", "3", "4"):
            row = session.get(TrackedIssue, sid)
            assert row is not None
            sink(session, "triaged", row, None, None, {})
    rows = slack_rows(app)
    assert sorted(r.issue_id or "" for r in rows) == ["1", "4"]  # the incident's first, and 4
    # Sentry text is escaped before it reaches Slack.
    assert all("<!channel>" not in str(r.payload) for r in rows)


def test_the_resolved_message_carries_the_written_report(tmp_path: Path, clock: FakeClock) -> None:
    app = make_app(tmp_path, clock)
    add(app, "9", None)
    sink = event_recorder(app)
    with app.store.session() as session:
        row = session.get(TrackedIssue, "9")
        assert row is not None
        row.state, row.resolved_at, row.resolved_by_bot = "resolved", clock.now(), True
        session.add(
            Transition(
                issue_id="9",
                from_state="watching",
                to_state="resolved",
                reason="quiet for 48 h",
                at=clock.now(),
            )
        )
        sink(session, "resolved", row, None, None, {"in_commit": "abc123"})
    report = tmp_path / "reports" / "API-9.md"
    assert report.exists()
    text = report.read_text()
    assert text.startswith("# Incident Report: API-9") and "quiet for 48 h" in text
    [message] = slack_rows(app)
    assert str(report) in str(message.payload)
