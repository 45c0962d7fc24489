"""A real ``sentry-bot cycle`` killed at each set_flag revert failpoint, then restarted.

The set_flag run (seed 000 BEE-7G's throttle) was made 5 hours ago, past its
``revert_after_minutes`` (240): the cycle's lifecycle step reverts it. Killed at
``flag-revert-journaled`` (before the target UPDATE) or ``flag-revert-committed`` (after
it, before the store knows), the restarted cycle ends with the old value back, restored
exactly once, and the journal saying so once. PostgreSQL store and target; the replay
source (no Sentry needed for a deadline revert).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from bot.adapters.targets.postgres import PgTarget
from bot.clock import FakeClock, SystemClock
from bot.failpoints import exit_code
from bot.pipeline.execute import Executor
from bot.playbooks.matcher import MatchResult
from bot.store.models import FlagRevert
from tests.conftest import sqlalchemy_url
from tests.helpers_engine import build_playbook, make_store, track_issue

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "playbooks" / "bee7g-throttle-page-discovery.yaml"


def limit(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT max_per_minute FROM job_rate_limits WHERE job_type = 'page_discovery'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def target_dsn(pg_admin_dsn: str) -> Iterator[str]:
    name = f"bot_flag_target_{os.getpid()}_{id(object())}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=name)
    try:
        yield dsn
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cycle(tmp_path: Path, store_url: str, target: str, failpoint: str | None) -> Any:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENTRY_", "BOT_", "GITHUB_", "SLACK_"))
    }
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "BOT_DATABASE_URL": store_url,
        "BOT_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
        "BOT_REPLAY_FILE": str(tmp_path / "replay.json"),
        "BOT_TARGET_JOBS_DB_URL": target,
        **({"BOT_FAILPOINT": failpoint} if failpoint else {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "cycle", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("failpoint", ["flag-revert-journaled", "flag-revert-committed"])
def test_a_killed_revert_is_finished_by_the_restart_exactly_once(
    failpoint: str, pg_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE job_rate_limits (job_type text PRIMARY KEY,"
            " max_per_minute integer NOT NULL);"
            "INSERT INTO job_rate_limits VALUES ('page_discovery', 120), ('page_fetch', 600)"
        )
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / SHIPPED.name).write_text(SHIPPED.read_text())
    (tmp_path / "replay.json").write_text(json.dumps({"issues": []}))
    store_url = sqlalchemy_url(pg_dsn)
    store = make_store(store_url)
    # The run, five hours ago by the system clock the subprocess uses.
    clock = FakeClock(SystemClock().now() - timedelta(hours=5))
    data = yaml.safe_load(SHIPPED.read_text())
    data["guards"] = {**data["guards"], "mode": "auto"}
    pb = build_playbook(data)
    issue_id = track_issue(store, clock, short_id="BLUE-BANDED-BEE-7G")
    out = Executor(store, {pb.id: pb}, lambda n: PgTarget(target_dsn, name=n), clock).plan(
        issue_id, MatchResult(pb, {})
    )
    assert out.status == "succeeded" and limit(target_dsn) == 10

    first = cycle(tmp_path, store_url, target_dsn, failpoint)
    assert first.returncode == exit_code(failpoint), first.stderr[-3000:]
    assert limit(target_dsn) == (120 if failpoint == "flag-revert-committed" else 10)

    again = cycle(tmp_path, store_url, target_dsn, None)
    assert again.returncode == 0, again.stderr[-3000:]
    assert limit(target_dsn) == 120
    with store.session() as session:
        journal = session.get(FlagRevert, out.run_id or "")
    assert journal is not None
    assert (journal.outcome, journal.attempts) == ("reverted", 2)
    third = cycle(tmp_path, store_url, target_dsn, None)
    assert third.returncode == 0 and limit(target_dsn) == 120
    with store.session() as session:
        assert session.get(FlagRevert, out.run_id or "").attempts == 2  # type: ignore[union-attr]
    store.dispose()
