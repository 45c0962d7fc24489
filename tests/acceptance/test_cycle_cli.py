"""Issue #2 end to end: the real ``python -m bot cycle`` against a Sentry on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from bot.clock import SystemClock
from bot.store.db import Store
from bot.store.models import TrackedIssue
from bot.testing.sentry import FakeSentry, Fault

ROOT = Path(__file__).parents[2]
TOKEN = "sntrys_acceptance_SECRET_9f2c"
ISSUES = 250  # three pages


def run_cycle(base_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "BOT_", "GITHUB_"))
    }
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "SENTRY_BASE_URL": base_url,
        "SENTRY_AUTH_TOKEN": TOKEN,
        "SENTRY_ORG": "acme",
        "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
        "BOT_LOG_LEVEL": "DEBUG",  # the most talkative setting still never shows the token
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "cycle", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.slow
def test_cycle_ingests_every_page_through_faults_and_repeats_cheaply(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    clock = SystemClock()
    # A one-second rate window keeps the 429 wait (until the announced reset) short.
    fake = FakeSentry(clock=clock, token=TOKEN, rate_window=1)
    now = clock.now()
    ids = {
        fake.add_issue(title=f"Error: failure {n}", lastSeen=now - timedelta(minutes=n), count=2)[
            "id"
        ]
        for n in range(ISSUES)
    }
    # The loopback server's "timeout" only answers late (the bot waits 30 s), so the
    # transport-level timeout is covered in tests/integration/test_poller.py instead.
    fake.inject(Fault.RATE_LIMITED, Fault.SERVER_ERROR)
    with fake.serve() as base_url:
        first = run_cycle(base_url, tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        summary = json.loads(first.stdout)
        list_calls = [r for r in fake.requests if r.path.endswith("/issues/")]
        fake.inject(Fault.TRUNCATED_JSON)
        after_first = len(fake.requests)
        second = run_cycle(base_url, tmp_path)
        repeat_requests = len(fake.requests) - after_first

    assert summary["polled"] == ISSUES and summary["new"] == ISSUES
    assert summary["errors"] == []
    assert len(list_calls) == 3 + 2  # three pages, plus one retry per fault
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with store.session() as session:
            assert set(session.exec(select(TrackedIssue.id)).all()) == ids
    finally:
        store.dispose()

    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout)
    assert again["new"] == 0 and again["changed"] == 0
    # One page for the overlap window, plus the retry of the truncated answer.
    assert repeat_requests <= 2
    for proc in (first, second):
        assert TOKEN not in proc.stdout
        assert TOKEN not in proc.stderr
        assert "Traceback" not in proc.stderr
