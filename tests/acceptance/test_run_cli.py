"""``sentry-bot run`` as an operator starts it: it polls, beats, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.clock import SystemClock
from bot.errors import BotError
from bot.interfaces.heartbeat import health_status, read_heartbeat
from bot.store.db import Store

ROOT = Path(__file__).parents[2]


def _beat(store: Store) -> dict[str, Any] | None:
    """The replica's heartbeat; None while the store is still being created by ``run``."""
    try:
        return read_heartbeat(store, "replica-test")
    except BotError:
        return None


def test_run_polls_writes_a_heartbeat_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_"))}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "BOT_DATABASE_URL": url,
        "BOT_REPLAY_FILE": str(ROOT / "bot" / "demo" / "seed_incidents.json"),
        "BOT_PLAYBOOKS_DIR": str(ROOT / "playbooks"),
        "BOT_INSTANCE_ID": "replica-test",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        store = Store(url)
        beat: dict[str, Any] | None = None
        # The first poll runs at start. Wait for the condition itself, the heartbeat's
        # record of the poll job (every job keeps its own entry, so a later outbox or
        # lifecycle beat cannot hide it), with a deadline generous for a loaded machine.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (tmp_path / "state.db").exists():
                beat = _beat(store)
                if beat is not None and beat["jobs"].get("poll", {}).get("ran"):
                    break
            time.sleep(0.1)
        assert beat is not None and "poll" in beat["jobs"], (beat, proc.poll())
        poll = beat["jobs"]["poll"]
        assert (poll["ran"], poll["leader"], poll["ok"]) == (True, True, True), poll
        assert poll["summary"].startswith("polled 9 ")  # the nine bundled seed incidents
        ok, message = health_status(
            store, SystemClock(), timedelta(minutes=5), instance="replica-test"
        )
        assert ok and "poll " in message, message
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "lease scheduler released by replica-test" in output
    # What an operator reads: our own lines once each, no APScheduler chatter, no
    # "fixlinks: fix links:" doubled prefixes.
    assert "Adding job tentatively" not in output and "apscheduler" not in output
    for job, step in (("fixlinks", "fix links"), ("lifecycle", "lifecycle"), ("outbox", "outbox")):
        assert f"{job}: {step}:" not in output
    store.dispose()
