"""Long-lived clients are built once per process, not once per tick (issue #11).

The composition root builds a tick's parts every scheduler tick; the Slack webhook
notifier it hands the outbox is the app's one notifier, so its HTTP client (and its
kept-alive connection to Slack) lives as long as the app and is closed with it, not
left for the garbage collector every minute.
"""

from __future__ import annotations

from pathlib import Path

from bot.clock import FakeClock
from bot.interfaces.app import App
from bot.interfaces.wiring import build_delivery
from bot.settings import load_settings


def test_the_slack_notifier_is_built_once_and_closed_with_the_app(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = load_settings(
        None,
        {
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/services/T0/B0/secret",
        },
    )
    app = App.from_settings(settings, clock=clock)
    first = build_delivery(app).senders["slack"]
    second = build_delivery(app).senders["slack"]
    notifier = app.slack()
    assert notifier is not None
    assert first == second == notifier.send  # the same notifier's bound method
    client = notifier._client
    assert not client.is_closed
    app.close()
    assert client.is_closed
    assert app.slack() is not notifier  # a closed app builds a fresh one if asked


def test_no_slack_notifier_without_a_webhook_url(tmp_path: Path, clock: FakeClock) -> None:
    settings = load_settings(None, {"BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}"})
    app = App.from_settings(settings, clock=clock)
    assert app.slack() is None
    assert "slack" not in build_delivery(app).senders
    app.close()
