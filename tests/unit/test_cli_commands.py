"""``backtest``, ``report`` and ``health``: what an on-call engineer runs by hand."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from bot.clock import SystemClock
from bot.interfaces.cli import app
from bot.interfaces.heartbeat import JobResult, write_heartbeat
from bot.store.db import Store

ROOT = Path(__file__).parents[2]
SEED = ROOT / "bot" / "demo" / "seed_incidents.json"
runner = CliRunner()


def seed_short_ids() -> list[str]:
    return [issue["shortId"] for issue in json.loads(SEED.read_text())["issues"]]


def test_backtest_fires_a_shipped_playbook_on_every_seed_incident(tmp_path: Path) -> None:
    env = {
        "BOT_PLAYBOOKS_DIR": str(ROOT / "playbooks"),
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'never-created.db'}",
    }
    result = runner.invoke(app, ["backtest", str(SEED)], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for short_id in seed_short_ids():
        assert any(short_id in line for line in lines), short_id
    no_playbook = next(line for line in lines if line.startswith("(no playbook)"))
    assert no_playbook.split()[2] == "0"
    assert not (tmp_path / "never-created.db").exists()  # backtest changes nothing


def test_backtest_of_a_malformed_export_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "export.json"
    bad.write_text('{"issues": [{"id": "1", "title": "no shortId or project"}]}')
    result = runner.invoke(
        app, ["backtest", str(bad)], env={"BOT_PLAYBOOKS_DIR": str(ROOT / "playbooks")}
    )
    assert result.exit_code == 1
    assert "export.json" in result.output and "Traceback" not in result.output


def test_report_after_a_replay_cycle(tmp_path: Path) -> None:
    env = {
        "BOT_REPLAY_FILE": str(SEED),
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BOT_PLAYBOOKS_DIR": str(ROOT / "playbooks"),
    }
    assert runner.invoke(app, ["cycle"], env=env).exit_code == 0
    out = tmp_path / "bee42.md"
    result = runner.invoke(app, ["report", "blue-banded-bee-42", "-o", str(out)], env=env)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# Incident Report: BLUE-BANDED-BEE-42")
    for section in ("## Summary", "## Timeline", "## Root Cause", "## What the Bot Did"):
        assert section in text
    assert "bee42-requeue-stuck-tasks" in text  # the journaled shadow run
    missing = runner.invoke(app, ["report", "NOPE-1"], env=env)
    assert missing.exit_code == 1 and "NOPE-1" in missing.output


def test_health_follows_the_scheduler_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"BOT_DATABASE_URL": url, "BOT_INSTANCE_ID": "replica-a"}
    store = Store(url)
    store.upgrade()
    assert runner.invoke(app, ["health"], env=env).exit_code == 1
    clock = SystemClock()
    beat = JobResult(name="poll", ran=True, leader=True, summary="polled 0")
    write_heartbeat(store, "replica-a", clock, beat)
    assert runner.invoke(app, ["health"], env=env).exit_code == 0
    write_heartbeat(store, "replica-a", _Past(clock, timedelta(hours=1)), beat)
    assert runner.invoke(app, ["health"], env=env).exit_code == 1
    store.dispose()


class _Past(SystemClock):
    def __init__(self, clock: SystemClock, ago: timedelta) -> None:
        self._clock, self._ago = clock, ago

    def now(self):  # type: ignore[no-untyped-def]
        return self._clock.now() - self._ago
