"""Bad input read while building a tick's parts fails only the step that reads it.

A malformed ``triage:`` block is the triage stage's problem, a broken replay file the
poll's: the lifecycle step (resolve after quiet hours, revert flags), the webhook
status changes, and the poll's own first stages (approved runs, crash recovery,
tracking) still run, as they did before the composition root built every part up
front (issue #11).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from bot.clock import FakeClock
from bot.errors import ConfigError, SentryBadResponse
from bot.interfaces.app import App
from bot.interfaces.scheduler import CycleSteps
from bot.interfaces.wiring import PartsCache
from bot.pipeline.inbox import Claimed
from bot.pipeline.webhook import process_batch
from bot.settings import load_settings
from bot.store.models import DeliveryStatus, TrackedIssue

BAD_TRIAGE = "triage:\n  default_team: [1, 2]\n"


def _app(tmp_path: Path, clock: FakeClock, config: str, replay: str) -> App:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "replay.json").write_text(replay)
    (tmp_path / "config.yaml").write_text(config)
    settings = load_settings(
        tmp_path / "config.yaml",
        {
            "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
            "BOT_REPLAY_FILE": str(tmp_path / "replay.json"),
        },
    )
    app = App.from_settings(settings, clock=clock)
    app.store.upgrade()
    return app


@pytest.fixture
def bad_triage(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    seen = (clock.now() - timedelta(minutes=5)).isoformat()
    issue = {
        "id": "71",
        "shortId": "API-71",
        "title": "Error: boom",
        "project": {"id": "1", "slug": "api"},
        "lastSeen": seen,
    }
    app = _app(tmp_path, clock, BAD_TRIAGE, json.dumps([issue]))
    yield app
    app.close()


def test_a_malformed_triage_block_fails_the_poll_at_triage_not_before(bad_triage: App) -> None:
    with pytest.raises(ConfigError, match=r"triage\.default_team"):
        CycleSteps.of(bad_triage).poll()
    # Polled and tracked before triage refused, as the poll step always did.
    with bad_triage.store.session() as session:
        assert session.exec(select(TrackedIssue.id)).all() == ["71"]


def test_a_malformed_triage_block_does_not_stop_the_lifecycle_step(bad_triage: App) -> None:
    assert CycleSteps.of(bad_triage).lifecycle().startswith("lifecycle: replay source")


def test_a_malformed_triage_block_does_not_stop_webhook_status_changes(bad_triage: App) -> None:
    hook = Claimed(1, "installation", "created", None, None, None, {}, 1)
    report = process_batch(PartsCache(bad_triage).get(), [hook])
    assert [o.status for o in report.outcomes] == [DeliveryStatus.IGNORED]


@pytest.mark.parametrize("replay", ["{not json", None], ids=["invalid", "missing"])
def test_a_broken_replay_file_fails_the_poll_only(
    tmp_path: Path, clock: FakeClock, replay: str | None
) -> None:
    app = _app(tmp_path, clock, "", replay or "[]")
    if replay is None:
        (tmp_path / "replay.json").unlink()
    try:
        steps = CycleSteps.of(app)
        with pytest.raises(SentryBadResponse, match="replay file"):
            steps.poll()
        assert steps.lifecycle().startswith("lifecycle: replay source")
    finally:
        app.close()
