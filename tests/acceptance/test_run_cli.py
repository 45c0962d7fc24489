"""``sentry-bot run`` as an operator starts it: it polls, beats, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from bot.clock import SystemClock
from bot.lifecycle.scheduler import health_status
from bot.store.db import Store

ROOT = Path(__file__).parents[2]


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
        ok, message = False, ""
        for _ in range(300):  # the first poll runs at start; wait for its heartbeat
            if proc.poll() is not None:
                break
            if (tmp_path / "state.db").exists():
                ok, message = health_status(
                    store, SystemClock(), timedelta(minutes=5), instance="replica-test"
                )
                if ok and "poll" in message:
                    break
            time.sleep(0.1)
        assert ok and "poll" in message, message
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "lease scheduler released by replica-test" in output
    store.dispose()
